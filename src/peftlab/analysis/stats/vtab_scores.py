"""The numbers of VTAB-1k's report section (``vtab``): the completed runs on its tasks, each
configuration's mean test top-1 per task, the group means and both averages (the mean of the tasks
and the mean of the group means), with the seed intervals of the averages. Tasks of one's own that
declare a VTAB group count in that group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from peftlab.analysis.stats.comparisons import algorithm_name
from peftlab.analysis.stats.intervals import completed_runs, confidence_interval
from peftlab.config.suites import VTAB1K_TASKS, VTAB_GROUPS, vtab_group

TOP1 = "metrics.test_top1"
DATASET = "config.data.name"
OFFICIAL_GROUPS = {name: task.group for name, task in VTAB1K_TASKS.items()}
DECLARED_GROUP = "config.data.group"  # a task of one's own (data.name filelist) in a VTAB group
DATA_ROOT = "config.data.root"


def task_name(dataset: str, root) -> str:
    """A VTAB-1k task's folder name; for a task of one's own, its folder's name, marked as such."""
    if dataset.startswith("vtab1k/"):
        return dataset.partition("/")[2]
    return f"{Path(str(root)).name} (own)"


def vtab_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The completed runs on VTAB-1k tasks (or on tasks of one's own that declare a VTAB group) with a
    test top-1, with ``algorithm`` (the configuration), ``task`` and ``group`` columns."""
    runs = completed_runs(df)
    if runs.empty or DATASET not in runs or TOP1 not in runs:
        return runs.iloc[0:0]
    declared = runs[DECLARED_GROUP] if DECLARED_GROUP in runs else pd.Series(None, index=runs.index, dtype=object)
    group = [vtab_group(str(name), g if isinstance(g, str) else None) for name, g in zip(runs[DATASET], declared)]
    runs = runs.assign(group=group)
    runs = runs[runs["group"].notna() & runs[TOP1].notna()]
    roots = runs[DATA_ROOT] if DATA_ROOT in runs else pd.Series("", index=runs.index)
    return runs.assign(
        algorithm=[algorithm_name(v, d) for v, d in zip(runs["variant"], runs[DATASET])],
        task=[task_name(str(name), root) for name, root in zip(runs[DATASET], roots)],
    )


def task_groups(runs: pd.DataFrame) -> dict[str, str]:
    """Each task's group: VTAB-1k's own, and those the study's tasks of their own declare."""
    return {**OFFICIAL_GROUPS, **dict(zip(runs["task"], runs["group"]))}


def study_tasks(runs: pd.DataFrame) -> list[str]:
    """The tasks the study ran, in VTAB's order (Natural, then Specialized, then Structured), each group's
    tasks of one's own after its VTAB-1k tasks."""
    ran, groups = set(runs["task"]), task_groups(runs)
    own = sorted(ran - set(VTAB1K_TASKS))
    return [t for g in VTAB_GROUPS for t in [*VTAB1K_TASKS, *own] if t in ran and groups[t] == g]


def averages(values, tasks: list[str], groups: dict[str, str] = OFFICIAL_GROUPS) -> dict[str, float]:
    """The group means and both averages of per-task ``values`` (a mapping) over ``tasks``:
    {group: mean of its tasks (NaN for a group without one), "tasks": mean of the tasks, "groups":
    mean of the group means}; all NaN when a task has no value."""
    if not tasks or any(not np.isfinite(values.get(task, np.nan)) for task in tasks):
        return {**{group: np.nan for group in VTAB_GROUPS}, "tasks": np.nan, "groups": np.nan}
    means = {group: [values[t] for t in tasks if groups[t] == group] for group in VTAB_GROUPS}
    means = {group: float(np.mean(v)) if v else np.nan for group, v in means.items()}
    return {
        **means,
        "tasks": float(np.mean([values[t] for t in tasks])),
        "groups": float(np.mean([m for m in means.values() if np.isfinite(m)])),
    }


def task_means(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(means, seeds): configurations (in order of first appearance) x the study's tasks, the mean
    test top-1 over seeds in percent and the number of runs."""
    grouped = runs.groupby(["algorithm", "task"], sort=False)[TOP1]
    index, tasks = list(dict.fromkeys(runs["algorithm"])), study_tasks(runs)
    means = (100 * grouped.mean()).unstack("task").reindex(index=index, columns=tasks)
    return means, grouped.size().unstack("task").reindex(index=index, columns=tasks)


def summary_table(runs: pd.DataFrame, interval: str = "t") -> pd.DataFrame:
    """One row per configuration: algorithm, the group means and both averages of its task means
    (``averages``, percent), n_seeds (seeds that completed every task of the study) and tasks_low,
    tasks_high, groups_low, groups_high: the ``interval`` of those seeds' averages."""
    tasks, groups = study_tasks(runs), task_groups(runs)
    means, _ = task_means(runs)
    rows = []
    for algorithm in means.index:
        row = {"algorithm": algorithm, **averages(means.loc[algorithm], tasks, groups)}
        mine = runs[runs["algorithm"] == algorithm]
        per_seed = 100 * mine.pivot_table(index="seed", columns="task", values=TOP1, aggfunc="mean")
        complete = per_seed.reindex(columns=tasks).dropna()
        seeds = [averages(values, tasks, groups) for _, values in complete.iterrows()]
        for key in ("tasks", "groups"):
            row[f"{key}_low"], row[f"{key}_high"], _ = confidence_interval([s[key] for s in seeds], interval)
        rows.append({**row, "n_seeds": len(complete)})
    return pd.DataFrame(rows)


def tasks_label(n_tasks: int) -> str:
    return f"mean of {n_tasks} task{'s' if n_tasks != 1 else ''}"


def groups_label(tasks: list[str], groups: dict[str, str] = OFFICIAL_GROUPS) -> str:
    n_groups = len({groups[t] for t in tasks})
    return f"mean of {n_groups} group mean{'s' if n_groups != 1 else ''}"


def baseline_algorithm(df: pd.DataFrame, baseline: str | None) -> str | None:
    """The configuration of the report's baseline variant ("full data=vtab1k/dtd" -> "full")."""
    done = completed_runs(df)
    if baseline is None or DATASET not in done:
        return baseline
    rows = done[done["variant"] == baseline]
    return algorithm_name(baseline, rows[DATASET].iloc[0]) if len(rows) else baseline
