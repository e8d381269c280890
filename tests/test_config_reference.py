"""The config-key section of docs/configuration.md is generated from the dataclasses and must be current."""

import dataclasses

import pytest
from testkit import REPO, run_cli

from peftlab.config import reference as config_reference
from peftlab.tuners import TUNERS


def readme_section() -> str:
    text = (REPO / "docs" / "configuration.md").read_text()
    start, end = text.index(config_reference.BEGIN), text.index(config_reference.END)
    return text[start + len(config_reference.BEGIN) + 1 : end]


def test_readme_section_is_current():
    assert readme_section() == config_reference.reference(), (
        "docs/configuration.md's config keys are stale: run PYTHONPATH=src python -m peftlab.config.reference --write "
        "docs/configuration.md"
    )


def test_every_key_appears_with_its_default():
    section = config_reference.reference()
    for prefix, cls, names in config_reference.SECTIONS:
        for f in dataclasses.fields(cls):
            if (
                (names and f.name not in names)
                or dataclasses.is_dataclass(config_reference._default(f))
                or f.name == "method"
            ):
                continue
            key = f"{prefix}.{f.name}" if prefix else f.name
            assert f"| `{key}` | `{config_reference.default_text(config_reference._default(f))}` |" in section, key
    for method, spec in TUNERS.items():
        assert f"**method.name: {method}**" in section
        for f in dataclasses.fields(spec.config_cls):
            if f.name != "name":
                assert (
                    f"| `method.{f.name}` | `{config_reference.default_text(config_reference._default(f))}`" in section
                ), (method, f.name)


def test_a_new_field_or_a_changed_default_changes_the_section(monkeypatch):
    before = config_reference.reference()

    @dataclasses.dataclass(frozen=True)
    class Train(config_reference.TrainConfig):
        lr: float = 5e-4  # a changed default
        new_knob: int = 3  # a knob added later

    monkeypatch.setattr(
        config_reference,
        "SECTIONS",
        tuple((p, Train if c is config_reference.TrainConfig else c, n) for p, c, n in config_reference.SECTIONS),
    )
    after = config_reference.reference()
    assert after != before
    assert "| `train.lr` | `0.0005` |" in after and "| `train.new_knob` | `3` | a knob added later |" in after


def test_a_field_without_a_meaning_is_an_error(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Train(config_reference.TrainConfig):
        undocumented: int = 3

    monkeypatch.setattr(config_reference, "SECTIONS", (("train", Train, None),))
    with pytest.raises(LookupError, match="undocumented"):
        config_reference.reference()


def test_replace_section_and_the_command(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{config_reference.BEGIN}\nstale text\n{config_reference.END}\nafter\n")
    assert config_reference.main(["--write", str(readme)]) == 0
    text = readme.read_text()
    assert "stale text" not in text and text.endswith(f"{config_reference.END}\nafter\n") and "| `train.lr` |" in text
    result = run_cli("config-reference")
    assert result.returncode == 0 and result.stdout == config_reference.reference()
