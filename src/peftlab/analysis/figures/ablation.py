"""The ablation figure of a report and a paper: a metric against one config axis.

Drawn as figures.py's plots are (its docstring: one palette, the interval bars of
`intervals.confidence_interval`, PNG and PDF, None with the reason logged when the data is
absent); methods the axis does not apply to are reference lines.
"""

import numpy as np
import pandas as pd

from peftlab.analysis.figures.study import skip_figure
from peftlab.analysis.figures.style import (
    LINESTYLES,
    SERIES_COLUMNS,
    _axis_label,
    _axis_value,
    _ci_errors,
    _dodge,
    _log_scale,
    _metric_label,
    _name,
    _new_figure,
    _palette_for,
    _pooled_columns,
    _series_text,
    _set_numeric_axis,
    _sorted_variants,
    _variant_color,
    clip_axis,
    figure_name,
    interval_label,
    save_figure,
)
from peftlab.analysis.results.units import natural_key, scale
from peftlab.analysis.stats.intervals import completed_runs, summarize
from peftlab.analysis.stats.rank_trend import axis_variants


def axis_methods(runs, axis):
    """The methods a config axis applies to: those whose completed runs take 2 or more values
    of it. The others (full fine-tuning on a rank axis: its method.r is the base config's,
    unused) are drawn as reference lines."""
    values = runs[axis].map(_axis_value)
    counts = values.groupby(runs["method"]).nunique() if "method" in runs.columns else pd.Series(dtype=int)
    return [m for m, n in counts.items() if n >= 2]


def runs_of_axis(runs, axis):
    """The runs of the study groups (``groups`` of spec.json: main and each of ``ablations:``) that
    vary ``axis`` among their own axes, so a rank ablation (r with alpha = 2r set beside it) is not
    pooled with an alpha ablation at r = 8, with every other configuration that lies on such a ladder
    (``rank_trend.axis_variants``: LoRA's own r = 8 beside an ablation of r = 2 and 16); all runs when the table
    does not say which group varies it."""
    if "groups" not in runs.columns or "axes" not in runs.columns:
        return runs
    split = lambda cell: cell.split(",") if isinstance(cell, str) and cell else []  # load.py joins them
    groups, axes = runs["groups"].map(split), runs["axes"].map(split)
    key = axis.removeprefix("config.")
    varying = {g for gs, keys in zip(groups, axes) if key in keys for g in gs}
    if not varying:
        return runs
    chosen = groups.map(lambda gs: bool(varying & set(gs)))
    if "method" in runs.columns:  # and the configurations that lie on a ladder, the method's own setting included
        on = {v for m in runs.loc[chosen, "method"].unique() for v in axis_variants(runs, axis, m).values()}
        chosen |= runs["variant"].isin(on)
    return runs[chosen]


def draws_references(df, axis, metric="metrics.test_top1") -> bool:
    """Whether ``plot_ablation`` draws reference lines for this axis: some completed run of the groups that vary
    it belongs to a method the axis does not apply to (a caption promises dashed lines only then)."""
    runs = completed_runs(df)
    if axis not in runs.columns or metric not in runs.columns:
        return False
    runs = runs_of_axis(runs, axis)
    return not split_references(runs[runs[metric].notna()], axis)[0].empty


def plot_ablation(
    df,
    axis,
    out_dir,
    metric="metrics.test_top1",
    series=None,
    name=None,
    interval="t",
    labels=None,
    palette=None,
    crossed=(),
):
    """Metric against one config axis (numeric or categorical) with the interval bars.

    Methods that do not vary along the axis (see `axis_methods`; e.g. full fine-tuning and
    the linear probe on a rank axis) are horizontal reference lines at their mean, with a
    band for their interval, named in the legend. Runs where the axis is NaN are such
    references too. One line per combination of `series` columns (by default those of
    SERIES_COLUMNS that vary, so nf4 and unquantized runs are not pooled); points take
    their configuration's colour. Other config columns that vary within a plotted point are
    named in the title ("pooled over: ..."). A numeric axis spanning a factor of 8 or more
    is drawn on a log scale (base 2 for integers). Skipped when the axis has fewer than 2
    distinct values among the completed runs of the methods it applies to. ``crossed``: config columns an
    ablation crosses with the axis (the adapted modules beside r), a line per value each, never pooled.
    """
    name = name or "ablation_" + axis.removeprefix("config.").replace(".", "_")
    palette = _palette_for(df, palette)
    runs = completed_runs(df)
    if axis not in runs.columns or metric not in runs.columns:
        return skip_figure(name, f"the table has no {axis} or {metric} column")
    runs = runs_of_axis(runs, axis)
    references, runs = split_references(runs[runs[metric].notna()], axis)
    if runs[axis].nunique() < 2:
        return skip_figure(name, f"{axis} has fewer than 2 distinct values")
    if series is None:
        series = [c for c in SERIES_COLUMNS if c in runs.columns and c != axis and runs[c].nunique() > 1]
        series += [c for c in crossed if c in runs.columns and c != axis and runs[c].nunique() > 1]
    series = [series] if isinstance(series, str) else list(series)
    summary = _point_summary(runs, axis, metric, series, interval)
    numeric = pd.api.types.is_numeric_dtype(runs[axis])
    categories = sorted(runs[axis].unique()) if numeric else list(dict.fromkeys(runs[axis]))
    fig, ax = _new_figure(5.8, 3.4)
    lines = summary.groupby(series, sort=False, dropna=False) if series else [((), summary)]
    # the series with most points first: it gets the solid line
    lines = sorted(lines, key=lambda item: (-len(item[1]), natural_key(item[0])))
    log_x = numeric and _log_scale(np.array(categories, dtype=float))
    for i, (key, group) in enumerate(lines):
        group = (
            group.sort_values(axis)
            if numeric
            else group.assign(_order=group[axis].map(categories.index)).sort_values("_order")
        )
        positions = (group[axis] if numeric else group[axis].map(categories.index)).to_numpy(dtype=float)
        positions = _dodge(positions, i, len(lines), log_x, categories if numeric else None)
        line_name = (
            " / ".join(_series_text(k, labels) for k in np.atleast_1d(key))
            if series
            else figure_name(group["method"].iloc[0], None, labels)
        )
        _draw_series(ax, positions, group, LINESTYLES[i % len(LINESTYLES)], line_name, palette, scale(metric))
    _draw_references(ax, references, metric, interval, labels, palette, _axis_label(axis))
    if numeric:
        _set_numeric_axis(ax, np.array(categories, dtype=float))
    else:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=20, ha="right", fontsize=7)
    pooled = _pooled_columns(runs, series + [axis])
    if pooled:
        ax.set_title("pooled over: " + ", ".join(c.removeprefix("config.") for c in pooled), fontsize=7)
    ax.set_xlabel(_axis_label(axis))
    clip_axis(ax, metric)
    ax.set_ylabel(_metric_label(metric))
    ax.grid(True, alpha=0.3)
    title = interval_label(interval)
    if series:
        title += "\nlines: " + " / ".join(c.removeprefix("config.") for c in series)
    fig.legend(loc="outside right upper", fontsize=7, title=title, title_fontsize=7)
    return save_figure(fig, out_dir, name)


