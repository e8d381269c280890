"""Figures for a study report and a paper, drawn with matplotlib's Agg canvas (no pyplot).

Each `plot_*` function saves one figure as <name>.png (300 dpi) and <name>.pdf (TrueType
fonts embedded) in `out_dir` and returns the two paths, or returns None without drawing
anything when its data is absent; the reason is logged at INFO level and listed in the
function's docstring, for the report to say "skipped: <reason>".
Only completed runs are plotted. Colours are Okabe-Ito (colour-blind safe), one per
method in order of first appearance, and markers differ as well.
"""

import logging
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from peftlab.analysis.stats import completed_runs, pareto_mask, summarize
from peftlab.analysis.tables import METRIC_LABELS

logger = logging.getLogger(__name__)

OKABE_ITO = [
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow, last: faint on white
]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]

AXIS_LABELS = {
    "config.method.r": "Rank r",
    "config.method.lora_alpha": "lora_alpha",
    "config.method.target_modules": "Target modules",
    "config.train.lr": "Learning rate",
    "config.quant.mode": "Quantization",
    "params.trainable": "Trainable parameters",
}

# Columns that separate the lines of an ablation plot when they vary in the study.
SERIES_COLUMNS = ("method", "config.quant.mode", "config.model.name", "config.data.name")


