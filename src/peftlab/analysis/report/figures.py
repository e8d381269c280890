"""The report's "Figures" section: which figures report.md shows, their captions, and the reasons it gives
for those it skips. The figures plot the study's primary metric (primary.py: test top-1, or a study of
causal LMs' test perplexity, whose convergence figure then shows the validation perplexity).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from peftlab.analysis.figures import ablation as ablation_figure
from peftlab.analysis.figures import quantization as quantization_figure
from peftlab.analysis.figures import study as figures
from peftlab.analysis.figures.style import study_palette
from peftlab.analysis.report.primary import Score
from peftlab.analysis.report.tables import format_count
from peftlab.analysis.results.escape import markdown_text
from peftlab.analysis.stats.chance import chance
from peftlab.analysis.stats.intervals import describe_interval

ABLATION_AXES = {
    "config.method.r": "rank",
    "config.method.lora_alpha": "alpha",
    "config.method.target_modules": "target modules",
    "config.train.lr": "learning rate",
}


class _SkipReasons(logging.Handler):
    """Collects the figures module's "skipped <name>: <reason>" records."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.reasons: dict[str, str] = {}

    def emit(self, record):
        if record.msg == "skipped %s: %s":
            self.reasons[record.args[0]] = record.args[1]


def figure_lines(
    df: pd.DataFrame,
    curves: pd.DataFrame,
    axes: list[str],
    out: Path,
    interval: str,
    labels: dict,
    score: Score,
    under_training: str = "",
    chance: float | None = None,
) -> tuple[list[str], list[str]]:
    """(report.md lines of the drawn figures, one line per skipped figure); ``under_training`` is
    said under the convergence figure; ``chance``: the chance rate the accuracy figure draws (stats.chance's
    ``Chance.line``), or None."""
    handler, level = _SkipReasons(), figures.logger.level
    figures.logger.addHandler(handler)
    figures.logger.setLevel(logging.INFO)
    try:
        drawn = _draw_figures(df, curves, axes, out, interval, labels, score, under_training, chance)
    finally:
        figures.logger.removeHandler(handler)
        figures.logger.setLevel(level)
    lines, skipped = [], []
    for title, name, caption, paths in drawn:
        if paths:
            png = next(p for p in paths if str(p).endswith(".png"))
            lines += [f"### {title}", "", f"![{title}](figures/{Path(png).name})", "", caption, ""]
        else:
            reason = handler.reasons.get(name, "no data")
            skipped.append(f"{title.split(':')[0].lower()}: {reason}")
    return lines, skipped


def _draw_figures(
    df: pd.DataFrame,
    curves: pd.DataFrame,
    axes: list[str],
    out: Path,
    interval: str,
    labels: dict,
    score: Score,
    under_training: str,
    chance: float | None = None,
) -> list[tuple[str, str, str, list]]:
    """Draw the report's figures: (title, name, caption, paths) each, no paths for a figure skipped."""
    palette = study_palette(df)
    style = {"interval": interval, "labels": labels, "palette": palette}
    bars = f"bars: the {describe_interval(interval)}."
    metric = {"metric": score.metric}
    validation = validation_metric(curves, score)
    drawn = [
        (
            "Perplexity vs trainable parameters" if score.lower else "Accuracy vs trainable parameters",
            "accuracy_vs_params",
            f"Mean {score.name} per configuration against trainable parameters (log scale); {bars} Dashed: the "
            f"Pareto front (ringed points{'; lower is better' if score.lower else ''})."
            + side_by_side_sentence(df, score)
            + chance_sentence(chance),
            figures.plot_accuracy_vs_params(df, out, **metric, **style, chance=chance),
        ),
        (
            "Memory reduction vs accuracy loss across quantization settings",
            "quantization_tradeoff",
            "Base weights as stored, as a share of their fp32 size, against test top-1 minus that of the fp32 run "
            f"of the same configuration on matched seeds; bars: the {describe_interval(interval)} of the "
            "difference. Filled: adapter on the quantized base; open: adapter merged into it.",
            quantization_figure.plot_quantization_tradeoff(df, out, **style),
        ),
        (
            f"Convergence: validation {validation.removeprefix('val_').replace('top1', 'top-1')} vs step",
            "convergence",
            f"Mean over seeds; band: the {describe_interval(interval)} at each evaluated step. "
            f"{under_training}".strip(),
            figures.plot_convergence(curves, out, metric=validation, **style),
        ),
        (
            "Time and memory per configuration",
            "cost",
            "Bars: mean over seeds; dots: the individual runs. Peak RSS is the whole process (Python, libraries, "
            "data), so methods differ little there; on a GPU the panel shows CUDA allocated memory instead, and "
            "a quantized base shows its saving in the weights panel.",
            figures.plot_cost(df, out, labels=labels, palette=palette),
        ),
        (
            f"{score.title} across seeds",
            "seed_boxplots",
            "Boxes: quartiles and median over seeds; whiskers: runs within 1.5 IQR; dots: the runs, each seed at "
            "the same place in every box (seeds in order from left to right), so one seed can be followed across "
            "configurations.",
            figures.plot_seed_boxplots(df, out, **metric, labels=labels, palette=palette),
        ),
    ]
    for axis, name in ABLATION_AXES.items():
        if axis in axes:
            figure = "ablation_" + axis.removeprefix("config.").replace(".", "_")
            drawn.append(
                (
                    f"Ablation: {name}",
                    figure,
                    f"Mean {score.name} along the {name}; {bars}"
                    + (
                        " Methods without this axis: horizontal reference lines, each in its own dash pattern, with "
                        "their interval shaded."
                        if ablation_figure.draws_references(df, axis, score.metric)
                        else ""
                    ),
                    ablation_figure.plot_ablation(df, axis, out, **metric, **style),
                )
            )
    return drawn


def chance_line(study_dir: Path, df: pd.DataFrame, score: Score) -> float | None:
    """The chance rate the accuracy figure draws (stats.chance's ``Chance.line``: where a configuration is at
    chance), or None (no rate, a perplexity, or every configuration above it)."""
    found = chance(study_dir, df) if score.metric == "metrics.test_top1" else None
    return found.line() if found is not None else None


def chance_sentence(rate: float | None) -> str:
    """The caption's sentence on the chance line, where it is drawn; "" where not."""
    if rate is None:
        return ""
    return f" Dotted: the task's chance rate, {100 * rate:.3g}%, which the configurations at chance (°) did not beat."


def side_by_side_sentence(df: pd.DataFrame, score: Score) -> str:
    """The caption's sentence on configurations drawn side by side (the same trainable parameters); "" for none."""
    groups = figures.shared_counts(df, score.metric)
    if not groups:
        return ""
    shown = [(count, [markdown_text(name) for name in names]) for count, names in groups]  # the legend's, as text
    each = "; ".join(f"{', '.join(names[:-1])} and {names[-1]}, {format_count(count)}" for count, names in shown)
    return (
        f" Configurations with the same trainable parameters ({each}) are drawn side by side around their count, "
        "left to right in the legend's order; the axis is that of the true counts."
    )


def validation_metric(curves: pd.DataFrame | None, score: Score) -> str:
    """The convergence figure's metric: val_perplexity for a study judged by perplexity whose runs logged it
    (runs from before the eval records held it: val_top1, per token), else val_top1."""
    logged = curves is not None and "val_perplexity" in curves and curves["val_perplexity"].notna().any()
    return "val_perplexity" if score.lower and logged else "val_top1"
