"""A search's trials as their runs' result.json tell them: each run's validation score (``trial_value``),
whether it diverged (``divergence``), and what selection.json keeps of a trial (``trial_record``).

Only validation metrics are read (``tune_metric.METRICS``): no test score ever enters a search.
"""

from __future__ import annotations

import math
from pathlib import Path

from peftlab.study.tuning.metric import METRICS
from peftlab.training.run_result import metric_problem, read_result

# a trial scoring at most chance + CHANCE_SE binomial standard errors (on its validation images), and
# at least MIN_CHANCE_TOLERANCE above it, is at chance: its model collapsed, it is never chosen
CHANCE_SE = 1.0
MIN_CHANCE_TOLERANCE = 0.005


def trial_value(result: dict, metric: str) -> float | None:
    """The validation score of one trial run: ``metrics[metric]`` of a completed result, never a
    test metric (``tune`` refuses those); None for a run that did not complete, or whose score is no
    finite number in its range (a damaged result.json: an inf or 1e308 would be chosen as the best)."""
    if metric not in METRICS:
        raise ValueError(f"{metric!r} is not a validation metric: expected one of {', '.join(METRICS)}")
    value = (result.get("metrics") or {}).get(metric)
    sound = value is not None and metric_problem(metric, value) is None
    return float(value) if result.get("status") == "completed" and sound else None


def divergence(result: dict) -> str | None:
    """Why a trial run counts as diverged, or None: a non-finite loss, gradient or weights (the run's
    status), or a completed run whose last validation top-1 is at chance, 1/classes plus at most
    ``CHANCE_SE`` binomial standard errors of a chance score on its validation images (a collapsed
    model predicts one class: its score is that class's share of the images)."""
    if result.get("status") == "diverged":
        return f"diverged: {result.get('error')}"
    top1 = (result.get("metrics") or {}).get("val_top1")
    data = (result.get("provenance") or {}).get("data") or {}
    classes, images = data.get("num_classes"), (data.get("split_sizes") or {}).get("val")
    if result.get("status") != "completed" or top1 is None or metric_problem("val_top1", top1):  # no score
        return None
    if not isinstance(classes, int) or classes < 2:
        return None
    chance = 1 / classes
    error = math.sqrt(chance * (1 - chance) / images) if isinstance(images, int) and images > 0 else 0.0
    tolerance = max(CHANCE_SE * error, MIN_CHANCE_TOLERANCE)
    if top1 > chance + tolerance:
        return None
    return (
        f"validation top-1 {100 * top1:.1f}% is at or below chance ({classes} classes: {100 * chance:.1f}%, "
        f"within {100 * tolerance:.1f} points)"
    )


def trial_values(trial) -> dict:
    """A trial's values: asked ones, or a waiting trial's enqueued ones."""
    return trial.params or trial.system_attrs.get("fixed_params")


def trial_records(study, directory: Path) -> list[dict]:
    return [trial_record(t, directory) for t in study.get_trials(deepcopy=False)]


def trial_record(trial, directory: Path | None = None) -> dict:
    """What selection.json keeps of a trial: no test score is ever read into it. A finished trial one of
    whose runs diverged (``divergence``, from the runs in ``directory``) says why."""
    record = {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "run_ids": trial.user_attrs.get("run_ids", []),
        "reported": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
    }
    if directory is not None and record["state"] in ("COMPLETE", "FAIL"):
        why = next(
            filter(None, (divergence(read_result(directory / "runs" / str(r)) or {}) for r in record["run_ids"])), None
        )
        if why is not None:
            record["diverged"] = why
    return record


def unchosen(records: list[dict], directory: Path) -> str:
    """Why none of a search's trials (``trial_records``) can be chosen, in words: how many failed (the first's
    error, from its run's result.json), diverged (the first's reason) or fell to chance on validation (the best's)."""
    failed, diverged, chance = [], [], []
    for record in records:
        why = record.get("diverged")
        if why is not None and why.startswith("diverged: "):
            diverged.append(why.removeprefix("diverged: "))
        elif why is not None:
            chance.append((record["value"] if isinstance(record["value"], float) else -math.inf, why))
        elif record["state"] == "FAIL":
            results = (read_result(directory / "runs" / str(run)) or {} for run in record["run_ids"])
            failed.append(next((r["error"] for r in results if isinstance(r.get("error"), str)), "no result"))
    parts = [
        f"{len(whys)} of {len(records)} {what} ({which}: {' '.join(why.split())[:300]})"
        for what, whys, which, why in (
            ("failed", failed, "the first", failed[0] if failed else ""),
            ("diverged", diverged, "the first", diverged[0] if diverged else ""),
            ("fell to chance on validation", chance, "the best", max(chance)[1] if chance else ""),
        )
        if whys
    ]
    return "; ".join(parts) or f"none of its {len(records)} trials completed"
