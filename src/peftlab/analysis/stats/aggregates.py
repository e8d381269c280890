"""rliable's aggregates of algorithms over several tasks (datasets), beside the IQM and the
probability of improvement of comparisons.py: the mean and the optimality gap with their
stratified bootstrap intervals, the performance profile (the run-score distribution) with its
band, and the average rank.

Scores are per-task arrays of runs (``bootstrap.task_arrays`` takes every form), accuracies in
[0, 1]; the intervals are bootstrap.py's stratified bootstrap.
"""

import numpy as np
import pandas as pd

from peftlab.analysis.stats.bootstrap import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    percentile_interval,
    stratified_resamples,
    task_arrays,
)

PROFILE_TAUS = np.linspace(0.0, 1.0, 201)  # thresholds of the performance profile (accuracy)


def task_mean(scores) -> float:
    """rliable's ``aggregate_mean``: the mean over tasks of each task's mean run (for equal runs
    per task, the mean of the runs x tasks matrix). NaN without scores."""
    tasks = [t for t in task_arrays(scores) if t.size]
    return float(np.mean([t.mean() for t in tasks])) if tasks else np.nan


def optimality_gap(scores, gamma: float = 1.0) -> float:
    """rliable's ``aggregate_optimality_gap``: how far runs fall short of ``gamma`` (1: a perfect
    accuracy), scores above it counting as ``gamma``; lower is better."""
    tasks = [t for t in task_arrays(scores) if t.size]
    return float(gamma - np.mean([np.minimum(t, gamma).mean() for t in tasks])) if tasks else np.nan


def stratified_interval(
    statistic, scores, confidence=0.95, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED
) -> tuple[float, float]:
    """The percentile interval of ``statistic(per-task arrays)`` over stratified bootstrap resamples."""
    tasks = [t for t in task_arrays(scores) if t.size]
    if not tasks:
        return np.nan, np.nan
    draws = stratified_resamples(tasks, n_resamples, seed)
    values = np.array([statistic([d[i] for d in draws]) for i in range(n_resamples)])
    return percentile_interval(values, confidence)


def performance_profile(scores, taus=PROFILE_TAUS) -> np.ndarray:
    """rliable's run-score distribution: for each threshold tau, the fraction of runs scoring
    above tau, averaged over tasks."""
    tasks = [t for t in task_arrays(scores) if t.size]
    return np.mean([(t[:, None] > np.asarray(taus)[None, :]).mean(axis=0) for t in tasks], axis=0)


def profile_band(
    scores, taus=PROFILE_TAUS, confidence=0.95, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the performance profile over stratified bootstrap resamples."""
    tasks = [t for t in task_arrays(scores) if t.size]
    draws = stratified_resamples(tasks, n_resamples, seed)
    profiles = np.stack([performance_profile([d[i] for d in draws], taus) for i in range(n_resamples)])
    return percentile_interval(profiles, confidence)


def average_ranks(task_means: pd.DataFrame) -> pd.Series:
    """The mean over tasks (columns) of each algorithm's (row's) rank by its mean score on the task:
    1 is the best, ties share the average rank. Only algorithms with a score on every task."""
    complete = task_means.dropna()
    return complete.rank(axis=0, ascending=False, method="average").mean(axis=1)


def task_aggregates(
    scores: dict[str, list[np.ndarray]], confidence=0.95, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED
) -> pd.DataFrame:
    """Per algorithm (``scores``: algorithm -> per-task arrays, the same tasks in the same order;
    an algorithm missing a task gets NaN): mean, mean_low, mean_high, gap, gap_low, gap_high, rank."""
    rows, means = [], {}
    for algorithm, per_task in scores.items():
        row = {"algorithm": algorithm}
        complete = all(np.asarray(t).size for t in per_task)
        for name, statistic in (("mean", task_mean), ("gap", optimality_gap)):
            row[name] = statistic(per_task) if complete else np.nan
            row[f"{name}_low"], row[f"{name}_high"] = (
                stratified_interval(statistic, per_task, confidence, n_resamples, seed)
                if complete
                else (np.nan, np.nan)
            )
        means[algorithm] = [np.mean(t) if np.asarray(t).size else np.nan for t in per_task]
        rows.append(row)
    table = pd.DataFrame(rows, columns=["algorithm", "mean", "mean_low", "mean_high", "gap", "gap_low", "gap_high"])
    ranks = average_ranks(pd.DataFrame(means).T)
    table["rank"] = table["algorithm"].map(ranks)
    return table
