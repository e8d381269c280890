"""The report's "Significance" section: each configuration against the baseline on matched seeds.

The table (comparisons.paired_comparisons_within) with its paired tests, minimum detectable difference
(power.py), win rate and probability of improvement; then the differences too small for these seeds to
show, and the configurations whose seeds spread more than their difference from the baseline. The metric
is the comparisons' (primary.py: test top-1, or a causal LM's test perplexity, where lower is better).
"""

from __future__ import annotations

import pandas as pd

from peftlab.analysis.report.primary import SCORES, Score
from peftlab.analysis.results.tuning_choices import BORROWED_MARK, borrowed_configurations, borrowed_note
from peftlab.analysis.results.units import markdown_name, signed
from peftlab.analysis.stats.comparisons import below_detection
from peftlab.analysis.stats.families import ABLATION, MAIN, repeats
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.analysis.stats.power import ALPHA, MAX_PAIRS, POWER


def report_section(comparisons: pd.DataFrame | None, df: pd.DataFrame, labels: dict) -> list[str]:
    """The section's lines: the table of ``comparisons`` (a line saying there is none when fewer than two
    configurations completed), its notes, the differences not shown and the seeds' spread."""
    if comparisons is None or comparisons.empty:
        return ["## Significance", "", "No paired comparison: fewer than two configurations completed.", ""]
    methods = completed_runs(df).groupby("variant")["method"].first()
    baselines = ", ".join(markdown_name(b, methods.get(b), labels) for b in dict.fromkeys(comparisons["baseline"]))
    score = SCORES[comparisons["metric"].iloc[0]]
    power, unit = f"{100 * POWER:.0f}%", score.unit
    several = comparisons["family"].nunique() > 1  # the ablations' configurations in a Holm family of their own
    lines = [
        "## Significance",
        "",
        f"Each configuration against **{baselines}** ({score.named}), on matched seeds for the tests and the "
        f"win rate, over all pairs of runs for {score.improvement}.",
        "",
        f"| configuration |{' family |' if several else ''} pairs | mean diff ({unit}) | p (t, Holm) | MDE ({power}, "
        f"{unit}) | pairs for {score.one_short} | p (Wilcoxon, Holm) | d_z | win rate (matched seeds) | "
        f"{score.improvement} [95% CI] | significant |",
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if several else ""),
    ]

    def p(value):
        return "n/a" if pd.isna(value) else f"{value:.3g}"

    borrowed = {v: b for v, b in borrowed_configurations(df).items() if v in set(comparisons["variant"])}
    for row in comparisons.itertuples():
        name = markdown_name(row.variant, methods.get(row.variant), labels)
        name += f" {BORROWED_MARK}" if row.variant in borrowed else ""
        mde = "n/a" if pd.isna(row.mde_80) else f"{score.scale * row.mde_80:.2f}"
        lines.append(
            f"| {name} |{f' {row.family} |' if several else ''} {row.n_pairs} | "
            f"{signed(score.scale * row.mean_diff, 2)} | {p(row.p_ttest_holm)} | {mde} | "
            f"{_pairs(row.pairs_for_1pt)} | {p(row.p_wilcoxon_holm)} | {p(row.cohens_dz)} | "
            f"{row.win_rate:.2f} | {row.prob_improvement:.2f} [{row.prob_improvement_low:.2f}, "
            f"{row.prob_improvement_high:.2f}] | {'yes' if row.significant else 'no'} |"
        )
    lines += [
        "",
        "Wilcoxon needs at least 5 pairs; with 5 its smallest two-sided p is 0.0625, so "
        "significance is judged by the Holm-corrected t-test. "
        f"MDE ({power}): the smallest true mean difference the paired t-test at α = {ALPHA:g} (before "
        f"Holm's correction) finds with {power} power, given the sd of the paired differences and the "
        f"number of pairs; pairs for {score.one_short}: the matched seeds that test needs to find "
        f"{_one_difference(score)} at that sd.",
        "",
    ]
    lines += family_lines(comparisons, df, methods, labels)
    if borrowed:  # an untuned configuration's significance never stands without saying so
        shown = {markdown_name(v, methods.get(v), labels): markdown_name(b, None, labels) for v, b in borrowed.items()}
        lines += [borrowed_note(shown), ""]
    lines += _direction(score)
    return (
        lines + _not_shown(comparisons, methods, labels, score) + _spread_lines(comparisons, df, methods, labels, score)
    )


