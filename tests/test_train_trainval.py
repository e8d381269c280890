"""Final runs on train + val (``data.trainval``: VTAB-1k's train800val200, FGVC's train + val): the val
split is empty, so no evaluation on it runs at all (no batch of zero examples reaches a collate, a
tokenizer or a model), and result.json says there was no validation split; on every backbone family,
with the cache on and off, on a text classifier and on a causal LM."""

import sys

import pytest
import torch
from testkit import REPO, TINY_MODEL, hf_text_dir, write_instruction_task, write_text_task

from peftlab.config.schema import load_config
from peftlab.training.run import train

sys.path.insert(0, str(REPO / "tests" / "data"))
from suitefiles import write_vtab1k

pytestmark = pytest.mark.e2e

MODELS = {
    "vit": TINY_MODEL,
    # Swin and EVA-02 reshape a batch inside their attention: a batch of 0 cannot be reshaped
    "swin": {"name": "swin_tiny_patch4_window7_224", "embed_dim": 24, "img_size": 32},
    "eva02": {"name": "eva02_base_patch14_224", "depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 28},
}
NO_VAL = "none: data.trainval trains on train + val"


@pytest.fixture(scope="module")
def vtab(tmp_path_factory):
    root = tmp_path_factory.mktemp("vtab")
    write_vtab1k(root, ["eurosat"])
    return root


def assert_no_validation(result: dict, train_size: int) -> None:
    assert result["status"] == "completed", result.get("error")
    assert result["metrics"]["val_top1"] is None and result["metrics"]["best_val_top1"] is None
    assert result["metrics"]["test_top1"] is not None
    data = result["provenance"]["data"]
    assert data["split_sizes"]["val"] == 0 and data["split_sizes"]["train"] == train_size
    assert data["split_sources"]["val"] == NO_VAL


@pytest.mark.parametrize("family, cache", [("vit", False), ("swin", True), ("swin", False), ("eva02", True)])
def test_a_final_run_on_train800val200_evaluates_no_empty_val_split(vtab, tmp_path, family, cache):
    model = {**MODELS[family], **({"patch_size": 14} if family == "eva02" else {})}
    cfg = load_config(
        overrides={
            "model": model,
            "method": {"name": "lora", "r": 2},
            "data": {"name": "vtab1k/eurosat", "root": str(vtab), "trainval": True, "cache": cache},
            # an evaluation inside the epoch and one at each epoch's end, on the empty val split
            "train": {"epochs": 2, "batch_size": 10, "eval_batch_size": 16, "eval_every": 1},
        }
    )
    assert_no_validation(train(cfg, tmp_path / "run", progress=False), 20)  # train800's 10 + val200's 10


def test_a_text_classifier_on_train_and_val_evaluates_no_empty_val_split(tmp_path):
    torch.manual_seed(0)
    model_dir = hf_text_dir(tmp_path / "gpt2", "gpt2")
    task = write_text_task(tmp_path / "task", train=24, test=12)
    cfg = load_config(
        overrides={
            "model": {"source": "hf-text", "path": str(model_dir)},
            "method": {"name": "lora", "r": 2},
            "data": {"name": "text", "root": str(task), "trainval": True, "max_length": 16},
            "train": {"epochs": 1, "batch_size": 8, "eval_every": 1},
        }
    )
    assert_no_validation(train(cfg, tmp_path / "run", progress=False), 24)


def test_a_causal_lm_on_train_and_val_evaluates_no_empty_val_split(tmp_path):
    torch.manual_seed(0)
    model_dir = hf_text_dir(tmp_path / "gpt2", "gpt2", causal=True)
    task = write_instruction_task(tmp_path / "task", train=16, test=8)
    cfg = load_config(
        overrides={
            "model": {"source": "hf-text", "path": str(model_dir), "task": "causal-lm"},
            "method": {"name": "lora", "r": 2},
            "data": {"name": "instructions", "root": str(task), "trainval": True, "max_length": 64},
            "train": {"epochs": 1, "batch_size": 8, "eval_every": 1},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert_no_validation(result, 16)
    assert result["metrics"]["val_perplexity"] is None and result["metrics"]["test_perplexity"] is not None