def save_figure(fig, out_dir, name):
    """Write fig as <name>.png (300 dpi) and <name>.pdf in out_dir; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        fig.savefig(paths[0], dpi=300)
        fig.savefig(paths[1], metadata={"CreationDate": None})
    return paths


def plot_accuracy_vs_params(df, out_dir, metric="metrics.test_top1", x="params.trainable", name="accuracy_vs_params"):
    """Per-variant mean metric against mean trainable parameters (log x), 95% CI bars.

    The Pareto front (fewer parameters, higher accuracy) is a dashed staircase through
    ringed points. Skipped when no completed run has both values (x > 0).
    """
    runs = completed_runs(df)
    if metric not in runs.columns or x not in runs.columns:
        return _skip(name, f"the table has no {metric} or {x} column")
    runs = runs[runs[metric].notna() & (runs[x] > 0)]
    if runs.empty:
        return _skip(name, f"no completed run with {metric} and {x}")
    summary = summarize(runs, metric)
    colors = _color_map(summary, "method")
    fig, ax = _new_figure(5.5, 3.4)
    for i, (method, group) in enumerate(summary.groupby(_color_column(summary, "method"), sort=False)):
        ax.errorbar(
            group[x],
            100 * group["mean"],
            yerr=_ci_errors(group),
            fmt=MARKERS[i % len(MARKERS)],
            color=colors[method],
            capsize=2,
            label=str(method),
        )
    front = summary[pareto_mask(summary[x], summary["mean"])].sort_values(x)
    ax.plot(
        front[x],
        100 * front["mean"],
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
    ax.set_xlabel(_axis_label(x))
    ax.set_ylabel(_metric_label(metric))
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7)
    _label_points(ax, summary[x], 100 * summary["mean"], summary["variant"])
    return save_figure(fig, out_dir, name)


def plot_quantization_tradeoff(df, out_dir, metric="metrics.test_top1", name="quantization_tradeoff"):
    """Weight memory saved against accuracy lost by each quantization mode.

    Each point is a quantized configuration compared with the unquantized ("none") one
    with the same method, rank, model and dataset: x = 100 (1 - weights_bytes /
    weights_bytes_none), y = mean accuracy of "none" minus mean accuracy quantized, in
    percentage points, means over seeds (no error bars). Skipped when the study has no
    quantized run or no unquantized run to compare it with.
    """
    mode, weights = "config.quant.mode", "memory.weights_bytes"
    runs = completed_runs(df)
    if any(c not in runs.columns for c in (mode, weights, metric)):
        return _skip(name, f"the table has no {mode}, {weights} or {metric} column")
    runs = runs[runs[metric].notna() & runs[weights].notna()]
    keys = [c for c in ("method", "config.method.r", "config.model.name", "config.data.name") if c in runs.columns]
    means = (
        runs.groupby(keys + [mode], sort=False, dropna=False)
        .agg(accuracy=(metric, "mean"), weights=(weights, "mean"), variant=("variant", "first"))
        .reset_index()
    )
    reference = means[means[mode] == "none"].drop(columns=[mode, "variant"])
    quantized = means[means[mode] != "none"].merge(reference, on=keys, suffixes=("", "_none"))
    if quantized.empty:
        return _skip(name, "no quantized run with an unquantized run of the same method and rank")
    quantized["saved"] = 100 * (1 - quantized["weights"] / quantized["weights_none"])
    quantized["loss"] = 100 * (quantized["accuracy_none"] - quantized["accuracy"])
    fig, ax = _new_figure(5.0, 3.4)
    for i, (mode_name, group) in enumerate(quantized.groupby(mode, sort=False)):
        ax.scatter(
            group["saved"],
            group["loss"],
            color=OKABE_ITO[i % len(OKABE_ITO)],
            marker=MARKERS[i % len(MARKERS)],
            s=36,
            label=str(mode_name),
            zorder=3,
        )
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set_xlabel("Weight memory saved vs unquantized (%)")
    ax.set_ylabel(f"{_metric_label(metric).removesuffix(' (%)')} lost (pp)")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7, title="quant", title_fontsize=7)
    _label_points(ax, quantized["saved"], quantized["loss"], quantized["variant"])
    return save_figure(fig, out_dir, name)


def plot_importance_heatmap(importance, out_dir, name="importance_heatmap"):
    """Heatmap of mean importance score, layers (rows) by modules (columns).

    `importance` has columns layer, module, score; repeated (layer, module) entries, e.g.
    from several seeds, are averaged. Skipped when it is None, empty or all NaN.
    """
    if importance is None or importance.empty or importance["score"].isna().all():
        return _skip(name, "no importance scores")
    modules = list(dict.fromkeys(importance["module"]))
    grid = importance.pivot_table(index="layer", columns="module", values="score", aggfunc="mean")
    grid = grid.reindex(columns=[m for m in modules if m in grid.columns]).sort_index()
    fig, ax = _new_figure(1.2 + 0.6 * grid.shape[1], 1.2 + 0.25 * grid.shape[0])
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(grid.shape[1]), [str(m) for m in grid.columns], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(grid.shape[0]), [str(layer) for layer in grid.index], fontsize=7)
    ax.set_xlabel("Module")
    ax.set_ylabel("Layer")
    fig.colorbar(image, ax=ax, label="Importance score")
    return save_figure(fig, out_dir, name)


def plot_convergence(curves, out_dir, metric="val_top1", by="variant", name="convergence"):
    """Validation top-1 against step: mean over seeds per `by` group, band = ± 1 sd.

    `curves` is long: run_id, variant, step, val_top1 (and config.method.r). Lines are
    ordered by rank where config.method.r is present. No band where one seed reached a
    step. Skipped when `curves` is None or has no finite value.
    """
    if curves is None or curves.empty or metric not in curves.columns or curves[metric].isna().all():
        return _skip(name, "no learning curves")
    curves = curves[curves[metric].notna()]
    order = list(dict.fromkeys(curves[by]))
    if "config.method.r" in curves.columns:
        ranks = curves.groupby(by, sort=False)["config.method.r"].first()
        order = sorted(order, key=lambda group: (np.nan_to_num(ranks[group], nan=-1.0), order.index(group)))
    fig, ax = _new_figure(5.5, 3.4)
    for i, group in enumerate(order):
        per_step = curves[curves[by] == group].groupby("step")[metric].agg(["mean", "std", "count"])
        color = OKABE_ITO[i % len(OKABE_ITO)] if len(order) <= len(OKABE_ITO) else matplotlib.colormaps["viridis"](i / (len(order) - 1))
        steps = per_step.index.to_numpy()
        mean = 100 * per_step["mean"].to_numpy()
        spread = 100 * np.where(per_step["count"] > 1, per_step["std"].fillna(0), 0.0)
        ax.plot(steps, mean, color=color, label=str(group))
        ax.fill_between(steps, mean - spread, mean + spread, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("Step")
    ax.set_ylabel(_metric_label("metrics." + metric))
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7, title="mean ± sd over seeds", title_fontsize=7)
    return save_figure(fig, out_dir, name)


def plot_cost(df, out_dir, by="variant", name="cost"):
    """Training time and peak RSS per `by` group: horizontal bars, mean ± sd over seeds.

    By variant rather than method: a method's ranks and quantization modes differ in cost.
    A panel is left out when its column is absent; skipped when both are.
    """
    runs = completed_runs(df)
    panels = [
        (column, label)
        for column, label in (("timing.train_seconds", "Training time"), ("memory.peak_rss_bytes", "Peak RSS"))
        if column in runs.columns and runs[column].notna().any()
    ]
    if not panels:
        return _skip(name, "no training time or memory measurements")
    groups = list(dict.fromkeys(runs[by]))
    colors = _color_map(runs, "method")
    color_column = _color_column(runs, "method")
    bar_colors = [colors[runs.loc[runs[by] == g, color_column].iloc[0]] for g in groups]
    fig, axes = _new_figure(3.2 * len(panels), 1.0 + 0.3 * len(groups), ncols=len(panels))
    axes = np.atleast_1d(axes)
    for ax, (column, label) in zip(axes, panels):
        values = runs.groupby(by, sort=False)[column].agg(["mean", "std"]).reindex(groups)
        scale, unit = _seconds_unit(values["mean"].max()) if column.startswith("timing") else _bytes_unit(values["mean"].max())
        ax.barh(
            range(len(groups)),
            values["mean"].fillna(0) / scale,
            xerr=values["std"].fillna(0) / scale,
            color=bar_colors,
            capsize=2,
        )
        ax.set_yticks(range(len(groups)), [str(g) for g in groups], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"{label} ({unit})")
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)
    return save_figure(fig, out_dir, name)


def plot_ablation(df, axis, out_dir, metric="metrics.test_top1", series=None, name=None):
    """Metric against one config axis (numeric or categorical) with 95% CI bars.

    Runs where the axis does not apply (NaN, e.g. r for full fine-tuning) are left out.
    One line per combination of `series` columns (by default those of SERIES_COLUMNS that
    vary, so nf4 and unquantized runs are not pooled). Other config columns that vary
    within a plotted point are named in the title ("pooled over: ..."). A numeric axis
    spanning a factor of 8 or more is drawn on a log scale (base 2 for integers).
    Skipped when the axis has fewer than 2 distinct values among completed runs.
    """
    name = name or "ablation_" + axis.removeprefix("config.").replace(".", "_")
    runs = completed_runs(df)
    if axis not in runs.columns or metric not in runs.columns:
        return _skip(name, f"the table has no {axis} or {metric} column")
    runs = runs[runs[axis].notna() & runs[metric].notna()]
    runs = runs.assign(**{axis: runs[axis].map(_axis_value)})
    if runs[axis].nunique() < 2:
        return _skip(name, f"{axis} has fewer than 2 distinct values")
    if series is None:
        series = [c for c in SERIES_COLUMNS if c in runs.columns and c != axis and runs[c].nunique() > 1]
    series = [series] if isinstance(series, str) else list(series)
    summary = summarize(runs, metric, by=series + [axis])
    numeric = pd.api.types.is_numeric_dtype(runs[axis])
    categories = sorted(runs[axis].unique()) if numeric else list(dict.fromkeys(runs[axis]))
    fig, ax = _new_figure(5.0, 3.4)
    lines = summary.groupby(series, sort=False, dropna=False) if series else [((), summary)]
    for i, (key, group) in enumerate(lines):
        group = group.sort_values(axis) if numeric else group.assign(_order=group[axis].map(categories.index)).sort_values("_order")
        positions = group[axis] if numeric else group[axis].map(categories.index)
        ax.errorbar(
            positions,
            100 * group["mean"],
            yerr=_ci_errors(group),
            fmt="-" + MARKERS[i % len(MARKERS)],
            color=OKABE_ITO[i % len(OKABE_ITO)],
            capsize=2,
            label=" / ".join(str(k) for k in np.atleast_1d(key)) or None,
        )
    if numeric:
        _set_numeric_axis(ax, np.array(categories, dtype=float))
    else:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=20, ha="right", fontsize=7)
    pooled = _pooled_columns(runs, series + [axis])
    if pooled:
        ax.set_title("pooled over: " + ", ".join(c.removeprefix("config.") for c in pooled), fontsize=7)
    ax.set_xlabel(_axis_label(axis))
    ax.set_ylabel(_metric_label(metric))
    ax.grid(True, alpha=0.3)
    if series:
        title = " / ".join(c.removeprefix("config.") for c in series)
        fig.legend(loc="outside right upper", fontsize=7, title=title, title_fontsize=7)
    return save_figure(fig, out_dir, name)


def plot_seed_boxplots(df, out_dir, metric="metrics.test_top1", by="variant", name="seed_boxplots"):
    """Box plot of the metric across seeds per `by` group, each run drawn as a dot.

    Skipped when no completed run has the metric.
    """
    runs = completed_runs(df)
    if metric not in runs.columns or runs[metric].isna().all():
        return _skip(name, f"no completed run with {metric}")
    runs = runs[runs[metric].notna()]
    groups = list(dict.fromkeys(runs[by]))
    colors = _color_map(runs, "method")
    color_column = _color_column(runs, "method")
    fig, ax = _new_figure(1.5 + 0.55 * len(groups), 3.4)
    values = [100 * runs.loc[runs[by] == g, metric].to_numpy(dtype=float) for g in groups]
    ax.boxplot(values, positions=range(len(groups)), widths=0.5, showfliers=False, medianprops={"color": "0.2"})
    jitter = np.random.default_rng(0)
    for i, g in enumerate(groups):
        group = runs[runs[by] == g]
        ax.scatter(
            i + jitter.uniform(-0.12, 0.12, len(group)),
            100 * group[metric],
            s=12,
            color=colors[group[color_column].iloc[0]],
            zorder=3,
        )
    ax.set_xticks(range(len(groups)), [str(g) for g in groups], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(_metric_label(metric))
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, out_dir, name)


def _skip(name, reason):
    logger.info("skipped %s: %s", name, reason)
    return None


# Where a point's name may go, in points from the point: right, left, then above/below.
LABEL_OFFSETS = [(6, -3), (-6, -3), (6, 5), (6, -11), (-6, 5), (-6, -11), (6, 13), (6, -19)]


def _label_points(ax, xs, ys, labels, fontsize=6):
    """Name each point beside it, at the first offset where the name overlaps no other name or point.

    Call it last: it lays the figure out to know where the points will be drawn.
    """
    ax.margins(x=0.12, y=0.08)
    ax.autoscale_view()
    ax.figure.get_layout_engine().execute(ax.figure)
    to_points = 72 / ax.figure.dpi
    points = [ax.transData.transform((x, y)) * to_points for x, y in zip(xs, ys)]
    taken = [(px - 6, py - 6, px + 6, py + 6) for px, py in points]  # the markers
    for (x, y), (px, py), label in sorted(zip(zip(xs, ys), points, labels), key=lambda p: -p[1][1]):
        width, height = 0.6 * fontsize * len(str(label)), fontsize
        for dx, dy in LABEL_OFFSETS:
            left = px + dx if dx > 0 else px + dx - width
            box = (left, py + dy, left + width, py + dy + height)
            if not any(_overlaps(box, other) for other in taken):
                break
        else:
            dx, dy = LABEL_OFFSETS[0]
            left = px + dx
            box = (left, py + dy, left + width, py + dy + height)
        taken.append(box)
        ax.annotate(
            str(label),
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha="left" if dx > 0 else "right",
            va="bottom",
            fontsize=fontsize,
        )


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _new_figure(width, height, ncols=1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _color_column(df, preferred):
    return preferred if preferred in df.columns else "variant"


def _color_map(df, preferred):
    keys = dict.fromkeys(df[_color_column(df, preferred)])
    return {key: OKABE_ITO[i % len(OKABE_ITO)] for i, key in enumerate(keys)}


def _ci_errors(summary):
    """Error bar lengths (percent) below and above each mean; 0 where there is no interval."""
    below = (summary["mean"] - summary["ci_low"]).fillna(0).clip(lower=0)
    above = (summary["ci_high"] - summary["mean"]).fillna(0).clip(lower=0)
    return 100 * np.vstack([below.to_numpy(dtype=float), above.to_numpy(dtype=float)])


def _metric_label(metric):
    return METRIC_LABELS.get(metric, metric)


def _axis_label(column):
    return AXIS_LABELS.get(column, column.removeprefix("config."))


def _axis_value(value):
    # target_modules may be a list; show it as "q,v".
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _set_numeric_axis(ax, values):
    low, high = values.min(), values.max()
    if low > 0 and high / low >= 8:
        integers = np.all(values == np.round(values))
        ax.set_xscale("log", base=2 if integers else 10)
    if len(values) <= 12:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _pooled_columns(runs, cell_columns):
    candidates = [
        c
        for c in runs.columns
        if c.startswith("config.") and c not in cell_columns and not c.endswith("seed")
    ]
    counts = runs[candidates].map(_axis_value).groupby([runs[c] for c in cell_columns], dropna=False).nunique()
    return [c for c in candidates if (counts[c] > 1).any()]


def _seconds_unit(largest):
    if largest >= 2 * 3600:
        return 3600.0, "h"
    if largest >= 120:
        return 60.0, "min"
    return 1.0, "s"


def _bytes_unit(largest):
    return (2.0**30, "GiB") if largest >= 2**30 else (2.0**20, "MiB")
