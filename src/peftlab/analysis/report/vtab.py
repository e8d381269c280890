"""VTAB-1k as the field reports it: test top-1 per task, the three group means and both averages.

A study whose runs include ``vtab1k/<task>`` datasets gets a "VTAB-1k" section in report.md, the
booktabs table ``tables/vtab.tex`` and the figure ``figures/vtab_differences.{png,pdf}``
(vtab_figure.py; the numbers: vtab_scores.py). Papers report one of two averages, and they
differ, so both are printed, each under its own name:

    mean of 19 tasks          every task weighs 1/19 (the eight Structured tasks 8/19)
    mean of 3 group means     every group weighs 1/3 (a Natural task 1/21, a Specialized task
                              1/12, a Structured task 1/24)

A study that ran fewer tasks says "mean of N tasks" and names the missing ones; its group means
are over the tasks of the group it ran. A configuration (a variant without its dataset,
``comparisons.algorithm_name``) missing a task the study ran gets no group means or averages:
they would not compare. The intervals of the averages are over seeds: the report's interval of
the per-seed averages, over the seeds that completed every task of the study.

Published rows (configs/literature.yaml, ``vtab1k``) stand in their own block, labelled
"published (not run here)" with their protocol; they never enter the study's tables or averages, and a
study that ran none of VTAB-1k's own tasks (tasks of its own alone) gets none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from peftlab.analysis.figures.vtab import plot_vtab_differences
from peftlab.analysis.report.literature import LITERATURE, VtabCitation, load_vtab_literature
from peftlab.analysis.report.tables import latex_document
from peftlab.analysis.results.escape import latex_escape, latex_text
from peftlab.analysis.results.units import display_name, markdown_name
from peftlab.analysis.stats.intervals import describe_interval
from peftlab.analysis.stats.vtab_scores import (
    OFFICIAL_GROUPS,
    averages,
    baseline_algorithm,
    groups_label,
    study_tasks,
    summary_table,
    task_groups,
    task_means,
    tasks_label,
    vtab_runs,
)
from peftlab.config.suites import VTAB1K_TASKS, VTAB_GROUPS
from peftlab.utils.errors import UserError
from peftlab.utils.files import write_text_atomic

# the names VTAB-1k tables print (VPT, NOAH, SSF), for peftlab's task folders
TASK_LABELS = {
    "cifar": "CIFAR-100",
    "caltech101": "Caltech101",
    "dtd": "DTD",
    "oxford_flowers102": "Flowers102",
    "oxford_iiit_pet": "Pets",
    "svhn": "SVHN",
    "sun397": "Sun397",
    "patch_camelyon": "Camelyon",
    "eurosat": "EuroSAT",
    "resisc45": "Resisc45",
    "diabetic_retinopathy": "Retinopathy",
    "clevr_count": "Clevr-Count",
    "clevr_dist": "Clevr-Dist",
    "dmlab": "DMLab",
    "kitti": "KITTI-Dist",
    "dsprites_loc": "dSpr-Loc",
    "dsprites_ori": "dSpr-Ori",
    "smallnorb_azi": "sNORB-Azim",
    "smallnorb_ele": "sNORB-Elev",
}


def report_section(
    df: pd.DataFrame,
    baseline: str | None,
    interval: str,
    labels: dict,
    out: Path,
    caption_name: str = "",
    literature: str | Path = LITERATURE,
) -> list[str]:
    """report.md's "VTAB-1k" section, with tables/vtab.tex and the difference figure written under
    ``out``; [] for a study without VTAB-1k runs."""
    runs = vtab_runs(df)
    if runs.empty:
        return []
    tasks, groups = study_tasks(runs), task_groups(runs)
    means, seeds = task_means(runs)
    summary = summary_table(runs, interval)
    names = {a: markdown_name(a, None, labels) for a in means.index}
    lines = ["## VTAB-1k", "", coverage(tasks, groups), ""]
    lines += task_table(means, seeds, summary, tasks, names, groups)
    lines += averages_table(summary, tasks, names, interval, groups)
    published = []  # measured on VTAB-1k's tasks: beside a study that ran one of them, not its own tasks alone
    try:
        if any(t in VTAB1K_TASKS for t in tasks):
            published = load_vtab_literature(literature)
    except UserError as err:
        lines += [f"Published VTAB-1k rows skipped: {err}", ""]
    lines += two_averages(tasks, published, groups)
    lines += published_block(published)
    tex = latex_vtab_table(means, summary, tasks, labels, interval, caption_name, groups)
    write_text_atomic(out / "tables" / "vtab.tex", tex)
    write_text_atomic(out / "tables" / "vtab_document.tex", latex_document(tex, packages=("booktabs", "graphicx")))
    lines += ["LaTeX: `tables/vtab.tex` (booktabs, graphicx; `tables/vtab_document.tex` compiles alone).", ""]
    return lines + difference_figure(means, baseline_algorithm(df, baseline), labels, out / "figures", groups)


def coverage(tasks: list[str], groups: dict[str, str] = OFFICIAL_GROUPS) -> str:
    """Which of the 19 tasks the study ran, and the missing ones by group; tasks of one's own are named."""
    own = [t for t in tasks if t not in VTAB1K_TASKS]
    mine = (
        f" It also ran {len(own)} task(s) of its own: {', '.join(f'{t} in {groups[t]}' for t in own)}." if own else ""
    )
    return _coverage([t for t in tasks if t in VTAB1K_TASKS], tasks, groups) + mine


