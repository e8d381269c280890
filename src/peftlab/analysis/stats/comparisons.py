"""Comparisons of configurations: paired tests on matched seeds with Holm's correction and the power of
the paired t-test (minimum detectable difference), win rate, rliable's probability of improvement and
IQM, and aggregates over tasks. Only completed runs enter (intervals.completed_runs).

Decisions a reader of the numbers must know:
- Paired tests compare a variant with the baseline on matched seeds only. Holm's correction runs within each
  comparison's family (families.py: the main table's configurations; the ablations' apart; a repeat untested).
- Each paired comparison states its minimum detectable difference (mde_80): the smallest true
  mean difference the two-sided paired t-test at the table's alpha, unadjusted for the other
  comparisons, finds with 80% power, taking the observed sd of the paired differences as the
  true one; and the pairs (seeds) that test needs for one point (pairs_for_1pt). Holm's
  correction raises the bar, so with several comparisons a difference must be larger still to
  be called significant. The power is statsmodels' TTestPower, computed with scipy's noncentral t
  (power.py).
- Probability of improvement is rliable's (Agarwal et al., 2021): P(X > Y) over all pairs
  of runs, ties counted half, averaged over tasks, with a stratified bootstrap percentile
  interval (bootstrap.py). The share of matched seeds where the variant wins is the "win rate".
- For a metric where lower is better (a perplexity: ``peftlab.training.run_result.lower_is_better``) the
  differences stay variant minus baseline, so a negative mean_diff is the better one; the win rate
  counts the seeds where the variant is lower, and the probability of improvement is P(X < Y).
- IQM is rliable's interquartile mean: the 25% trimmed mean of every run of every task.
- Paired differences, and their standard deviation, smaller than 1e-9 times the scale of
  the values (at least 1) are float noise (0.82 - 0.81 differs from 0.81 - 0.80 in the
  last bits) and are treated as exactly zero.
"""

import numpy as np
import pandas as pd
import scipy.stats

from peftlab.analysis.stats.bootstrap import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    percentile_interval,
    stratified_resamples,
    task_arrays,
)
from peftlab.analysis.stats.families import MAIN
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.analysis.stats.power import POWER, minimum_detectable_effect, pairs_needed
from peftlab.training.run_result import lower_is_better

# Wilcoxon's exact two-sided p-value cannot go below 2 / 2**n: 0.25 for n = 3,
# 0.125 for n = 4, 0.0625 for n = 5, 0.031 for n = 6.
MIN_PAIRS_WILCOXON = 5


NOISE_TOLERANCE = 1e-9

