"""The report's "Per-class accuracy" section, from each completed run's test counts per class (result.json's
``per_class``, read by ``analysis.results.per_class``): each class's test accuracy (correct / labelled) per
configuration, the mean over its seeds, the classes named as the data names them; and a confusion-matrix figure,
each configuration's seeds summed and each row normalised to its true class.

Runs of different classes (several datasets) get a part each. Beyond ``TABLE_CLASSES`` classes the table shows
those whose accuracy differs most between configurations and says so; every class is in a CSV beside the LaTeX
tables. A study whose runs recorded no counts (a peftlab before the record) gets one sentence saying so; a study of
causal LMs (whose "classes" are the vocabulary) no section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from peftlab.analysis.figures.per_class import plot_confusion_matrices
from peftlab.analysis.results.escape import markdown_text
from peftlab.analysis.results.per_class import ClassCounts, load_per_class
from peftlab.analysis.results.units import display_name
from peftlab.training.run_result import CONFUSION_MAX_CLASSES
from peftlab.utils.files import write_atomic

TABLE_CLASSES = 20  # more classes than this: the table shows the 20 whose accuracy differs most between configurations


def report_section(study_dir: Path, out: Path, labels: dict, palette: dict) -> list[str]:
    """The section's report.md lines (figures under ``out``/figures, the CSVs under ``out``/tables); [] where no
    completed run is a classifier's."""
    counts = load_per_class(study_dir)
    if counts.runs.empty and not counts.unrecorded and not counts.damaged:
        return []
    lines = ["## Per-class accuracy", ""]
    if counts.runs.empty:
        return lines + left_out_lines(counts)
    parts = list(counts.runs.groupby("classes", sort=False))
    for number, (_, runs) in enumerate(parts, start=1):
        suffix = f"_{number}" if len(parts) > 1 else ""
        if len(parts) > 1:
            names = ", ".join(sorted({str(d) for d in runs["dataset"].dropna()})) or "unnamed data"
            lines += [f"### {markdown_text(names)} ({runs['index'].nunique()} classes)", ""]
        lines += class_table(runs, out / "tables" / f"per_class_accuracy{suffix}.csv", labels, palette)
        lines += confusion_figure(runs, counts, out / "figures", f"confusion_matrix{suffix}", labels, palette)
    return lines + left_out_lines(counts)


def class_accuracy(runs: pd.DataFrame, palette: dict) -> pd.DataFrame:
    """Classes x configurations (the palette's order): the mean over seeds of each run's correct / labelled; NaN
    where a configuration's runs held no test example of the class."""
    runs = runs.assign(accuracy=runs["correct"] / runs["labelled"].where(runs["labelled"] > 0))
    table = runs.groupby(["index", "variant"])["accuracy"].mean().unstack("variant")
    order = [v for v in palette["variants"] if v in table.columns]
    return table[order + [v for v in table.columns if v not in order]]


def class_table(runs: pd.DataFrame, csv: Path, labels: dict, palette: dict) -> list[str]:
    """The table of per-class accuracy (percent), at most ``TABLE_CLASSES`` rows; every class in ``csv``."""
    accuracy = class_accuracy(runs, palette)
    names = runs.drop_duplicates("index").set_index("index")["name"]
    examples = runs.groupby("index")["labelled"].agg(["min", "max"])
    tested = accuracy.index[accuracy.notna().any(axis=1)]
    method_of = runs.drop_duplicates("variant").set_index("variant")["method"]
    full = pd.DataFrame({"class": names.loc[tested], "test examples": examples.loc[tested, "max"]})
    full = pd.concat([full, 100 * accuracy.loc[tested]], axis=1)  # a configuration may be called "class"
    write_atomic(csv, lambda tmp: full.to_csv(tmp, index_label="index"))
    shown, note = chosen_classes(accuracy.loc[tested])
    seeds = runs.groupby("variant")["seed"].nunique()
    lines = [
        "Test accuracy of each class (its test examples predicted as it, in %), the mean over each configuration's "
        f"seeds ({seed_words(seeds)}); classes as the data names them. {note}".strip(),
        "",
        "| class | test examples | "
        + " | ".join(markdown_text(display_name(v, method_of[v], labels)) for v in accuracy)
        + " |",
        "|---|---:|" + "---:|" * len(accuracy.columns),
    ]
    for index in shown:
        low, high = examples.loc[index]
        count = f"{low}" if low == high else f"{low}-{high}"
        cells = " | ".join("" if np.isnan(v) else f"{100 * v:.1f}" for v in accuracy.loc[index])
        lines.append(f"| {markdown_text(names[index])} | {count} | {cells} |")
    left = len(accuracy) - len(tested)
    if left:
        lines += ["", f"{left} class{'es' if left > 1 else ''} of the head had no test example: not shown."]
    return lines + ["", f"Every class: `tables/{csv.name}`.", ""]