def _coverage(official: list[str], tasks: list[str], groups: dict[str, str]) -> str:
    """The sentence on VTAB-1k's own tasks: ``official`` of them ran, the averages are over ``tasks``."""
    counts = ", ".join(f"{sum(groups[t] == g for t in official)} {g}" for g in VTAB_GROUPS)
    if len(official) == len(VTAB1K_TASKS):
        return f"The study ran all 19 VTAB-1k tasks ({counts}). Test top-1 (%), mean over seeds."
    missing = [t for t in VTAB1K_TASKS if t not in official]
    by_group = "; ".join(
        f"{g}: {', '.join(t for t in missing if groups[t] == g)}"
        for g in VTAB_GROUPS
        if any(groups[t] == g for t in missing)
    )
    return (
        f"The study ran {len(official)} of VTAB-1k's 19 tasks ({counts}); {len(missing)} are missing ({by_group}). "
        f'Its averages are over the tasks it ran ("{tasks_label(len(tasks))}"), so they compare with no '
        "published mean of 19 tasks. Test top-1 (%), mean over seeds."
    )


def _number(value: float, digits: int) -> str:
    return "–" if not np.isfinite(value) else f"{value:.{digits}f}"


def task_table(means, seeds, summary, tasks, names, groups: dict[str, str] = OFFICIAL_GROUPS) -> list[str]:
    """The per-task table: a column per task, each group closed by its group mean, then both averages."""
    header, cells = ["configuration", "runs per task"], {a: [names[a]] for a in means.index}
    by_algorithm = summary.set_index("algorithm")
    for algorithm in means.index:
        counts = seeds.loc[algorithm].dropna().astype(int)
        cells[algorithm].append(str(counts.min()) if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}")
    for group in VTAB_GROUPS:
        mine = [t for t in tasks if groups[t] == group]
        if not mine:
            continue
        header += [TASK_LABELS.get(t, t) for t in mine] + [f"**{group}**"]
        for algorithm in means.index:
            cells[algorithm] += [_number(means.loc[algorithm, t], 1) for t in mine]
            cells[algorithm].append(f"**{_number(by_algorithm.loc[algorithm, group], 2)}**")
    header += [tasks_label(len(tasks)), groups_label(tasks, groups)]
    for algorithm in means.index:
        cells[algorithm] += [_number(by_algorithm.loc[algorithm, key], 2) for key in ("tasks", "groups")]
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.values()]
    return lines + [
        "",
        "Bold columns: the group means, each the mean of the group's tasks in this study. "
        "A configuration without a run on every task has no group means or averages (–).",
        "",
    ]


def averages_table(summary, tasks, names, interval, groups: dict[str, str] = OFFICIAL_GROUPS) -> list[str]:
    """Both averages with their seed intervals and the gap between them."""
    label_tasks, label_groups = tasks_label(len(tasks)), groups_label(tasks, groups)
    lines = [
        f"| configuration | seeds on every task | {label_tasks} [95% CI] | {label_groups} [95% CI] | "
        "groups minus tasks |",
        "|:---|---:|---:|---:|---:|",
    ]
    for row in summary.itertuples():
        shown = [
            f"{_number(getattr(row, key), 2)}{_bounds(getattr(row, key + '_low'), getattr(row, key + '_high'))}"
            for key in ("tasks", "groups")
        ]
        gap = row.groups - row.tasks
        lines.append(
            f"| {names[row.algorithm]} | {row.n_seeds} | {shown[0]} | {shown[1]} | "
            f"{'–' if not np.isfinite(gap) else f'{gap:+.2f}'} |"
        )
    return lines + [
        "",
        f"Intervals: the {describe_interval(interval)}, of the per-seed averages over the seeds that "
        "completed every task of the study; none with fewer than two such seeds.",
        "",
    ]


