"""The Python API (peftlab/cli/api/, re-exported by peftlab; docs/python-api.md): ``import peftlab`` stays light and
``dir(peftlab)`` shows the API alone; ``train`` with overrides returns the record it wrote and is what ``peftlab train``
calls; ``run_study`` runs a real small study whose ``load_results`` table holds its runs' numbers; mistakes are
one-line UserErrors before any run folder."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit import REPO, TINY_MODEL, run_cli

import peftlab
from peftlab.config.schema import RunConfig
from peftlab.data.synthetic import write_jpeg_folder
from peftlab.utils.errors import UserError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """A run config file: LoRA on the tiny ViT, an image folder of 3 classes, 2 steps."""
    root = tmp_path_factory.mktemp("api")
    write_jpeg_folder(root / "images", n_train=24, size=32, classes=3, n_test=6)
    run = {
        "name": "tiny",
        "model": TINY_MODEL,
        "method": {"name": "lora", "r": 2},
        "data": {"name": "imagefolder", "root": "images"},  # relative to the config file
        "train": {"max_steps": 2, "batch_size": 8},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    return root / "run.yaml"


def test_import_peftlab_imports_no_torch_and_offers_the_api():
    code = (
        "import json, sys, peftlab\n"
        "print(json.dumps([sorted(m for m in ('torch', 'timm', 'peft', 'pandas', 'matplotlib') if m in sys.modules), "
        "[name for name in peftlab.__all__ if callable(getattr(peftlab, name)) and getattr(peftlab, name).__doc__], "
        "dir(peftlab), dir(peftlab.cli.api), peftlab.train is peftlab.cli.api.train]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert out.returncode == 0, out.stderr
    no_torch, documented, shown, shown_by_the_api, reexported = json.loads(out.stdout)
    assert (no_torch, documented, reexported) == ([], peftlab.__all__, True)
    # tab completion offers the API alone: not the subpackages imported so far, nor the helpers the modules import
    assert shown == sorted([*peftlab.__all__, "__version__"]) and shown_by_the_api == sorted(peftlab.__all__)
    assert peftlab.__all__[:5] == ["train", "run_study", "load_results", "load_trained", "predict"]


def test_train_applies_overrides_and_returns_the_record_it_wrote(config, tmp_path):
    from peftlab.training.run_result import read_result

    result = peftlab.train(config, ["method.r=4", "train.lr=0.01"], run_dir=tmp_path / "run")
    assert result["status"] == "completed", result["error"]
    assert result == read_result(tmp_path / "run")
    assert (result["config"]["method"]["r"], result["config"]["train"]["lr"]) == (4, 0.01)
    from IPython.core.formatters import PlainTextFormatter

    cell = PlainTextFormatter()(result).splitlines()  # what a notebook cell that ends with the record shows
    assert cell[0] == f"run {tmp_path / 'run'}: completed" and len(cell) <= 5, cell
    assert cell[1].startswith("method lora (r=4), model ") and cell[1].endswith(", data imagefolder")
    assert cell[2].startswith(f"test top-1 {result['metrics']['test_top1']:.2%}; ")
    assert len(PlainTextFormatter()(dict(result)).splitlines()) > 50  # the whole record, as it showed before
    assert repr(result) == "\n".join(cell) and str(result) == repr(dict(result))  # print(record): the whole record
    html = result._repr_html_()  # what a notebook shows: a table of the same facts
    assert f"<strong>run {tmp_path / 'run'}: completed</strong>" in html and "lora (r=4)" in html
    assert f"{result['metrics']['test_top1']:.2%}" in html and "CPU arithmetic</th>" in html
    # docs/python-api.md's promise: the folder is record.run_dir, and the dict is result.json's record, no more
    api_md = (REPO / "docs" / "python-api.md").read_text()
    assert "result.run_dir  # the run's folder" in api_md and '["run_dir"]' not in api_md
    assert result.run_dir == tmp_path / "run" and "run_dir" not in result
    tuner = peftlab.load_trained(result.run_dir)
    assert repr(tuner).splitlines()[:2] == [
        f"LoraTuner: method lora, run {tmp_path / 'run'}",
        "  model: VisionTransformer (vit_tiny_patch16_224) in a PeftModel",
    ]
    assert f"{result['params']['trainable']:,} of" in tuner._repr_html_()
    again = peftlab.train(config, {"method": {"r": 4}, "train": {"lr": 0.01}}, run_dir=tmp_path / "run")
    assert again == result  # the same run, finished: its record, not a second training
    shown = run_cli("train", str(config), "method.r=4", "train.lr=0.01", "--run-dir", str(tmp_path / "run"), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout) == result  # peftlab train --json: the record


def test_mistakes_are_one_line_before_any_run_folder(config, tmp_path):
    with pytest.raises(UserError, match=r"^unknown config key 'method.rr'") as caught:
        peftlab.train(config, ["method.rr=4"], run_dir=tmp_path / "run")
    assert "\n" not in str(caught.value) and not (tmp_path / "run").exists()
    with pytest.raises(UserError, match=r"^workers=0 is invalid"):
        peftlab.run_study(REPO / "configs" / "studies" / "default.yaml", tmp_path / "study", workers=0)
    assert not (tmp_path / "study").exists()


def test_the_train_command_calls_the_api(config, tmp_path, monkeypatch):
    """One implementation: ``peftlab train`` loads the config and hands it to ``peftlab.train``."""
    from peftlab.cli import main

    calls = []

    def train(cfg, overrides=(), *, run_dir=None, progress=False):
        calls.append((cfg, overrides, run_dir, progress))
        return {"status": "failed", "error": "stopped by the test", "config": {}}

    monkeypatch.setattr(peftlab.cli.api, "train", train)
    assert main(["train", str(config), "method.r=4", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 1
    [(cfg, overrides, run_dir, progress)] = calls
    assert (
        isinstance(cfg, RunConfig)
        and cfg.method.r == 4
        and (overrides, run_dir, progress) == ((), tmp_path / "run", False)
    )


def test_run_study_runs_a_real_study_whose_results_load_as_a_table(config, tmp_path, monkeypatch):
    """A study given as a dict, its base and data paths the working folder's; shown with its main table; its results
    with each run's folder, which predict takes as it is."""
    monkeypatch.chdir(config.parent)
    study = {"name": "api", "base": "run.yaml", "seeds": 2, "set": {"data.root": "images"}, "methods": {"linear": {}}}
    summary = peftlab.run_study(study, tmp_path / "out", report=True)
    assert summary.ok and len(summary.completed) == 2 and not summary.failed
    assert (tmp_path / "out" / "report" / "report.md").is_file()
    kept = yaml.safe_load((tmp_path / "out" / "study.yaml").read_text())  # the study file, its paths absolute
    assert (kept["base"], kept["set"]["data.root"]) == (str(config), str(config.parent / "images"))
    lines = repr(summary).splitlines()
    assert lines[:2] == [
        f"study api: {tmp_path / 'out'}",
        "  runs: 2 of 2 completed, 0 failed, 0 diverged, 0 pending (0 finished before this call)",
    ]
    assert lines[3].split() == ["configuration", "trainable", "params", "n", "Test", "top-1", "(%)"]
    assert lines[4].split()[0] == "linear" and lines[4].split()[3] == "2", lines
    assert "<th>Test top-1 (%)</th>" in summary._repr_html_()
    df = peftlab.load_results(tmp_path / "out")
    assert sorted(df["seed"]) == [0, 1] and set(df["status"]) == {"completed"} and set(df["variant"]) == {"linear"}
    assert list(df.columns[:3]) == ["order", "run_id", "run_dir"]
    for _, row in df.iterrows():
        assert row["run_dir"] == str(tmp_path / "out" / "runs" / row["run_id"])
        result = json.loads((Path(row["run_dir"]) / "result.json").read_text())
        assert row["metrics.test_top1"] == result["metrics"]["test_top1"]
    assert "run_dir" not in peftlab.results(tmp_path / "out").splitlines()[0].split(",")  # the command's table
    [answer] = peftlab.predict(df.loc[0, "run_dir"], [next((config.parent / "images" / "test").rglob("*.jpg"))])
    assert len(answer["top_k"]) == 3


