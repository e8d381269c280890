"""Statistics of each configuration over its seeds: completed runs, intervals of the mean
(Student-t or bootstrap), per-configuration summaries and the Pareto front.

Every function takes the results DataFrame (one row per run, columns as written by
`peftlab results`) or plain arrays, and returns numbers or a DataFrame. Only rows with
status "completed" enter the statistics; `incomplete_runs` lists the others for the report.

Decisions a reader of the numbers must know:
- Confidence intervals are 95% intervals of the mean over seeds: the Student-t interval by
  default (`interval="t"`), or a bootstrap interval ("bca", "percentile"). With 3 to 5 seeds
  a bootstrap interval of the mean is too narrow (at n = 2 it is just the two values).
  BCa is undefined when all values are identical (scipy returns NaN): the percentile
  interval is used instead, which is then [v, v]. With fewer than 2 values there is no
  interval: ci_low = ci_high = NaN and ci_method = "none".
- An interval of a bounded metric (an accuracy, F1, Matthews: units.bounds) is cut at the ends of its
  range (a t-interval of two accuracies far apart runs past 100%); ci_clipped says where, and every
  table note and caption that shows such an interval says it was cut.
- The bootstrap's resamples and seed are bootstrap.py's BOOTSTRAP_RESAMPLES and BOOTSTRAP_SEED.

comparisons.py compares configurations with one another.
"""

import numpy as np
import pandas as pd
import scipy.stats

from peftlab.analysis.results.units import bounds
from peftlab.analysis.stats.bootstrap import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from peftlab.training.run_result import lower_is_better

COMPLETED = "completed"


# Numeric columns averaged per group by `summarize` when the table has them.
COST_COLUMNS = (
    "params.total",
    "params.trainable",
    "params.trainable_ratio",
    "memory.weights_bytes",
    "memory.peak_rss_bytes",
    "memory.cuda_max_allocated_bytes",
    "timing.train_seconds",
    "timing.train_images_per_second",  # an image run's (and, in files of earlier versions, a text run's: texts)
    "timing.eval_images_per_second",
    "timing.train_tokens_per_second",  # a text run's
    "timing.eval_tokens_per_second",
)


# report.interval in a study file -> what a caption calls it.
INTERVALS = {"t": "Student-t", "bca": "BCa bootstrap", "percentile": "percentile bootstrap"}


# Fewer seeds than this per configuration get a warning in the report.
MIN_SEEDS = 5


def completed_runs(df):
    """The rows with status "completed" (all rows when the table has no status column)."""
    if "status" not in df.columns:
        return df
    return df[df["status"] == COMPLETED]


def incomplete_runs(df):
    """The rows that are not completed, with the columns a report lists for them."""
    if "status" not in df.columns:
        return df.iloc[0:0]
    columns = [c for c in ("run_id", "variant", "seed", "status", "error") if c in df.columns]
    return df.loc[df["status"] != COMPLETED, columns].reset_index(drop=True)


