"""Training health of a study, from its run files (pandas and matplotlib only; never torch).

Reads what the monitors wrote: result.json's ``health``, ``convergence``, ``frozen_base``
and ``monitors`` sections, and each run's ``monitors.jsonl`` (gradient norms over training).

- ``load_health``: one row per finished run: verdict, flag counts, convergence, frozen base.
- ``load_rank_use``: one row per (run, adapted layer): effective rank / r and friends, at
  the end of training.
- ``load_gradient_flow``: per (run, step, layer) gradient norm, one seed per configuration.
- ``plot_rank_utilisation``, ``plot_gradient_flow``: the two figures.
- ``report_section``: the report's "Training health" section, figures included.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from peftlab.analysis.figure_style import MARKERS, OKABE_ITO, figure_name, log_tick_labels, save_figure, study_palette
from peftlab.analysis.load import read_spec, run_dirs
from peftlab.run_result import read_result

HEALTH_COLUMNS = [
    "run_id",
    "variant",
    "method",
    "seed",
    "status",
    "verdict",
    "exploding",
    "vanishing",
    "first_exploding",
    "first_vanishing",
    "flagged_groups",
    "converged",
    "gain_last_window",
    "convergence_reason",
    "steps_to_95",
    "final_step",
    "frozen_equal",
    "frozen_rebuilt_equal",
    "monitor_share",
    "merge_ok",
    "merge_max_abs_diff",
    "merge_tolerance",
]


def _runs(study_dir: Path):
    """(run_dir, spec, result) of every run with a result.json."""
    for run_dir in run_dirs(Path(study_dir)):
        spec, result = read_spec(run_dir), read_result(run_dir)
        if result:
            yield run_dir, spec, result


def load_health(study_dir: str | Path) -> pd.DataFrame:
    rows = []
    for _, spec, result in _runs(Path(study_dir)):
        health = result.get("health") or {}
        conv = result.get("convergence") or {}
        frozen = result.get("frozen_base") or {}
        merge = result.get("merge") if isinstance(result.get("merge"), dict) else {}
        counts, first = health.get("counts") or {}, health.get("first_step") or {}
        groups = health.get("groups") or {}
        rows.append(
            {
                "run_id": spec["run_id"],
                "variant": spec["variant"],
                "method": spec["method"],
                "seed": spec["seed"],
                "status": result.get("status"),
                "verdict": health.get("verdict"),
                "exploding": counts.get("exploding"),
                "vanishing": counts.get("vanishing"),
                "first_exploding": first.get("exploding"),
                "first_vanishing": first.get("vanishing"),
                "flagged_groups": ", ".join(sorted({g for flag in groups.values() for g in flag})),
                "converged": conv.get("converged"),
                "gain_last_window": conv.get("gain_last_window"),
                "convergence_reason": conv.get("reason"),
                "steps_to_95": (conv.get("steps_to") or {}).get("95"),
                "final_step": result.get("step"),
                "frozen_equal": frozen.get("equal"),
                "frozen_rebuilt_equal": frozen.get("rebuilt_equal"),
                "monitor_share": (result.get("monitors") or {}).get("share_of_train_seconds"),
                "merge_ok": merge.get("ok") if merge.get("requantized_ok") is not False else False,
                "merge_max_abs_diff": merge.get("max_abs_diff"),
                "merge_tolerance": merge.get("tolerance"),
            }
        )
    return pd.DataFrame(rows, columns=HEALTH_COLUMNS)


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


def load_rank_use(study_dir: str | Path) -> pd.DataFrame:
    rows = []
    for _, spec, result in _runs(Path(study_dir)):
        if result.get("status") != "completed":
            continue
        final = (result.get("ranks") or {}).get("final") or {}  # a rank controller's allocation
        for layer, stats in ((result.get("monitors") or {}).get("adapters") or {}).items():
            r = stats.get("r_allocated", final.get(layer, stats["r"]))  # ranks in use, else the built rank
            rows.append(
                {
                    "run_id": spec["run_id"],
                    "variant": spec["variant"],
                    "method": spec["method"],
                    "seed": spec["seed"],
                    "layer": layer,
                    "r": r,
                    "effective_rank": stats["effective_rank"],
                    "rank_ratio": stats["effective_rank"] / r if r else 0.0,
                    "rank90": stats["rank90"],
                    "stable_rank": stats["stable_rank"],
                    "norm_update": stats["norm_update"],
                }
            )
    columns = [
        "run_id",
        "variant",
        "method",
        "seed",
        "layer",
        "r",
        "effective_rank",
        "rank_ratio",
        "rank90",
        "stable_rank",
        "norm_update",
    ]
    return pd.DataFrame(rows, columns=columns)


def block_label(group: str) -> str:
    """The layer a gradient group belongs to: ``blocks.3``, or ``head``, ``patch_embed``, ..."""
    match = re.search(r"(?:^|\.)((?:blocks|layers|layer)\.\d+)(?=\.|$)", group)
    return match.group(1) if match else group.split(".")[0]


def load_gradient_flow(study_dir: str | Path, one_seed: bool = True) -> pd.DataFrame:
    """Gradient norm per (run, step, layer): the groups of one layer combined as sqrt(sum of
    squares). ``one_seed``: only the lowest seed of each configuration."""
    runs = [(d, s, r) for d, s, r in _runs(Path(study_dir)) if r.get("status") == "completed"]
    if one_seed:
        lowest: dict[str, int] = {}
        for _, spec, _ in runs:
            lowest[spec["variant"]] = min(lowest.get(spec["variant"], spec["seed"]), spec["seed"])
        runs = [(d, s, r) for d, s, r in runs if s["seed"] == lowest[s["variant"]]]
    rows = []
    for run_dir, spec, _ in runs:
        path = run_dir / "monitors.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") != "monitors":
                continue
            squares: dict[str, float] = {}
            for group, norm in record["grad"].items():
                layer = block_label(group)
                squares[layer] = squares.get(layer, 0.0) + norm * norm
            rows += [
                {
                    "run_id": spec["run_id"],
                    "variant": spec["variant"],
                    "method": spec["method"],
                    "seed": spec["seed"],
                    "step": record["step"],
                    "layer": layer,
                    "grad_norm": math.sqrt(sq),
                }
                for layer, sq in squares.items()
            ]
    return pd.DataFrame(rows, columns=["run_id", "variant", "method", "seed", "step", "layer", "grad_norm"])


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


MAX_LISTED = 8  # runs named one by one in the report's lists; more are counted per configuration


def under_training_note(table: pd.DataFrame) -> str:
    """How many runs had not converged, and when most had not, what that means for the numbers.

    Said in the health section and under the convergence figure, where a reader looks at the curves.
    """
    not_converged = int((table["converged"] == False).sum())  # noqa: E712 - None (unknown) is not False
    known = int(table["converged"].notna().sum())
    if not not_converged:
        return ""
    text = f"**{not_converged} of {known} runs did not converge** (val top-1 still rose >= 0.5 pts in their last 25%)"
    if not_converged >= known / 2:
        text += (
            ": the study is under-trained, more steps would still raise accuracy, so its numbers compare "
            "methods at this training budget, not at convergence."
        )
    return text + ("" if text.endswith(".") else ".")


def convergence_caption(study_dir: str | Path) -> str:
    """The under-training note for the convergence figure's caption ("" when runs converged)."""
    table = load_health(study_dir)
    return under_training_note(table[table["converged"].notna()]) if not table.empty else ""


