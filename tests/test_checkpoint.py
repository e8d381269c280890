"""A checkpoint that cannot be resumed from is one CheckpointError line, and nothing in it runs."""

import os
import pickle

import pytest
import torch

from peftlab.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint
from peftlab.errors import CheckpointError


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def valid_state() -> dict:
    return {"trainable": {"w": torch.ones(2, 2)}, "tuner": {}, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {}, "scaler": {}, "rng": rng_state(), "step": 4, "epoch": 0, "next_batch": 4,
            "bad_epochs": 0, "images_seen": 128, "best_val": -1.0, "train_seconds": 1.5, "log_lines": {}}


def test_a_valid_checkpoint_loads_and_a_missing_one_is_none(tmp_path):
    save_checkpoint(tmp_path, valid_state())
    assert load_checkpoint(tmp_path)["step"] == 4
    assert load_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize("damage, needle", [
    ("malicious-pickle", "cannot be loaded"),
    ("malicious-torch-save", "cannot be loaded"),
    ("empty", "cannot be loaded"),
    ("truncated", "cannot be loaded"),
    ("garbage", "cannot be loaded"),
    ("not-a-mapping", "holds a list"),
    ("string-step", "'step' is str"),
    ("missing-optimizer", "'optimizer' is NoneType"),
    ("negative-epoch", "negative"),
    ("nan-weights", "'w' is not a finite tensor"),
])
def test_an_unusable_checkpoint_is_one_line_and_runs_nothing(tmp_path, damage, needle):
    marker = tmp_path / "pwned"
    path = tmp_path / CHECKPOINT_NAME
    state = valid_state()
    if damage == "malicious-pickle":
        path.write_bytes(pickle.dumps(Payload(str(marker))))
    elif damage == "malicious-torch-save":
        torch.save({"step": Payload(str(marker))}, path)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        save_checkpoint(tmp_path, state)
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "not-a-mapping":
        torch.save([1, 2], path)
    else:
        if damage == "string-step":
            state["step"] = "4"
        elif damage == "missing-optimizer":
            del state["optimizer"]
        elif damage == "negative-epoch":
            state["epoch"] = -1
        elif damage == "nan-weights":
            state["trainable"]["w"][0, 0] = float("nan")
        save_checkpoint(tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert "\n" not in message and needle in message and str(path) in message, message
    assert "move it aside" in message
    assert not marker.exists()


def test_a_methods_saved_state_moves_to_the_training_device_whole():
    """Resuming on a GPU: every tensor of a method's nested state goes to the model's device."""
    from peftlab.training.checkpoint import to_device

    state = {"masks": {"q": torch.ones(3, dtype=torch.bool)}, "sens": {"q": [torch.zeros(2), torch.zeros(2)]},
             "pair": (torch.ones(1), 0.5), "history": [{"step": 3, "rank": 2}], "budget": 8}
    moved = to_device(state, torch.device("meta"))
    assert moved["masks"]["q"].is_meta and all(t.is_meta for t in moved["sens"]["q"])
    assert moved["pair"][0].is_meta and moved["pair"][1] == 0.5 and isinstance(moved["pair"], tuple)
    assert moved["history"] == state["history"] and moved["budget"] == 8
