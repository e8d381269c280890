"""Resumable training state, written atomically (``peftlab.files``): the run's ``Position`` (its
fields are the checkpoint's keys) and the state of the weights, tuner, optimizer and RNGs, saved
by ``save`` and put back by ``restore``, the one place that knows the format. Checkpoints
are loaded with ``torch.load(weights_only=True)``: nothing in them can run code. A checkpoint
that cannot be loaded or does not hold what a resume needs (a malicious pickle, an empty or
truncated file, a string step, NaN weights) is a one-line ``CheckpointError``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from peftlab.errors import CheckpointError
from peftlab.files import one_line, write_atomic

CHECKPOINT_NAME = "last.pt"


@dataclass
class Position:
    """Where a run stands: what it has trained, and what it has spent on it (a checkpoint's keys)."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    next_batch: int = 0  # the epoch's first micro-batch not yet trained on
    best_val: float = -1.0  # best val top-1 at an epoch's end
    bad_epochs: int = 0  # epochs since it improved (train.early_stop_patience)
    images_seen: int = 0
    train_seconds: float = 0.0
    val_seconds: float = 0.0  # absent in checkpoints from before it was kept: 0.0
# what a resume reads, and its type
FIELDS = {"trainable": dict, "tuner": dict, "optimizer": dict, "scheduler": dict, "scaler": dict, "rng": dict,
          "step": int, "epoch": int, "next_batch": int, "bad_epochs": int, "images_seen": int,
          "best_val": (int, float), "train_seconds": (int, float)}


def rng_state() -> dict:
    """Python, numpy and torch RNG states in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | Path, state: dict) -> None:
    write_atomic(Path(directory) / CHECKPOINT_NAME, lambda tmp: torch.save(state, tmp))


def load_checkpoint(directory: str | Path) -> dict | None:
    """The checkpoint in ``directory`` (None when there is none), checked for what a resume reads."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - an unpickling error, EOF, a bad zip: all one line
        raise CheckpointError(path, f"it cannot be loaded ({one_line(err)[:300]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"it holds a {type(state).__name__}, expected a mapping")
    for key, kind in FIELDS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise CheckpointError(path, f"its {key!r} is {type(state.get(key)).__name__}, expected "
                                        f"{getattr(kind, '__name__', 'a number')}")
    if min(state[k] for k in ("step", "epoch", "next_batch", "bad_epochs", "images_seen")) < 0:
        raise CheckpointError(path, "it holds a negative step, epoch or position")
    for name, tensor in state["trainable"].items():
        if not isinstance(tensor, torch.Tensor) or not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(path, f"its trainable weight {name!r} is not a finite tensor")
    return state


def to_device(state, device: torch.device):
    """A checkpoint's nested state (dicts, lists, tuples of tensors and plain values) on ``device``.

    Checkpoints load onto the CPU; a method's own state (importance averages, masks) must sit
    where the model trains, or the first update after a resume on a GPU mixes devices.
    """
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: to_device(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_device(v, device) for v in state)
    return state


def save(directory: Path, position: Position, tuner, opt, log_lines: dict[str, int]) -> None:
    """The checkpoint of a run at ``position``: ``opt`` is the recipe's ``Optimization``,
    ``log_lines`` the lines of each log file it covers (a resume cuts the files back to them)."""
    save_checkpoint(directory, {
        "trainable": tuner.trainable_state_dict(), "tuner": tuner.state_dict(), "optimizer": opt.optimizer.state_dict(),
        "scheduler": opt.scheduler.state_dict(), "scaler": opt.scaler.state_dict(), **asdict(position),
        "rng": rng_state(), "log_lines": dict(log_lines)})


def restore(directory: Path, tuner, opt, device: torch.device) -> tuple[Position, dict[str, int] | None]:
    """Put the checkpoint in ``directory`` back into ``tuner``, ``opt`` and the RNGs; its position and
    log lines. A fresh ``Position`` and no lines when there is none; a checkpoint that does not fit
    this run is a one-line ``CheckpointError``."""
    saved = load_checkpoint(directory)  # checked: one line if unusable
    if saved is None:
        return Position(), {}
    try:
        tuner.load_trainable_state_dict(saved["trainable"])
        tuner.load_state_dict(to_device(saved["tuner"], device))
        opt.optimizer.load_state_dict(saved["optimizer"])
        opt.scheduler.load_state_dict(saved["scheduler"])
        opt.scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:  # another run's, or damaged
        raise CheckpointError(Path(directory) / CHECKPOINT_NAME, f"it does not fit this run ({one_line(err)[:300]})") \
            from None
    position = Position(**{f.name: saved[f.name] for f in fields(Position) if f.name in saved})
    return position, saved.get("log_lines")