# The columns of a `paired_comparisons` table after metric, baseline and the compared group's column.
PAIRED_COLUMNS = (
    "n_pairs",
    "mean_baseline",
    "mean_variant",
    "mean_diff",
    "sd_diff",
    "cohens_dz",
    "mde_80",
    "pairs_for_1pt",
    "p_ttest",
    "p_wilcoxon",
    "p_ttest_holm",
    "p_wilcoxon_holm",
    "significant",
    "significant_wilcoxon",
    "win_rate",
    "prob_improvement",
    "prob_improvement_low",
    "prob_improvement_high",
)


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
    confidence=0.95,
    n_resamples=BOOTSTRAP_RESAMPLES,
    seed=BOOTSTRAP_SEED,
    point=0.01,
    families=None,
):
    """Every other group of `by` compared with `baseline` on matched `pair_on` values.

    Completed runs only; a run pairs with the baseline run that has the same `pair_on`
    value(s) (a column name or a list, e.g. ["config.data.name", "seed"]). Differences are
    variant minus baseline, so a positive mean_diff means the variant scores higher. A metric where
    lower is better (`lower_is_better`: a perplexity) is compared the other way round: the win rate and
    the probability of improvement count the variant's lower values as its wins.
    Returns one row per compared group with the columns:
      metric, baseline, <by>, n_pairs, mean_baseline, mean_variant (over the pairs),
      mean_diff, sd_diff (ddof=1),
      cohens_dz: mean_diff / sd_diff; NaN when n_pairs < 2 or sd_diff is 0,
      mde_80: the minimum detectable difference, in the unit of mean_diff: the smallest true mean
        difference the two-sided paired t-test at the unadjusted `alpha` finds with 80% power, if the
        differences' true sd were sd_diff (`minimum_detectable_effect` times sd_diff); NaN when
        n_pairs < 2 or sd_diff is 0. Holm's correction asks for more: after it the MDE of a table
        of several comparisons is larger,
      pairs_for_1pt: the matched pairs (seeds) the same test needs to find a true difference of
        `point` (one point of accuracy, 0.01, by default) with 80% power at sd_diff (`pairs_needed`);
        inf above MAX_PAIRS, NaN when n_pairs < 2 or sd_diff is 0,
      p_ttest: scipy.stats.ttest_rel; NaN when n_pairs < 2 or all differences are equal
        (scipy would report p = 0 for a constant non-zero difference),
      p_wilcoxon: scipy.stats.wilcoxon (exact without ties or zeros, else scipy's exact
        permutation test for n <= 13); NaN when n_pairs < min_pairs_wilcoxon or all
        differences are zero,
      family: the comparison's family (`families`: {group: its family, or None: not compared}, as
        families.comparison_families gives them; every group "main" without it),
      p_ttest_holm, p_wilcoxon_holm: Holm-adjusted across the comparisons of its family in this table,
        each test separately,
      significant: p_ttest_holm < alpha; significant_wilcoxon: p_wilcoxon_holm < alpha,
      win_rate: over matched pairs, mean of 1[x > y] + 0.5 * 1[x == y] (lower is better: x < y),
      prob_improvement, prob_improvement_low, prob_improvement_high: rliable's probability
        of improvement (lower is better: P(X < Y)) over all (variant run, baseline run) pairs of completed runs,
        matched or not, with its stratified bootstrap interval (see
        `probability_of_improvement` and `probability_of_improvement_ci`).
    Raises ValueError when the baseline is absent or a (group, pair_on) key repeats.
    """
    pair_on = [pair_on] if isinstance(pair_on, str) else list(pair_on)
    runs = completed_runs(df)
    runs = runs[runs[metric].notna()]
    check_pairing(runs, baseline, metric, by, pair_on)
    baseline_runs = runs[runs[by] == baseline].set_index(pair_on)[metric]
    sign = -1.0 if lower_is_better(metric) else 1.0  # a lower value is an improvement: P(-X > -Y)
    rows = []
    families = families or {}
    for name, group in runs[runs[by] != baseline].groupby(by, sort=False):
        if families.get(str(name), MAIN) is None:  # a repeat of another configuration: not tested
            continue
        variant_runs = group.set_index(pair_on)[metric]
        matched = pd.concat([variant_runs, baseline_runs], axis=1, join="inner", keys=["x", "y"])
        x = matched["x"].to_numpy(dtype=float)
        y = matched["y"].to_numpy(dtype=float)
        row = {"metric": metric, "baseline": baseline, by: name, "family": families.get(str(name), MAIN)}
        row.update(compare_paired(x, y, min_pairs_wilcoxon, alpha, point, lower=sign < 0))
        everything = sign * variant_runs.to_numpy(dtype=float), sign * baseline_runs.to_numpy(dtype=float)
        row["prob_improvement"] = probability_of_improvement(*everything)
        row["prob_improvement_low"], row["prob_improvement_high"] = probability_of_improvement_ci(
            *everything, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=["metric", "baseline", by, "family", *PAIRED_COLUMNS])
    return with_holm(table, alpha)


def check_pairing(runs, baseline, metric, by, pair_on):
    """ValueError when ``baseline`` has no run in ``runs`` or a (group, pair_on) key repeats."""
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


