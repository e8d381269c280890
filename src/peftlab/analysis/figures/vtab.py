"""The VTAB-1k figure of a report: each configuration's per-task difference against the baseline.

Drawn in figure_style.py's manner (Agg canvas, constrained layout, Okabe-Ito colours, PNG at
300 dpi and PDF). Here a colour is a VTAB group, not a method: one panel per configuration
says which configuration it is.
"""

from __future__ import annotations

import matplotlib.lines
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from peftlab.analysis.figures.style import OKABE_ITO, _shade, figure_name, save_figure
from peftlab.config.suites import VTAB1K_TASKS, VTAB_GROUPS

GROUP_COLORS = dict(zip(VTAB_GROUPS, (OKABE_ITO[0], OKABE_ITO[3], OKABE_ITO[2])))  # blue, orange, bluish green


def plot_vtab_differences(
    means: pd.DataFrame,
    baseline: str,
    out_dir,
    labels=None,
    task_labels=None,
    name: str = "vtab_differences",
    groups: dict[str, str] | None = None,
):
    """Bars of ``means.loc[c] - means.loc[baseline]`` (points) per task for every other configuration c,
    one panel each, tasks in the columns' order (VTAB's), coloured by group, with a zero line and each
    group's mean difference dashed. ``means``: configurations x task names, mean test top-1 in percent.
    Returns the PNG and PDF paths."""
    groups = groups or {t: task.group for t, task in VTAB1K_TASKS.items()}  # task -> its VTAB group
    others = [a for a in means.index if a != baseline]
    tasks = list(means.columns)
    colors = [GROUP_COLORS[groups[t]] for t in tasks]
    fig = Figure(figsize=(7.2, 1.4 + 1.45 * len(others)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(others), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    x = np.arange(len(tasks))
    base = figure_name(baseline, None, labels)
    for ax, other in zip(axes, others):
        difference = (means.loc[other] - means.loc[baseline]).to_numpy(dtype=float)
        ax.bar(x, difference, width=0.72, color=colors)
        _group_marks(ax, tasks, difference, groups)
        ax.axhline(0, color="0.2", linewidth=0.8)
        ax.set_title(f"{figure_name(other, None, labels)} − {base}", loc="left", fontsize=8.5)
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(axis="y", labelsize=7.5)
    shown = [(task_labels or {}).get(t, t) for t in tasks]
    axes[-1].set_xticks(x, shown, rotation=45, ha="right", rotation_mode="anchor", fontsize=7.5)
    for tick, color in zip(axes[-1].get_xticklabels(), colors):
        tick.set_color(_shade(color, 0.6))  # darker: orange text on white is faint
    axes[-1].set_xlim(-0.6, len(tasks) - 0.4)
    fig.supylabel("Δ test top-1 (points)", fontsize=8.5)
    groups = [g for g in VTAB_GROUPS if any(groups[t] == g for t in tasks)]
    handles = [matplotlib.patches.Patch(color=GROUP_COLORS[g], label=g) for g in groups]
    handles.append(matplotlib.lines.Line2D([], [], color="0.2", linestyle="--", label="difference of group means"))
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), frameon=False, fontsize=8)
    return save_figure(fig, out_dir, name)


def _group_marks(ax, tasks: list[str], difference: np.ndarray, groups: dict[str, str]) -> None:
    """Per group: a faint line before it (groups apart) and its mean difference, dashed, across its tasks."""
    for i, group in enumerate(g for g in VTAB_GROUPS if any(groups[t] == g for t in tasks)):
        mine = [j for j, t in enumerate(tasks) if groups[t] == group]
        if i:
            ax.axvline(mine[0] - 0.5, color="0.75", linewidth=0.8)
        if np.isfinite(difference[mine]).all():
            ax.hlines(
                difference[mine].mean(),
                mine[0] - 0.4,
                mine[-1] + 0.4,
                colors=GROUP_COLORS[group],
                linestyles="--",
                linewidth=1.1,
            )
