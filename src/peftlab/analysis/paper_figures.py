"""The paper's figures: drawing those that have data (as the report draws them), their captions, and
their layout in main.tex (alone or in pairs of subfigures). paper.py writes them under OUT/figures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from peftlab.analysis import ablation_figure, figures, tuning

if TYPE_CHECKING:
    from peftlab.analysis.paper import Study

# name: caption (what the figure shows, as figures.py draws it)
FIGURE_CAPTIONS = {
    "accuracy_vs_params": "Mean test top-1 against trainable parameters (log scale), one point per configuration; "
    "bars: \\statConfidence\\% Student-t interval of the mean over seeds; dashed: Pareto front "
    "(ringed points).",
    "seed_boxplots": "Test top-1 of every run (dots) per configuration; boxes span the quartiles over seeds; a "
    "seed's dot sits at the same place in every box, seeds in order from left to right.",
    "convergence": "Validation top-1 against training step: mean over seeds, band: \\statConfidence\\% Student-t "
    "interval of the mean over the seeds evaluated at that step.",
    "cost": "Training time, peak memory and stored weight bytes per configuration: bars are means over seeds, dots "
    "the runs.",
    "ablation_method_r": "Test top-1 against the LoRA rank $r$; bars: \\statConfidence\\% Student-t interval of the "
    "mean over seeds; methods without a rank are dashed reference lines with their interval.",
    "quantization_tradeoff": "Stored bytes of the base weights relative to fp32 against the change in test top-1 from "
    "the fp32 run of the same configuration on matched seeds (\\statConfidence\\% "
    "Student-t interval); filled: adapter, open: merged model.",
}


def draw_figures(study: Study, out: Path) -> list[str]:
    """Draw the figures that have data; returns the names drawn (files <name>.pdf/.png)."""
    style = {"labels": study.labels, "palette": study.palette}  # as the report draws them
    drawn = [
        figures.plot_accuracy_vs_params(study.df, out, **style),
        figures.plot_seed_boxplots(study.df, out, **style),
        figures.plot_convergence(study.curves, out, **style),
        figures.plot_cost(study.df, out, **style),
        figures.plot_quantization_tradeoff(study.df, out, **style),
    ]
    if "config.method.r" in study.axes:  # LoRA runs only: full and linear configs carry a default r too
        drawn.append(
            ablation_figure.plot_ablation(study.df[study.df["method"] == "lora"], "config.method.r", out, **style)
        )
    drawn.append(tuning.plot_tuning(study.searches, out, **style))  # None when not tuned
    return [Path(paths[0]).stem for paths in drawn if paths]


def existing_figures(out: Path) -> list[str]:
    return [name for name in (*FIGURE_CAPTIONS, tuning.FIGURE) if (out / f"{name}.pdf").is_file()]


# figures drawn wide enough to stand alone, with their width in the text; the others go in pairs
ALONE = {"accuracy_vs_params": "0.8", "cost": "0.9"}
SHORT_CAPTIONS = {
    "seed_boxplots": "Spread over seeds.",
    "convergence": "Learning curves.",
    "cost": "Cost.",
    "ablation_method_r": "LoRA rank.",
    "quantization_tradeoff": "Quantization.",
}


def figure_layout(drawn: list[str]) -> dict:
    """The accuracy/parameter and cost plots alone, the others in pairs of subfigures (an odd one alone);
    ``order``: the figures in print order."""
    drawn = [name for name in drawn if name in FIGURE_CAPTIONS]
    alone = [(name, ALONE[name]) for name in drawn if name in ALONE]
    paired = [name for name in drawn if name not in ALONE]
    if len(paired) % 2:
        alone.append((paired.pop(), "0.6"))
    return {
        "alone": alone,
        "pairs": [paired[i : i + 2] for i in range(0, len(paired), 2)],
        "order": [name for name, _ in alone] + paired,
    }
