"""docs/python-api.md's examples run, and its table says what the functions return (issue 90): every Python block
of the page names the test that runs it (a comment above it), and this file runs the first one (train, run_study,
load_results, load_trained, predict), the study given as a dict and the class names read from an export, as printed
but for tiny configs (the tiny ViT, 2 steps, one seed, one worker) at the paths they name."""

import re

import pytest
import yaml
from testkit import REPO, TINY_MODEL

import peftlab
from peftlab.data.synthetic import write_jpeg_folder

pytestmark = pytest.mark.e2e

PAGE = REPO / "docs" / "python-api.md"
BLOCK = re.compile(r"(?:<!-- (tests/\S+) runs this block[^\n]*-->\n)?```python\n(.*?)```", re.S)


def blocks() -> list[tuple[str | None, str]]:
    """(the test a block's comment names, its code), for every Python block of the page."""
    return BLOCK.findall(PAGE.read_text())


def test_every_example_of_the_page_names_a_test_that_runs_it():
    found = blocks()
    assert len(found) >= 6
    for test, code in found:
        assert test, f"docs/python-api.md: a block names no test that runs it:\n{code[:200]}"
        assert "python-api.md" in (REPO / test).read_text(), f"{test} does not read docs/python-api.md"


def run_block(number: int, namespace: dict, *replaced: tuple[str, str]) -> dict:
    """The page's block ``number`` (from 0) of those that name this file, run in ``namespace`` with each (printed,
    here) replaced."""
    code = [code for test, code in blocks() if test == "tests/test_api_docs.py"][number]
    for printed, here in replaced:
        assert printed in code, printed
        code = code.replace(printed, here)
    exec(compile(code, f"docs/python-api.md, this file's block {number + 1}", "exec"), namespace)
    return namespace


def row(function: str) -> str:
    """The page's table row of ``function``: its returns cell."""
    found = re.search(rf"^\| `{function}\(.*?\)` \| (.*?) \| ", PAGE.read_text(), re.M)
    assert found, function
    return found.group(1)


def test_the_pages_examples_run_as_printed_and_return_what_its_table_says(tmp_path, monkeypatch):
    """In a folder holding configs/downstream.yaml, configs/studies/default.yaml and configs/shoes.yaml (tiny), the
    images they train on, shoe.png and holdout/: the first block, the study as a dict and the export's class names."""
    write_jpeg_folder(tmp_path / "images", n_train=12, size=32, classes=3, n_test=3)
    write_jpeg_folder(tmp_path / "holdout", n_train=0, size=32, classes=1, n_test=2)
    (tmp_path / "shoe.png").write_bytes(next((tmp_path / "images" / "test").rglob("*.jpg")).read_bytes())
    (tmp_path / "configs" / "studies").mkdir(parents=True)
    run = {
        "name": "downstream",
        "model": TINY_MODEL,
        "method": {"name": "lora", "r": 2},
        "data": {"name": "imagefolder", "root": "../images"},  # a file's paths: its folder's
        "train": {"max_steps": 2, "batch_size": 8, "reproducible": True},
    }
    (tmp_path / "configs" / "downstream.yaml").write_text(yaml.safe_dump(run))
    (tmp_path / "configs" / "shoes.yaml").write_text(yaml.safe_dump({**run, "name": "shoes"}))
    study = {"name": "default", "base": "../downstream.yaml", "seeds": 1, "methods": {"linear": {}, "lora": {}}}
    (tmp_path / "configs" / "studies" / "default.yaml").write_text(yaml.safe_dump(study))
    monkeypatch.chdir(tmp_path)

    ns = run_block(0, {}, ("workers=2", "workers=1"))
    result, summary, df = ns["result"], ns["summary"], ns["df"]
    assert result["status"] == "completed" and str(result.run_dir) == "runs/r16" and "run_dir" not in result
    assert set(result) >= {"status", "metrics", "params", "provenance"}  # "status, metrics, params, provenance, ..."
    assert summary.ok and len(summary.completed) == 2 and summary.failed == []
    assert {"run_id", "run_dir", "variant", "method", "seed", "status", "error", "metrics.test_top1"} <= set(df.columns)
    assert df.columns.get_loc("run_dir") == df.columns.get_loc("run_id") + 1 and ns["best"].startswith("runs/default/")
    assert type(ns["model"]).__module__.startswith(("timm", "peft", "torch")) and not ns["model"].training
    answers = peftlab.predict("runs/r16", ["shoe.png", "holdout/"], top_k=3)
    assert len(answers) == 3 and answers[0]["image"] == "shoe.png"
    assert [set(c) for c in answers[0]["top_k"]] == [{"class", "index", "probability"}] * 3

    ns = run_block(1, ns, ('seeds": 3', 'seeds": 1'), ("workers=2", "workers=1"))
    assert ns["study"].ok and ns["study"].study_dir.as_posix() == "runs/shoes" and len(ns["df"]) == 2

    exported = peftlab.export("runs/r16", merged="merged.safetensors")
    assert str(exported) == "merged.safetensors"
    ns = run_block(2, ns)
    assert ns["class_names"] == result["provenance"]["data"]["class_names"]

    validated = peftlab.validate("configs/downstream.yaml")
    keys = re.findall(r'"(\w+)"', row("validate").split("`(")[0])
    assert sorted(validated) == sorted(keys) and validated["config"] == "configs/downstream.yaml"
    counted = peftlab.params("configs/downstream.yaml")
    said = re.findall(r"`(\w+)`", row("params").split(" (an HF")[0])
    assert sorted(counted) == sorted(said)
    written = peftlab.paper("runs/default", compile=False)  # the table: main.tex with compile=False
    assert "main.tex with `compile=False`" in row("paper") and written.name == "main.tex" and written.is_file()