def family_lines(comparisons: pd.DataFrame, df: pd.DataFrame, methods: pd.Series, labels: dict) -> list[str]:
    """Which comparisons each Holm correction runs over (stats.families): the main table's configurations, the
    ablations' configurations apart; and the configurations not tested, each repeating another."""
    counts = comparisons["family"].value_counts()
    said = (
        f"Holm's correction runs within each family: the main table's {counts.get(MAIN, 0)} configurations against "
        f"the baseline, and apart from them the {counts.get(ABLATION, 0)} configurations only an ablation runs, so "
        "an ablation leaves the main comparison's corrected p-values as they are."
        if len(counts) > 1
        else ""  # one family: the table's note says Holm ran across its comparisons
    )
    name = lambda v: markdown_name(v, methods.get(v), labels)
    baselines = set(comparisons["baseline"])
    repeated = {v: found for v, found in repeats(df, next(iter(baselines))).items() if v not in baselines}
    if repeated:
        said += (
            (" " if said else "")
            + "Not tested: "
            + "; ".join(
                f"{name(v)} repeats {name(kept)} in every setting that changes training (it differs only in "
                f"{', '.join(differ) or 'its name'}), so its runs are that training again"
                for v, (kept, differ) in repeated.items()
            )
            + "."
        )
    return [said, ""] if said else []


def _one_difference(score: Score) -> str:
    return "a difference of 1 in perplexity" if score.lower else "a 1-point difference"


def _direction(score: Score) -> list[str]:
    """What the signs mean where lower is better (nothing to add where higher is)."""
    if not score.lower:
        return []
    return [
        f"Lower is better: a mean difference (the configuration's {score.name} minus the baseline's) below zero "
        "is an improvement; the win rate is the share of matched seeds where the configuration has the lower "
        f"perplexity, and {score.improvement} the probability that a run of it has a lower perplexity than a run "
        "of the baseline (rliable's probability of improvement, for a score where lower is better).",
        "",
    ]


def _pairs(count: float) -> str:
    if pd.isna(count):
        return "n/a"
    return f"> {MAX_PAIRS:,}" if count == float("inf") else f"{int(count):,}"


def _not_shown(comparisons: pd.DataFrame, methods: pd.Series, labels: dict, score: Score) -> list[str]:
    """The sentence on differences that are not significant and smaller than their MDE: the seeds could not
    have shown them, so "not significant" says nothing about whether they are equal."""
    small = comparisons[below_detection(comparisons)]
    if small.empty:
        return []
    items = [
        f"{markdown_name(row.variant, methods.get(row.variant), labels)} ({signed(score.scale * row.mean_diff, 2)}"
        f"{score.points}; MDE {score.scale * row.mde_80:.2f}{score.points}; {score.one} needs "
        f"{_pairs(row.pairs_for_1pt)} seeds)"
        for row in small.itertuples()
    ]
    return [
        f"**Not significant, and smaller than these seeds could detect:** {', '.join(items)}. The test would "
        f"miss a true difference of that size more than {100 * (1 - POWER):.0f}% of the time, so read these as "
        "'no difference shown', not as 'equal to the baseline'.",
        "",
    ]


def _spread_lines(
    comparisons: pd.DataFrame, df: pd.DataFrame, methods: pd.Series, labels: dict, score: Score
) -> list[str]:
    """The configurations whose seed-to-seed spread (sd of the comparisons' metric over their seeds) exceeds
    their mean paired difference from the baseline: one seed of them would not say which is better."""
    metric = comparisons["metric"].iloc[0]
    sd = completed_runs(df).groupby("variant")[metric].std()
    spread = comparisons.assign(sd=comparisons["variant"].map(sd)).dropna(subset=["sd"])  # one seed: no spread
    wide = spread[spread["sd"] > spread["mean_diff"].abs()]
    if wide.empty:
        return []
    items = [
        f"{markdown_name(row.variant, methods.get(row.variant), labels)} (sd over seeds {score.scale * row.sd:.2f}"
        f"{score.points}, mean difference {signed(score.scale * row.mean_diff, 2)})"
        for row in wide.itertuples()
    ]
    return [
        f"**Seeds spread more than the difference from the baseline:** {', '.join(items)}. Changing the seed "
        f"moves these configurations' {score.name} more than changing the configuration does, so a comparison of "
        f"single runs could come out either way; the figure '{score.title} across seeds' shows every seed.",
        "",
    ]
