"""What a study's report judges it by, and the words the report says it with.

A study is judged by test top-1, higher better: the significance table, the bold best, the Pareto front,
the seed and ablation figures. A causal LM's top-1 is the accuracy of its next-token predictions, per
token, and the documents peftlab follows judge a language model by its perplexity: a study whose completed
runs are all causal LMs (each reports ``metrics.test_perplexity``) is judged by test perplexity, lower
better, in the same places. A study that mixes causal LMs with classifiers keeps top-1, the one score all
of its runs report, and its report says so (``judgement_lines``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from peftlab.analysis.results.escape import markdown_text
from peftlab.analysis.results.tuning_choices import BORROWED_MARK
from peftlab.analysis.results.units import markdown_name
from peftlab.analysis.stats.bootstrap import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from peftlab.analysis.stats.intervals import MIN_SEEDS, completed_runs, describe_interval
from peftlab.analysis.stats.power import ALPHA, POWER
from peftlab.analysis.stats.ties import tied

TOP1 = "metrics.test_top1"
PERPLEXITY = "metrics.test_perplexity"


@dataclass(frozen=True)
class Score:
    """A primary metric and how the report names, prints and compares it."""

    metric: str
    name: str  # in prose: "test top-1"
    title: str  # in a heading: "Test top-1"
    lower: bool  # a lower value is better
    scale: float  # a printed value is scale x the stored one (100: a fraction printed in %)
    unit: str  # a difference's unit in a table header: "pts"
    points: str  # after a difference in prose: " points" ("" for a perplexity)
    one: str  # the difference "pairs for ..." counts seeds for, in prose: "1 point"
    one_short: str  # the same in a table header: "1 pt"
    improvement: str  # rliable's probability of improvement: "P(X > Y)"
    wins: str  # what a configuration does on a seed it wins: "scores higher"

    @property
    def point(self) -> float:
        """One unit of a printed difference, as stored (0.01: one point of accuracy)."""
        return 1 / self.scale

    @property
    def named(self) -> str:
        """The name with its direction where lower is better: "test perplexity, lower is better"."""
        return self.name + (", lower is better" if self.lower else "")


SCORES = {
    TOP1: Score(
        TOP1, "test top-1", "Test top-1", False, 100.0, "pts", " points", "1 point", "1 pt", "P(X > Y)", "scores higher"
    ),
    PERPLEXITY: Score(
        PERPLEXITY,
        "test perplexity",
        "Test perplexity",
        True,
        1.0,
        "perplexity",
        "",
        "a difference of 1",
        "1 (perplexity)",
        "P(X < Y)",
        "has the lower perplexity",
    ),
}


def causal_share(df: pd.DataFrame) -> tuple[int, int]:
    """(completed runs that report a test perplexity, i.e. causal LMs; completed runs)."""
    done = completed_runs(df)
    if PERPLEXITY not in done:
        return 0, len(done)
    return int(done[PERPLEXITY].notna().sum()), len(done)


def primary_score(df: pd.DataFrame) -> Score:
    """Test perplexity when every completed run reports one (all are causal LMs), else test top-1."""
    causal, done = causal_share(df)
    return SCORES[PERPLEXITY if done and causal == done else TOP1]


def judgement_lines(df: pd.DataFrame) -> list[str]:
    """The "How the numbers were computed" items on what the study is judged by: none for a study without
    causal LMs (its report reads as it always did)."""
    causal, done = causal_share(df)
    if causal == 0:
        return []
    if causal == done:
        return [
            "- Judged by test perplexity (lower is better): every completed run is a causal LM, whose top-1 and "
            "top-5 are the accuracies of its next-token predictions, per token. The significance table, the "
            "bold best, the Pareto front and the figures use the perplexity; the main table shows all three."
        ]
    return [
        f"- Judged by test top-1: {causal} of the {done} completed runs are causal LMs (their top-1 is per "
        "token; they report a perplexity) and the others are not, so the runs are compared by the one score "
        "all of them report. The main table shows the causal LMs' perplexity beside it."
    ]


def statistics_section(interval: str, score: Score, judged: list[str]) -> list[str]:
    """The report's "How the numbers were computed" section; ``judged``: ``judgement_lines`` of the study."""
    lower = ", a lower value being the improvement" if score.lower else ""
    return [
        "## How the numbers were computed",
        "",
        f"- Intervals in tables and figures: the {describe_interval(interval)} "
        "(`report.interval` in the study file: t, bca or percentile).",
        f"- Every bootstrap draws {BOOTSTRAP_RESAMPLES} resamples with numpy's default_rng seeded "
        f"{BOOTSTRAP_SEED}: the same results give the same bounds in every report.",
        "- Comparisons with the baseline: paired t-test and Wilcoxon signed-rank test on matched seeds, "
        "Holm-corrected across comparisons; Cohen's d_z of the paired differences.",
        f"- Minimum detectable difference (MDE): the smallest true mean difference the two-sided paired t-test "
        f"at α = {ALPHA:g}, not Holm-corrected, finds with {100 * POWER:.0f}% power, taking the observed sd of "
        "the paired differences as the true one (normal differences assumed); with few seeds that sd is itself "
        "rough. Holm's correction raises the bar further.",
        f"- Probability of improvement {score.improvement} is rliable's{lower}: over all pairs (a run of the "
        "configuration, a run of the baseline), ties counted half, averaged over datasets, with a 95% stratified "
        "bootstrap percentile interval. The win rate is a different number: the share of matched seeds where the "
        f"configuration {score.wins} (ties half).",
        *judged,
        "",
    ]


