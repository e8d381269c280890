"""Chance by a stated rule: the rate a classifier reaches by guessing, and whether a configuration's test-set count
beats it.

The chance rate of a task is the share of its test set that the best constant guess gets right: 1/classes where the
test set is balanced (every class holds as many test examples), else the majority class's share. The test set's
class counts come from result.json's per-class record (``labelled``); where no run recorded them, the rate is
1/classes of the recorded class count (the test set taken as balanced, and said so); with neither there is no rate
and nothing is said of chance.

A configuration is at chance when a one-sided binomial test (scipy.stats.binomtest, alternative "greater") of its
correct test predictions, summed over its seeds, against the chance rate over as many trials (seeds times the test
set's size) does not reject at ``ALPHA``: its runs are not shown to beat guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from peftlab.analysis.results.per_class import load_per_class
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.analysis.stats.power import ALPHA

TOP1 = "metrics.test_top1"
TEST_SIZE = "data.test_size"


@dataclass(frozen=True)
class Chance:
    """A study's chance rate, how it was found, and per configuration its counts and the binomial test."""

    rate: float
    rule: str  # "balanced" (1/classes), "majority" (the majority class's share) or "classes" (counts unrecorded)
    classes: int
    table: pd.DataFrame  # variant, correct, trials, top1 (correct / trials), p, at_chance

    def at_chance(self) -> list[str]:
        return [str(v) for v in self.table.loc[self.table["at_chance"], "variant"]]

    def rule_words(self) -> str:
        """The rule as a sentence's clause, in plain words (no LaTeX): how the rate was found."""
        if self.rule == "balanced":
            return f"1/{self.classes}: the test set is balanced over its {self.classes} classes"
        if self.rule == "majority":
            return f"the majority class's share of the test set, which is not balanced over its {self.classes} classes"
        return f"1/{self.classes}: the test set's class counts were not recorded, so it is taken as balanced"


def correct_counts(done: pd.DataFrame) -> pd.Series:
    """Each completed run's correct test predictions: test top-1 times its recorded test size, rounded (a top-1
    is such a count over the size); NaN where either is missing."""
    if TOP1 not in done or TEST_SIZE not in done:
        return pd.Series(np.nan, index=done.index)
    sizes = pd.to_numeric(done[TEST_SIZE], errors="coerce")
    return (pd.to_numeric(done[TOP1], errors="coerce") * sizes).round()


def chance_rate(study_dir: Path, done: pd.DataFrame) -> tuple[float, str, int] | None:
    """(rate, rule, classes) of the study's one task, or None where the runs differ in their classes or test sets
    (several datasets), where a run is a causal LM, or where neither class counts nor a class count were recorded."""
    if "metrics.test_perplexity" in done and done["metrics.test_perplexity"].notna().any():
        return None
    counts = load_per_class(study_dir).runs if (study_dir / "runs").is_dir() else pd.DataFrame()
    if not counts.empty:
        per_run = counts.groupby("run_id")["labelled"].apply(tuple)
        if per_run.nunique() != 1:
            return None
        labelled = np.asarray(per_run.iloc[0], dtype=float)
        if labelled.sum() <= 0:
            return None
        if (labelled == labelled[0]).all():
            return 1.0 / len(labelled), "balanced", len(labelled)
        return float(labelled.max() / labelled.sum()), "majority", len(labelled)
    classes = done["data.num_classes"].dropna().unique() if "data.num_classes" in done else []
    if len(classes) != 1 or int(classes[0]) < 2:
        return None
    return 1.0 / int(classes[0]), "classes", int(classes[0])


def chance(study_dir: Path, df: pd.DataFrame, alpha: float = ALPHA) -> Chance | None:
    """The study's chance rate and each configuration's binomial test against it (None where there is no rate or
    no run recorded its test size)."""
    done = completed_runs(df)
    found = chance_rate(Path(study_dir), done)
    if found is None or done.empty:
        return None
    rate, rule, classes = found
    correct = correct_counts(done)
    rows = []
    for variant, runs in done.groupby("variant", sort=False):
        counts = correct[runs.index]
        if counts.isna().any():
            return None
        k, n = int(counts.sum()), int(pd.to_numeric(runs[TEST_SIZE]).sum())
        p = binomtest(k, n, rate, alternative="greater").pvalue
        rows.append({"variant": variant, "correct": k, "trials": n, "top1": k / n, "p": p, "at_chance": p >= alpha})
    return Chance(rate, rule, classes, pd.DataFrame(rows))