def _bounds(low: float, high: float) -> str:
    return f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) and np.isfinite(high) else ""


def two_averages(
    tasks: list[str], published: list[VtabCitation], groups: dict[str, str] = OFFICIAL_GROUPS
) -> list[str]:
    """The sentence saying the two averages differ, with the study's weights and the published gap."""
    ran = [g for g in VTAB_GROUPS if any(groups[t] == g for t in tasks)]
    if len(ran) == 1:
        return [
            f"The study's tasks lie in one group ({ran[0]}), so here its two averages coincide; over VTAB-1k's "
            "three groups they differ (in published tables the mean of 3 group means runs 2-3 points above the "
            "mean of 19 tasks). Compare a number only with one of the same kind.",
            "",
        ]
    weights = ", ".join(f"a {g} task 1/{len(ran) * sum(groups[t] == g for t in tasks)}" for g in ran)
    text = (
        f"**The two averages differ.** The {tasks_label(len(tasks))} weighs every task 1/{len(tasks)}; the "
        f"{groups_label(tasks, groups)} weighs every group 1/{len(ran)} ({weights}). Papers report either; in "
        "published VTAB-1k tables the mean of 3 group means runs 2-3 points above the mean of 19 tasks"
    )
    if published:
        gaps = [averages(c.numbers(), list(VTAB1K_TASKS))["groups"] - float(c.mean) for c in published]
        text += f" (the published rows below: {min(gaps):+.2f} to {max(gaps):+.2f} points)"
    return [text + ". Compare a number only with one of the same kind.", ""]


