"""The stratified bootstrap behind every interval over tasks, as in rliable (Agarwal et al., NeurIPS 2021):
scores are per-task arrays of runs, a resample draws the runs of each task with replacement, independently
per task, and the interval is the percentile interval of the resampled statistic.

Every bootstrap (these, and ``intervals.bootstrap_ci`` over seeds) uses BOOTSTRAP_RESAMPLES resamples drawn
from numpy's default_rng with the seed BOOTSTRAP_SEED, so the printed bounds do not change from one report
to the next.
"""

import numpy as np

BOOTSTRAP_RESAMPLES = 9999


BOOTSTRAP_SEED = 0


def task_arrays(scores):
    """Scores as a list of 1-D arrays, one per task.

    Accepts one task's runs (1-D), rliable's (runs x tasks) matrix, or a list of per-task
    arrays (which may differ in length). NaN scores are dropped.
    """
    if isinstance(scores, (list, tuple)) and scores and np.ndim(scores[0]) == 1:
        tasks = [np.asarray(task, dtype=float) for task in scores]
    else:
        array = np.asarray(scores, dtype=float)
        tasks = [array] if array.ndim == 1 else list(array.T)
    return [task[np.isfinite(task)] for task in tasks]


def stratified_resamples(tasks, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """For each 1-D array of ``tasks`` (n runs), an (n_resamples, n) array of its runs drawn with replacement:
    one generator seeded with ``seed`` draws them task after task, so the order of ``tasks`` fixes the draws."""
    rng = np.random.default_rng(seed)
    return [task[rng.integers(0, task.size, (n_resamples, task.size))] for task in tasks]


def percentile_interval(resampled, confidence):
    """(low, high): the two-sided percentile interval of a resampled statistic, along its first axis
    (floats for a 1-D statistic, arrays for one with more values per resample)."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail], axis=0)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high
