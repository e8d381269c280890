"""How sure each search's choice is, from its trials' kept validation predictions (``val_predictions.npy`` in each
trial run's folder, written by ``training.outcome``): ``choice_certainty`` reads them and resamples them
(``stats.choice_stability.win_shares``). Trials run before peftlab kept predictions have none: their search's
certainty is "n/a" with the reason, never an error. Files are read as data (``allow_pickle=False``)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from peftlab.analysis.stats.choice_stability import RESAMPLES, SEED, mc_error, seed_deviations, verdict, win_shares
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


def choice_certainty(record: dict, directory: Path, finals=None) -> dict:
    """How sure the choice of the search whose selection.json is ``record`` (in ``directory``) is. ``finals``: the
    validation top-1 (fractions) of the chosen configuration's final runs, one per seed, or None.

    Every trial that completed counts, one that fell to chance included (it was never chosen, but another split
    or seed could have ranked it first); a trial whose loss diverged has no score. Returns {"share": the chosen
    trial's share of the resamples of examples and seeds (of the examples alone without two final runs), "error":
    its Monte-Carlo standard error, "verdict": ``choice_stability.verdict``, "uncertain": verdict == "uncertain",
    "examples_share": its share of the resamples of the examples alone, "seeds": whether the seed spread is in it,
    "finals": the final runs counted, "optimism": the chosen trial's validation top-1 less their mean (the winner's
    optimism, a fraction), "sd": their seed-to-seed standard deviation, "trials": the trials counted, "at_chance":
    those of them at chance, "runner_up": (trial number, share) of the best other trial, "why": why there is no
    share, or None}."""
    none = {"share": None, "uncertain": None, "runner_up": None}
    chosen = record.get("chosen")
    if not chosen:
        return {**none, "why": "no trial was chosen"}
    metric = record["search"]["metric"]
    if metric != "val_top1":  # the predictions resample top-1: a search on another score chose by that score
        return {**none, "why": f"chosen by {metric}, not by the last validation top-1 the predictions give"}
    trials = [t for t in record["trials"] if t["state"] == "COMPLETE" and not _diverged(t)]
    if [t["number"] for t in trials] == [chosen["trial"]]:
        return {**none, "why": f"trial {chosen['trial']} was its only trial that completed without diverging"}
    correct = _correct(record, directory, trials)
    if isinstance(correct, str):
        return {**none, "why": correct}
    numbers = [t["number"] for t in trials]
    if chosen["trial"] not in numbers:
        return {**none, "why": "the chosen trial has no completed runs"}
    finals = np.asarray([] if finals is None else finals, dtype=np.float64)
    finals = finals[np.isfinite(finals)]
    spread = seed_deviations(finals)
    examples = win_shares(correct, RESAMPLES, SEED)
    shares = examples if spread is None else win_shares(correct, RESAMPLES, SEED, spread)
    index = numbers.index(chosen["trial"])
    share = float(shares[index])
    others = [(float(s), n) for n, s in zip(numbers, shares) if n != chosen["trial"]]
    runner_up = max(others, default=None)
    said = verdict(share, RESAMPLES)
    return {
        "share": share,
        "error": mc_error(share, RESAMPLES),
        "verdict": said,
        "uncertain": said == "uncertain",
        "examples_share": float(examples[index]),
        "seeds": spread is not None,
        "finals": len(finals),
        "optimism": float(chosen["value"] - finals.mean()) if len(finals) and chosen.get("value") is not None else None,
        "sd": float(finals.std(ddof=1)) if len(finals) > 1 else None,
        "trials": len(trials),
        "at_chance": sum(1 for t in trials if t.get("diverged")),
        "runner_up": None if runner_up is None else (runner_up[1], runner_up[0]),
        "why": None,
    }


def _diverged(trial: dict) -> bool:
    """A trial whose loss, gradient or weights went non-finite (``study.trials.divergence``): it has no score. One
    at chance completed, and counts."""
    return str(trial.get("diverged") or "").startswith("diverged:")


def _correct(record: dict, directory: Path, trials: list[dict]) -> list[np.ndarray] | str:
    """Per tuning seed, the (trials x examples) correctness of ``trials`` on that seed's validation examples, from
    their kept predictions; or why they cannot be compared."""
    seeds = len(record["search"]["seeds"])
    try:
        kept = [[read_predictions(directory / "runs" / str(r)) for r in t["run_ids"]] for t in trials]
    except Unreadable as error:
        return str(error)
    if any(len(runs) != seeds or any(p is None for p in runs) for runs in kept):
        return "its trials ran before peftlab kept their validation predictions"
    correct = []
    for k in range(seeds):  # per tuning seed: every trial on the same validation examples
        labels = kept[0][k]["label"]
        if any(len(runs[k]) != len(labels) or not np.array_equal(runs[k]["label"], labels) for runs in kept):
            return "its trials were scored on different validation examples"
        if len(labels) == 0:
            return "its validation split is empty"
        correct.append(np.stack([runs[k]["predicted"] == runs[k]["label"] for runs in kept]))
    return correct
