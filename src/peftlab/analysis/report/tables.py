"""LaTeX (booktabs) and Markdown tables from `summarize` and `paired_comparisons` outputs.

A table has one row per variant and one column per metric. Accuracies are fractions in
[0, 1] and are printed in percent with one decimal; F1 and the Matthews correlation times
100, a perplexity as it is, with one decimal, its lowest mean the best (``analysis.units``).
A LaTeX cell reads "mean ± h" when every interval of the table is a Student-t interval
(symmetric about the mean: h is its half-width) and "mean [low, high]" otherwise (a
bootstrap interval need not be symmetric); a Markdown cell always reads "mean [low, high]".
The note under the table names the interval and the units. With n = 1 a cell shows the
mean alone. The best mean of each column, compared as printed, is in bold, and so is every mean that ties it
(less than one test example apart: ``resolution``, stats.ties).

Names shown in a table or figure go through `display_name`: a study's `report.labels`
rename configurations and methods. A label is text with optional LaTeX math between
dollar signs ("LoRA ($r{=}4$)"): `latex_text` escapes the text and keeps the math.
"""

import numpy as np
import pandas as pd

from peftlab.analysis.results import units
from peftlab.analysis.results.escape import latex_escape, latex_text, markdown_text
from peftlab.analysis.results.tuning_choices import borrowed_note
from peftlab.analysis.results.units import METRIC_LABELS, display_name
from peftlab.analysis.stats.intervals import INTERVALS
from peftlab.analysis.stats.power import ALPHA
from peftlab.analysis.stats.ties import tied
from peftlab.training.run_result import lower_is_better


def latex_table(
    summary,
    comparisons=None,
    columns=None,
    caption="Test accuracy and trainable parameters.",
    label="tab:main",
    row="variant",
    alpha=0.05,
    labels=None,
    interval_text=None,
    borrowed=None,
    resolution=None,
    chance=None,
):
    """A booktabs `table` environment, ready to `\\input{}` into a document loading booktabs.

    summary: one or more `summarize` outputs concatenated (one row per variant and metric).
    comparisons: optional `paired_comparisons` output(s); a cell gets $^{*}$ where its
      Holm-adjusted paired t-test p-value (p_ttest_holm) is below alpha.
    columns: the metrics to show, a list, or a dict {metric: header text}; by default every
      metric in `summary`, headed by METRIC_LABELS. Headers are plain text and are escaped;
      the caption and display names are `latex_text` (math between dollar signs is kept).
    labels: display names (see `display_name`).
    interval_text: what the intervals are, for the note under the table, e.g. intervals.describe_interval(...);
      by default named from the summary's ci_method.
    borrowed: {configuration: the configuration whose tuned values it ran at} (tuning.borrowed): each is
      marked $^{\\ddagger}$ and the note says so, so no significance mark stands on one without it.
    chance: stats.chance.Chance of the study, or None: each configuration at chance is marked $^{\\circ}$ and the
      note says by which rule.
    The table also has a "Trainable params" column (from params.trainable and
    params.trainable_ratio or params.total) when the summary has them, and an "n" column.
    """
    table = table_content(summary, comparisons, columns, row, alpha, labels, interval_text, borrowed, resolution)
    table["chance"] = _chance_marks(chance, labels, summary)
    has_params = any(r["params"] is not None for r in table["rows"])
    header = ["Configuration"] + (["Trainable params"] if has_params else []) + ["$n$"]
    header += [latex_escape(text) for text in table["headers"]]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_text(caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for table_row in table["rows"]:
        cells = [latex_text(table_row["name"]) + (r"$^{\ddagger}$" if table_row["borrowed"] else "")]
        cells[0] += r"$^{\circ}$" if table_row["name"] in table["chance"]["names"] else ""
        if has_params:
            cells.append(latex_escape(table_row["params"] or "--"))
        cells.append(table_row["n"])
        cells += [_latex_cell(cell, table["symmetric"]) for cell in table_row["cells"]]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize " + _latex_note(table, alpha) + "}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def latex_document(table_tex, packages=("booktabs",)):
    """A minimal article that compiles `table_tex` on its own (pdflatex), loading `packages`."""
    return (
        "\\documentclass{article}\n"
        + "".join(f"\\usepackage{{{package}}}\n" for package in packages)
        + "\\begin{document}\n"
        f"{table_tex}"
        "\\end{document}\n"
    )


