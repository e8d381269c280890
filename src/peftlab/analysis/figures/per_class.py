"""The confusion-matrix figure of a report's per-class section: one panel per configuration, its seeds' test
counts summed and each row normalised to its true class (a row reads as where that class's test examples went),
class names on both axes. Drawn as the other figures are (Agg canvas, constrained layout, PNG and PDF).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from peftlab.analysis.figures.style import figure_name, save_figure

WRITTEN_VALUES = 12  # up to this many classes each cell also says its share, in percent
COLUMNS = 3  # panels per row


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row of ``matrix`` (true x predicted counts) over its sum: the share of that class's test examples
    predicted as each class; a class without test examples is a row of NaN (drawn blank), never of zeros."""
    totals = matrix.sum(axis=1, keepdims=True).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / totals, np.nan)


def plot_confusion_matrices(
    matrices: dict[str, np.ndarray],
    class_names: list[str],
    out_dir,
    name: str = "confusion_matrix",
    labels=None,
    method_of: dict[str, str] | None = None,
):
    """One row-normalised confusion matrix per configuration (``matrices``: configuration -> summed true x
    predicted counts, in the order to draw), ``class_names`` on the axes as the data names them (never read as
    mathtext). Returns the PNG and PDF paths; None for no matrix."""
    if not matrices:
        return None
    classes = len(class_names)
    ncols = min(COLUMNS, len(matrices))
    nrows = math.ceil(len(matrices) / ncols)
    side = min(6.0, max(2.6, 0.22 * classes + 1.4))  # a panel's inches: readable tick labels up to ~25 classes
    fig = Figure(figsize=(side * ncols + 1.0, (side + 0.4) * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    size = max(3.0, min(7.0, 150 / classes))  # the tick labels' font size
    image = None
    for k, (variant, matrix) in enumerate(matrices.items()):
        ax = axes[k // ncols, k % ncols]
        shares = 100 * row_normalised(matrix)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
        if classes <= WRITTEN_VALUES:
            for i in range(classes):
                for j in range(classes):
                    if not np.isnan(shares[i, j]):
                        colour = "white" if shares[i, j] > 60 else "black"
                        ax.text(j, i, f"{shares[i, j]:.0f}", ha="center", va="center", fontsize=6, color=colour)
        ax.set_xticks(range(classes), class_names, rotation=90, fontsize=size, parse_math=False)
        ax.set_yticks(range(classes), class_names, fontsize=size, parse_math=False)
        ax.set_title(figure_name(variant, (method_of or {}).get(variant), labels), fontsize=8)
        ax.set_xlabel("Predicted class", fontsize=7)
        if k % ncols == 0:
            ax.set_ylabel("True class", fontsize=7)
    for k in range(len(matrices), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    bar = fig.colorbar(image, ax=axes, shrink=0.6)
    bar.set_label("% of the true class's test examples", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return save_figure(fig, out_dir, name)
