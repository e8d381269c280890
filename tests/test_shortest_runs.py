"""The shortest runs (issue 65): every method ``peftlab methods`` lists, built-in and PEFT types, at
``train.max_steps=1`` and at one epoch of a single batch, completes or refuses in one line (exit status 2)
and leaves no run directory behind: each one that applies to a timm ViT on the 2-block 32 px ViT, each
one that applies to a text model on a tiny GPT-2. A smoke test, a tuning trial under a tiny budget and a
first try on a new dataset all run that short.

The runs go in turn through ``peftlab train`` in this process (``testkit.cli_in_process``), on small
files written here (64 training images, 32 validation, 32 test; 36, 12 and 24 texts), with each
method's defaults (PEFT types: ``testkit.PEFT_TINY_OPTIONS`` for the tiny widths).
"""

import json
import sys

import pytest
import torch
import yaml
from testkit import (
    PEFT_TINY_OPTIONS,
    REPO,
    TEXT_ONLY,
    TIMM_ONLY,
    TINY_MODEL,
    assert_one_line_refusal,
    cli_in_process,
    hf_text_dir,
    write_text_task,
)

from peftlab.tuners.catalog import method_rows

sys.path.insert(0, str(REPO / "tests" / "data"))
from datafiles import write_idx_dataset

pytestmark = pytest.mark.e2e

# what `peftlab methods` lists, its plugins' rows left out (a plugin brings its own tests)
LISTED = [row["name"] for row in method_rows() if row["source"] == "built-in" or row["source"].startswith("PEFT")]
VIT_METHODS = [m for m in LISTED if m not in TEXT_ONLY]
TEXT_METHODS = [m for m in LISTED if m not in TIMM_ONLY]
TRAIN = {"vit": 64, "gpt2": 36}  # training examples: one batch of them is one epoch
LENGTHS = {
    "max_steps=1": lambda family: ["train.max_steps=1"],
    "one-batch-epoch": lambda family: ["train.epochs=1", f"train.batch_size={TRAIN[family]}"],
}


@pytest.fixture(autouse=True)
def untimed_merge(monkeypatch):
    """Each run's merge checked as every run checks it (max |diff| of the merged and the adapter logits), not
    timed: as a study's runs are (``outcome.in_study``). No check here reads the latency ratio, and its five
    interleaved forwards of each model are a tenth of a shortest run's cost."""
    monkeypatch.setattr("peftlab.training.outcome.MERGE_TIMING_REPEATS", 0)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """family -> a run config YAML: the tiny ViT on 64 / 32 / 32 random Fashion-MNIST-format images, and
    a tiny random GPT-2 classifier on the 36 / 12 / 24 texts of ``testkit.write_text_task``."""
    root = tmp_path_factory.mktemp("shortest")
    write_idx_dataset(root / "images", n_train=128, n_test=32)
    vit = {
        "name": "shortest-vit",
        "model": TINY_MODEL,
        "data": {
            "name": "fashion_mnist",
            "root": str(root / "images"),
            "val_fraction": 0.25,
            "train_subset": 64,
            "val_subset": 32,
        },
        "train": {"batch_size": 32, "eval_batch_size": 32},
    }
    torch.manual_seed(0)
    text = {
        "name": "shortest-gpt2",
        "model": {"source": "hf-text", "path": str(hf_text_dir(root / "gpt2", "gpt2"))},
        "data": {"name": "text", "root": str(write_text_task(root / "texts")), "val_fraction": 0.25, "max_length": 16},
        "train": {"batch_size": 8, "eval_batch_size": 24},
    }
    paths = {"vit": root / "vit.yaml", "gpt2": root / "gpt2.yaml"}
    for family, config in (("vit", vit), ("gpt2", text)):
        paths[family].write_text(yaml.safe_dump(config))
    return paths