def split_references(runs, axis):
    """(references, runs along the axis) of runs with the metric: the runs of methods the axis does not
    apply to (`axis_methods`) and those where it is NaN are references; the axis values of the others
    are made comparable (`_axis_value`: a list of target modules is one value)."""
    on_axis = runs[axis].notna()
    if "method" in runs.columns:
        on_axis &= runs["method"].isin(axis_methods(runs[runs[axis].notna()], axis))
    references, runs = runs[~on_axis], runs[on_axis]
    return references, runs.assign(**{axis: runs[axis].map(_axis_value)})


def _point_summary(runs, axis, metric, series, interval):
    """The mean and interval of every point (a value of the `series` columns and of the axis), with the
    variant it is (None where it pools several) and its method."""
    summary = summarize(runs, metric, by=series + [axis], interval=interval)
    # a point takes its configuration's colour (the line's hue where it pools several)
    run_cell = runs[series + [axis]].astype(str).agg("|".join, axis=1)
    point_cell = summary[series + [axis]].astype(str).agg("|".join, axis=1)
    by_cell = runs.assign(method=runs.get("method", runs["variant"].astype(str).str.split().str[0])).groupby(run_cell)
    summary["variant"] = (
        by_cell["variant"].agg(lambda v: str(v.iloc[0]) if v.nunique() == 1 else None).reindex(point_cell).to_numpy()
    )
    summary["method"] = by_cell["method"].first().reindex(point_cell).to_numpy()
    return summary


def _draw_series(ax, positions, group, linestyle, line_name, palette, times=100.0):
    """One series: a line in its method's hue through points in their configuration's colour, each with
    its interval bar, and its legend entry; values printed as ``times`` x the metric (100: percent)."""
    line_color = palette["method"].get(str(group["method"].iloc[0]), "0.3")
    colors = [_variant_color(palette, v) if v is not None else line_color for v in group["variant"]]
    marker = palette["marker"].get(str(group["method"].iloc[0]), "o")
    ax.plot(
        positions,
        times * group["mean"],
        color=line_color,
        linewidth=1,
        linestyle=linestyle,
        zorder=2,
    )
    for j in range(len(group)):
        ax.errorbar(
            positions[j : j + 1],
            times * group["mean"].iloc[j : j + 1],
            yerr=_ci_errors(group.iloc[[j]], times),
            capsize=2,
            zorder=3,
            fmt=marker,
            color=colors[j],
        )
    # the legend shows the line and, for a one-point series, its point's colour
    point_color = colors[0] if len(set(colors)) == 1 else line_color
    ax.plot(
        [],
        [],
        color=line_color,
        linewidth=1,
        linestyle=linestyle,
        marker=marker,
        markerfacecolor=point_color,
        markeredgecolor=point_color,
        label=line_name,
    )


# dashed, dotted, dash-dotted, dash-dot-dotted: reference lines told apart where they lie on each other
REFERENCE_STYLES = [(0, (6, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (4, 1.5, 1, 1.5, 1, 1.5))]


def _draw_references(ax, references, metric, interval, labels, palette, axis_label):
    """A horizontal line at each reference configuration's mean, each in its own line style (REFERENCE_STYLES: two
    lines at nearly the same mean stay apart), its interval shaded."""
    if references.empty:
        return
    summary = summarize(references, metric, interval=interval).set_index("variant")
    times = scale(metric)
    for i, variant in enumerate(_sorted_variants(palette, summary.index)):
        row = summary.loc[variant]
        color = _variant_color(palette, variant)
        ax.axhline(
            times * row["mean"],
            color=color,
            linestyle=REFERENCE_STYLES[i % len(REFERENCE_STYLES)],
            linewidth=1.2,
            zorder=1,
            label=f"{_name(palette, variant, labels)} (no {axis_label[0].lower() + axis_label[1:]})",
        )
        if np.isfinite(row["ci_low"]):
            ax.axhspan(times * row["ci_low"], times * row["ci_high"], color=color, alpha=0.12, linewidth=0, zorder=0)