def with_holm(table, alpha):
    """Holm-corrected p-values and significance over the rows of each family of a comparisons table (its
    ``family`` column; all rows one family without it)."""
    families = table["family"] if "family" in table else pd.Series(MAIN, index=table.index)
    for column in ("p_ttest", "p_wilcoxon"):
        table[column + "_holm"] = np.nan
        for _, rows in table.groupby(families, sort=False):
            table.loc[rows.index, column + "_holm"] = holm(rows[column].to_numpy(dtype=float))
    table["significant"] = table["p_ttest_holm"] < alpha
    table["significant_wilcoxon"] = table["p_wilcoxon_holm"] < alpha
    return table


def below_detection(table):
    """The rows of a comparisons table whose difference is not significant and smaller than its MDE
    (mde_80): the seeds could not have shown a true difference of that size, so "not significant" does
    not read as "equal". A boolean Series; False where there is no MDE."""
    return ~table["significant"].astype(bool) & (table["mean_diff"].abs() < table["mde_80"])


def paired_comparisons_within(
    df, baseline, within="config.data.name", metric="metrics.test_top1", alpha=0.05, **options
):
    """`paired_comparisons` inside each value of `within` (each dataset), Holm over them all.

    In each dataset the baseline is the configuration of the same algorithm as `baseline`
    (`algorithm_name`: "full data=b" for the baseline "full data=a"); datasets where it has
    no completed run are left out. Without the column, or with one value, this is
    `paired_comparisons`. Same columns; options go to `paired_comparisons`.
    """
    runs = completed_runs(df)
    runs = runs[runs[metric].notna()]
    values = sorted(runs[within].dropna().unique(), key=str) if within in runs.columns else []
    if len(values) < 2:
        return paired_comparisons(df, baseline, metric, alpha=alpha, **options)
    base_value = runs.loc[runs["variant"] == baseline, within]
    if base_value.empty:
        raise ValueError(f"baseline {baseline!r} has no completed run with {metric}")
    algorithm = algorithm_name(baseline, base_value.iloc[0])
    tables = []
    for value in values:
        subset = runs[runs[within] == value]
        names = [v for v in subset["variant"].unique() if algorithm_name(v, value) == algorithm]
        if names:
            tables.append(paired_comparisons(subset, names[0], metric, alpha=alpha, **options))
    table = pd.concat(tables, ignore_index=True)
    return with_holm(table, alpha)


def compare_paired(x, y, min_pairs_wilcoxon=MIN_PAIRS_WILCOXON, alpha=0.05, point=0.01, lower=False):
    """Paired statistics of x against y (same length, matched by position), as a dict.

    Keys: n_pairs, mean_baseline, mean_variant, mean_diff, sd_diff, cohens_dz, mde_80,
    pairs_for_1pt, p_ttest, p_wilcoxon, win_rate (see `paired_comparisons`; x is the variant,
    y the baseline; ``lower``: a lower value wins).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    tolerance = NOISE_TOLERANCE * max(np.abs(x).max(initial=1.0), np.abs(y).max(initial=1.0))
    diffs = np.where(np.abs(x - y) <= tolerance, 0.0, x - y)
    sd_diff = diffs.std(ddof=1) if n > 1 else np.nan
    if sd_diff <= tolerance:
        sd_diff = 0.0
    mean_diff = diffs.mean() if n else np.nan
    if abs(mean_diff) <= tolerance:  # +d and -d summed in floating point: a zero difference is zero, not -1e-17
        mean_diff = 0.0
    result = {
        "n_pairs": n,
        "mean_baseline": y.mean() if n else np.nan,
        "mean_variant": x.mean() if n else np.nan,
        "mean_diff": mean_diff,
        "sd_diff": sd_diff,
        "cohens_dz": np.nan,
        "mde_80": np.nan,
        "pairs_for_1pt": np.nan,
        "p_ttest": np.nan,
        "p_wilcoxon": np.nan,
        "win_rate": win_rate(-diffs if lower else diffs),
    }
    if n > 1 and sd_diff > 0:
        result["cohens_dz"] = mean_diff / sd_diff
        result["p_ttest"] = float(scipy.stats.ttest_rel(x, y).pvalue)
        result["mde_80"] = minimum_detectable_effect(n, alpha, POWER) * sd_diff
        result["pairs_for_1pt"] = pairs_needed(point / sd_diff, alpha, POWER)
    if n >= min_pairs_wilcoxon and np.any(diffs != 0):
        result["p_wilcoxon"] = float(scipy.stats.wilcoxon(diffs, method="auto").pvalue)
    return result


def win_rate(diffs):
    """The share of matched pairs the variant wins, ties counted half: mean of 1[d > 0] + 0.5 * 1[d == 0]
    for the paired differences d = x - y; NaN if there is none."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0:
        return np.nan
    return float(np.mean((diffs > 0) + 0.5 * (diffs == 0)))


