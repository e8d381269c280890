"""How sure each search's choice is, from what its trials kept of their validation split (written by
``training.outcome`` in each trial run's folder): a classifier's predictions (``val_predictions.npy``, one (label,
predicted) per example), which give top-1, F1 and the Matthews correlation, and a causal LM's losses
(``val_losses.npy``, one (summed token NLL, scored tokens) per sequence), which give its perplexity.
``choice_certainty`` reads them and resamples them (``stats.choice_stability``). Trials run before peftlab kept
them have none: their search's certainty is "n/a" with the reason, never an error. Files are read as data
(``allow_pickle=False``), a link or a file that is not what peftlab writes refused in one line (``Unreadable``)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from peftlab.analysis.stats.choice_stability import (
    RESAMPLES,
    SEED,
    confusion_scorer,
    mc_error,
    perplexity_scorer,
    resampled_wins,
    seed_deviations,
    verdict,
    win_shares,
)
from peftlab.training.run_result import LOSS_FIELDS, PREDICTION_FIELDS, VAL_LOSSES, VAL_PREDICTIONS, lower_is_better
from peftlab.utils.files import read_regular_file

MAX_BYTES = 1 << 30  # 64 million examples of (label, predicted), or of (nll, tokens)
# the search metrics whose choice the kept files recompute: the last validation of each trial, never its best
RESAMPLED = ("val_top1", "val_f1", "val_matthews", "val_perplexity")


class Unreadable(Exception):
    """A kept file that is no numpy array of the fields peftlab writes in it."""


def read_predictions(run_dir: Path) -> np.ndarray | None:
    """A trial run's (label, predicted) structured array; None where the run kept none (or is a link);
    ``Unreadable`` for a file that is not what peftlab writes."""
    return read_kept(Path(run_dir) / VAL_PREDICTIONS, PREDICTION_FIELDS)


def read_losses(run_dir: Path) -> np.ndarray | None:
    """A causal LM trial run's (nll, tokens) structured array, one per validation sequence; None where the run kept
    none (or is a link); ``Unreadable`` for a file that is not what peftlab writes (a NaN, a negative count)."""
    path = Path(run_dir) / VAL_LOSSES
    array = read_kept(path, LOSS_FIELDS)
    if array is not None and not (np.isfinite(array["nll"]).all() and (array["nll"] >= 0).all()):
        raise Unreadable(f"{path}: expected each sequence's summed NLL finite and >= 0")
    if array is not None and (array["tokens"] < 0).any():
        raise Unreadable(f"{path}: expected each sequence's scored tokens >= 0")
    return array


def read_kept(path: Path, fields: list) -> np.ndarray | None:
    """The 1-d structured array of ``fields`` at ``path``; None where there is none (or a link)."""
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
    if array.ndim != 1 or array.dtype != np.dtype(fields):
        raise Unreadable(f"{path}: expected a 1-d array of {fields}, found {array.dtype} {array.shape}")
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


def choice_certainty(record: dict, directory: Path, finals=None, text: bool = False) -> dict:
    """How sure the choice of the search whose selection.json is ``record`` (in ``directory``) is. ``finals``: the
    search metric's validation value (top-1, F1 and Matthews as fractions, a perplexity as it is) of the chosen
    configuration's final runs, one per seed, or None; ``text``: the study's data is text (its examples are called
    sequences, as a causal LM's always are).

    Every trial that completed counts, one that fell to chance included (it was never chosen, but another split
    or seed could have ranked it first); a trial whose loss diverged has no score. Returns {"share": the chosen
    trial's share of the resamples of examples and seeds (of the examples alone without two final runs), "error":
    its Monte-Carlo standard error, "verdict": ``choice_stability.verdict``, "uncertain": verdict == "uncertain",
    "examples_share": its share of the resamples of the examples alone, "seeds": whether the seed spread is in it,
    "finals": the final runs counted, "optimism": the chosen trial's validation value less their mean (the
    winner's optimism, in the metric's units as stored), "sd": their seed-to-seed standard deviation, "trials": the
    trials counted, "at_chance": those of them at chance, "runner_up": (trial number, share) of the best other
    trial, "metric": the search's metric, "noun": what its resamples draw ("examples" or "sequences"), "why": why
    there is no share, or None}."""
    none = {"share": None, "uncertain": None, "runner_up": None}
    chosen = record.get("chosen")
    if not chosen:
        return {**none, "why": "no trial was chosen"}
    metric = record["search"]["metric"]
    if metric not in RESAMPLED:  # the kept files give each trial's last validation: a best over them is not in them
        return {**none, "why": f"chosen by {metric}, not by the last validation top-1 the predictions give"}
    trials = [t for t in record["trials"] if t["state"] == "COMPLETE" and not _diverged(t)]
    if [t["number"] for t in trials] == [chosen["trial"]]:
        return {**none, "why": f"trial {chosen['trial']} was its only trial that completed without diverging"}
    shares_of = _resampler(record, directory, trials)
    if isinstance(shares_of, str):
        return {**none, "why": shares_of}
    numbers = [t["number"] for t in trials]
    if chosen["trial"] not in numbers:
        return {**none, "why": "the chosen trial has no completed runs"}
    finals = np.asarray([] if finals is None else finals, dtype=np.float64)
    finals = finals[np.isfinite(finals) & ((finals > 0) | (metric != "val_perplexity"))]
    spread = seed_deviations(np.log(finals) if metric == "val_perplexity" else finals)  # in the additive units
    examples = shares_of(None)
    shares = examples if spread is None else shares_of(spread)
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
        "metric": metric,
        "noun": "sequences" if text or metric == "val_perplexity" else "examples",
        "why": None,
    }


def _diverged(trial: dict) -> bool:
    """A trial whose loss, gradient or weights went non-finite (``study.trials.divergence``): it has no score. One
    at chance completed, and counts."""
    return str(trial.get("diverged") or "").startswith("diverged:")


def _resampler(record: dict, directory: Path, trials: list[dict]):
    """A function of the seed deviations (None: the examples alone) giving each of ``trials``' win share under the
    search's metric, from their kept files; or why there is none."""
    metric = record["search"]["metric"]
    if metric == "val_perplexity":
        kept = _losses(record, directory, trials)
        if isinstance(kept, str):
            return kept
        sizes = [len(tokens) for _, tokens in kept]
        scorers = [perplexity_scorer(nll, tokens) for nll, tokens in kept]
    else:
        kept = _predictions(record, directory, trials)
        if isinstance(kept, str):
            return kept
        if metric == "val_top1":  # each trial's correctness, resampled as one matrix product
            correct = [predicted == labels for labels, predicted in kept]
            return lambda spread: win_shares(correct, RESAMPLES, SEED, spread)
        score = metric.removeprefix("val_")
        if score == "f1" and not all(np.isin(labels, (0, 1)).all() and np.isin(p, (0, 1)).all() for labels, p in kept):
            return "F1 of class 1 is a two-class score, and its trials' predictions hold classes other than 0 and 1"
        sizes = [len(labels) for labels, _ in kept]
        scorers = [confusion_scorer(score, labels, predicted) for labels, predicted in kept]
    lower = lower_is_better(metric)  # a perplexity: its log is what a seed deviation moves
    return lambda spread: resampled_wins(sizes, len(trials), scorers, RESAMPLES, SEED, spread, lower, log=lower)


