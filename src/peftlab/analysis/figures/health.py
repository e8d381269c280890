"""The two figures of the report's "Training health" section, from the tables health.py loads.

- ``plot_rank_utilisation``: effective rank / r per adapted layer at the end of training, one
  series per configuration (a configurations x layers grid beyond ``MAX_SERIES`` of them).
- ``plot_gradient_flow``: gradient norm per layer over training, one panel per configuration.

Both take the study's palette and display names, as every other figure does (figure_style.py).
"""

from __future__ import annotations

import math
import re

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from peftlab.analysis.figures.style import MARKERS, OKABE_ITO, figure_name, save_figure, study_palette
from peftlab.analysis.figures.ticks import log_tick_labels

LAYER_ORDER = ("q", "k", "v", "qkv", "proj", "fc1", "fc2")  # within a block, in the order of the forward pass


def _layer_key(layer: str) -> tuple:
    """Sort adapted layers by depth (blocks.10 after blocks.9), then in forward order (q, k, v, proj, fc1, fc2)."""
    match = re.search(r"(?:^|\.)(?:blocks|layers|layer)\.(\d+)\.(.*)", layer)
    if not match:
        return (math.inf, len(LAYER_ORDER), layer)
    last = match.group(2).rsplit(".", 1)[-1]
    return (int(match.group(1)), LAYER_ORDER.index(last) if last in LAYER_ORDER else len(LAYER_ORDER), match.group(2))


def short_layer(layer: str) -> str:
    """``blocks.3.attn.qkv.q`` -> ``3.q``; ``blocks.3.mlp.fc1`` -> ``3.fc1``."""
    match = re.search(r"(?:^|\.)(?:blocks|layers|layer)\.(\d+)\..*?([^.]+)$", layer)
    return f"{match.group(1)}.{match.group(2)}" if match else layer


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


MAX_SERIES = 6  # more configurations than this: a configurations x layers grid instead of overlapping markers


def plot_rank_utilisation_grid(
    rank_use: pd.DataFrame, out_dir, name: str = "rank_utilisation", labels=None, palette=None
):
    """Effective rank / r as a grid: one row per configuration, one column per adapted layer, the
    mean over seeds written in each cell (readable where a dozen marker series would overlap)."""
    layers = sorted(rank_use["layer"].unique(), key=_layer_key)
    palette = palette or study_palette(rank_use)
    variants = [v for v in palette["variants"] if v in set(rank_use["variant"])]
    means = (
        rank_use.groupby(["variant", "layer"])["rank_ratio"].mean().unstack().reindex(index=variants, columns=layers)
    )
    fig, axes = _figure(max(6.0, 0.36 * len(layers) + 3.0), 0.32 * len(variants) + 1.4)
    ax = axes[0, 0]
    image = ax.imshow(means.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(len(variants)):
        for j in range(len(layers)):
            value = means.iat[i, j]
            if not np.isnan(value):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}".lstrip("0"),
                    ha="center",
                    va="center",
                    fontsize=5,
                    color="black" if value > 0.6 else "white",
                )
    ax.set_xticks(range(len(layers)), [short_layer(layer) for layer in layers], rotation=90, fontsize=6)
    ax.set_yticks(
        range(len(variants)), [figure_name(v, palette["method_of"].get(v), labels) for v in variants], fontsize=6
    )
    ax.set_xlabel("Adapted layer (block.module)", fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.8, label="effective rank / r (mean over seeds)")
    return save_figure(fig, out_dir, name)