def _probability_of_improvement_resampled(x, y):
    """P(X > Y) + 0.5 P(X == Y) over all pairs, for (R, n) resamples x and (R, m) resamples y: shape (R,)."""
    greater = (x[:, :, None] > y[:, None, :]).mean(axis=(1, 2))
    equal = (x[:, :, None] == y[:, None, :]).mean(axis=(1, 2))
    return greater + 0.5 * equal


def probability_of_improvement(x, y):
    """rliable's probability of improvement of X over Y: P(X > Y) + 0.5 P(X == Y).

    Over all pairs (a run of x, a run of y) of one task, the Mann-Whitney U / (n m); with
    several tasks (a runs x tasks matrix, or a list of per-task arrays, the same tasks in the
    same order for x and y) the mean over tasks. NaN when a task has no run of x or of y.
    """
    tasks_x, tasks_y = task_arrays(x), task_arrays(y)
    if len(tasks_x) != len(tasks_y):
        raise ValueError(f"x has {len(tasks_x)} tasks and y {len(tasks_y)}")
    if not tasks_x or any(a.size == 0 or b.size == 0 for a, b in zip(tasks_x, tasks_y)):
        return np.nan
    return float(
        np.mean([_probability_of_improvement_resampled(a[None], b[None])[0] for a, b in zip(tasks_x, tasks_y)])
    )


