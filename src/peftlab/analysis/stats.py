"""Statistics over a study's results table: summaries, paired tests, Holm, Pareto fronts.

Every function takes the results DataFrame (one row per run, columns as written by
`peftlab results`) or plain arrays, and returns numbers or a DataFrame. Only rows with
status "completed" enter the statistics; `incomplete_runs` lists the others for the report.

Decisions a reader of the numbers must know:
- Confidence intervals are 95% bootstrap intervals of the mean over seeds, BCa by default.
  BCa is undefined when all values are identical (scipy returns NaN): the percentile
  interval is used instead, which is then [v, v]. With fewer than 2 values there is no
  interval: ci_low = ci_high = NaN and ci_method = "none".
- Paired tests compare a variant with the baseline on matched seeds only.
- Paired differences, and their standard deviation, smaller than 1e-9 times the scale of
  the values (at least 1) are float noise (0.82 - 0.81 differs from 0.81 - 0.80 in the
  last bits) and are treated as exactly zero.
"""

import numpy as np
import pandas as pd
import scipy.stats

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
    "timing.train_images_per_second",
    "timing.eval_images_per_second",
)

# Wilcoxon's exact two-sided p-value cannot go below 2 / 2**n: 0.25 for n = 3,
# 0.125 for n = 4, 0.0625 for n = 5, 0.031 for n = 6.
MIN_PAIRS_WILCOXON = 5

NOISE_TOLERANCE = 1e-9


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


def bootstrap_ci(values, confidence=0.95, n_resamples=9999, seed=0):
    """Bootstrap confidence interval of the mean: (low, high, method_used).

    method_used is "BCa", "percentile" (BCa was undefined, e.g. identical values) or
    "none" (fewer than 2 finite values: low and high are NaN).
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return np.nan, np.nan, "none"
    if np.ptp(values) == 0:
        # BCa divides by zero here; the percentile interval of a constant is [v, v].
        return float(values[0]), float(values[0]), "percentile"
    for method in ("BCa", "percentile"):  # BCa can still return NaN: fall back to percentile
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


def summarize(df, metric="metrics.test_top1", by="variant", confidence=0.95, n_resamples=9999, seed=0):
    """Per-group summary of one metric over the completed runs.

    `by` is a column name or a list of them. Groups keep the order in which they first
    appear in the table. Returns one row per group with the columns:
      <by columns>, metric, n, mean, std (ddof=1, NaN when n < 2), ci_low, ci_high,
      ci_method (see `bootstrap_ci`), t_ci_low, t_ci_high (Student-t interval, see
      `t_interval`), then the mean of each column of COST_COLUMNS the
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
        low, high, ci_method = bootstrap_ci(values, confidence, n_resamples, seed)
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
        for column in cost_columns:
            row[column] = group[column].astype(float).mean()
        for column in constant_columns:
            row[column] = group[column].iloc[0]
        rows.append(row)
    columns = by + ["metric", "n", "mean", "std", "ci_low", "ci_high", "ci_method", "t_ci_low", "t_ci_high"]
    return pd.DataFrame(rows, columns=columns + cost_columns + constant_columns)


def _columns_constant_within_groups(runs, by):
    candidates = [c for c in runs.columns if (c == "method" or c.startswith("config.")) and c not in by]
    if runs.empty:
        return []
    grouped = runs[candidates].map(_hashable).groupby([runs[c] for c in by], sort=False, dropna=False)
    counts = grouped.nunique(dropna=False)
    return [c for c in candidates if (counts[c] == 1).all()]


def _hashable(value):
    # target_modules may arrive as a list from result.json.
    return tuple(value) if isinstance(value, list) else value


def holm(pvalues):
    """Holm-Bonferroni adjusted p-values, in the input order.

    NaN entries stay NaN and do not count as tests. Adjusted values are clipped to 1.
    """
    pvalues = np.asarray(pvalues, dtype=float)
    adjusted = np.full(pvalues.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(pvalues))
    m = finite.size
    order = finite[np.argsort(pvalues[finite], kind="stable")]
    stepped = (m - np.arange(m)) * pvalues[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(stepped), 1.0)
    return adjusted


