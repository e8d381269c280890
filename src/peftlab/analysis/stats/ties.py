"""Ties by the resolution of the test set: a top-1 is a count of correct test examples over the test set's
size, so two means that differ by less than one example (1/n_test; equal correct counts differ only by float
rounding) are a tie, in every order, every "best" sentence and every bold of a table. A score without such a
resolution (a perplexity, a per-token accuracy) ties only where the numbers are equal up to float rounding.
"""

from __future__ import annotations

import math

import pandas as pd

from peftlab.analysis.results.record import split_sizes

# scores that count test examples (a classifier's; a causal LM's top-1 counts tokens, not examples)
COUNTED = {"metrics.test_top1", "metrics.test_top5"}


def resolution(done: pd.DataFrame, metric: str) -> float:
    """One test example in ``metric``'s units: 1/n_test for a top-1 or top-5 of classifiers, the finest over
    the runs' recorded test sizes; 0 where the score counts no examples or no run recorded its test size."""
    if metric not in COUNTED or "metrics.test_perplexity" in done and done["metrics.test_perplexity"].notna().any():
        return 0.0
    sizes = split_sizes(done, "test")
    return 1.0 / max(sizes) if sizes and max(sizes) > 0 else 0.0


def tied(a: float, b: float, step: float = 0.0) -> bool:
    """Whether two means are a tie: they differ by less than ``step`` (one test example, ``resolution``) or
    only by float rounding."""
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return True
    return abs(a - b) < step * (1 - 1e-9)