def chosen_classes(accuracy: pd.DataFrame) -> tuple[list[int], str]:
    """(the classes the table shows, in class order; the sentence that says which where not all): beyond
    ``TABLE_CLASSES``, those whose mean accuracy differs most between configurations (the largest range), or with
    one configuration those of lowest accuracy."""
    if len(accuracy) <= TABLE_CLASSES:
        return list(accuracy.index), ""
    spread = accuracy.max(axis=1) - accuracy.min(axis=1)
    ranked = pd.DataFrame({"spread": -spread, "mean": accuracy.mean(axis=1)}).sort_values(["spread", "mean"])
    shown = sorted(ranked.index[:TABLE_CLASSES])
    which = (
        "whose accuracy differs most between configurations (the largest range of their means)"
        if accuracy.shape[1] > 1
        else "of lowest accuracy"
    )
    return shown, f"Of the {len(accuracy)} classes the table shows the {TABLE_CLASSES} {which}, in class order."


def seed_words(seeds: pd.Series) -> str:
    counts = sorted(set(seeds))
    return f"{counts[0]} seed{'s' if counts[0] > 1 else ''}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} seeds"


def confusion_figure(runs: pd.DataFrame, counts: ClassCounts, out: Path, name: str, labels: dict, palette) -> list:
    """The confusion-matrix figure's lines: each configuration's matrices summed over its seeds."""
    classes = runs["index"].nunique()
    drawn = runs.drop_duplicates("run_id")
    drawn = drawn[drawn["run_id"].isin(counts.confusion)]
    if drawn.empty:
        return [
            f"No confusion matrix: result.json records one up to {CONFUSION_MAX_CLASSES} classes, and these runs "
            f"have {classes}.",
            "",
        ]
    order = [v for v in palette["variants"] if v in set(drawn["variant"])]
    matrices = {v: sum(counts.confusion[r] for r in drawn.loc[drawn["variant"] == v, "run_id"]) for v in order}
    method_of = drawn.drop_duplicates("variant").set_index("variant")["method"].to_dict()
    names = list(runs.drop_duplicates("index").sort_values("index")["name"])
    paths = plot_confusion_matrices(matrices, names, out, name, labels, method_of)
    png = next(p for p in paths if str(p).endswith(".png"))
    seeds = drawn.groupby("variant")["seed"].nunique()
    return [
        f"![Confusion matrix](figures/{Path(png).name})",
        "",
        f"Confusion matrix on the test split per configuration, its runs' counts summed ({seed_words(seeds)}), "
        "each row normalised to its true class's test examples: a row says where that class's examples went "
        "(the diagonal is its accuracy). Rows: true class; columns: predicted class.",
        "",
    ]


def left_out_lines(counts: ClassCounts) -> list[str]:
    """What the section could not read: completed runs without counts, and runs whose counts are damaged."""
    lines = []
    if counts.unrecorded and counts.runs.empty and not counts.damaged:
        lines.append("Per-class counts were not recorded: no run's result.json holds them (`per_class`).")
    elif counts.unrecorded:
        lines.append(
            f"Left out: {runs_named(counts.unrecorded)}, whose result.json records no per-class counts "
            "(a peftlab before the record, or a damaged `per_class`)."
        )
    if counts.damaged:
        lines.append(
            f"Left out: {runs_named(counts.damaged)}, whose `per_class` is damaged (not three lists of counts of one "
            "length, no class more often right than labelled, and a square matrix of them or null)."
        )
    return lines + [""] if lines else []


def runs_named(run_ids: list[str]) -> str:
    shown = ", ".join(markdown_text(r) for r in run_ids[:4]) + (f" and {len(run_ids) - 4} more" if run_ids[4:] else "")
    return f"{len(run_ids)} run{'s' if len(run_ids) > 1 else ''} ({shown})"
