"""Chance by a stated rule: the rate a classifier reaches by guessing, and whether a configuration's test-set count
beats it.

The chance rate of a task is the share of its test set that the best constant guess gets right: 1/classes where the
test set is balanced (every class holds as many test examples), else the majority class's share. The test set's
class counts come from result.json's per-class record (``labelled``); where no run recorded them, the rate is
1/classes of the recorded class count (the test set taken as balanced, and said so); with neither there is no rate
and nothing is said of chance.

The test set's images are the unit: every seed's run is scored on the same images, so the seeds' correct counts are
not independent draws and are never pooled (their sum over seeds times the test set's size would count each image
once per seed). Each seed's run has its own exact one-sided binomial test (scipy.stats.binomtest, alternative
"greater") of its correct test predictions against the chance rate over its test set's size. A configuration is
above chance where every seed's test rejects at ``ALPHA`` (an intersection-union test: the claim that each of its
runs beats guessing holds at level ALPHA with no correction); it is at chance where any seed's does not, and its p is
the largest of its seeds'.

A study over several datasets (config.data.name) has a rate per dataset, each by its own rule from its own runs, and
each configuration is tested on each of its datasets against that dataset's rate; a configuration is at chance where
it is at chance on any of them (its largest p is the one told), so a collapse on one dataset is never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from peftlab.analysis.results.per_class import load_per_class
from peftlab.analysis.results.record import run_data_names
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.analysis.stats.power import ALPHA

TOP1 = "metrics.test_top1"
TEST_SIZE = "data.test_size"


@dataclass(frozen=True)
class Chance:
    """A study's chance rate, how it was found, and per configuration its counts and the binomial test; over
    several datasets, ``tasks`` holds each dataset's (name, rate, rule, classes) and ``rate`` is NaN."""

    rate: float
    rule: str  # "balanced" (1/classes), "majority" (the majority class's share) or "classes" (counts unrecorded)
    classes: int
    # variant, seeds, above (seeds whose test rejects), correct and trials (summed over the seeds, as counts, never
    # tested pooled), top1 (correct / trials), p (the largest seed's), at_chance; dataset, rate (several datasets)
    table: pd.DataFrame
    tasks: tuple = ()  # (dataset, rate, rule, classes) per dataset, where the study has several

    def at_chance(self) -> list[str]:
        return [str(v) for v in self.table.loc[self.table["at_chance"], "variant"]]

    def line(self) -> float | None:
        """The rate the accuracy-parameters figure draws as a line: the study's one rate where some configuration is
        at chance (its points then sit near it); None over several datasets or where every configuration beats it."""
        return None if self.tasks or not self.at_chance() else self.rate

    def rule_words(self) -> str:
        """The rule as a sentence's clause, in plain words (no LaTeX): how the rate was found; over several
        datasets each dataset's rate and rule, "10% on cifar10 (1/10: ...) and 25% on hues (1/4: ...)"."""
        if self.tasks:
            parts = [f"{100 * r:.3g}% on {name} ({rule_words(rule, k)})" for name, r, rule, k in self.tasks]
            return ", ".join(parts[:-1]) + " and " + parts[-1]
        return rule_words(self.rule, self.classes)

    def rate_words(self) -> str:
        """The rate in plain words: "10%", or over several datasets "10% on cifar10 and 25% on hues"."""
        if not self.tasks:
            return f"{100 * self.rate:.3g}%"
        parts = [f"{100 * r:.3g}% on {name}" for name, r, _, _ in self.tasks]
        return ", ".join(parts[:-1]) + " and " + parts[-1]


def rule_words(rule: str, classes: int) -> str:
    if rule == "balanced":
        return f"1/{classes}: the test set is balanced over its {classes} classes"
    if rule == "majority":
        return f"the majority class's share of the test set, which is not balanced over its {classes} classes"
    return f"1/{classes}: the test set's class counts were not recorded, so it is taken as balanced"


def correct_counts(done: pd.DataFrame) -> pd.Series:
    """Each completed run's correct test predictions: test top-1 times its recorded test size, rounded (a top-1
    is such a count over the size); NaN where either is missing."""
    if TOP1 not in done or TEST_SIZE not in done:
        return pd.Series(np.nan, index=done.index)
    sizes = pd.to_numeric(done[TEST_SIZE], errors="coerce")
    return (pd.to_numeric(done[TOP1], errors="coerce") * sizes).round()


def chance_rate(study_dir: Path, done: pd.DataFrame, counts: pd.DataFrame | None = None) -> tuple | None:
    """(rate, rule, classes) of the one task of the runs ``done`` (one dataset's), or None where they differ in
    their classes or test sets, where a run is a causal LM, or where neither class counts nor a class count were
    recorded. ``counts``: load_per_class(study_dir).runs, read here when not given."""
    if "metrics.test_perplexity" in done and done["metrics.test_perplexity"].notna().any():
        return None
    if counts is None:
        counts = load_per_class(study_dir).runs if (study_dir / "runs").is_dir() else pd.DataFrame()
    if not counts.empty and "run_id" in done:
        counts = counts[counts["run_id"].isin(set(done["run_id"].astype(str)))]
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
    """The study's chance rate (a rate per dataset over several) and each configuration's binomial test against
    it (None where a dataset has no rate or a run recorded no test size)."""
    study_dir, done = Path(study_dir), completed_runs(df)
    if done.empty:
        return None
    counts = load_per_class(study_dir).runs if (study_dir / "runs").is_dir() else pd.DataFrame()
    datasets = run_data_names(done).fillna("").astype(str)
    rates = {}
    for name, runs in done.groupby(datasets, sort=True):
        rates[name] = chance_rate(study_dir, runs, counts)
        if rates[name] is None:
            return None
    correct = correct_counts(done)
    if correct.isna().any():
        return None
    rows = []
    for (variant, name), runs in done.groupby(["variant", datasets], sort=False):
        rows.append({"variant": variant, **seed_tests(correct[runs.index], runs[TEST_SIZE], rates[name][0], alpha)})
        rows[-1] |= {"dataset": name, "rate": rates[name][0]}
    table = pd.DataFrame(rows)
    if len(rates) == 1:
        ((rate, rule, classes),) = rates.values()
        return Chance(rate, rule, classes, table.drop(columns=["dataset", "rate"]))
    # several datasets: each configuration told by its least sure one (at chance on any of them)
    worst = table.sort_values("p", ascending=False, kind="stable").drop_duplicates("variant")
    worst = worst.set_index("variant").loc[table["variant"].drop_duplicates()].reset_index()
    tasks = tuple((name, *found) for name, found in rates.items())
    return Chance(float("nan"), "per dataset", 0, worst, tasks)


def seed_tests(correct: pd.Series, sizes: pd.Series, rate: float, alpha: float = ALPHA) -> dict:
    """One configuration's runs (one a seed: ``correct`` test predictions of ``sizes`` test images) against
    ``rate``: each run's own one-sided exact binomial test; above chance where every run's rejects at ``alpha``,
    its p the largest. The counts are summed only to be told, never tested pooled."""
    sizes = pd.to_numeric(sizes).astype(int)
    pvalues = [binomtest(int(k), int(n), rate, alternative="greater").pvalue for k, n in zip(correct, sizes)]
    k, n, p = int(correct.sum()), int(sizes.sum()), max(pvalues)
    above = sum(q < alpha for q in pvalues)
    return {
        "seeds": len(pvalues),
        "above": above,
        "correct": k,
        "trials": n,
        "top1": k / n,
        "p": p,
        "at_chance": p >= alpha,
    }
