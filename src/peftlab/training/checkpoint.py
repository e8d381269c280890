"""Resumable training state, written atomically (``peftlab.utils.files``): the run's ``Position`` (its
fields are the checkpoint's keys) and the state of the weights, tuner, optimizer and RNGs, saved
by ``save`` and put back by ``restore``, the one place that knows the format. Checkpoints
are loaded with ``torch.load(weights_only=True)``: nothing in them can run code. A checkpoint
that cannot be loaded or does not hold what a resume needs (a malicious pickle, an empty or
truncated file, a string step, NaN weights) is a one-line ``CheckpointError``.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from peftlab.utils.errors import CheckpointError
from peftlab.utils.files import one_line, write_atomic

CHECKPOINT_NAME = "last.pt"


@dataclass
class Position:
    """Where a run stands: what it has trained, and what it has spent on it (a checkpoint's keys)."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    next_batch: int = 0  # the epoch's first micro-batch not yet trained on
    best_val: float = -1.0  # best val top-1 at an epoch's end
    bad_epochs: int = 0  # epochs since it improved (train.early_stop_patience)
    images_seen: int = 0  # training examples: images, or texts
    tokens_seen: int = 0  # a text run's training tokens, padding left out (absent in older checkpoints: 0)
    train_seconds: float = 0.0
    val_seconds: float = 0.0  # absent in checkpoints from before it was kept: 0.0
    # whole-process time: each earlier process's up to its last checkpoint, this one's from its start (absent: 0.0)
    wall_seconds: float = 0.0


# what a resume reads, and its type
FIELDS = {
    "trainable": dict,
    "tuner": dict,
    "optimizer": dict,
    "scheduler": dict,
    "scaler": dict,
    "rng": dict,
    "step": int,
    "epoch": int,
    "next_batch": int,
    "bad_epochs": int,
    "images_seen": int,
    "best_val": (int, float),
    "train_seconds": (int, float),
}
OPTIONAL_FIELDS = {"val_seconds": (int, float), "wall_seconds": (int, float), "log_lines": dict, "tokens_seen": int}


def rng_state() -> dict:
    """Python, numpy and torch RNG states in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | Path, state: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # through Python's file: a full disk is an OSError (ENOSPC), not torch's bare error
            torch.save(state, f)

    write_atomic(Path(directory) / CHECKPOINT_NAME, write)


def load_checkpoint(directory: str | Path) -> dict | None:
    """The checkpoint in ``directory`` (None when there is none), checked for what a resume reads."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        if os.path.lexists(path):  # a directory, a FIFO, a link to nothing: not a checkpoint to skip silently
            raise CheckpointError(path, "it is not a regular file")
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(path, f"it cannot be loaded ({one_line(err)[:300]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"it holds a {type(state).__name__}, expected a mapping")
    for key, kind in FIELDS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise CheckpointError(
                path,
                f"its {key!r} is {type(state.get(key)).__name__}, expected {getattr(kind, '__name__', 'a number')}",
            )
    for key, kind in OPTIONAL_FIELDS.items():  # absent in checkpoints from before they were kept
        if key in state and (not isinstance(state[key], kind) or isinstance(state[key], bool)):
            raise CheckpointError(
                path, f"its {key!r} is {type(state[key]).__name__}, expected {getattr(kind, '__name__', 'a number')}"
            )
    if min(state.get(k, 0) for k in ("step", "epoch", "next_batch", "bad_epochs", "images_seen", "tokens_seen")) < 0:
        raise CheckpointError(path, "it holds a negative step, epoch or position")
    for key in ("train_seconds", "val_seconds", "wall_seconds"):
        if not 0 <= state.get(key, 0) < math.inf:  # NaN fails both comparisons
            raise CheckpointError(path, f"its {key!r} is {state[key]!r}, expected a finite number >= 0")
    if not (state["best_val"] == -1 or 0 <= state["best_val"] <= 1):  # -1: no evaluation yet; else top-1
        raise CheckpointError(path, f"its 'best_val' is {state['best_val']!r}, expected -1 or an accuracy in [0, 1]")
    lines = state.get("log_lines", {})
    if not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in lines.items()
    ):
        raise CheckpointError(path, "its 'log_lines' is not a mapping of file names to line counts >= 0")
    for name, tensor in state["trainable"].items():
        if (
            not isinstance(tensor, torch.Tensor)
            or not tensor.is_floating_point()
            or not bool(torch.isfinite(tensor).all())
        ):
            raise CheckpointError(path, f"its trainable weight {name!r} is not a finite floating-point tensor")
    problem = rng_problem(state["rng"])
    if problem:
        raise CheckpointError(path, f"its random generator state is damaged ({problem})")
    return state


def spent_seconds(directory: str | Path) -> tuple[float, float, float | None] | None:
    """(train_seconds, val_seconds, wall_seconds) of the checkpoint in ``directory``: what the run it holds has spent
    training and validating across its resumes, and its processes' whole time, each up to its last checkpoint (None
    in a checkpoint from before it was kept); None where there is none or it cannot be read. Its tensors are mapped,
    not read (``mmap``): a stopped run's time costs no pass over its weights."""
    path = Path(directory) / CHECKPOINT_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a resume names what is wrong with it; here it only has no time to give
        return None
    if not isinstance(state, dict):
        return None
    seconds = [state.get("train_seconds"), state.get("val_seconds", 0.0)]  # val_seconds: absent in older ones
    if not all(a_duration(s) for s in seconds):
        return None
    wall = state.get("wall_seconds")
    return float(seconds[0]), float(seconds[1]), float(wall) if a_duration(wall) else None


def a_duration(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf


def rng_problem(state: dict) -> str | None:
    """What is wrong with an ``rng_state()`` read back (None: nothing): ``set_rng_state`` would crash on it."""
    python = state.get("python")
    if not (
        isinstance(python, tuple)
        and len(python) == 3
        and isinstance(python[1], tuple)
        and len(python[1]) == 625
        and all(type(x) is int for x in python[1])
    ):
        return "'python' is not Python's random state"
    numpy = state.get("numpy")
    if not isinstance(numpy, dict):
        return "'numpy' is not a mapping"
    keys = numpy.get("keys")
    if not (isinstance(keys, torch.Tensor) and keys.dtype == torch.int64 and tuple(keys.shape) == (624,)):
        return "'numpy' keys are not 624 int64 values"
    if not (
        type(numpy.get("pos")) is int
        and 0 <= numpy["pos"] <= 624
        and numpy.get("has_gauss") in (0, 1)
        and type(numpy.get("cached_gaussian")) is float
        and math.isfinite(numpy["cached_gaussian"])
    ):
        return "'numpy' pos, has_gauss or cached_gaussian is out of range"
    cuda = state.get("cuda", [])
    generators = [state.get("torch"), *(cuda if isinstance(cuda, (list, tuple)) else [cuda])]
    if not all(isinstance(g, torch.Tensor) and g.dtype == torch.uint8 and g.dim() == 1 for g in generators):
        return "'torch' or 'cuda' is not a generator state (a 1-D uint8 tensor)"
    return None


def check_fits(
    state: dict,
    directory: str | Path,
    *,
    total_steps: int,
    epochs: int,
    batches_per_epoch: int,
    grad_accum: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler,
) -> None:
    """A CheckpointError unless a loaded checkpoint (``load_checkpoint``) fits the run that resumes from
    it: counters in range and consistent with each other (a checkpoint whose counters lie would
    train the wrong steps and end "completed" with wrong results), and optimizer, schedule and
    scaler states of the shapes and types of the run's own (else the first step crashes).
    """
    path = Path(directory) / CHECKPOINT_NAME
    step, epoch, next_batch = state["step"], state["epoch"], state["next_batch"]
    steps_per_epoch = math.ceil(batches_per_epoch / grad_accum)
    for key, value, most in (
        ("step", step, total_steps),
        ("epoch", epoch, epochs),
        ("next_batch", next_batch, batches_per_epoch if epoch < epochs else 0),
        ("bad_epochs", state["bad_epochs"], epoch),
        ("images_seen", state["images_seen"], step * grad_accum * batch_size),
    ):
        if value > most:
            raise CheckpointError(path, f"its {key!r} is {value}, beyond this run's {most}")
    # each step takes grad_accum batches of an epoch; the run stops after total_steps
    expected = min(epoch * steps_per_epoch + math.ceil(next_batch / grad_accum), total_steps)
    if step != expected:
        raise CheckpointError(
            path,
            f"its 'step' {step} does not follow from epoch {epoch} and next_batch {next_batch} (expected {expected})",
        )
    problem = (
        optimizer_problem(state["optimizer"], optimizer, step)
        or like_problem(state["scheduler"], scheduler.state_dict(), "scheduler")
        or like_problem(state["scaler"], scaler.state_dict(), "scaler")
    )
    if problem is None and state["scheduler"].get("last_epoch", step) != step:
        problem = f"the scheduler is at step {state['scheduler']['last_epoch']}, the run at {step}"
    if problem is None:
        problem = schedule_problem(state, scheduler, step)
    if problem:
        raise CheckpointError(path, f"it does not fit this run ({problem})")


def schedule_problem(saved: dict, scheduler, step: int) -> str | None:
    """Learning rates that do not follow from this run's schedule at ``step`` (None: they do). The
    scheduler's base rates, each optimizer group's rate and the last rate logged are the schedule's
    own; an edited one would train on at another rate and end "completed" with other weights.
    ``scheduler`` is the run's fresh one: its base rates come from the config."""
    rates = [base * rate(step) for base, rate in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    groups = saved["optimizer"]["param_groups"]
    for where, values, expected in (
        ("the scheduler's base_lrs", saved["scheduler"].get("base_lrs"), scheduler.base_lrs),
        ("the scheduler's _last_lr", saved["scheduler"].get("_last_lr"), rates),
        ("the optimizer groups' lr", [g.get("lr") for g in groups], rates),
    ):
        if values is not None and list(values) != list(expected):
            return f"{where} is {str(list(values))[:60]}, this run's schedule at step {step} has {expected}"
    return None


def like_problem(saved, live, where: str) -> str | None:
    """What makes ``saved`` unlike ``live`` (None: nothing): keys the live state does not have, lists
    of another length, values of another type, numbers that are not finite and >= 0."""
    if isinstance(live, dict):
        if not isinstance(saved, dict):
            return f"{where} is {type(saved).__name__}, expected a mapping"
        foreign = [k for k in saved if k not in live]
        if foreign:
            return f"{where} has the foreign key {str(foreign[0])[:40]!r}"
        return next((p for k in saved if (p := like_problem(saved[k], live[k], f"{where}.{k}"))), None)
    if isinstance(live, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(live):
            return f"{where} is not a list of {len(live)}"
        return next(
            (p for i, (s, v) in enumerate(zip(saved, live)) if (p := like_problem(s, v, f"{where}[{i}]"))), None
        )
    if live is None or isinstance(live, bool):  # flags (AdamW's fused, foreach) may differ between devices
        return None if saved is None or isinstance(saved, bool) else f"{where} is {saved!r}, expected a flag"
    if isinstance(live, (int, float)):
        if isinstance(saved, bool) or not isinstance(saved, (int, float)) or not 0 <= saved < math.inf:
            return f"{where} is {str(saved)[:40]!r}, expected a finite number >= 0"
        return None
    if isinstance(live, torch.Tensor):
        ok = isinstance(saved, torch.Tensor) and saved.shape == live.shape
        return None if ok else f"{where} is not a tensor of shape {tuple(live.shape)}"
    return None if type(saved) is type(live) else f"{where} is {type(saved).__name__}, expected {type(live).__name__}"


# the optimizer settings that change the arithmetic and come from the config: a checkpoint of this
# run holds the same (the learning rate itself moves with the schedule, the scheduler is checked apart)
SAME_SETTINGS = ("initial_lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")


def optimizer_problem(saved: dict, optimizer: torch.optim.Optimizer, step: int) -> str | None:
    """What makes a saved optimizer state unfit for ``optimizer`` (None: nothing): its groups' settings
    (like ``like_problem``), and per parameter moments of the parameter's shape, finite, a second
    moment >= 0 and a step count <= the run's."""
    live = optimizer.state_dict()
    if not isinstance(saved.get("state"), dict) or not isinstance(saved.get("param_groups"), list):
        return "the optimizer state has no 'state' and 'param_groups'"
    groups = saved["param_groups"]
    if len(groups) != len(live["param_groups"]):
        return f"the optimizer has {len(groups)} parameter groups, this run {len(live['param_groups'])}"
    params = {}  # saved parameter id -> the run's parameter
    for i, (group, own, params_now) in enumerate(zip(groups, live["param_groups"], optimizer.param_groups)):
        settings = {k: v for k, v in group.items() if k != "params"} if isinstance(group, dict) else group
        problem = like_problem(settings, {k: v for k, v in own.items() if k != "params"}, f"optimizer group {i}")
        if problem:
            return problem
        changed = next((k for k in SAME_SETTINGS if k in own and settings.get(k, own[k]) != own[k]), None)
        if changed:
            return f"optimizer group {i}'s {changed} is {str(settings[changed])[:40]}, this run's {own[changed]}"
        ids = group.get("params")
        if (
            not isinstance(ids, list)
            or len(ids) != len(params_now["params"])
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in ids)
            or len(set(ids)) != len(ids)
        ):
            return f"optimizer group {i} does not hold {len(params_now['params'])} distinct parameter numbers"
        params.update(zip(ids, params_now["params"]))
    for key, values in saved["state"].items():
        param = params.get(key) if not isinstance(key, bool) and isinstance(key, (int, str)) else None
        if param is None or not isinstance(values, dict):
            return f"the optimizer state of parameter {str(key)[:40]!r} belongs to no parameter of this run"
        for name, value in values.items():
            if not isinstance(value, torch.Tensor) or not bool(torch.isfinite(value).all()):
                return f"the optimizer's {name!r} of parameter {key} is not a finite tensor"
            if value.dim() == 0:  # AdamW's step count
                if not 0 <= float(value) <= step:
                    return f"the optimizer's {name!r} of parameter {key} is {float(value)}, the run's step {step}"
            elif not value.is_floating_point():
                dtype = str(value.dtype).removeprefix("torch.")
                return f"the optimizer's {name!r} of parameter {key} is a {dtype} tensor, expected floating point"
            elif value.shape != param.shape:
                return (
                    f"the optimizer's {name!r} of parameter {key} has shape {tuple(value.shape)}, the parameter "
                    f"{tuple(param.shape)}"
                )
            elif name.endswith("_sq") and bool((value < 0).any()):
                return f"the optimizer's {name!r} of parameter {key} has negative values"
    return None


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
    save_checkpoint(
        directory,
        {
            "trainable": tuner.trainable_state_dict(),
            "tuner": tuner.state_dict(),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "scaler": opt.scaler.state_dict(),
            **asdict(position),
            "rng": rng_state(),
            "log_lines": dict(log_lines),
        },
    )


def restore(directory: Path, tuner, opt, device: torch.device, **bounds: int) -> tuple[Position, dict[str, int] | None]:
    """Put the checkpoint in ``directory`` back into ``tuner``, ``opt`` and the RNGs; its position and
    log lines. A fresh ``Position`` and no lines when there is none; a checkpoint that does not fit
    this run (``bounds``: ``check_fits``'s total_steps, epochs, batches_per_epoch, grad_accum,
    batch_size) is a one-line ``CheckpointError``."""
    saved = load_checkpoint(directory)  # checked: one line if unusable
    if saved is None:
        return Position(), {}
    check_fits(
        saved, directory, **bounds, optimizer=opt.optimizer, scheduler=opt.scheduler, scaler=opt.scaler
    )  # counters that lie: one line
    try:
        tuner.load_trainable_state_dict(saved["trainable"])
        tuner.load_state_dict(to_device(saved["tuner"], device))
        opt.optimizer.load_state_dict(saved["optimizer"])
        opt.scheduler.load_state_dict(saved["scheduler"])
        opt.scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:  # another run's, or damaged
        raise CheckpointError(
            Path(directory) / CHECKPOINT_NAME, f"it does not fit this run ({one_line(err)[:300]})"
        ) from None
    position = Position(**{f.name: saved[f.name] for f in fields(Position) if f.name in saved})
    return position, saved.get("log_lines")