def test_the_documented_dict_config_validates_counts_trains_and_shows(tmp_path, monkeypatch):
    """docs/python-api.md's dict config, run as printed in a folder holding its images (./shoes), but for the model
    (the tiny ViT) and the length (2 steps): its relative data root is the working folder's, in every call."""
    text = (REPO / "docs" / "python-api.md").read_text()
    found = re.search(r"<!-- tests/test_api.py runs this block[^\n]*-->\n```python\n(.*?)```", text, re.S)
    assert found, "docs/python-api.md lost its dict config example"
    code = found.group(1)
    for printed, here in (
        ('{"name": "vit_small_patch16_224", "pretrained": "hub"}', repr(TINY_MODEL)),
        ('"train": {"epochs": 3}', '"train": {"max_steps": 2, "batch_size": 8}'),
    ):
        assert printed in code, printed
        code = code.replace(printed, here)
    write_jpeg_folder(tmp_path / "shoes", n_train=12, size=32, classes=3, n_test=3)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/python-api.md", "exec"), namespace)
    record, tuner = namespace["record"], namespace["tuner"]
    assert record["status"] == "completed" and record.run_dir == Path("runs/shoes-r16")
    assert record["config"]["data"]["root"] == str(tmp_path / "shoes") and record["config"]["method"]["r"] == 16
    assert tuner.run_dir == Path("runs/shoes-r16") and "trainable parameters" in tuner._repr_html_()