def probability_of_improvement_ci(x, y, confidence=0.95, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """rliable's stratified bootstrap interval of `probability_of_improvement`: (low, high).

    Each resample draws, within every task, the runs of x and the runs of y independently
    with replacement (rliable's StratifiedIndependentBootstrap); the interval is the
    percentile interval of the resampled statistic. NaN when the statistic is.
    """
    tasks_x, tasks_y = task_arrays(x), task_arrays(y)
    if not np.isfinite(probability_of_improvement(tasks_x, tasks_y)):
        return np.nan, np.nan
    # x's and y's runs of each task, task after task: [x_1, y_1, x_2, y_2, ...]
    draws = stratified_resamples([t for pair in zip(tasks_x, tasks_y) for t in pair], n_resamples, seed)
    resampled = np.zeros(n_resamples)
    for a_star, b_star in zip(draws[::2], draws[1::2]):
        resampled += _probability_of_improvement_resampled(a_star, b_star)
    return percentile_interval(resampled / len(tasks_x), confidence)


def iqm(scores):
    """rliable's interquartile mean: the 25% trimmed mean of every run of every task pooled
    (scipy.stats.trim_mean with proportiontocut=0.25). Takes what `probability_of_improvement` takes."""
    pooled = np.concatenate(task_arrays(scores)) if task_arrays(scores) else np.array([])
    return float(scipy.stats.trim_mean(pooled, 0.25)) if pooled.size else np.nan


def iqm_ci(scores, confidence=0.95, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """rliable's stratified bootstrap interval of `iqm`: runs resampled with replacement within
    each task; percentile interval. (low, high); NaN when there is no score."""
    tasks = [task for task in task_arrays(scores) if task.size]
    if not tasks:
        return np.nan, np.nan
    resampled = np.concatenate(stratified_resamples(tasks, n_resamples, seed), axis=1)
    return percentile_interval(scipy.stats.trim_mean(resampled, 0.25, axis=1), confidence)


def algorithm_name(variant, task_value):
    """A variant's label without its dataset: "lora r=8 data=cifar10" -> "lora r=8".

    Study labels name an axis value as "data=<name>" (peftlab.study.spec); a configuration
    run on several datasets is one algorithm evaluated on several tasks.
    """
    return " ".join(part for part in str(variant).split() if part != f"data={task_value}")


def scores_over_tasks(df, metric="metrics.test_top1", task="config.data.name"):
    """(tasks, {algorithm: [its completed runs' scores on each task]}), algorithms in order of first
    appearance; an algorithm is a variant without its dataset (`algorithm_name`)."""
    runs = completed_runs(df)
    runs = runs[runs[metric].notna()]
    tasks = sorted(runs[task].dropna().unique(), key=str)
    runs = runs.assign(algorithm=[algorithm_name(v, t) for v, t in zip(runs["variant"], runs[task])])
    scores = {
        algorithm: [group.loc[group[task] == t, metric].to_numpy(dtype=float) for t in tasks]
        for algorithm, group in runs.groupby("algorithm", sort=False)
    }
    return tasks, scores


def aggregate_over_tasks(
    df,
    metric="metrics.test_top1",
    task="config.data.name",
    baseline=None,
    confidence=0.95,
    n_resamples=BOOTSTRAP_RESAMPLES,
    seed=BOOTSTRAP_SEED,
):
    """rliable's aggregates of each algorithm over the tasks (datasets) of a study.

    An algorithm is a variant without its dataset (`algorithm_name`). Returns one row per
    algorithm, in order of first appearance, with the columns: algorithm, n_tasks, n_runs,
    iqm, iqm_low, iqm_high (`iqm` and `iqm_ci` over every completed run of every task), and
    prob_improvement, prob_improvement_low, prob_improvement_high (over the baseline
    algorithm, averaged over tasks; NaN for the baseline itself or when `baseline` is None).
    An algorithm without runs on every task of the study gets NaN aggregates: rliable's
    aggregates compare algorithms on the same tasks. `baseline` may be an algorithm or a
    variant name.
    """
    tasks, scores = scores_over_tasks(df, metric, task)
    if baseline is not None and baseline not in scores:
        baseline = next(
            (algorithm_name(baseline, t) for t in tasks if algorithm_name(baseline, t) != baseline), baseline
        )
    rows = []
    for algorithm, per_task in scores.items():
        complete = all(task_scores.size for task_scores in per_task)
        row = {
            "algorithm": algorithm,
            "n_tasks": sum(task_scores.size > 0 for task_scores in per_task),
            "n_runs": sum(task_scores.size for task_scores in per_task),
        }
        row["iqm"] = iqm(per_task) if complete else np.nan
        row["iqm_low"], row["iqm_high"] = (
            iqm_ci(per_task, confidence, n_resamples, seed) if complete else (np.nan, np.nan)
        )
        row["prob_improvement"] = row["prob_improvement_low"] = row["prob_improvement_high"] = np.nan
        if complete and baseline in scores and algorithm != baseline:
            row["prob_improvement"] = probability_of_improvement(per_task, scores[baseline])
            row["prob_improvement_low"], row["prob_improvement_high"] = probability_of_improvement_ci(
                per_task, scores[baseline], confidence, n_resamples, seed
            )
        rows.append(row)
    columns = [
        "algorithm",
        "n_tasks",
        "n_runs",
        "iqm",
        "iqm_low",
        "iqm_high",
        "prob_improvement",
        "prob_improvement_low",
        "prob_improvement_high",
    ]
    return pd.DataFrame(rows, columns=columns)