def merge_lines(table: pd.DataFrame) -> list[str]:
    """The merge check of every adapter run: a failure is named, never averaged away."""
    checked = table[table["merge_ok"].notna()]
    if checked.empty:
        return []
    failed = checked[checked["merge_ok"] == False]  # noqa: E712 - element-wise: None (unchecked) is not False
    if failed.empty:
        return [
            f"Merge check: the merged model equals the adapter within tolerance in all {len(checked)} adapter runs.",
            "",
        ]
    lines = [
        f"**Merge check failed in {len(failed)} of {len(checked)} adapter runs**: their merged models are not "
        "the models that were evaluated (`peftlab export --merged` refuses them without --force).",
        "",
    ]
    for row in failed.head(MAX_LISTED).itertuples():
        lines.append(
            f"- {row.variant} seed {row.seed} [{row.run_id}]: max |diff| {row.merge_max_abs_diff:.3g} "
            f"(tolerance {row.merge_tolerance:.3g})"
        )
    return lines + [""]


def report_section(study_dir: str | Path, figures_dir: Path, labels=None, palette=None) -> list[str]:
    """Markdown lines: health per configuration, runs with warnings, convergence, merge check, frozen base, figures."""
    table = load_health(study_dir)
    merges = merge_lines(table)
    table = table[table["verdict"].notna() | table["converged"].notna()]
    lines = ["## Training health", ""]
    if table.empty:
        return lines + merges + ["No run recorded monitor results (runs from before the monitors existed).", ""]
    lines += [
        "Gradient flow is checked at every log point: a layer's gradient norm (before clipping) above "
        "10x its running median is *exploding*; an exactly-zero gradient, or one below 1e-8 of the "
        "weight's norm, is *vanishing*. A run is *converged* when its val top-1 rose less than 0.5 pts in "
        "the last 25% of its steps.",
        "",
        "| configuration | runs | stable / warnings / unstable | exploding flags | vanishing flags | "
        "converged | val top-1 gain, last 25% (pts) | frozen base unchanged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, group in table.groupby("variant", sort=False):
        verdicts = group["verdict"].value_counts()
        gain = group["gain_last_window"].dropna()
        gain_text = f"{100 * gain.mean():+.2f}" if len(gain) else "n/a"
        lines.append(
            f"| {variant} | {len(group)} | {verdicts.get('stable', 0)} / {verdicts.get('warnings', 0)} / "
            f"{verdicts.get('unstable', 0)} | {int(group['exploding'].fillna(0).sum())} | "
            f"{int(group['vanishing'].fillna(0).sum())} | {int((group['converged'] == True).sum())} of "  # noqa: E712 - element-wise
            f"{len(group)} | {gain_text} | {int((group['frozen_equal'] == True).sum())} of {len(group)} |"  # noqa: E712 - element-wise
        )
    lines.append("")

    lines += gradient_warning_lines(table) + convergence_lines(table)

    lines += merges
    equal = table["frozen_equal"] == True  # noqa: E712 - None (not recorded) is not True
    lines += [
        f"Frozen base: the SHA-256 of the frozen weights at the end equals the one at the start in "
        f"{int(equal.sum())} of {len(table)} runs"
        + ("." if equal.all() else f"; **changed in {', '.join(table.loc[~equal, 'run_id'])}**."),
        "",
    ]
    share = table["monitor_share"].dropna()
    if len(share):
        lines += [
            f"Monitor cost inside the runs: median {100 * share.median():.2f}% of training time "
            f"(max {100 * share.max():.2f}%).",
            "",
        ]

    lines += health_figure_lines(study_dir, figures_dir, labels, palette)
    return lines + [""]


def gradient_warning_lines(table) -> list[str]:
    """Markdown lines: each run with exploding or vanishing gradient flags, or none."""
    lines = []
    flagged = table[table["verdict"].isin(["warnings", "unstable"])]
    if flagged.empty:
        lines += ["Runs with gradient warnings: none.", ""]
    else:
        lines += ["Runs with gradient warnings:", ""]
        for row in flagged.itertuples():
            flags = [
                f"{flag} {int(count)} (first at step {int(first)})"
                for flag, count, first in (
                    ("exploding", row.exploding, row.first_exploding),
                    ("vanishing", row.vanishing, row.first_vanishing),
                )
                if count
            ]
            lines.append(
                f"- {row.variant} seed {row.seed} [{row.run_id}]: {row.verdict}; {', '.join(flags)}; "
                f"layers: {row.flagged_groups or 'n/a'}"
            )
        lines.append("")
    return lines


def convergence_lines(table) -> list[str]:
    """Markdown lines: whether every run converged, else the ones that did not."""
    lines = []
    not_converged = table[table["converged"] == False]  # noqa: E712 - None (unknown) is not False
    if not_converged.empty:
        lines += [f"Convergence: all {len(table)} runs converged by that rule.", ""]
    else:
        lines += [f"Convergence: {under_training_note(table)}", ""]
        if len(not_converged) <= MAX_LISTED:
            for row in not_converged.itertuples():
                lines.append(f"- {row.variant} seed {row.seed} [{row.run_id}]: {row.convergence_reason}")
        else:  # the table above counts them per configuration; the largest gains by name
            lines.append(f"The {MAX_LISTED} runs with the largest gain in their last 25%:")
            lines.append("")
            for row in not_converged.sort_values("gain_last_window", ascending=False).head(MAX_LISTED).itertuples():
                lines.append(f"- {row.variant} seed {row.seed} [{row.run_id}]: {row.convergence_reason}")
        lines.append("")
    return lines


def health_figure_lines(study_dir: str | Path, figures_dir: Path, labels=None, palette=None) -> list[str]:
    """Markdown lines: the rank-utilisation and gradient-flow figures, or why each is skipped."""
    lines = []
    for title, paths, reason, caption in (
        (
            "Rank utilisation: effective rank / r per adapted layer",
            plot_rank_utilisation(load_rank_use(study_dir), figures_dir, labels=labels, palette=palette),
            "no LoRA-family run",
            "At the end of training, from the singular values of each layer's scaled update B·A; r is the rank in use "
            "(a rank controller's final allocation, else the configured rank), so a layer left one rank scores 1 by "
            "construction. 1: the update spreads evenly over its r directions; low: a few directions carry it. "
            "Markers: mean over seeds, bars: lowest to highest seed; with more than 6 configurations, a grid of the "
            "means.",
        ),
        (
            "Gradient flow: gradient norm per layer over training (one seed per configuration)",
            plot_gradient_flow(load_gradient_flow(study_dir), figures_dir, labels=labels, palette=palette),
            "no monitor records",
            "Norm of the trainable gradients per layer before clipping, at every log point, log scale; blocks "
            "coloured by depth, other layers dashed or dotted in grey. The last point is the final log point, "
            "whose batch is the epoch's smaller last one.",
        ),
    ):
        if paths:
            png = next(p for p in paths if str(p).endswith(".png"))
            lines += [f"### {title}", "", f"![{title}](figures/{Path(png).name})", "", caption, ""]
        else:
            lines.append(f"- skipped: {title.split(':')[0].lower()}: {reason}")
    return lines