def markdown_table(
    summary,
    comparisons=None,
    columns=None,
    row="variant",
    alpha=0.05,
    labels=None,
    interval_text=None,
    borrowed=None,
    resolution=None,
    chance=None,
):
    """A pipe table for report.md: "mean [ci_low, ci_high]" in percent, best in bold.

    Same arguments as `latex_table`; a cell gets "*" where p_ttest_holm < alpha, a borrowed configuration's
    name "‡". A one-line note explaining the cells follows the table.
    """
    table = table_content(summary, comparisons, columns, row, alpha, labels, interval_text, borrowed, resolution)
    table["chance"] = _chance_marks(chance, labels, summary)
    has_params = any(r["params"] is not None for r in table["rows"])
    header = ["Configuration"] + (["Trainable params"] if has_params else []) + ["n"]
    header += [f"{text} [95% CI]" for text in table["headers"]]
    lines = ["| " + " | ".join(_markdown_escape(h) for h in header) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    for table_row in table["rows"]:
        cells = [table_row["params"] or "–"] if has_params else []
        cells.append(table_row["n"])
        cells += [_markdown_cell(cell) for cell in table_row["cells"]]
        name = markdown_text(table_row["name"]) + (" ‡" if table_row["borrowed"] else "")  # a label: escaped text
        name += " °" if table_row["name"] in table["chance"]["names"] else ""
        lines.append("| " + " | ".join([name] + [_markdown_escape(c) for c in cells]) + " |")
    lines += ["", _markdown_note(table, alpha)]
    return "\n".join(lines) + "\n"


# `peftlab results --format markdown` shows these columns (those the table has) by default.
RESULT_COLUMNS = (
    "run_id",
    "variant",
    "seed",
    "status",
    "metrics.test_top1",
    "metrics.test_top5",
    "params.trainable",
    "timing.train_seconds",
    "error",
)


def select_columns(df, columns=None):
    """`df` with the given columns in that order (a list, or a comma-separated string);
    a column the table lacks is a ValueError naming the ones it has."""
    if columns is None:
        return df
    columns = [c.strip() for c in columns.split(",") if c.strip()] if isinstance(columns, str) else list(columns)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"no column '{missing[0]}' in the results; columns: {', '.join(df.columns)}")
    return df[columns]


def results_markdown(df, columns=None):
    """A pipe table of a results table: RESULT_COLUMNS by default, empty cells empty.

    Numbers read as written: whole numbers without ".0", others with 4 significant digits.
    """
    df = select_columns(df, columns or [c for c in RESULT_COLUMNS if c in df.columns])
    lines = [
        "| " + " | ".join(_markdown_escape(c) for c in df.columns) + " |",
        "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else ":---" for c in df.columns) + "|",
    ]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_markdown_escape(_result_cell(v)) for v in row) + " |")
    return "\n".join(lines)


def _result_cell(value):
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "/".join(map(str, value))
    return " ".join(str(value).split())


def format_count(count):
    """A parameter count in short form: 930, 73.7K, 5.5M, 1.2B."""
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= divisor:
            return f"{count / divisor:.1f}{suffix}"
    return f"{count:.0f}"


def format_percent(ratio):
    """A fraction as a percentage: one decimal from 1%, two significant digits below."""
    percent = 100 * ratio
    if percent >= 1 or percent == 0:
        return f"{percent:.1f}%"
    return np.format_float_positional(percent, precision=2, fractional=False, trim="-") + "%"


def format_params(trainable, ratio):
    """ "73.7K (1.3%)"; without a ratio just "73.7K"; None when trainable is NaN."""
    if not np.isfinite(trainable):
        return None
    if not np.isfinite(ratio):
        return format_count(trainable)
    return f"{format_count(trainable)} ({format_percent(ratio)})"


