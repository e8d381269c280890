"""Figures for a study report and a paper, drawn with matplotlib's Agg canvas (no pyplot).

Each `plot_*` function saves one figure as <name>.png (300 dpi) and <name>.pdf (TrueType
fonts embedded) in `out_dir` and returns the two paths, or returns None without drawing
anything when its data is absent; the reason is logged at INFO level and listed in the
function's docstring, for the report to say "skipped: <reason>".

Only completed runs are plotted. Colours come from one palette (`study_palette`): a hue
per method (Okabe-Ito, colour-blind safe; markers differ per method as well) and, within
a method, a shade per configuration (light to dark in sorted order, e.g. r = 4, 8, 16), and where lines
are drawn per configuration a line style per configuration of a method (solid, dashed, dotted, ...).
Pass the palette of the whole results table to every figure of a study and a
configuration has the same colour in all of them. Legends list configurations in that
sorted order. Intervals are those of `intervals.confidence_interval` (`interval`, the
Student-t interval of the mean by default); every figure says which it shows. The palette,
labels, axes and saving live in style.py; the ablation figure (a metric against one
config axis) in ablation.py; the quantization figure (accuracy lost against a quantized base's memory) in
quantization.py.
"""

import logging

import numpy as np
import pandas as pd

from peftlab.analysis.figures.labels import _label_points
from peftlab.analysis.figures.style import (
    _axis_label,
    _bytes_unit,
    _ci_errors,
    _legend_beside,
    _method_marker,
    _metric_label,
    _name,
    _new_figure,
    _palette_for,
    _seconds_unit,
    _sorted_variants,
    _variant_color,
    _variant_linestyle,
    clip_axis,
    interval_label,
    save_figure,
    seed_list,
    shared_values,
    side_by_side,
    study_palette,
)
from peftlab.analysis.figures.ticks import log_tick_labels
from peftlab.analysis.results.units import bounds as units_bounds
from peftlab.analysis.results.units import scale
from peftlab.analysis.stats.intervals import completed_runs, confidence_interval, pareto_mask, summarize
from peftlab.analysis.stats.ties import resolution
from peftlab.training.run_result import lower_is_better

logger = logging.getLogger(__name__)


