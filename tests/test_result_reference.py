"""The result section of docs/run-directory.md is generated from peftlab.training.run_result and must be current."""

import typing

import pytest
from testkit import REPO

from peftlab.training import result_reference
from peftlab.training.run_result import SECTIONS, RunResult


def doc_section() -> str:
    text = (REPO / "docs" / "run-directory.md").read_text()
    start, end = text.index(result_reference.BEGIN), text.index(result_reference.END)
    return text[start + len(result_reference.BEGIN) + 1 : end]


def test_the_doc_section_is_current():
    assert doc_section() == result_reference.reference(), (
        "docs/run-directory.md's result.json section is stale: run PYTHONPATH=src python -m "
        "peftlab.training.result_reference --write docs/run-directory.md"
    )


def test_every_key_of_the_record_and_its_sections_is_in_the_section():
    section = result_reference.reference()
    for name in RunResult.__annotations__:
        assert f"| `{name}` |" in section, name
    for name, cls in SECTIONS.items():
        assert f"**{name}**" in section
        for key in cls.__annotations__:
            assert f"| `{key}` |" in section, (name, key)


def test_a_key_without_a_comment_is_an_error(monkeypatch):
    class Timing(typing.TypedDict):
        """Seconds."""

        undocumented: float

    monkeypatch.setitem(SECTIONS, "timing", Timing)
    with pytest.raises(LookupError, match="undocumented"):
        result_reference.reference()


def test_types_in_words():
    assert result_reference.type_text(float | None) == "number or null"
    assert result_reference.type_text(RunResult.__annotations__["status"]) == '"completed", "failed" or "diverged"'


def test_the_command_writes_between_the_markers(tmp_path):
    doc = tmp_path / "run-directory.md"
    doc.write_text(f"# x\n{result_reference.BEGIN}\nstale\n{result_reference.END}\nafter\n")
    assert result_reference.main(["--write", str(doc)]) == 0
    text = doc.read_text()
    assert "stale" not in text and "| `wall_seconds` |" in text and text.endswith(f"{result_reference.END}\nafter\n")