def table_content(
    summary, comparisons, columns, row, alpha, labels=None, interval_text=None, borrowed=None, resolution=None
):
    """What both table formats print: headers and, per row, name, n, params and cells; a mean is bold where it
    prints as the best or ties it (``resolution``: {metric: one test example}, stats.ties)."""
    summary = summary if "metric" in summary.columns else summary.assign(metric="value")
    if columns is None:
        columns = list(dict.fromkeys(summary["metric"]))
    if not isinstance(columns, dict):
        columns = {metric: METRIC_LABELS.get(metric, metric) for metric in columns}
    significant = _significant_cells(comparisons, row, alpha)
    names = list(dict.fromkeys(summary[row]))
    best = {metric: _best_mean(summary[summary["metric"] == metric], metric) for metric in columns}
    rows = []
    for name in names:
        variant_rows = summary[summary[row] == name]
        cells, counts = [], []
        for metric in columns:
            found = variant_rows[variant_rows["metric"] == metric]
            if found.empty:
                cells.append(None)
                continue
            s, times = found.iloc[0], units.scale(metric)
            counts.append(int(s["n"]))
            cells.append(
                {
                    "mean": units.decimal(times * s["mean"]),
                    "half_width": _half_width(s["ci_low"], s["ci_high"], times),
                    "low": units.decimal(times * s["ci_low"]) if np.isfinite(s["ci_low"]) else None,
                    "high": units.decimal(times * s["ci_high"]) if np.isfinite(s["ci_high"]) else None,
                    "method": s.get("ci_method"),
                    "clipped": bool(s.get("ci_clipped", False)),  # cut at the metric's range: no longer symmetric
                    "bold": units.decimal(times * s["mean"]) == units.decimal(times * best[metric])
                    or tied(s["mean"], best[metric], (resolution or {}).get(metric, 0.0)),
                    "marker": (name, metric) in significant,
                }
            )
        method = variant_rows["method"].iloc[0] if "method" in variant_rows.columns else None
        rows.append(
            {
                "name": display_name(name, method, labels),
                "n": _count_range(counts),
                "params": _params_text(variant_rows),
                "cells": cells,
                "borrowed": (borrowed or {}).get(name),
            }
        )
    baselines = list(dict.fromkeys(comparisons["baseline"])) if comparisons is not None else []
    intervals = {
        cell["method"] for r in rows for cell in r["cells"] if cell is not None and cell["half_width"] is not None
    }
    clipped = any(cell is not None and cell["clipped"] for r in rows for cell in r["cells"])
    interval_text = interval_text or _interval_text(intervals)
    if clipped:
        interval_text += f", cut at {units.range_words(columns)} where it passed them"
    return {
        "headers": list(columns.values()),
        "units": units.units(columns),
        "best": units.best_words(columns)
        + (" and every mean less than one test example from it" if any((resolution or {}).values()) else ""),
        "rows": rows,
        "baselines": [display_name(b, None, labels) for b in baselines],
        # Holm over the main table's configurations, the ablations' in a family of their own (stats.families)
        "families": comparisons is not None and "family" in comparisons and comparisons["family"].nunique() > 1,
        "symmetric": intervals <= {"t"} and not clipped,
        "interval_text": interval_text,
        "any_single_run": any(cell is not None and cell["half_width"] is None for r in rows for cell in r["cells"]),
        # configuration -> the one whose tuned values it ran at, as the table names both
        "borrowed": {r["name"]: display_name(r["borrowed"], None, labels) for r in rows if r["borrowed"] is not None},
    }


def _interval_text(methods):
    """The intervals' name from the summary's ci_method values (95%: summarize's default)."""
    if methods <= {"t"}:
        return f"95% {INTERVALS['t']} interval of the mean over seeds"
    if methods <= {"BCa", "percentile"}:
        return "95% bootstrap interval of the mean over seeds (" + " or ".join(sorted(methods)) + ")"
    return "95% confidence interval of the mean over seeds"


def _significant_cells(comparisons, row, alpha):
    if comparisons is None:
        return set()
    chosen = comparisons[comparisons["p_ttest_holm"] < alpha]
    return set(zip(chosen[row], chosen["metric"]))


def _best_mean(rows, metric):
    """The best mean: the highest, or for a perplexity the lowest."""
    if rows.empty:
        return None
    return rows["mean"].min() if lower_is_better(metric) else rows["mean"].max()


def _half_width(low, high, times=100.0):
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return f"{times * (high - low) / 2:.1f}"


def _count_range(counts):
    if not counts:
        return "0"
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"


