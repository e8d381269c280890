"""The default study's arithmetic, pinned: a smaller copy of configs/studies/default.yaml (its methods, their
settings and its `set:`, on a 2-block random ViT, 512 Fashion-MNIST images, one epoch, one seed, no tuning)
gives exactly the test top-1 below. A change to a method, the recipe or the data path that moves a number
fails here, instead of leaving configs/studies/default.yaml's header stale.

The copy runs with train.reproducible (downstream.yaml's), so AVX2 and AVX-512 CPUs take the same code. The
QLoRA ablation (bitsandbytes' int8 and nf4 kernels, which choose their code by the CPU) is left out.
When a change moves these numbers on purpose, run the default study again (make study), update its header
and README, and write the new counts here.

The study runs in a `peftlab study` process of its own (its pinned runs would restart this process's forkserver
with the pin, and again without it for the next study of the process); its report, which reads files only, is
written in this process, its figures built but not drawn (conftest.py)."""

import csv
import json

import pytest
import yaml
from testkit import REPO, cli_here, needs_fashion_mnist, run_cli

from peftlab.utils import cpu

pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]
FIGURES_DRAWN = ()  # the reports are read as text (conftest.py)

TEST_IMAGES = 256
# correct test images of 256, per configuration: measured 2026-11-25 on an AVX-512 machine, arithmetic pinned (MKL's
# COMPATIBLE products); the same counts under the pin's oneDNN products (2026-11-29, an AMD EPYC: test losses moved
# in their last digits, no prediction)
EXPECTED = {"full": 42, "linear": 71, "lora": 79, "adalora": 71, "adaptive": 77, "qalora": 70}


def smaller_copy(path):
    default = yaml.safe_load((REPO / "configs" / "studies" / "default.yaml").read_text())
    study = {
        "name": "default-copy",
        "base": str(REPO / "configs" / "downstream.yaml"),
        "seeds": 1,
        "set": {
            **default["set"],
            "model.pretrained": "none",
            "model.depth": 2,
            "model.embed_dim": 64,
            "model.num_heads": 2,
            "data.train_subset": 512,
            "data.val_subset": 64,
            "data.test_subset": TEST_IMAGES,
            "train.epochs": 1,
            "train.lr": 1.0e-2,
            "train.eval_every": 4,
            "train.ckpt_every": 100,
        },
        "methods": default["methods"],
        "report": default["report"],
    }
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def runs(tmp_path):
    return sorted((tmp_path / "out" / "runs").glob("*/result.json"))


def test_a_smaller_copy_of_the_default_study_gives_the_pinned_numbers(tmp_path):
    proc = run_cli("study", str(smaller_copy(tmp_path / "study.yaml")), "--study-dir", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = cli_here("report", str(tmp_path / "out"))  # what `peftlab study --report` writes after the study
    assert report.returncode == 0, report.stderr
    with open(tmp_path / "out" / "report" / "results.csv") as f:
        rows = {row["variant"]: row for row in csv.DictReader(f)}
    assert {v: r["status"] for v, r in rows.items()} == dict.fromkeys(EXPECTED, "completed")
    correct = {v: round(float(r["metrics.test_top1"]) * TEST_IMAGES) for v, r in rows.items()}
    assert correct == EXPECTED, str(sorted(correct.items()))
    products = {json.loads(path.read_text())["provenance"]["arithmetic"]["products"] for path in runs(tmp_path)}
    assert products == ({cpu.PRODUCTS_PIN} if cpu.applies() else {None})  # the pin's products (x86)