def plot_accuracy_vs_params(
    df,
    out_dir,
    metric="metrics.test_top1",
    x="params.trainable",
    name="accuracy_vs_params",
    interval="t",
    labels=None,
    palette=None,
    chance=None,
):
    """Per-variant mean metric against mean trainable parameters (log x), with the interval bars.

    The Pareto front (fewer parameters, higher accuracy; for a perplexity, lower) is a dashed staircase
    through ringed points. Configurations with the same x (`shared_counts`) are drawn side by side around it
    (`side_by_side`), as the axis label says; the axis (its round ticks) and the front are those of the true
    values. ``chance``: the task's chance rate (a share), drawn as a dotted line (`chance_line`), or None. Skipped
    when no completed run has both values (x > 0).
    """
    palette = _palette_for(df, palette)
    runs = completed_runs(df)
    if metric not in runs.columns or x not in runs.columns:
        return skip_figure(name, f"the table has no {metric} or {x} column")
    runs = runs[runs[metric].notna() & (runs[x] > 0)]
    if runs.empty:
        return skip_figure(name, f"no completed run with {metric} and {x}")
    summary = summarize(runs, metric, interval=interval).set_index("variant")
    summary = summary.loc[_sorted_variants(palette, summary.index)]
    drawn = pd.Series(side_by_side(summary[x]), index=summary.index)  # x where each point is drawn
    times, sign = scale(metric), -1.0 if lower_is_better(metric) else 1.0
    crowded = len(summary) > MAX_POINT_LABELS
    fig, ax = _new_figure(*((6.5, 4.6) if crowded else (5.8, 3.4)))  # at most a paper's text width, 6.5 in
    for variant in summary.index:
        row = summary.loc[[variant]]
        ax.errorbar(
            drawn[[variant]],
            times * row["mean"],
            yerr=_ci_errors(row, times),
            fmt=_method_marker(palette, variant),
            color=_variant_color(palette, variant),
            capsize=2,
            label=_name(palette, variant, labels),
        )
    step = resolution(runs, metric)  # one test example: configurations tied at one count are all ringed
    front = summary[pareto_mask(summary[x], sign * summary["mean"], step)].sort_values(x, kind="stable")
    ax.plot(
        drawn[front.index],
        times * front["mean"],
        drawstyle="steps-post",
        linestyle="--",
        color="0.4",
        marker="o",
        markersize=11,
        markerfacecolor="none",
        zorder=0,
        label="Pareto front",
    )
    ax.set_xscale("log")
    log_tick_labels(ax.xaxis, compact=True)
    side = "\n(equal counts drawn side by side around their count)" if shared_values(summary[x]) else ""
    ax.set_xlabel(_axis_label(x) + side)
    if chance is not None:  # where the study's configurations are at chance: the rate they did not beat
        ax.axhline(times * chance, color="0.3", linestyle=":", linewidth=1.2, zorder=0, label=chance_label(chance))
    clip_axis(ax, metric)
    ax.set_ylabel(_metric_label(metric))
    ax.grid(True, alpha=0.3)
    _legend_beside(fig, ax, interval_label(interval))
    # beyond MAX_POINT_LABELS, names over every point hide them: the legend names them, the points
    # of the front keep their names (what a reader looks for first); in the study's order, as every table, the
    # legend and the text name them (the front itself runs by parameter count)
    named = summary[summary.index.isin(front.index)] if crowded else summary
    low, high = (times * summary[c].fillna(summary["mean"]) for c in ("ci_low", "ci_high"))
    names = [_name(palette, v, labels) for v in named.index]
    lines = [front_steps(drawn[front.index], times * front["mean"])]  # the lines the names keep off
    lines += [] if chance is None else [((drawn.min(), drawn.max()), (times * chance,) * 2)]
    _label_points(ax, drawn[named.index], times * named["mean"], names, bars=zip(drawn, low, high), lines=lines)
    return save_figure(fig, out_dir, name)


def front_steps(xs, ys) -> tuple[list, list]:
    """The Pareto front's staircase as drawn (steps-post) through points (xs, ys): across, then up or down."""
    steps_x, steps_y = [], []
    for i, (fx, fy) in enumerate(zip(xs, ys)):
        if i:
            steps_x.append(fx)
            steps_y.append(steps_y[-1])
        steps_x.append(fx)
        steps_y.append(fy)
    return steps_x, steps_y


def chance_label(rate: float) -> str:
    """The chance line's legend entry (and the words a caption names it by): "chance (10%)"."""
    return f"chance ({100 * rate:.3g}%)"


def shared_counts(df, metric="metrics.test_top1", x="params.trainable") -> list[tuple[float, list[str]]]:
    """The configurations `plot_accuracy_vs_params` draws side by side: (their mean `x`, their names in the
    palette's order) of each group of two or more with the same mean `x`."""
    runs = completed_runs(df)
    if metric not in runs.columns or x not in runs.columns:
        return []
    runs = runs[runs[metric].notna() & (runs[x] > 0)]
    means = runs.groupby(runs["variant"].astype(str), sort=False)[x].mean()
    return [(means[group[0]], _sorted_variants(study_palette(df), group)) for group in shared_values(means)]


MAX_POINT_LABELS = 8  # configurations named beside their points; more are named by the legend alone