def paired_comparisons(
    df,
    baseline,
    metric="metrics.test_top1",
    by="variant",
    pair_on="seed",
    alpha=0.05,
    min_pairs_wilcoxon=MIN_PAIRS_WILCOXON,
):
    """Every other group of `by` compared with `baseline` on matched `pair_on` values.

    Completed runs only; a run pairs with the baseline run that has the same `pair_on`
    value(s) (a column name or a list, e.g. ["config.data.name", "seed"]). Differences are
    variant minus baseline, so a positive mean_diff means the variant scores higher.
    Returns one row per compared group with the columns:
      metric, baseline, <by>, n_pairs, mean_baseline, mean_variant (over the pairs),
      mean_diff, sd_diff (ddof=1),
      cohens_dz: mean_diff / sd_diff; NaN when n_pairs < 2 or sd_diff is 0,
      p_ttest: scipy.stats.ttest_rel; NaN when n_pairs < 2 or all differences are equal
        (scipy would report p = 0 for a constant non-zero difference),
      p_wilcoxon: scipy.stats.wilcoxon (exact without ties or zeros, else scipy's exact
        permutation test for n <= 13); NaN when n_pairs < min_pairs_wilcoxon or all
        differences are zero,
      p_ttest_holm, p_wilcoxon_holm: Holm-adjusted across the comparisons in this table,
        each test separately,
      significant: p_ttest_holm < alpha; significant_wilcoxon: p_wilcoxon_holm < alpha,
      prob_improvement: over matched pairs, mean of 1[x > y] + 0.5 * 1[x == y],
      prob_improvement_all: the same over all (variant run, baseline run) cross pairs of
        completed runs, matched or not (rliable's P(X > Y), the Mann-Whitney U / (n m)).
    Raises ValueError when the baseline is absent or a (group, pair_on) key repeats.
    """
    pair_on = [pair_on] if isinstance(pair_on, str) else list(pair_on)
    runs = completed_runs(df)
    runs = runs[runs[metric].notna()]
    if baseline not in set(runs[by]):
        raise ValueError(
            f"baseline {baseline!r} has no completed run with {metric}; "
            f"{by} values with runs: {sorted(map(str, runs[by].unique()))}"
        )
    repeated = runs.duplicated([by] + pair_on, keep=False)
    if repeated.any():
        example = runs.loc[repeated, [by] + pair_on].iloc[0].to_dict()
        raise ValueError(
            f"several completed runs share {by} and {pair_on} (e.g. {example}); "
            "filter the table (e.g. one dataset) or pair on more columns"
        )
    baseline_runs = runs[runs[by] == baseline].set_index(pair_on)[metric]
    rows = []
    for name, group in runs[runs[by] != baseline].groupby(by, sort=False):
        variant_runs = group.set_index(pair_on)[metric]
        matched = pd.concat([variant_runs, baseline_runs], axis=1, join="inner", keys=["x", "y"])
        x = matched["x"].to_numpy(dtype=float)
        y = matched["y"].to_numpy(dtype=float)
        row = {"metric": metric, "baseline": baseline, by: name}
        row.update(compare_paired(x, y, min_pairs_wilcoxon))
        row["prob_improvement_all"] = probability_of_improvement(variant_runs.to_numpy(), baseline_runs.to_numpy())
        rows.append(row)
    columns = [
        "metric", "baseline", by, "n_pairs", "mean_baseline", "mean_variant", "mean_diff", "sd_diff",
        "cohens_dz", "p_ttest", "p_wilcoxon", "p_ttest_holm", "p_wilcoxon_holm", "significant",
        "significant_wilcoxon", "prob_improvement", "prob_improvement_all",
    ]
    table = pd.DataFrame(rows, columns=columns)
    table["p_ttest_holm"] = holm(table["p_ttest"].to_numpy(dtype=float))
    table["p_wilcoxon_holm"] = holm(table["p_wilcoxon"].to_numpy(dtype=float))
    table["significant"] = table["p_ttest_holm"] < alpha
    table["significant_wilcoxon"] = table["p_wilcoxon_holm"] < alpha
    return table


def compare_paired(x, y, min_pairs_wilcoxon=MIN_PAIRS_WILCOXON):
    """Paired statistics of x against y (same length, matched by position), as a dict.

    Keys: n_pairs, mean_baseline, mean_variant, mean_diff, sd_diff, cohens_dz, p_ttest,
    p_wilcoxon, prob_improvement (see `paired_comparisons`; x is the variant, y the baseline).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    tolerance = NOISE_TOLERANCE * max(np.abs(x).max(initial=1.0), np.abs(y).max(initial=1.0))
    diffs = np.where(np.abs(x - y) <= tolerance, 0.0, x - y)
    sd_diff = diffs.std(ddof=1) if n > 1 else np.nan
    if sd_diff <= tolerance:
        sd_diff = 0.0
    result = {
        "n_pairs": n,
        "mean_baseline": y.mean() if n else np.nan,
        "mean_variant": x.mean() if n else np.nan,
        "mean_diff": diffs.mean() if n else np.nan,
        "sd_diff": sd_diff,
        "cohens_dz": np.nan,
        "p_ttest": np.nan,
        "p_wilcoxon": np.nan,
        "prob_improvement": probability_of_improvement_paired(diffs),
    }
    if n > 1 and sd_diff > 0:
        result["cohens_dz"] = diffs.mean() / sd_diff
        result["p_ttest"] = float(scipy.stats.ttest_rel(x, y).pvalue)
    if n >= min_pairs_wilcoxon and np.any(diffs != 0):
        result["p_wilcoxon"] = float(scipy.stats.wilcoxon(diffs, method="auto").pvalue)
    return result


def probability_of_improvement_paired(diffs):
    """Mean over pairs of 1[d > 0] + 0.5 * 1[d == 0] for differences d = x - y; NaN if empty."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0:
        return np.nan
    return float(np.mean((diffs > 0) + 0.5 * (diffs == 0)))


def probability_of_improvement(x, y):
    """P(X > Y) + 0.5 P(X == Y) over all cross pairs of the samples x and y; NaN if either is empty."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return np.nan
    diffs = x[:, None] - y[None, :]
    return probability_of_improvement_paired(diffs.ravel())


def pareto_mask(x, y):
    """Boolean mask of the points not dominated when lower x and higher y are better.

    A point is dominated when another is at least as good on both axes and strictly better
    on one. Identical points do not dominate each other. Points with NaN are never on the front.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    no_worse = (x[None, :] <= x[:, None]) & (y[None, :] >= y[:, None])
    better = (x[None, :] < x[:, None]) | (y[None, :] > y[:, None])
    dominated = (no_worse & better & finite[None, :]).any(axis=1)
    return finite & ~dominated


def pareto_front(df, x="params.trainable", y="metrics.test_top1", by="variant"):
    """Per-group means of x and y over completed runs, with an `on_front` column.

    Returns columns <by>, x, y, on_front (see `pareto_mask`), sorted by x.
    """
    runs = completed_runs(df)
    means = runs.groupby(by, sort=False)[[x, y]].mean().reset_index()
    means["on_front"] = pareto_mask(means[x], means[y])
    return means.sort_values(x, kind="stable").reset_index(drop=True)
