"""Resumable training state, written atomically (``peftlab.files``). Checkpoints
are loaded with ``torch.load(weights_only=True)``: nothing in them can run code.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from peftlab.files import write_atomic

CHECKPOINT_NAME = "last.pt"


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
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
