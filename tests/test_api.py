"""The Python API (peftlab/__init__.py, docs/python-api.md): ``import peftlab`` stays light; ``train`` with
overrides returns the record it wrote and is what ``peftlab train`` calls; ``run_study`` runs a real small study
whose ``load_results`` table holds its runs' numbers; mistakes are one-line UserErrors before any run folder."""

import json
import os
import subprocess
import sys

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
        "[name for name in peftlab.__all__ if callable(getattr(peftlab, name)) and getattr(peftlab, name).__doc__]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [[], peftlab.__all__]
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

    monkeypatch.setattr(peftlab, "train", train)
    assert main(["train", str(config), "method.r=4", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 1
    [(cfg, overrides, run_dir, progress)] = calls
    assert (
        isinstance(cfg, RunConfig)
        and cfg.method.r == 4
        and (overrides, run_dir, progress) == ((), tmp_path / "run", False)
    )


def test_run_study_runs_a_real_study_whose_results_load_as_a_table(config, tmp_path):
    study = {"name": "api", "base": str(config), "seeds": 2, "methods": {"linear": {}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    summary = peftlab.run_study(tmp_path / "study.yaml", tmp_path / "out", report=True)
    assert summary.ok and len(summary.completed) == 2 and not summary.failed
    assert (tmp_path / "out" / "report" / "report.md").is_file()
    df = peftlab.load_results(tmp_path / "out")
    assert sorted(df["seed"]) == [0, 1] and set(df["status"]) == {"completed"} and set(df["variant"]) == {"linear"}
    for _, row in df.iterrows():
        result = json.loads((tmp_path / "out" / "runs" / row["run_id"] / "result.json").read_text())
        assert row["metrics.test_top1"] == result["metrics"]["test_top1"]