def published_block(published: list[VtabCitation]) -> list[str]:
    """The published rows, one table per source, apart from the study's and labelled as such."""
    if not published:
        return []
    lines = [
        "### Published (not run here)",
        "",
        "Numbers from papers and benchmarks, shown beside the study's and never mixed into its tables or "
        "averages. Each source's protocol differs from peftlab's, which tunes on val200, trains on "
        "train800val200 and evaluates test once per run, over several seeds.",
        "",
    ]
    for source in dict.fromkeys(c.source for c in published):
        rows = [c for c in published if c.source == source]
        first = rows[0]
        lines += [
            f"**{first.paper}**, {first.table}; {first.model}; {first.metric}. Protocol: {first.protocol}. "
            f"Checked: {first.checked}.",
            "",
            "| method (peftlab method) | trainable | Natural * | Specialized * | Structured * | "
            "mean of 19 tasks (printed) | mean of 3 group means * |",
            "|:---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in rows:
            values = averages(c.numbers(), list(VTAB1K_TASKS))
            lines.append(
                f"| published (not run here): {c.method} ({c.peftlab or 'none in peftlab'}) | "
                f"{c.trainable or '–'} | "
                + " | ".join(f"{values[g]:.2f}" for g in VTAB_GROUPS)
                + f" | {c.mean} | {values['groups']:.2f} |"
            )
        lines += [
            "",
            "\\* computed by peftlab from the source's printed task columns (one decimal each); the source "
            "prints no group means.",
            "",
        ]
    return lines


def latex_vtab_table(
    means, summary, tasks, labels, interval, caption_name: str = "", task_group: dict[str, str] = OFFICIAL_GROUPS
) -> str:
    """The booktabs table: a rotated column per task under its group's heading, the group means, then
    both averages with half the width of their (Student-t) interval or [low, high] (bootstrap)."""
    groups = [(g, [t for t in tasks if task_group[t] == g]) for g in VTAB_GROUPS]
    groups = [(g, mine) for g, mine in groups if mine]
    n_columns = 1 + sum(len(mine) + 1 for _, mine in groups) + 2
    heading, rules, start = [""], [], 2
    for group, mine in groups:
        heading.append(rf"\multicolumn{{{len(mine) + 1}}}{{c}}{{{group}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + len(mine)}}}")
        start += len(mine) + 1
    heading.append(r"\multicolumn{2}{c}{Average}")
    rules.append(rf"\cmidrule(l){{{start}-{start + 1}}}")
    names = ["Method"] + [
        rf"\rotatebox{{90}}{{{latex_escape(TASK_LABELS.get(t, t))}}}" for _, mine in groups for t in mine
    ]
    names = _with_group_columns(names, groups) + [
        latex_escape(tasks_label(len(tasks)).capitalize()),
        latex_escape(groups_label(tasks, task_group).capitalize()),
    ]
    lines = [
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{latex_text(caption_name + ': ' if caption_name else '')}VTAB-1k test top-1 (\%) per task, "
        r"mean over seeds; group means; the two averages.}",
        r"\label{tab:vtab}",
        r"\resizebox{\linewidth}{!}{%",
        r"\begin{tabular}{l" + "r" * (n_columns - 1) + "}",
        r"\toprule",
        " & ".join(heading) + r" \\",
        " ".join(rules),
        " & ".join(names) + r" \\",
        r"\midrule",
    ]
    by_algorithm = summary.set_index("algorithm")
    for algorithm in means.index:
        lines.append(
            " & ".join(_latex_row(algorithm, means, by_algorithm.loc[algorithm], groups, labels, interval)) + r" \\"
        )
    lines += [
        r"\bottomrule",
        r"\end{tabular}}",
        r"\par\smallskip",
        r"\parbox{\linewidth}{\footnotesize " + _latex_note(tasks, interval, task_group) + "}",
        r"\end{table*}",
    ]
    return "\n".join(lines) + "\n"


def _with_group_columns(names: list[str], groups) -> list[str]:
    """The column names with each group's mean column ("mean", italic) after its tasks."""
    out, i = names[:1], 1
    for _, mine in groups:
        out += names[i : i + len(mine)] + [r"\rotatebox{90}{\emph{mean}}"]
        i += len(mine)
    return out


def _latex_row(algorithm, means, summary_row, groups, labels, interval) -> list[str]:
    cells = [latex_text(display_name(algorithm, None, labels))]
    for group, mine in groups:
        cells += [_number(means.loc[algorithm, t], 1).replace("–", "--") for t in mine]
        cells.append(r"\emph{" + _number(summary_row[group], 2).replace("–", "--") + "}")
    for key in ("tasks", "groups"):
        mean, low, high = summary_row[key], summary_row[f"{key}_low"], summary_row[f"{key}_high"]
        if not np.isfinite(mean):
            cells.append("--")
        elif not (np.isfinite(low) and np.isfinite(high)):
            cells.append(f"${mean:.2f}$")
        elif interval == "t":
            cells.append(rf"${mean:.2f} \pm {(high - low) / 2:.2f}$")
        else:
            cells.append(f"${mean:.2f}$ [{low:.2f}, {high:.2f}]")
    return cells


def _latex_note(tasks: list[str], interval: str, groups: dict[str, str] = OFFICIAL_GROUPS) -> str:
    n_groups = len({groups[t] for t in tasks})
    note = (
        r"Group columns (\emph{mean}): the mean of the group's tasks. The mean of "
        f"{len(tasks)} tasks weighs every task equally, the mean of {n_groups} group means every group: "
        "the two differ and compare only with their own kind. Averages: mean "
        + (r"$\pm$ half the width of" if interval == "t" else "[bounds] of")
        + f" the {latex_escape(describe_interval(interval))}, of the per-seed averages of the seeds that "
        "completed every task; -- where a configuration lacks a task."
    )
    missing = [TASK_LABELS[t] for t in VTAB1K_TASKS if t not in tasks]
    if missing:
        note += " Not run: " + latex_escape(", ".join(missing)) + "."
    return note


def difference_figure(
    means: pd.DataFrame, baseline: str | None, labels: dict, out: Path, groups: dict[str, str] = OFFICIAL_GROUPS
) -> list[str]:
    """The report lines of the per-task difference figure, or the reason it is not drawn."""
    if baseline not in means.index:
        return [f"No per-task difference figure: the baseline ({baseline}) has no VTAB-1k run.", ""]
    if len(means.index) < 2:
        return ["No per-task difference figure: the study ran one configuration on VTAB-1k.", ""]
    plot_vtab_differences(means, baseline, out, labels, TASK_LABELS, groups=groups)
    base = display_name(baseline, None, labels)
    return [
        "### Per-task difference against the baseline",
        "",
        "![Per-task difference against the baseline](figures/vtab_differences.png)",
        "",
        f"Mean test top-1 of each configuration minus that of the baseline ({base}) on each task, in points, "
        "tasks in VTAB's order and coloured by group; dashed: the difference of the group means. A configuration "
        "without a run on a task has no bar there.",
        "",
    ]