def method_overrides(method: str) -> list[str]:
    if not method.startswith("peft:"):
        return [f"method.name={method}"]
    peft_type = method.removeprefix("peft:")
    options = PEFT_TINY_OPTIONS.get(peft_type, {})
    sized = [f"method.options.{key}={value}" for key, value in options.items()]
    return ["method.name=peft", f"method.peft_type={peft_type}", *sized]


def train_in_process(config, overrides: list[str], run_dir) -> dict | None:
    """result.json of the run, or None where it was refused in one line and left no run directory."""
    status, stderr, _, _ = cli_in_process("train", str(config), *overrides, "--run-dir", str(run_dir), "--quiet")
    if status == 2:
        assert_one_line_refusal(status, stderr)
        assert not run_dir.exists(), f"refused ({stderr.strip()}) but left {sorted(run_dir.iterdir())}"
        return None
    result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
    assert status == 0 and result.get("status") == "completed", (status, stderr, result.get("error"))
    # stderr: at most the result's own warnings (a slow validation, depending on the machine's load)
    assert all(line.startswith("peftlab: warning: ") for line in stderr.splitlines()), stderr
    return result


CASES = [("vit", m) for m in VIT_METHODS] + [("gpt2", m) for m in TEXT_METHODS]


@pytest.mark.parametrize("length", list(LENGTHS))
@pytest.mark.parametrize("family, method", CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_every_method_at_one_step_completes_or_refuses_in_one_line(configs, family, method, length, tmp_path):
    result = train_in_process(configs[family], LENGTHS[length](family) + method_overrides(method), tmp_path / "run")
    if result is None:
        return  # refused in one line, no run directory left
    assert result["step"] == 1, result["step"]
    if method == "adalora":  # it was a KeyError from PEFT's rank allocator: no step before the final allocation
        schedule = result["ranks"]["schedule"]
        assert schedule["final_allocation"] == 1 and "step 1's own gradients" in schedule["fitted"]
        assert result["ranks"]["sum"] == result["ranks"]["budget"]
        assert any(w.startswith("AdaLoRA's schedule: ") for w in result["warnings"]), result["warnings"]


def test_the_matrix_holds_every_listed_method_and_both_families():
    assert {"adalora", "adaptive", "lora", "vpt", "peft:LORA"} <= set(VIT_METHODS)
    assert {"adalora", "prompt_tuning", "prefix_tuning", "peft:LORA"} <= set(TEXT_METHODS)
    assert set(VIT_METHODS) | set(TEXT_METHODS) == set(LISTED)


def test_a_tuning_trial_under_a_tiny_budget_gets_adaloras_fitted_schedule(configs, tmp_path):
    """A trial is a run of its own (train.test=false); its integer phases outgrow a two-step budget."""
    trial = ["train.max_steps=2", "train.test=false", "method.name=adalora", "method.tinit=10", "method.tfinal=20"]
    result = train_in_process(configs["vit"], trial, tmp_path / "trial")
    schedule = result["ranks"]["schedule"]
    assert (schedule["tinit"], schedule["tfinal"], schedule["total_step"]) == (0, 0, 2)
    assert "fitted in proportion to 0 + 0 (a run of 31 steps or more keeps them)" in schedule["fitted"]
    assert result["ranks"]["sum"] == result["ranks"]["budget"] and result["metrics"]["test_top1"] is None


@pytest.mark.parametrize(
    "family,method",
    [("vit", m) for m in sorted(TEXT_ONLY) if m in LISTED] + [("gpt2", m) for m in sorted(TIMM_ONLY) if m in LISTED],
)
def test_a_method_of_the_other_family_is_refused_before_its_run_folder(configs, family, method, tmp_path):
    """What only the model tells (a text method on a ViT, a timm method on GPT-2) is checked on the meta device
    before `peftlab train` makes the run's folder: one line, exit 2, nothing left behind."""
    assert train_in_process(configs[family], ["train.max_steps=1"] + method_overrides(method), tmp_path / "run") is None
