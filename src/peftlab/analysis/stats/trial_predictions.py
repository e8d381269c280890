"""How sure each search's choice is, from its trials' kept validation predictions (``val_predictions.npy`` in each
trial run's folder, written by ``training.outcome``): ``choice_certainty`` reads them and resamples them
(``stats.choice_stability.win_shares``). Trials run before peftlab kept predictions have none: their search's
certainty is "n/a" with the reason, never an error. Files are read as data (``allow_pickle=False``)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from peftlab.analysis.stats.choice_stability import RESAMPLES, SEED, SURE_SHARE, win_shares
from peftlab.training.run_result import PREDICTION_FIELDS, VAL_PREDICTIONS
from peftlab.utils.files import read_regular_file

MAX_BYTES = 1 << 30  # 64 million examples of (label, predicted)


class Unreadable(Exception):
    """A predictions file that is no numpy array of (label, predicted)."""


def read_predictions(run_dir: Path) -> np.ndarray | None:
    """A trial run's (label, predicted) structured array; None where the run kept none (or is a link);
    ``Unreadable`` for a file that is not what peftlab writes."""
    path = Path(run_dir) / VAL_PREDICTIONS
    if path.is_symlink() or not path.is_file():
        return None
    data = read_regular_file(path, MAX_BYTES)
    if data is None:
        return None
    check_declared_size(data, path)  # before numpy allocates what the header declares
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise Unreadable(f"{path}: not a numpy array ({error})") from None
    if array.ndim != 1 or array.dtype != np.dtype(PREDICTION_FIELDS):
        raise Unreadable(f"{path}: expected a 1-d array of {PREDICTION_FIELDS}, found {array.dtype} {array.shape}")
    return array


def check_declared_size(data: bytes, path: Path) -> None:
    """``Unreadable`` when the .npy header in ``data`` is no header numpy reads, or declares a shape whose bytes are
    not the bytes that follow it (a shape of 2**40 would be allocated before the missing bytes are noticed)."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except (ValueError, OSError, EOFError) as error:
        raise Unreadable(f"{path}: not a numpy array ({error})") from None
    if dtype.hasobject:
        return  # refused by np.load without pickle, in its words
    declared, held = math.prod(shape) * dtype.itemsize, len(data) - stream.tell()
    if declared != held:
        raise Unreadable(
            f"{path}: its header declares shape {shape} of {dtype} ({declared:,} bytes), the file holds {held:,}"
        )


def choice_certainty(record: dict, directory: Path) -> dict:
    """How sure the choice of the search whose selection.json is ``record`` (in ``directory``) is:
    {"share": the chosen trial's win share or None, "uncertain": share < SURE_SHARE or None, "runner_up":
    (trial number, share) of the best other trial or None, "why": why there is no share, or None}."""
    none = {"share": None, "uncertain": None, "runner_up": None}
    chosen = record.get("chosen")
    if not chosen:
        return {**none, "why": "no trial was chosen"}
    metric = record["search"]["metric"]
    if metric != "val_top1":  # the predictions resample top-1: a search on another score chose by that score
        return {**none, "why": f"chosen by {metric}, not by the last validation top-1 the predictions give"}
    seeds = len(record["search"]["seeds"])
    trials = [t for t in record["trials"] if t["state"] == "COMPLETE" and not t.get("diverged")]
    try:
        kept = [[read_predictions(directory / "runs" / str(r)) for r in t["run_ids"]] for t in trials]
    except Unreadable as error:
        return {**none, "why": str(error)}
    if any(len(runs) != seeds or any(p is None for p in runs) for runs in kept):
        return {**none, "why": "its trials ran before peftlab kept their validation predictions"}
    correct = []
    for k in range(seeds):  # per tuning seed: every trial on the same validation examples
        labels = kept[0][k]["label"]
        if any(len(runs[k]) != len(labels) or not np.array_equal(runs[k]["label"], labels) for runs in kept):
            return {**none, "why": "its trials were scored on different validation examples"}
        if len(labels) == 0:
            return {**none, "why": "its validation split is empty"}
        correct.append(np.stack([runs[k]["predicted"] == runs[k]["label"] for runs in kept]))
    shares = win_shares(correct, RESAMPLES, SEED)
    numbers = [t["number"] for t in trials]
    if chosen["trial"] not in numbers:
        return {**none, "why": "the chosen trial has no completed runs"}
    share = float(shares[numbers.index(chosen["trial"])])
    others = [(float(s), n) for n, s in zip(numbers, shares) if n != chosen["trial"]]
    runner_up = max(others, default=None)
    return {
        "share": share,
        "uncertain": share < SURE_SHARE,
        "runner_up": None if runner_up is None else (runner_up[1], runner_up[0]),
        "why": None,
    }