def plot_convergence(
    curves, out_dir, metric="val_top1", by="variant", name="convergence", interval="t", labels=None, palette=None
):
    """Validation top-1 (or `metric`: val_perplexity) against step: mean over seeds per `by` group, band =
    the interval.

    `curves` is long: run_id, variant, method, step, val_top1 (and val_perplexity). The band is the `interval`
    of the mean over the seeds evaluated at that step (none where one seed was); a group evaluated at one step is
    a marker there (a line of one point draws nothing). Skipped
    when `curves` is None, has no finite value, or no group was evaluated at two steps
    (one evaluation per run is a point, not a curve).
    """
    if curves is None or curves.empty or metric not in curves.columns or curves[metric].isna().all():
        return skip_figure(name, "no learning curves")
    curves = curves[curves[metric].notna()]
    if curves.groupby(by)["step"].nunique().max() < 2:
        return skip_figure(name, "no learning curve: every run was evaluated at a single step")
    palette = _palette_for(curves, palette)
    fig, ax = _new_figure(5.8, 3.4)
    times = scale(metric)
    for group in _sorted_variants(palette, curves[by].unique()):
        values = curves[curves[by].astype(str) == group].groupby("step")[metric]
        steps = np.array(sorted(values.groups))
        mean = times * values.mean().reindex(steps).to_numpy()
        bounds = np.array([confidence_interval(v.to_numpy(), interval)[:2] for _, v in values])
        if units_bounds(metric) is not None:  # an accuracy's band stops at 0 and 100%
            bounds = np.clip(bounds, *units_bounds(metric))
        bounds = bounds * times
        color, style = _variant_color(palette, group), _variant_linestyle(palette, group)
        label = _name(palette, group, labels)
        once = len(steps) == 1  # evaluated at one step: a point, not a line, so its legend entry is drawn
        ax.plot(
            steps,
            mean,
            color=color,
            linestyle=style,
            linewidth=1.6,
            marker="o" if once else None,
            markersize=5,
            label=label,
            zorder=3,  # above every band
        )
        ax.fill_between(steps, bounds[:, 0], bounds[:, 1], color=color, alpha=0.12, linewidth=0, zorder=1)
    clip_axis(ax, metric)
    ax.set_xlabel("Step")
    ax.set_ylabel(_metric_label("metrics." + metric))
    ax.grid(True, alpha=0.3)
    fig.legend(
        loc="outside right upper",
        fontsize=7,
        handlelength=3.5,  # long enough to show a dash-dot line's pattern
        title=f"{interval_label(interval)}\nover seeds (band)",
        title_fontsize=7,
    )
    return save_figure(fig, out_dir, name)


# (column, panel title) of the cost figure; of a pair, the first column with values is drawn.
COST_PANELS = (
    (("timing.train_seconds", "Training time"),),
    (
        ("memory.cuda_max_allocated_bytes", "Peak GPU memory (allocated)"),
        ("memory.peak_rss_bytes", "Peak RSS of the run"),
    ),
    (("memory.base_weights_bytes", "Frozen base weights as stored"), ("memory.weights_bytes", "Model weights")),
)


def plot_cost(df, out_dir, by="variant", name="cost", labels=None, palette=None):
    """Training time and memory per `by` group: bars = mean over seeds, dots = the runs.

    Panels: training time; peak memory (CUDA allocated when measured, else the run's peak
    RSS); the weights' bytes (the base weights as stored when recorded, so quantized bases
    show their saving, else the whole model's weights). By variant rather than method: a
    method's ranks and quantization modes differ in cost. Every quantity is positive and
    each run is drawn, so nothing suggests values below zero. A panel is left out when its
    columns are absent or empty; skipped when all are.
    """
    palette = _palette_for(df, palette)
    runs = completed_runs(df)
    panels = []
    for choices in COST_PANELS:
        for column, title in choices:
            if column in runs.columns and (runs[column].astype(float) > 0).any():
                panels.append((column, title))
                break
    if not panels:
        return skip_figure(name, "no training time or memory measurements")
    groups = _sorted_variants(palette, runs[by])
    # at most a paper's text width (6.5 in), where its 7 pt print at 7 pt
    fig, axes = _new_figure(min(2.6 * len(panels) + 1.2, 6.5), 1.1 + 0.3 * len(groups), ncols=len(panels))
    axes = np.atleast_1d(axes)
    jitter = np.random.default_rng(0)
    for ax, (column, title) in zip(axes, panels):
        values = runs[column].astype(float)
        scale, unit = _seconds_unit(values.max()) if column.startswith("timing") else _bytes_unit(values.max())
        means = values.groupby(runs[by].astype(str)).mean().reindex(groups)
        ax.barh(
            range(len(groups)), means.fillna(0) / scale, color=[_variant_color(palette, g) for g in groups], height=0.7
        )
        for i, group in enumerate(groups):
            mine = values[runs[by].astype(str) == group].dropna() / scale
            if column == "memory.base_weights_bytes" and len(mine) and not mine.any():  # full fine-tuning
                ax.text(0.02 * values.max() / scale, i, "none frozen: trains every weight", va="center", fontsize=7)
                continue
            ax.scatter(
                mine,
                i + jitter.uniform(-0.18, 0.18, len(mine)),
                s=10,
                color="white",
                edgecolors="black",
                linewidths=0.6,
                zorder=3,
            )
        ax.set_yticks(range(len(groups)), [_name(palette, g, labels) for g in groups], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(left=0)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(unit)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)
    fig.suptitle("bars: mean over seeds; dots: individual runs", fontsize=7)
    return save_figure(fig, out_dir, name)


