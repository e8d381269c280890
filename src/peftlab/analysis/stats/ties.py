"""Ties by the resolution of the test set: a top-1 is a count of correct test examples over the test set's
size, so two means that differ by less than one example (1/n_test; equal correct counts differ only by float
rounding) are a tie, in every order, every "best" sentence and every bold of a table. A score without such a
resolution (a perplexity, a per-token accuracy) ties only where the numbers are equal up to float rounding.
"""

from __future__ import annotations

import pandas as pd

from peftlab.analysis.results.record import split_sizes
from peftlab.analysis.results.units import tied  # noqa: F401 (stats' name for it; results reads it there)
from peftlab.analysis.stats.intervals import completed_runs

# scores that count test examples (a classifier's; a causal LM's top-1 counts tokens, not examples)
COUNTED = {"metrics.test_top1", "metrics.test_top5"}


def resolution(done: pd.DataFrame, metric: str) -> float:
    """One test example in ``metric``'s units: 1/n_test for a top-1 or top-5 of classifiers, the finest over
    the runs' recorded test sizes; 0 where the score counts no examples or no run recorded its test size."""
    if metric not in COUNTED or "metrics.test_perplexity" in done and done["metrics.test_perplexity"].notna().any():
        return 0.0
    sizes = split_sizes(done, "test")
    return 1.0 / max(sizes) if sizes and max(sizes) > 0 else 0.0


COARSE_POINTS = 0.5  # a validation split whose one example moves top-1 by this many points or more is coarse


def coarse_validation(df: pd.DataFrame, metric: str) -> list[str]:
    """A sentence where the validation split is coarse for ``metric``: a top-1 counts examples, so on a small split
    one example is a step of 100/n points and trials closer than that cannot be told apart (an empty list where the
    split is finer than COARSE_POINTS, the metric counts no examples, or no run recorded its size)."""
    sizes = split_sizes(completed_runs(df), "val") if "status" in df else []
    if metric not in ("val_top1", "best_val_top1") or not sizes or min(sizes) <= 0:
        return []
    step = 100 / min(sizes)
    if step < COARSE_POINTS:
        return []
    return [
        f"The validation split holds {min(sizes)} examples, so one example moves validation top-1 by "
        f"{step:.3g} points: trials closer than that were told apart by chance, and a choice among them is a "
        "tie-break.",
        "",
    ]
