"""Pretraining a base: one process per output directory."""

import threading

import pytest
from testkit import TINY_MODEL, needs_fashion_mnist

from peftlab.config.schema import load_config
from peftlab.utils import locks


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_second_pretraining_of_a_held_directory_waits_then_reuses_the_base(tmp_path):
    """While another process holds the output directory, pretrain trains nothing there (no run
    directory appears); once it is free, it trains once, and a second call reuses the weights."""
    from peftlab.training.bases.pretrain import pretrain

    cfg = load_config(
        overrides={
            "name": "pre",
            "model": TINY_MODEL,
            "method": {"name": "full"},
            "data": {"name": "fashion_mnist", "train_subset": 32, "val_subset": 16, "test_subset": 16},
            "train": {"max_steps": 2, "batch_size": 16},
        }
    )
    out, waiting, results = tmp_path / "base", threading.Event(), []
    out.mkdir()
    with locks.hold(out, "pretraining directory", "another peftlab pretrain"):
        worker = threading.Thread(
            target=lambda: results.append(pretrain(cfg, out, progress=False, on_wait=lambda text: waiting.set()))
        )
        worker.start()
        assert waiting.wait(timeout=1200), "pretrain did not wait for the held directory"
        assert not (out / "run").exists()
    worker.join(timeout=600)
    assert results and results[0]["cached"] is False and (out / results[0]["weights"]).is_file()
    assert pretrain(cfg, out, progress=False)["cached"] is True
