"""CPU proxies for what makes a training step safe to capture as CUDA graphs (train.compile_mode:
reduce-overhead; issue 74): the mode is refused in one line without train.compile, every training batch
has one shape (the last short batch of each epoch dropped, the step count and checkpoints agreeing), the
mode reaches torch.compile, and evaluation still sees every image. (No Python branch on tensor values in
the step's modules: tests/test_qkv_paths.py and the host-sync count of tests/test_step_shape.py.)"""

import json

import pytest
import torch
from testkit import TINY_MODEL, needs_fashion_mnist

import peftlab.training.recipe
from peftlab.config.run_ids import LATE_FIELDS
from peftlab.config.schema import load_config
from peftlab.training.run import train
from peftlab.training.step import batches_per_epoch, epoch_batches
from peftlab.utils.errors import ConfigError


def test_reduce_overhead_goes_with_train_compile_in_one_line():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"train": {"compile_mode": "reduce-overhead"}})
    assert "train.compile_mode" in str(err.value) and "unless train.compile is true" in str(err.value)
    assert "\n" not in str(err.value)
    cfg = load_config(overrides={"train": {"compile": True, "compile_mode": "reduce-overhead"}})
    assert cfg.train.compile_mode == "reduce-overhead" and LATE_FIELDS["train.compile_mode"] == "default"
    with pytest.raises(ConfigError, match="train.compile_mode"):
        load_config(overrides={"train": {"compile": True, "compile_mode": "max-autotune"}})


@pytest.mark.parametrize("n, batch", [(70, 32), (64, 32), (20, 32), (1, 1)])
def test_static_epochs_are_full_batches_of_one_size(n, batch):
    for epoch in range(3):
        batches = epoch_batches(n, batch, seed=0, epoch=epoch, static=True)
        assert len(batches) == batches_per_epoch(n, batch, static=True)
        assert len({len(b) for b in batches}) == 1 and (n < batch or len(batches[0]) == batch)
        seen = torch.cat(batches)
        assert len(seen.unique()) == len(seen)  # no image twice in an epoch
    assert [len(b) for b in epoch_batches(70, 32, 0, 0)] == [32, 32, 6]  # the default keeps every image


@needs_fashion_mnist()
def test_a_reduce_overhead_run_steps_on_batches_of_one_shape_and_evaluates_every_image(tmp_path, monkeypatch):
    """70 training images in batches of 32, two epochs: 2 steps an epoch, each of 32 images (the default would
    take 3, the last of 6); torch.compile is asked for reduce-overhead (stood in for here: the CPU compiles
    slowly); validation and test count all their images."""
    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "method": {"name": "lora", "r": 2},
            "data": {"name": "fashion_mnist", "train_subset": 70, "val_subset": 24, "test_subset": 40},
            "train": {
                "epochs": 2,
                "batch_size": 32,
                "eval_batch_size": 16,
                "compile": True,
                "compile_mode": "reduce-overhead",
                "device": "cpu",
                "threads": 1,
                "ckpt_every": 3,
            },
        }
    )
    modes, sizes = [], []
    monkeypatch.setattr(
        peftlab.training.recipe,
        "compile_model",
        lambda *args: modes.append(args[-1]) or {"used": False, "error": "stood in", "mode": args[-1], "seconds": 0},
    )
    step = peftlab.training.recipe.training_step

    def recording_step(model, tuner, micro_batches, *args, **kwargs):
        batches = list(micro_batches)
        sizes.extend(len(labels) for _, labels in batches)
        return step(model, tuner, iter(batches), *args, **kwargs)

    monkeypatch.setattr(peftlab.training.recipe, "training_step", recording_step)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result.get("error")
    assert modes == ["reduce-overhead"] and sizes == [32] * 4
    assert result["provenance"]["compile"]["mode"] == "reduce-overhead"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in records) == 4
    assert result["metrics"]["test_top1"] is not None