def _kept(record: dict, directory: Path, trials: list[dict], read) -> list[list[np.ndarray]] | str | None:
    """Per trial, per tuning seed, what ``read`` reads of its run; None where a run kept none; the error's line
    where one is ``Unreadable``."""
    seeds = len(record["search"]["seeds"])
    try:
        kept = [[read(directory / "runs" / str(r)) for r in t["run_ids"]] for t in trials]
    except Unreadable as error:
        return str(error)
    if any(len(runs) != seeds or any(p is None for p in runs) for runs in kept):
        return None
    return kept


def _predictions(record: dict, directory: Path, trials: list[dict]) -> list[tuple] | str:
    """Per tuning seed, (labels (examples,), predicted (trials x examples)) of ``trials`` on that seed's validation
    examples, from their kept predictions; or why they cannot be compared."""
    kept = _kept(record, directory, trials, read_predictions)
    if kept is None:
        if all((directory / "runs" / str(r) / VAL_LOSSES).is_file() for t in trials for r in t["run_ids"]):
            return (
                f"a causal LM's validation top-1 is per token, and its trials keep each sequence's loss ({VAL_LOSSES})"
            )
        return "its trials ran before peftlab kept their validation predictions"
    aligned = kept if isinstance(kept, str) else _aligned(kept, "label", "examples")
    if isinstance(aligned, str):
        return aligned
    return [(labels, np.stack([runs[k]["predicted"] for runs in kept])) for k, labels in enumerate(aligned)]


def _losses(record: dict, directory: Path, trials: list[dict]) -> list[tuple] | str:
    """Per tuning seed, (nll (trials x sequences), tokens (sequences,)) of ``trials`` on that seed's validation
    sequences, from their kept losses; or why they cannot be compared."""
    kept = _kept(record, directory, trials, read_losses)
    if kept is None:
        return f"its trials ran before peftlab kept their validation sequences' losses ({VAL_LOSSES})"
    aligned = kept if isinstance(kept, str) else _aligned(kept, "tokens", "sequences")
    if isinstance(aligned, str):
        return aligned
    if not all(tokens.any() for tokens in aligned):
        return "its validation sequences have no scored token"
    return [(np.stack([runs[k]["nll"] for runs in kept]), tokens) for k, tokens in enumerate(aligned)]


def _aligned(kept: list[list[np.ndarray]], key: str, noun: str) -> list[np.ndarray] | str:
    """Per tuning seed, the first trial's ``key`` column (labels, a sequence's tokens), where every trial's kept
    file holds the same (the same validation ``noun`` in the same order); or why the trials cannot be compared."""
    columns = []
    for k in range(len(kept[0])):  # per tuning seed: every trial on the same validation examples
        column = kept[0][k][key]
        if any(len(runs[k]) != len(column) or not np.array_equal(runs[k][key], column) for runs in kept):
            return f"its trials were scored on different validation {noun}"
        if len(column) == 0:
            return "its validation split is empty"
        columns.append(column)
    return columns
