"""The report's "Across datasets" section, for a study whose configurations ran on several datasets:
rliable's aggregates of each configuration over the datasets (IQM, mean, optimality gap, average rank,
probability of improvement over the baseline; comparisons.py, aggregates.py) and the performance-profile
figure (the run-score distribution with its stratified bootstrap band).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from peftlab.analysis.figures.study import skip_figure
from peftlab.analysis.figures.style import _new_figure, _variant_color, _variant_linestyle, save_figure, study_palette
from peftlab.analysis.results.units import display_name, markdown_name
from peftlab.analysis.stats.aggregates import PROFILE_TAUS, performance_profile, profile_band, task_aggregates
from peftlab.analysis.stats.comparisons import aggregate_over_tasks, algorithm_name, scores_over_tasks
from peftlab.analysis.stats.intervals import completed_runs


def report_section(
    df: pd.DataFrame,
    baseline: str | None,
    labels: dict,
    out: Path,
    metric: str = "metrics.test_top1",
    task: str = "config.data.name",
) -> list[str]:
    """The "Across datasets" section of report.md (and its figure in ``out/figures``); [] for a study of one dataset."""
    done = completed_runs(df)
    if task not in done or done[task].nunique() < 2:
        return []
    table = aggregate_over_tasks(df, metric, task, baseline)
    tasks, scores = scores_over_tasks(df, metric, task)
    more = task_aggregates(scores).set_index("algorithm")
    lines = [
        "## Across datasets",
        "",
        f"rliable's aggregates over the {len(tasks)} datasets (test top-1, %): the interquartile mean "
        "(IQM, the 25% trimmed mean of every run on every dataset), the mean over datasets, the optimality "
        "gap (how far runs fall short of 100%; lower is better), each with its 95% stratified bootstrap "
        "interval (runs resampled within each dataset); the average rank over datasets (1 is the best "
        "mean on a dataset); and the probability of improvement over the baseline averaged over datasets.",
        "",
        "| configuration | datasets | runs | IQM [95% CI] | mean [95% CI] | optimality gap [95% CI] | "
        "average rank | P(X > baseline) [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def interval(value, low, high, scale=100.0, digits=1) -> str:
        return (
            "n/a (not on every dataset)"
            if pd.isna(value)
            else f"{scale * value:.{digits}f} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
        )

    for row in table.itertuples():
        extra = more.loc[row.algorithm]
        poi = (
            "–"
            if pd.isna(row.prob_improvement)
            else interval(row.prob_improvement, row.prob_improvement_low, row.prob_improvement_high, 1.0, 2)
        )
        rank = "–" if pd.isna(extra["rank"]) else f"{extra['rank']:.2f}"
        lines.append(
            f"| {markdown_name(row.algorithm, None, labels)} | {row.n_tasks} | {row.n_runs} | "
            f"{interval(row.iqm, row.iqm_low, row.iqm_high)} | "
            f"{interval(extra['mean'], extra['mean_low'], extra['mean_high'])} | "
            f"{interval(extra['gap'], extra['gap_low'], extra['gap_high'])} | {rank} | {poi} |"
        )
    return lines + [""] + profile_lines(df, scores, labels, out, task)


def profile_lines(df: pd.DataFrame, scores: dict, labels: dict, out: Path, task: str) -> list[str]:
    """The performance-profile figure of the configurations that ran on every dataset."""
    runs = completed_runs(df)
    variant_of = {algorithm_name(v, t): v for v, t in zip(runs["variant"], runs[task])}
    profiles = {
        a: (PROFILE_TAUS, performance_profile(s), *profile_band(s), variant_of[a])
        for a, s in scores.items()
        if all(t.size for t in s)
    }
    paths = plot_performance_profile(
        profiles, out / "figures", palette=study_palette(df), names={a: display_name(a, None, labels) for a in profiles}
    )
    if not paths:
        return []
    return [
        "### Performance profile across datasets",
        "",
        "![Performance profile](figures/performance_profile.png)",
        "",
        "For each threshold τ, the fraction of a configuration's runs whose test top-1 exceeds τ, averaged over "
        "the datasets (rliable's run-score distribution); band: 95% stratified bootstrap interval. A curve "
        "above another is better at every threshold.",
        "",
    ]


def plot_performance_profile(profiles, out_dir, name="performance_profile", palette=None, names=None):
    """rliable's performance profile across datasets: for each algorithm, the fraction of its runs
    (averaged over datasets) whose test top-1 exceeds a threshold, with the 95% stratified bootstrap
    band. ``profiles``: algorithm -> (thresholds, profile, low, high, a variant of it for its colour)."""
    if not profiles:
        return skip_figure(name, "no configuration ran on every dataset")
    fig, ax = _new_figure(4.8, 3.2)
    lows, highs = [], []
    for algorithm, (taus, profile, low, high, variant) in profiles.items():
        color = _variant_color(palette, variant)
        ax.plot(
            100 * taus,
            profile,
            color=color,
            linestyle=_variant_linestyle(palette, variant),
            label=(names or {}).get(algorithm, algorithm),
            linewidth=1.4,
            drawstyle="steps-post",
        )  # a fraction of runs: a step function of the threshold
        ax.fill_between(100 * taus, low, high, color=color, alpha=0.18, linewidth=0, step="post")
        varying = np.flatnonzero((profile > 0) & (profile < 1))
        if varying.size:
            lows.append(taus[max(varying[0] - 2, 0)])
            highs.append(taus[min(varying[-1] + 2, taus.size - 1)])
    if lows:
        ax.set_xlim(100 * min(lows), 100 * max(highs))
    ax.set_xlabel("Test top-1 threshold τ (%)")
    ax.set_ylabel("Fraction of runs above τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, frameon=False, handlelength=3.5)
    return save_figure(fig, out_dir, name)