MANY_BOXES = 16  # more configurations than this: one box per row


def plot_seed_boxplots(
    df, out_dir, metric="metrics.test_top1", by="variant", name="seed_boxplots", labels=None, palette=None
):
    """Box plot of the metric across seeds per `by` group, each run drawn as a dot.

    Boxes: quartiles and median; whiskers: the most extreme runs within 1.5 IQR. A run's dot
    sits at its seed's place within the box, the same in every box (the study's seeds in order,
    as the figure's note says), so one seed can be followed across configurations. More than MANY_BOXES
    groups: one per row (48 boxes side by side were unreadable on a page). Skipped without the metric.
    """
    palette = _palette_for(df, palette)
    runs = completed_runs(df)
    if metric not in runs.columns or runs[metric].isna().all():
        return skip_figure(name, f"no completed run with {metric}")
    runs = runs[runs[metric].notna()]
    groups = _sorted_variants(palette, runs[by])
    seeds = sorted(runs["seed"].unique())
    offset = dict(zip(seeds, np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else [0.0]))
    rows = len(groups) > MANY_BOXES
    fig, ax = _new_figure(*((6.4, 1.2 + 0.22 * len(groups)) if rows else (1.5 + 0.55 * len(groups), 3.4)))
    group_runs = [runs[runs[by].astype(str) == g] for g in groups]
    times = scale(metric)
    values = [times * group[metric].to_numpy(dtype=float) for group in group_runs]
    turn = {"orientation": "horizontal"} if rows else {}
    ax.boxplot(values, positions=range(len(groups)), widths=0.5, showfliers=False, medianprops={"color": "0.2"}, **turn)
    for i, (g, group) in enumerate(zip(groups, group_runs)):
        place, score = i + group["seed"].map(offset).to_numpy(dtype=float), values[i]
        ax.scatter(
            *((score, place) if rows else (place, score)),
            s=12,
            color=_variant_color(palette, g),
            marker=_method_marker(palette, g),
            zorder=3,
            edgecolors="white",
            linewidths=0.4,
        )  # a white rim keeps neighbouring seeds apart
    names = [_name(palette, g, labels) for g in groups]
    if rows:  # the first configuration on top, as in the tables
        ax.set_yticks(range(len(groups)), names, fontsize=7)
        ax.invert_yaxis()
    else:
        ax.set_xticks(range(len(groups)), names, rotation=30, ha="right", fontsize=7)
    clip_axis(ax, metric, axis="x" if rows else "y")
    (ax.set_xlabel if rows else ax.set_ylabel)(_metric_label(metric))
    where = "top to bottom" if rows else "left to right"
    ax.set_title(f"one dot per run;\nseeds {seed_list(seeds)} from {where} in each box", fontsize=7)
    ax.grid(True, axis="x" if rows else "y", alpha=0.3)
    return save_figure(fig, out_dir, name)


def skip_figure(name, reason):
    """Log why figure ``name`` is not drawn (the report lists it under "Skipped figures"); None."""
    logger.info("skipped %s: %s", name, reason)
    return None