def bootstrap_ci(values, confidence=0.95, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED, method="BCa"):
    """Bootstrap confidence interval of the mean: (low, high, method_used).

    method is "BCa" or "percentile". method_used is "BCa", "percentile" (asked for, or BCa
    was undefined, e.g. identical values) or "none" (fewer than 2 finite values: low and
    high are NaN).
    """
    if method not in ("BCa", "percentile"):
        raise ValueError(f"bootstrap method {method!r}: expected BCa or percentile")
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return np.nan, np.nan, "none"
    if np.ptp(values) == 0:
        # BCa divides by zero here; the percentile interval of a constant is [v, v].
        return float(values[0]), float(values[0]), "percentile"
    methods = ("BCa", "percentile") if method == "BCa" else ("percentile",)
    for method in methods:  # BCa can still return NaN: fall back to percentile
        result = scipy.stats.bootstrap(
            (values,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method=method,
            rng=np.random.default_rng(seed),
        )
        low, high = result.confidence_interval
        if method == "percentile" or (np.isfinite(low) and np.isfinite(high)):
            return float(low), float(high), method


def t_interval(values, confidence=0.95):
    """Student-t confidence interval of the mean: (low, high); NaN with fewer than 2 values.

    With 3 to 5 seeds the bootstrap interval is known to be too narrow (it cannot widen
    for the uncertainty of the standard deviation); this interval is the usual comparison.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return np.nan, np.nan
    half_width = scipy.stats.t.ppf(0.5 + confidence / 2, values.size - 1) * scipy.stats.sem(values)
    return float(values.mean() - half_width), float(values.mean() + half_width)


def confidence_interval(values, interval="t", confidence=0.95, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """The `interval` ("t", "bca" or "percentile") of the mean: (low, high, method_used).

    method_used is "t", "BCa", "percentile" or "none" (fewer than 2 values: NaN bounds).
    """
    check_interval(interval)
    if interval == "t":
        low, high = t_interval(values, confidence)
        return low, high, "t" if np.isfinite(low) else "none"
    return bootstrap_ci(values, confidence, n_resamples, seed, method="BCa" if interval == "bca" else "percentile")


def check_interval(interval):
    if interval not in INTERVALS:
        raise ValueError(f"interval {interval!r}: expected one of {', '.join(INTERVALS)}")


def describe_interval(interval="t", confidence=0.95, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """What a caption says: "95% Student-t interval of the mean over seeds" (bootstrap: resamples and seed)."""
    check_interval(interval)
    text = f"{100 * confidence:g}% {INTERVALS[interval]} interval of the mean over seeds"
    if interval != "t":
        text += f" ({n_resamples} resamples, seed {seed})"
    return text


def summarize(
    df,
    metric="metrics.test_top1",
    by="variant",
    confidence=0.95,
    n_resamples=BOOTSTRAP_RESAMPLES,
    seed=BOOTSTRAP_SEED,
    interval="t",
):
    """Per-group summary of one metric over the completed runs.

    `by` is a column name or a list of them. Groups keep the order in which they first
    appear in the table. Returns one row per group with the columns:
      <by columns>, metric, n, mean, std (ddof=1, NaN when n < 2), ci_low, ci_high,
      ci_method (the `interval` of the mean, see `confidence_interval`), t_ci_low, t_ci_high
      (the Student-t interval, whatever `interval` is), then the mean of each column of COST_COLUMNS the
      table has (same names), then every `method` / `config.*` column that is constant
      within each group (same names, the group's value).
    Runs whose metric is NaN are left out of n.
    """
    by = [by] if isinstance(by, str) else list(by)
    runs = completed_runs(df)
    runs = runs[runs[metric].notna()]
    cost_columns = [c for c in COST_COLUMNS if c in runs.columns]
    constant_columns = _columns_constant_within_groups(runs, by)
    rows = []
    for key, group in runs.groupby(by, sort=False, dropna=False):
        values = group[metric].to_numpy(dtype=float)
        low, high, ci_method = confidence_interval(values, interval, confidence, n_resamples, seed)
        row = dict(zip(by, key))
        row.update(
            metric=metric,
            n=len(values),
            mean=values.mean(),
            std=values.std(ddof=1) if len(values) > 1 else np.nan,
            ci_low=low,
            ci_high=high,
            ci_method=ci_method,
        )
        row["t_ci_low"], row["t_ci_high"] = t_interval(values, confidence)
        row["ci_clipped"] = clip_to_range(row, metric)
        for column in cost_columns:
            row[column] = group[column].astype(float).mean()
        for column in constant_columns:
            row[column] = group[column].iloc[0]
        rows.append(row)
    columns = by + ["metric", "n", "mean", "std", "ci_low", "ci_high", "ci_method", "t_ci_low", "t_ci_high"]
    columns += ["ci_clipped"]
    return pd.DataFrame(rows, columns=columns + cost_columns + constant_columns)


def clip_to_range(row: dict, metric: str) -> bool:
    """Cut the row's intervals (ci_low/ci_high, t_ci_low/t_ci_high) to the metric's range (``units.bounds``:
    an accuracy's 0 to 1): a mean of two runs far apart has a t-interval past 100%. Returns whether an end
    was cut."""
    limits = bounds(metric)
    if limits is None:
        return False
    clipped = False
    for key in ("ci_low", "ci_high", "t_ci_low", "t_ci_high"):
        value = row[key]
        if np.isfinite(value) and not limits[0] <= value <= limits[1]:
            row[key], clipped = float(np.clip(value, *limits)), True
    return clipped


def _columns_constant_within_groups(runs, by):
    """The ``method`` and ``config.*`` columns with one value (NaN and None one value too) within every group of
    ``by``: each column's values numbered (``pd.factorize``), the runs sorted by group, and a group's smallest number
    compared with its largest, all columns at once (pandas' per-group ``nunique`` took 0.17 s a call at 240 columns,
    a report's most expensive step)."""
    candidates = [c for c in runs.columns if (c == "method" or c.startswith("config.")) and c not in by]
    if runs.empty or not candidates:
        return []
    groups = runs.groupby(by, sort=False, dropna=False).ngroup().to_numpy()
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0])
    codes = np.column_stack([_value_numbers(runs[c]) for c in candidates])[order]
    same = np.minimum.reduceat(codes, starts, axis=0) == np.maximum.reduceat(codes, starts, axis=0)
    return [c for c, constant in zip(candidates, same.all(axis=0)) if constant]


def _value_numbers(column) -> np.ndarray:
    """One number per distinct value of ``column`` (lists as tuples, missing values one value)."""
    values = column.to_numpy()
    if values.dtype == object and any(isinstance(value, list) for value in values):
        values = np.array([_hashable(value) for value in values] + [None], dtype=object)[:-1]  # tuples kept whole
    return pd.factorize(values, use_na_sentinel=False)[0]


def _hashable(value):
    # target_modules may arrive as a list from result.json.
    return tuple(value) if isinstance(value, list) else value


def pareto_mask(x, y, step: float = 0.0):
    """Boolean mask of the points not dominated when lower x and higher y are better.

    A point is dominated when another is at least as good on both axes and strictly better
    on one. Identical points do not dominate each other. Points with NaN are never on the front.
    A point tied with a point of the front, at the same x and a y within ``step`` (one test example:
    ``stats.ties.resolution``) or equal up to float rounding (``units.tied``: equal correct counts), is on
    it too: a front names every configuration of a tie, wherever one of them is.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    no_worse = (x[None, :] <= x[:, None]) & (y[None, :] >= y[:, None])
    better = (x[None, :] < x[:, None]) | (y[None, :] > y[:, None])
    dominated = (no_worse & better & finite[None, :]).any(axis=1)
    front = finite & ~dominated
    close = np.isclose(y[None, :], y[:, None], rtol=1e-9, atol=1e-12) | (
        np.abs(y[None, :] - y[:, None]) < step * (1 - 1e-9)
    )
    tied = (x[None, :] == x[:, None]) & close & front[None, :]  # [i, j]: i ties front member j
    return front | (finite & tied.any(axis=1))


def pareto_front(df, x="params.trainable", y="metrics.test_top1", by="variant", step: float = 0.0):
    """Per-group means of x and y over completed runs, with an `on_front` column.

    Returns columns <by>, x, y, on_front (see `pareto_mask`, ties within ``step`` on it; where a lower y is
    better, a perplexity (`lower_is_better`), the front holds the lowest y), sorted by x.
    """
    runs = completed_runs(df)
    means = runs.groupby(by, sort=False)[[x, y]].mean().reset_index()
    means["on_front"] = pareto_mask(means[x], -means[y] if lower_is_better(y) else means[y], step)
    return means.sort_values(x, kind="stable").reset_index(drop=True)
