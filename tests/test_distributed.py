"""One run on two processes (torchrun, gloo on CPU) equals the one-process run at the same
global batch, writes only from rank 0, and resumes after every rank is killed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testkit import REPO, TINY_MODEL, cli_here, needs_fashion_mnist

from peftlab.config.schema import dump_config, load_config
from peftlab.training.distributed import Group
from peftlab.training.step import micro_pieces, piece_weights

# 195 training images in batches of 32: the last batch (3 images) splits 2 / 1 over two ranks
CONFIG = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 195, "val_subset": 64, "test_subset": 64},
    "method": {"name": "lora", "r": 4},
    "train": {
        "epochs": 1,
        "batch_size": 32,
        "eval_batch_size": 64,
        "lr": 3e-3,
        "log_every": 1,
        "ckpt_every": 2,
        "threads": 1,
    },
}


@pytest.mark.parametrize("world_size, split", [(2, 1), (1, 2), (2, 2), (3, 4)])
def test_pieces_cover_the_batches_and_weights_restore_their_mean(world_size, split):
    """Shards (torchrun) and halves (train.auto_batch) of a step's micro-batches, weighted, give
    the mean over micro-batches of each one's mean loss, averaged over ranks as DDP does."""
    group = [torch.arange(7), torch.arange(7, 12)]  # a step of two micro-batches, the second short
    values = torch.arange(12, dtype=torch.float64) ** 2
    want = sum(values[b].mean() for b in group) / len(group)
    total, seen = 0.0, []
    for rank in range(world_size):
        ranks = Group(rank, world_size)
        pieces = micro_pieces(group, split, ranks)
        weights = piece_weights(group, pieces, ranks) or [1.0] * sum(len(p) for p in pieces)
        flat = [piece for parts in pieces for piece in parts]
        total += sum(w * values[p].mean() for w, p in zip(weights, flat)) / len(flat)  # training_step's mean
        seen += [int(i) for p in flat for i in p]
    assert sorted(seen) == list(range(12))
    assert torch.isclose(total / world_size, want)
    assert piece_weights(group, micro_pieces(group, 1, Group()), Group()) is None


def torchrun(config: Path, run_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "peftlab.cli",
        "train",
        str(config),
        "--run-dir",
        str(run_dir),
        "--quiet",
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})},
    )


@pytest.mark.e2e
@needs_fashion_mnist()
def test_two_processes_train_the_one_process_run_and_resume(tmp_path):
    """Every rank killed after the checkpoint of step 4, then the same command: the two-process run ends with
    the one-process run's weights and losses (up to the order of reductions), and rank 0 alone wrote. A resume
    that lost a piece of its state (the optimizer's moments, the sampler's place) moves them past the tolerance."""
    config = tmp_path / "run.yaml"
    config.write_text(dump_config(load_config(overrides=CONFIG)))
    single = cli_here("train", str(config), "--run-dir", str(tmp_path / "single"), "--quiet")  # in this process
    assert single.returncode == 0, single.stderr
    killed = torchrun(config, tmp_path / "ddp", {"PEFTLAB_KILL_AT": "checkpoint:4"})
    assert killed.returncode != 0 and not (tmp_path / "ddp" / "result.json").exists()
    proc = torchrun(config, tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("single", "ddp"))
    assert two["status"] == "completed" and two["provenance"]["world_size"] == 2
    assert one["provenance"]["world_size"] == 1
    a, b = (load_file(str(tmp_path / d / "adapter.safetensors")) for d in ("single", "ddp"))
    assert a.keys() == b.keys()
    for key in a:  # the same steps up to the order of reductions
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    losses = [
        [
            json.loads(line)["loss"]
            for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "step"
        ]
        for d in ("single", "ddp")
    ]
    assert len(losses[0]) == len(losses[1]) == 7  # steps 1-4 before the kill, 5-7 after: each once
    assert all(abs(x - y) < 1e-4 for x, y in zip(*losses))
    # rank 0 alone wrote: one copy of every record, no file of another rank
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(
        p.name for p in (tmp_path / "single").iterdir()
    )
