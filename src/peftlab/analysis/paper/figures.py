"""The paper's figures: drawing those that have data (as the report draws them, of the study's primary
score: test top-1, or a study of causal LMs' test perplexity), their captions, and their layout in main.tex
(alone or in pairs of subfigures). paper.py writes them under OUT/figures."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from peftlab.analysis.figures import ablation as ablation_figure
from peftlab.analysis.figures import quantization as quantization_figure
from peftlab.analysis.figures import study as figures
from peftlab.analysis.paper.ablations import ablation_groups, axis_words
from peftlab.analysis.report import tuning
from peftlab.analysis.report.figures import validation_metric
from peftlab.analysis.results.tuning_choices import borrowed_configurations
from peftlab.analysis.results.units import display_name, words
from peftlab.utils.files import read_regular_file

if TYPE_CHECKING:
    from peftlab.analysis.paper.study import Study

# the convergence figure's caption after the name of its metric
BAND = (
    ": mean over seeds, band: \\statConfidence\\% Student-t interval of the mean over the seeds evaluated at that step."
)
# name: caption (what the figure shows, as figures.py draws it)
FIGURE_CAPTIONS = {
    "accuracy_vs_params": "Mean test top-1 against trainable parameters (log scale), one point per configuration; "
    "bars: \\statConfidence\\% Student-t interval of the mean over seeds; dashed: Pareto front "
    "(ringed points).",
    "seed_boxplots": "Test top-1 of every run (dots) per configuration; boxes span the quartiles over seeds; a "
    "seed's dot sits at the same place in every box, seeds in order from left to right.",
    "convergence": "Validation top-1 against training step" + BAND,
    "cost": "Training time, peak memory and stored weight bytes per configuration: bars are means over seeds, dots "
    "the runs.",
    "ablation_method_r": "Test top-1 against the LoRA rank $r$; bars: \\statConfidence\\% Student-t interval of the "
    "mean over seeds; methods without a rank are horizontal reference lines, each in its own dash pattern, with "
    "their interval.",
    "quantization_tradeoff": "Stored bytes of the base weights relative to fp32 against the change in test top-1 from "
    "the fp32 run of the same configuration on matched seeds (\\statConfidence\\% "
    "Student-t interval); filled: adapter, open: merged model.",
}
# the captions that name the primary score, in a study judged by test perplexity (primary.py)
PERPLEXITY_CAPTIONS = {
    "accuracy_vs_params": "Mean test perplexity (lower is better) against trainable parameters (log scale), one "
    "point per configuration; bars: \\statConfidence\\% Student-t interval of the mean over seeds; dashed: Pareto "
    "front (ringed points: lower perplexity, fewer parameters).",
    "seed_boxplots": "Test perplexity (lower is better) of every run (dots) per configuration; boxes span the "
    "quartiles over seeds; a seed's dot sits at the same place in every box, seeds in order from left to right.",
    "ablation_method_r": "Test perplexity (lower is better) against the LoRA rank $r$; bars: \\statConfidence\\% "
    "Student-t interval of the mean over seeds; methods without a rank are horizontal reference lines, each in its "
    "own dash pattern, with their interval.",
    "quantization_tradeoff": "Stored bytes of the base weights relative to fp32 against the change in test top-1 per "
    "token (next-token accuracy, not the perplexity the study is judged by) from the fp32 run of the same "
    "configuration on matched seeds (\\statConfidence\\% Student-t interval); filled: adapter, open: merged model.",
}
# the convergence figure's caption by its metric (report_figures.validation_metric); a causal LM's
# val_top1 is per token
CONVERGENCE_CAPTIONS = {
    "val_perplexity": "Validation perplexity (lower is better) against training step",
    "val_top1": "Validation top-1 per token against training step",
}


# the ablation caption's clause on reference lines, said only where the figure draws them
REFERENCES = (
    "; methods without a rank are horizontal reference lines, each in its own dash pattern, with their interval."
)


def figure_captions(study: Study) -> dict[str, str]:
    """The captions of the figures, naming the score they plot (``study.score``)."""
    captions = dict(FIGURE_CAPTIONS)
    if study.score.lower:
        captions |= PERPLEXITY_CAPTIONS
        captions["convergence"] = CONVERGENCE_CAPTIONS[validation_metric(study.curves, study.score)] + BAND
    if not ablation_figure.draws_references(study.df, "config.method.r", study.score.metric):
        captions["ablation_method_r"] = captions["ablation_method_r"].replace(REFERENCES, ".")
    if crossed := crossed_with_rank(study):  # a line per level: said, as no point pools over them
        pooled = "them" if len(crossed) > 1 else "it"
        lines = f"; one line per level of {words([axis_words(k) for k in crossed])} (not pooled over {pooled})"
        captions["ablation_method_r"] = captions["ablation_method_r"].replace(
            "interval of the mean over seeds", "interval of the mean over seeds" + lines, 1
        )
    if chance_line(study) is not None:  # drawn where a configuration is at chance
        captions["accuracy_vs_params"] += (
            r" Dotted: the task's chance rate, \chanceRate{}\%, which the configurations at chance did not beat."
        )
    if borrowed_configurations(study.df):
        captions |= {name: captions[name] + BORROWED_CAPTION for name in NAMING}
    return captions


def chance_line(study: Study) -> float | None:
    """The chance rate the accuracy-parameters figure draws (stats.chance's ``Chance.line``), or None."""
    return study.chance.line() if study.chance is not None else None


# the figures that name each configuration: a borrowed one is marked there as in the tables
NAMING = ("accuracy_vs_params", "seed_boxplots", "convergence", "cost")
BORROWED_CAPTION = " $^{\\ddagger}$: not tuned itself; ran at the values tuned for another configuration (tune.share)."


def figure_labels(study: Study) -> dict[str, str]:
    """The study's labels, and each configuration at another's tuned values (tune.share) named with its ‡, as
    every table marks it."""
    borrowed = borrowed_configurations(study.df)
    methods = study.done.groupby("variant")["method"].first()
    return study.labels | {v: display_name(v, methods.get(v), study.labels) + " ‡" for v in borrowed}


def crossed_with_rank(study: Study) -> list[str]:
    """The config keys an ablation varies beside LoRA's rank (the adapted modules): the rank figure draws a line
    per level of each instead of pooling over them."""
    found = [k for _, keys in ablation_groups(study.done).values() if "method.r" in keys for k in keys]
    return [k for k in dict.fromkeys(found) if k != "method.r"]


def draw_figures(study: Study, out: Path) -> list[str]:
    """Draw the figures that have data; returns the names drawn (files <name>.pdf/.png)."""
    style = {"labels": figure_labels(study), "palette": study.palette}  # as the report draws them
    metric = {"metric": study.score.metric}
    drawn = [
        figures.plot_accuracy_vs_params(study.df, out, **metric, **style, chance=chance_line(study)),
        figures.plot_seed_boxplots(study.df, out, **metric, **style),
        figures.plot_convergence(study.curves, out, metric=validation_metric(study.curves, study.score), **style),
        figures.plot_cost(study.df, out, **style),
        quantization_figure.plot_quantization_tradeoff(study.df, out, **style),
    ]
    if "config.method.r" in study.axes:  # methods run at one r (full's is the unused default) are reference lines
        crossed = ["config." + key for key in crossed_with_rank(study)]
        drawn.append(
            ablation_figure.plot_ablation(study.df, "config.method.r", out, **metric, **style, crossed=crossed)
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


# a figure drawn this much wider than tall, or taller than wide (the seeds' boxes of 48 configurations, one
# per row), stands alone at the text's width (its height kept within the page): in a subfigure of half the
# width such a figure's labels were too small to read
WIDE, TALL = 2.4, 0.75
MEDIA_BOX = re.compile(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]")


def aspect(pdf: Path) -> float | None:
    """Width / height of a figure's PDF page (matplotlib writes one page with its MediaBox in plain text);
    None where the file or its box cannot be read."""
    try:
        box = MEDIA_BOX.search(read_regular_file(pdf, 1_000_000) or b"")  # a FIFO among a received paper's figures
    except OSError:
        return None
    if not box:
        return None
    x0, y0, x1, y1 = map(float, box.groups())
    return (x1 - x0) / (y1 - y0) if y1 > y0 else None


TEXT_WIDTH = 469.75  # points: main.tex's \\linewidth (11pt article, letter paper, 1 in margins)
MIN_PRINT = 7.0  # points: the least any text of a figure prints at
PAIR = 0.49  # of the line width: a subfigure's


def smallest_text(pdf: Path) -> float | None:
    """The smallest font size a figure's PDF sets (its content streams' ``Tf`` operators, zlib-compressed as
    matplotlib writes them), in the figure's points; None where none is read."""
    try:
        data = read_regular_file(pdf, 20_000_000) or b""
    except OSError:
        return None
    sizes = []
    for found in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.DOTALL):
        try:
            stream = zlib.decompress(found.group(1))
        except zlib.error:
            stream = found.group(1)
        sizes += [float(size) for size in re.findall(rb"/F\d+\s+([\d.]+)\s+Tf", stream)]
    return min(sizes) if sizes else None


def width_points(pdf: Path) -> float | None:
    """A figure's width in points (its PDF's MediaBox); None where unread."""
    try:
        box = MEDIA_BOX.search(read_regular_file(pdf, 1_000_000) or b"")
    except OSError:
        return None
    return float(box.group(3)) - float(box.group(1)) if box else None


def least_width(pdf: Path | None) -> float:
    """The least share of the line width a figure may print at so that its smallest text prints at MIN_PRINT or
    more (a figure drawn wider than the line with 7 pt text, or a subfigure of half of it, printed its legend and
    ticks at about 3 pt); 0 where the PDF cannot be read."""
    if pdf is None:
        return 0.0
    width, smallest = width_points(pdf), smallest_text(pdf)
    if not width or not smallest:
        return 0.0
    return width * MIN_PRINT / smallest / TEXT_WIDTH


def figure_layout(drawn: list[str], figure_dir: Path | None = None) -> dict:
    """The accuracy/parameter and cost plots alone, and any figure whose PDF in ``figure_dir`` is wider than
    WIDE or taller than TALL allows, or whose smallest text would print below MIN_PRINT in a subfigure; the others
    in pairs of subfigures (an odd one alone); a figure alone at its width in ALONE, or wider where its text needs
    it (``least_width``), at most the line's; ``order``: the figures in print order."""
    drawn = [name for name in drawn if name in FIGURE_CAPTIONS]
    ratios = {name: aspect(figure_dir / f"{name}.pdf") if figure_dir else None for name in drawn}
    least = {name: least_width(figure_dir / f"{name}.pdf" if figure_dir else None) for name in drawn}
    odd = {name for name in drawn if not TALL <= (ratios[name] or 1) <= WIDE or least[name] > PAIR}

    def width(name: str, default: str) -> str:
        share = min(1.0, max(float(ALONE.get(name, default)), least[name]))
        return f"{share:.2f}".rstrip("0").rstrip(".")

    alone = [(name, width(name, "1")) for name in drawn if name in ALONE or name in odd]
    paired = [name for name in drawn if name not in ALONE and name not in odd]
    if len(paired) % 2:
        name = paired.pop()
        alone.append((name, width(name, "0.6")))
    return {
        "alone": alone,
        "pairs": [paired[i : i + 2] for i in range(0, len(paired), 2)],
        "order": [name for name, _ in alone] + paired,
    }