def few_seeds_lines(summary: pd.DataFrame, labels: dict) -> list[str]:
    """The warning for configurations with fewer than MIN_SEEDS runs (``summary``: of the primary metric)."""
    few = summary[summary["n"] < MIN_SEEDS]
    if few.empty:
        return []
    if len(few) == len(summary) and few["n"].nunique() == 1:
        names = f"every configuration (n = {few['n'].iloc[0]})"
    else:
        names = ", ".join(f"{_name(row, labels)} (n = {row['n']})" for _, row in few.iterrows())
    text = (
        f"**Warning: fewer than {MIN_SEEDS} seeds** for {names}. With so few seeds the intervals are rough, "
        "and the Wilcoxon test cannot reach p < 0.05."
    )
    if (few["n"] == 2).any():
        text += (
            " At n = 2 no interval is meaningful: a bootstrap interval is just the two values, and the "
            "t-interval spans 12.7 standard errors on either side."
        )
    if (few["n"] == 1).any():
        text += " At n = 1 there is no interval."
    return [text, ""]


def pareto_lines(front: pd.DataFrame, score: Score, labels: dict, borrowed: dict | None = None) -> list[str]:
    """The sentence naming the configurations on ``front`` (intervals.pareto_front of ``score.metric``: ties at one
    parameter count all on it), each not tuned itself (``borrowed``: tune.share) marked ‡ as the tables mark it."""
    borrowed = borrowed or {}
    names = [
        _name(row, labels) + (f" {BORROWED_MARK}" if row["variant"] in borrowed else "")
        for _, row in front[front["on_front"]].iterrows()
    ]
    which = " (lower perplexity, fewer parameters)" if score.lower else ""
    return [f"Pareto front of {score.name} against trainable parameters{which}: " + ", ".join(names) + ".", ""]


def _name(row, labels: dict) -> str:
    return markdown_name(row["variant"], row.get("method"), labels)


def order_lines(
    primary: pd.DataFrame, score: Score, labels: dict, step: float, borrowed: dict | None = None
) -> list[str]:
    """Every configuration by its mean primary score, best first, each with its own mean: "A (75.0) = B (74.9) >
    C (59.4)", "=" joining means that tie (less than one test example apart, ``step``: stats.ties); one not tuned
    itself (``borrowed``: tune.share) marked ‡ as the tables mark it."""
    if len(primary) < 2:
        return []
    ranked = primary.sort_values("mean", ascending=score.lower, kind="stable")
    rows = list(ranked.itertuples())
    borrowed = borrowed or {}

    def named(row) -> str:
        return _name(row._asdict(), labels) + (f" {BORROWED_MARK}" if row.variant in borrowed else "")

    line = f"{named(rows[0])} ({score.scale * rows[0].mean:.1f})"
    for before, row in zip(rows, rows[1:]):
        sign = "=" if tied(before.mean, row.mean, step) else "<" if score.lower else ">"
        line += f" {sign} {named(row)} ({score.scale * row.mean:.1f})"
    rule = (
        f'"=" joins means less than one test example ({100 * step:.2g} points) apart: with k seeds each, correct '
        "test predictions summed over the seeds that differ by fewer than k"
        if step > 0
        else '"=" joins equal means'
    )
    return [f"Order by mean {score.name}, best first ({rule}): {line}.", ""]


def chance_lines(found, labels: dict, primary: pd.DataFrame) -> list[str]:
    """The task's chance rate, its rule, and the configurations at chance by each seed's one-sided binomial test of
    its test-set count (``found``: stats.chance.Chance, or None: nothing is said)."""
    if found is None:
        return []
    methods = primary.set_index("variant")["method"] if "method" in primary else {}
    at = found.at_chance()
    rate = (
        f"each dataset has its own chance rate, {markdown_text(found.rule_words())}"
        if found.tasks
        else f"the task's chance rate is {found.rate_words()} ({found.rule_words()})"
    )
    head = (
        f"Chance: {rate}. Each seed's run is tested on its own (scipy.stats.binomtest, one-sided, exact), the "
        "test set's images the unit: the seeds, all scored on the same images, are not pooled. A configuration is "
        f"above chance where every seed's test rejects at α = {ALPHA:g}, at chance where any seed's does not"
        + (" on one of its datasets" if found.tasks else "")
        + "; its p is the largest of its seeds'."
    )
    table = found.table.set_index("variant")
    if not at:
        return [head + " Every configuration is above it.", ""]
    names = ", ".join(
        f"{markdown_name(v, methods.get(v) if len(methods) else None, labels)} "
        f"({table.loc[v, 'above']} of {table.loc[v, 'seeds']} seeds above it"
        + (f" on {markdown_text(table.loc[v, 'dataset'])}" if found.tasks else "")
        + f"; {table.loc[v, 'correct']} of {table.loc[v, 'trials']} correct over the seeds; largest p = "
        f"{table.loc[v, 'p']:.3g})"
        for v in at
    )
    every = "**Every configuration is at chance**: " if len(at) == len(table) else "**At chance** (° in the table): "
    return [head, "", every + names + ".", ""]