def _params_text(variant_rows):
    if "params.trainable" not in variant_rows.columns:
        return None
    trainable = variant_rows["params.trainable"].astype(float).mean()
    if "params.trainable_ratio" in variant_rows.columns:
        ratio = variant_rows["params.trainable_ratio"].astype(float).mean()
    elif "params.total" in variant_rows.columns:
        ratio = trainable / variant_rows["params.total"].astype(float).mean()
    else:
        ratio = np.nan
    return format_params(trainable, ratio)


def _latex_cell(cell, symmetric):
    if cell is None:
        return "--"
    mean = rf"\mathbf{{{cell['mean']}}}" if cell["bold"] else cell["mean"]
    marker = "^{*}" if cell["marker"] else ""
    if cell["half_width"] is None:
        return f"${mean}{marker}$"
    if symmetric:
        return rf"${mean} \pm {cell['half_width']}{marker}$"
    return f"${mean}$ [{cell['low']}, {cell['high']}]" + (f"${marker}$" if marker else "")


def _latex_note(table, alpha):
    interval = latex_escape(table["interval_text"])
    if table["symmetric"]:
        cells = rf"Mean over $n$ seeds $\pm$ half the width of the {interval}, {latex_escape(table['units'])}."
    else:
        cells = rf"Mean over $n$ seeds [the {interval}], {latex_escape(table['units'])}."
    sentences = [cells, f"Bold: best mean per column{latex_escape(table['best'])}."]
    if table["any_single_run"]:
        sentences.append("No interval where $n = 1$.")
    if table["baselines"]:
        sentences.append(
            rf"$^{{*}}$: differs from {_baseline_text(table, latex_text)} with $p < {alpha:g}$ "
            f"(paired t-test on matched seeds, Holm-corrected{_family_text(table)})."
        )
    if table["borrowed"]:
        sentences.append(borrowed_note(table["borrowed"], latex_text, r"$^{\ddagger}$"))
    if table["chance"]["names"]:
        sentences.append(r"$^{\circ}$: " + latex_escape(table["chance"]["note"]))
    return " ".join(sentences)


def _family_text(table) -> str:
    """Over which comparisons the mark's Holm correction ran, where the ablations' are a family apart."""
    return (
        " within its family: the main configurations, or apart those only an ablation runs" if table["families"] else ""
    )


def _baseline_text(table, show):
    baselines = [show(b) for b in table["baselines"]]
    if len(baselines) == 1:
        return baselines[0]
    return "the baseline of its dataset (" + ", ".join(baselines) + ")"


def _markdown_cell(cell):
    if cell is None:
        return "–"
    text = f"**{cell['mean']}**" if cell["bold"] else cell["mean"]
    if cell["low"] is not None:
        text += f" [{cell['low']}, {cell['high']}]"
    return text + (" *" if cell["marker"] else "")


def _markdown_note(table, alpha):
    note = f"Mean over n seeds [{table['interval_text']}], {table['units']}. Bold: best mean per column{table['best']}."
    if table["any_single_run"]:
        note += " No interval where n = 1."
    if table["baselines"]:
        note += (
            f" *: differs from {_baseline_text(table, markdown_text)} with p < {alpha:g} "
            f"(paired t-test on matched seeds, Holm-corrected{_family_text(table)})."
        )
    if table["borrowed"]:
        note += " " + borrowed_note(table["borrowed"], markdown_text)
    if table["chance"]["names"]:
        note += " °: " + table["chance"]["note"]
    return note


def _chance_marks(chance, labels, summary) -> dict:
    """The display names of the configurations at chance (``chance``: stats.chance.Chance or None) and the note's
    sentence on the mark: the rate, its rule and the test."""
    if chance is None or not chance.at_chance():
        return {"names": set(), "note": ""}
    methods = summary.groupby("variant")["method"].first() if "method" in summary else {}
    names = {display_name(v, methods.get(v) if len(methods) else None, labels) for v in chance.at_chance()}
    note = (
        "at chance: some seed's run is not above "
        + (
            f"its dataset's chance rate on one of its datasets ({chance.rule_words()})"
            if chance.tasks
            else f"the task's chance rate of {chance.rate_words()} ({chance.rule_words()})"
        )
        + f" by its own one-sided exact binomial test at the {ALPHA:g} level (the test set's images the unit: "
        "the seeds, scored on the same images, are not pooled)."
    )
    return {"names": names, "note": note}


def _markdown_escape(text):
    return str(text).replace("|", r"\|")
