"""The VTAB-1k protocol end to end, offline: the demo task (Fashion-MNIST in VTAB-1k's layout) tuned
on train800 -> val200, the final runs trained on train800val200 and tested once, and the report.

The study runs in a `peftlab study` process of its own: its runs are pinned (train.reproducible), which would
restart this process's forkserver with the pin, and again without it for the next study of the process. The
report, which reads files only, is written in this process, its figures built but not drawn (conftest.py)."""

import json

import pytest
import yaml
from testkit import REPO, TINY_MODEL, cli_here, needs_fashion_mnist, run_cli

from peftlab.data.demo import write_vtab_demo

pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]
FIGURES_DRAWN = ()  # the reports are read as text (conftest.py)


def test_a_tuned_study_on_the_demo_task_follows_the_vtab_protocol(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTLAB_DATA_CACHE", str(tmp_path / "cache"))
    write_vtab_demo(tmp_path / "demo", test_size=200, progress=False)
    base = yaml.safe_load((REPO / "configs" / "vtab_demo.yaml").read_text())
    base["model"] = {**TINY_MODEL, "img_size": 28, "patch_size": 7}
    base["data"]["root"] = str(tmp_path / "demo" / "fashion_mnist")
    base["train"].update(epochs=1, log_every=4, ckpt_every=8, eval_batch_size=200)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    study = yaml.safe_load((REPO / "configs" / "studies" / "vtab_demo.yaml").read_text())
    # one seed: each final run is read on its own, and the report's VTAB table is a mean over tasks
    study.update(base="base.yaml", seeds=1, methods={"linear": {}, "lora": {"set": {"method.r": 2}}})
    study.pop("pretrain")
    study["report"]["labels"] = {"linear": "Linear probe", "lora": "LoRA"}
    study["tune"]["axes"] = {"train.lr": [3.0e-3, 1.0e-2]}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    out = tmp_path / "out"
    proc = run_cli(
        "study",
        str(tmp_path / "study.yaml"),
        "--study-dir",
        str(out),
        "--workers",
        "2",
        "--quiet",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = cli_here("report", str(out))  # what `peftlab study --report` writes after the study, in this process
    assert report.returncode == 0, report.stderr

    trials = [json.loads(p.read_text()) for p in out.glob("tune/*/runs/*/result.json")]
    finals = [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")]
    assert len(trials) == 4 and len(finals) == 2
    for result in trials:  # trained on train800, scored on val200, never tested
        data = result["provenance"]["data"]
        assert data["split_sizes"] == {"train": 800, "val": 200, "test": 200}
        assert data["split_sources"]["train"].endswith("train800.txt")
        assert data["split_sources"]["val"].endswith("val200.txt")
        assert result["metrics"]["test_top1"] is None and result["metrics"]["val_top1"] is not None
        assert result["protocol"]["test_split"] is None
    for result in finals:  # all 1,000 images, no validation, tested once
        data = result["provenance"]["data"]
        assert data["split_sizes"] == {"train": 1000, "val": 0, "test": 200}
        assert data["split_sources"]["train"].endswith("train800val200.txt")
        assert result["config"]["data"]["trainval"] is True and result["metrics"]["test_top1"] is not None
        card = result["protocol"]
        assert card["interpolation"] == "bicubic, antialiased" and card["augmentation"] == "none"
        assert card["test_split"].endswith("test.txt") and card["selection_split"].startswith("none")
    report = (out / "report" / "report.md").read_text()
    assert "## Protocol card" in report and "| interpolation | bicubic, antialiased |" in report
    assert "## VTAB-1k" in report and "fashion_mnist (own) in Natural" in report and "mean of 1 task |" in report
    # a task of its own is none of VTAB-1k's 19: no published row is set beside it (literature rows only for the
    # datasets they were measured on)
    assert "published (not run here)" not in report.lower()