def plot_rank_utilisation(rank_use: pd.DataFrame, out_dir, name: str = "rank_utilisation", labels=None, palette=None):
    """Effective rank / r per adapted layer at the end of training, one series per LoRA-family
    configuration: mean over seeds, bars from the lowest to the highest seed; the study's
    colours, markers, order and display names (``palette``: the report's, so every figure
    agrees). None when no run has adapters."""
    if rank_use is None or rank_use.empty:
        return None
    if rank_use["variant"].nunique() > MAX_SERIES:
        return plot_rank_utilisation_grid(rank_use, out_dir, name, labels, palette)
    palette = palette or study_palette(rank_use)
    layers = sorted(rank_use["layer"].unique(), key=_layer_key)
    x = {layer: i for i, layer in enumerate(layers)}
    variants = [v for v in palette["variants"] if v in set(rank_use["variant"])]
    fig, axes = _figure(max(5.5, 0.28 * len(layers) + 2.5), 3.4)
    ax = axes[0, 0]
    width = 0.6 / max(1, len(variants))
    for i, variant in enumerate(variants):
        per_layer = rank_use[rank_use["variant"] == variant].groupby("layer")["rank_ratio"].agg(["mean", "min", "max"])
        per_layer = per_layer.loc[[layer for layer in layers if layer in per_layer.index]]
        xs = np.array([x[layer] for layer in per_layer.index]) + (i - (len(variants) - 1) / 2) * width
        ax.errorbar(
            xs,
            per_layer["mean"],
            yerr=[per_layer["mean"] - per_layer["min"], per_layer["max"] - per_layer["mean"]],
            fmt=palette["marker"].get(palette["method_of"].get(variant), MARKERS[i % len(MARKERS)]),
            color=palette["variant"].get(variant, OKABE_ITO[i % len(OKABE_ITO)]),
            markersize=4,
            capsize=1.5,
            linewidth=0.8,
            label=figure_name(variant, palette["method_of"].get(variant), labels),
        )
    ax.set_xticks(range(len(layers)), [short_layer(layer) for layer in layers], rotation=90, fontsize=7)
    ax.set_xlabel("Adapted layer (block.module)")
    ax.set_ylabel("Effective rank / r")
    ax.set_ylim(0, 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7, title="mean, min-max over seeds", title_fontsize=7)
    return save_figure(fig, out_dir, name)


OTHER_STYLES = ["--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2, 2, 2))]  # head first, then embeddings, norms


def plot_gradient_flow(flow: pd.DataFrame, out_dir, name: str = "gradient_flow", labels=None, palette=None):
    """Gradient norm (before clipping) per layer against step, one panel per configuration
    (its lowest seed), blocks coloured by depth, other layers (head, embeddings) in grey
    shades. Log y. None when no run wrote monitor records."""
    if flow is None or flow.empty:
        return None
    palette = palette or study_palette(flow)
    variants = [v for v in palette["variants"] if v in set(flow["variant"])]  # the study's order
    ncols = min(3, len(variants))
    nrows = math.ceil(len(variants) / ncols)
    fig, axes = _figure(3.0 * ncols + 1.6, 2.4 * nrows, ncols, nrows)
    layers = sorted(flow["layer"].unique(), key=lambda layer: _layer_key(layer + ".x"))
    blocks = [layer for layer in layers if _layer_key(layer + ".x")[0] != math.inf]
    cmap = matplotlib.colormaps["viridis"]
    colors = {layer: cmap(i / max(1, len(blocks) - 1)) for i, layer in enumerate(blocks)}
    others = sorted(
        (layer for layer in layers if layer not in colors),
        key=lambda layer: (layer.split(".")[-1] not in ("head", "classifier"), layer),
    )
    colors.update({layer: str(0.1 + 0.45 * i / max(1, len(others))) for i, layer in enumerate(others)})
    styles = {layer: "-" if layer in blocks else OTHER_STYLES[i % len(OTHER_STYLES)] for i, layer in enumerate(others)}
    handles = {}
    for k, variant in enumerate(variants):
        ax = axes[k // ncols, k % ncols]
        part = flow[flow["variant"] == variant]
        for layer in layers:
            series = part[part["layer"] == layer].sort_values("step")
            series = series[series["grad_norm"] > 0]
            if series.empty:
                continue
            (line,) = ax.plot(
                series["step"],
                series["grad_norm"],
                color=colors[layer],
                linewidth=0.9,
                linestyle=styles.get(layer, "-"),
            )
            handles.setdefault(layer, line)
        ax.set_yscale("log")
        log_tick_labels(ax.yaxis)
        ax.set_title(
            f"{figure_name(variant, palette['method_of'].get(variant), labels)} (seed {part['seed'].min()})", fontsize=8
        )
        ax.tick_params(which="both", labelsize=7)
        ax.grid(True, alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel("Gradient norm", fontsize=8)
        if k + ncols >= len(variants):  # no panel below this one
            ax.set_xlabel("Step", fontsize=8)
    for k in range(len(variants), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    fig.legend(
        list(handles.values()), list(handles), loc="outside right upper", fontsize=6, title="layer", title_fontsize=7
    )
    return save_figure(fig, out_dir, name)
