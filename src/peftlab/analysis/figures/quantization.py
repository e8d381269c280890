"""The quantization figure: accuracy lost against the memory of a quantized base, each quantized configuration
against its fp32 run on matched seeds (`quantization_points`, `plot_quantization_tradeoff`). Drawn and saved as
the study's other figures are (figures/study.py's module docstring)."""

import matplotlib
import matplotlib.lines
import matplotlib.ticker
import numpy as np
import pandas as pd

from peftlab.analysis.figures.study import skip_figure
from peftlab.analysis.figures.style import (
    _axis_value,
    _ci_errors,
    _method_marker,
    _metric_label,
    _name,
    _new_figure,
    _palette_for,
    _sorted_variants,
    _variant_color,
    save_figure,
)
from peftlab.analysis.stats.intervals import INTERVALS, completed_runs, confidence_interval


def quantization_points(df, metric="metrics.test_top1", interval="t", confidence=0.95):
    """What `plot_quantization_tradeoff` draws: each quantized configuration against its fp32 run.

    The reference of a quantized run is the completed run with quant.mode "none", the same
    seed and the same config otherwise (every config column but config.quant.* and
    config.seed). Returns one row per quantized variant and model ("unmerged": `metric`,
    the adapter on the quantized base; "merged": metrics.merged_<metric name>, the adapter
    merged into it) with the columns variant, method, mode, model, memory_ratio (mean of
    memory.base_weights_bytes / memory.base_weights_fp32_bytes), n_pairs (matched seeds),
    mean_diff, ci_low, ci_high (the `interval` of the mean paired difference, quantized
    minus fp32, as fractions), reference (the fp32 variant).
    """
    mode, stored, fp32 = "config.quant.mode", "memory.base_weights_bytes", "memory.base_weights_fp32_bytes"
    columns = [
        "variant",
        "method",
        "mode",
        "model",
        "memory_ratio",
        "n_pairs",
        "mean_diff",
        "ci_low",
        "ci_high",
        "reference",
    ]
    runs = completed_runs(df)
    if mode not in runs.columns or metric not in runs.columns:
        return pd.DataFrame(columns=columns)
    runs = runs[runs[metric].notna()]
    quantized = runs[runs[mode].notna() & (runs[mode] != "none")]
    if quantized.empty or stored not in runs.columns or fp32 not in runs.columns:
        return pd.DataFrame(columns=columns)
    keys = [
        c for c in runs.columns if c.startswith("config.") and not c.startswith("config.quant.") and c != "config.seed"
    ]
    keys = keys + ["seed"] if "seed" in runs.columns else keys
    key = runs[keys].map(lambda v: repr(_axis_value(v))).agg("|".join, axis=1)
    reference = runs[runs[mode] == "none"].assign(_key=key).drop_duplicates("_key").set_index("_key")
    merged_metric = "metrics.merged_" + metric.removeprefix("metrics.")
    rows = []
    for variant, group in quantized.assign(_key=key).groupby("variant", sort=False):
        matched = group[group["_key"].isin(reference.index)]
        baseline = reference.loc[matched["_key"]]
        ratio = (group[stored].astype(float) / group[fp32].astype(float)).mean()
        for model, column in (("unmerged", metric), ("merged", merged_metric)):
            if column not in matched.columns or matched[column].isna().all():
                continue
            diffs = matched[column].to_numpy(dtype=float) - baseline[metric].to_numpy(dtype=float)
            diffs = diffs[np.isfinite(diffs)]
            if diffs.size == 0:
                continue
            low, high, _ = confidence_interval(diffs, interval, confidence)
            rows.append(
                {
                    "variant": variant,
                    "method": group["method"].iloc[0] if "method" in group else None,
                    "mode": group[mode].iloc[0],
                    "model": model,
                    "memory_ratio": ratio,
                    "n_pairs": diffs.size,
                    "mean_diff": diffs.mean(),
                    "ci_low": low,
                    "ci_high": high,
                    "reference": baseline["variant"].iloc[0],
                }
            )
    return pd.DataFrame(rows, columns=columns)


def plot_quantization_tradeoff(
    df, out_dir, metric="metrics.test_top1", name="quantization_tradeoff", interval="t", labels=None, palette=None
):
    """Accuracy lost against the memory of a quantized base, per quantized configuration.

    x: the base weights as stored (quantized data and statistics) over the same weights in
    fp32 (memory.base_weights_bytes / memory.base_weights_fp32_bytes); y: test top-1 minus
    that of the fp32 run of the same config on matched seeds (`quantization_points`), in
    percentage points, with the interval of the mean difference. Filled markers: the adapter
    on the quantized base; open markers: the adapter merged into it (merging re-quantizes).
    The two are drawn 0.7 percentage points of x left and right of their x, so that both
    intervals stay readable.
    Skipped when the study has no completed quantized run, the runs record no base weight
    bytes, or no quantized run has an fp32 run to compare with.
    """
    palette = _palette_for(df, palette)
    runs = completed_runs(df)
    mode = "config.quant.mode"
    if mode not in runs.columns or not (runs[mode].notna() & (runs[mode] != "none")).any():
        return skip_figure(name, "no completed run with a quantized base (quant.mode is none everywhere)")
    if "memory.base_weights_bytes" not in runs.columns or "memory.base_weights_fp32_bytes" not in runs.columns:
        return skip_figure(name, "the runs record no memory.base_weights_bytes and memory.base_weights_fp32_bytes")
    points = quantization_points(df, metric, interval)
    if points.empty:
        return skip_figure(name, "no quantized run has an fp32 run (quant.mode none) with the same config and seed")
    fig, ax = _new_figure(5.8, 3.4)
    dodge = {"unmerged": -0.007, "merged": 0.007}  # side by side, so that the two intervals stay apart
    for variant in _sorted_variants(palette, points["variant"]):
        for model, group in points[points["variant"] == variant].groupby("model", sort=False):
            color = _variant_color(palette, variant)
            ax.errorbar(
                group["memory_ratio"] + dodge[model],
                100 * group["mean_diff"],
                yerr=_ci_errors(group.rename(columns={"mean_diff": "mean"})),
                fmt=_method_marker(palette, variant),
                color=color,
                markerfacecolor=color if model == "unmerged" else "white",
                capsize=2,
                label=_name(palette, variant, labels) if model == "unmerged" else None,
                zorder=3,
            )
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.plot([1.0], [0.0], marker="*", markersize=9, color="0.3", linestyle="none", label="fp32 base (reference)")
    ax.set_xlim(0, 1.08)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel("Base weights stored, share of their fp32 size")
    ax.set_ylabel(f"{_metric_label(metric).removesuffix(' (%)')} vs fp32 (pp)")
    ax.grid(True, alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    handles += [
        matplotlib.lines.Line2D([], [], marker="o", color="0.3", linestyle="none"),
        matplotlib.lines.Line2D([], [], marker="o", color="0.3", markerfacecolor="white", linestyle="none"),
    ]
    names += ["adapter on the quantized base", "adapter merged into it"]
    fig.legend(
        handles,
        names,
        loc="outside right upper",
        fontsize=7,
        title=f"mean difference on matched seeds,\n{100 * 0.95:g}% {INTERVALS[interval]} interval",
        title_fontsize=7,
    )
    return save_figure(fig, out_dir, name)
