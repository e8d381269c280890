"""The abstract's and the results' sentences on where the configurations stand: the best and the worst, each with
its own mean and the ones tied with it (stats.ties: closer than one test example, with their correct counts), and
which configurations are at chance (stats.chance: the task's chance rate by its stated rule and each seed's
one-sided binomial test of its test-set count against it).

Each sentence is a macro of results.tex built of other macros (a name, a mean), so the text holds no digit of its
own and every number in it is defined once.
"""

from __future__ import annotations

from peftlab.analysis.paper.names import integer, tied_with
from peftlab.analysis.results.escape import latex_escape
from peftlab.analysis.results.units import unit, words
from peftlab.analysis.stats.chance import correct_counts
from peftlab.analysis.stats.comparisons import MIN_PAIRS_WILCOXON
from peftlab.analysis.stats.families import ABLATION, MAIN
from peftlab.analysis.stats.power import ALPHA


def define_findings_words(numbers, study, suffixes: dict[str, str], score_macro: str, pvalue, points_words) -> None:
    """The macros of the tie rule, of each configuration's correct counts, of the best and worst groups and of
    chance (``score_macro``: topOne or perplexity, the primary score's macro stem; ``pvalue``: how a p prints)."""
    n, add = numbers.ref, numbers.add
    percent = latex_escape(unit(study.score.metric))
    counts = correct_counts(study.done)
    counted = study.tie > 0 and counts.notna().all()
    if counted:
        for variant, s in suffixes.items():
            rows = study.done["variant"] == variant
            add(
                "correct" + s,
                integer(counts[rows].sum()),
                f'variant "{variant}": correct test predictions, summed '
                "over its seeds (test top-1 times the recorded test size)",
            )
            add(
                "tested" + s,
                integer(study.done.loc[rows, "data.test_size"].sum()),
                f'variant "{variant}": test predictions summed over its seeds (its runs\' recorded test sizes)',
            )
    if study.tie > 0:
        add("tieStep", points_words(100 * study.tie), "points of test top-1 one test example is (100 / the test size)")

    def own(variant) -> str:
        s = suffixes[variant]
        return f"{n(score_macro + 'Mean' + s)}{percent} ({n('name' + s)})"

    def named(variant) -> str:  # the name first: "that of lora r=8 (70.3%)"
        s = suffixes[variant]
        return f"{n('name' + s)} ({n(score_macro + 'Mean' + s)}{percent})"

    def group(variant) -> str:
        tied = tied_with(study, variant)
        if len(tied) == 1:
            return own(variant)
        return words([own(v) for v in tied]) + ", " + tie_words(study)

    add("bestNamed", named(study.best), "the best configuration's name and mean")
    add("bestMeans", group(study.best), "the best configuration's mean and name, and those of the ones tied with it")
    add("worstMeans", group(study.worst), "the worst configuration's mean and name, and those of the ones tied with it")
    best = tied_with(study, study.best)
    if len(best) > 1:
        text = f"{tie_words(study)} with it: " + words([named(v) for v in best[1:]])
        if counted:
            text += (
                " (correct test predictions over the seeds: "
                + ", ".join(
                    f"{n('name' + suffixes[v])} {n('correct' + suffixes[v])} of {n('tested' + suffixes[v])}"
                    for v in best
                )
                + ")"
            )
        add("bestTies", text, "the configurations tied with the best, their means and correct counts (stats.ties)")
    define_chance(numbers, study, suffixes, pvalue)
    define_families(numbers, study, suffixes)


def define_families(numbers, study, suffixes: dict[str, str]) -> None:
    """The comparisons' Holm families (stats.families): the main table's significant count's verb and what the
    Wilcoxon test can reach in it; the ablations' family, its count and names; the configurations not tested."""
    n, add, c = numbers.ref, numbers.add, study.comparisons
    if c is not None:
        main = c[c["family"] == MAIN]
        count = int(main["significant"].sum())
        add("significantVerb", "differs" if count == 1 else "differ", "significantCount's verb")
        if limit := wilcoxon_limit(main, ALPHA):
            add("wilcoxonLimit", limit, "what the exact Wilcoxon test can reach with these pairs (2 / 2^n) and Holm")
        ablation = c[c["family"] == ABLATION]
        if len(ablation):
            significant = ablation.loc[ablation["significant"].astype(bool), "variant"]
            add("ablationComparisonCount", str(len(ablation)), "comparisons of the ablations' configurations (Holm)")
            add("ablationSignificantCount", str(len(significant)), "of them, those with Holm-corrected p < alpha")
            add("ablationSignificantVerb", "differs" if len(significant) == 1 else "differ", "its verb")
            names = words([n("name" + suffixes[v]) for v in significant]) or "none"
            add("ablationSignificantNames", names, "ablation variants that differ from the baseline (their own Holm)")
    if study.repeats:
        add("repeatWords", repeat_words(study), "configurations not tested, each repeating another (stats.families)")


def tie_words(study) -> str:
    """How a tie is named: within one test example where the score counts examples, else equal means."""
    return "tied within one test example" if study.tie > 0 else "tied (equal means)"


def define_chance(numbers, study, suffixes: dict[str, str], pvalue) -> None:
    """The chance rate, its rule, each configuration's binomial p, and the configurations at chance."""
    found = study.chance
    if found is None:
        return
    n, add = numbers.ref, numbers.add
    if found.tasks:  # several datasets: a rate each
        add("chanceRates", latex_escape(found.rate_words()), "each dataset's chance rate (stats.chance)")
    else:
        add("chanceRate", f"{100 * found.rate:.3g}", "the task's chance rate, % (stats.chance)")
    add("chanceRule", latex_escape(found.rule_words()), "how the chance rate was found (stats.chance.Chance.rule)")
    for row in found.table.itertuples():
        add(
            "chanceP" + suffixes[row.variant],
            pvalue(row.p),
            f"variant \"{row.variant}\": the largest of its seeds' one-sided exact binomial test p (each seed's "
            "correct test predictions against the chance rate; scipy.stats.binomtest, alternative greater)",
        )
    at = found.at_chance()
    if not at:
        return
    add("atChanceCount", str(len(at)), "configurations at chance (a seed's binomial p >= alpha)")
    add(
        "atChanceNames",
        words([f"{n('name' + suffixes[v])} ($p = {n('chanceP' + suffixes[v])}$)" for v in at]),
        "configurations at chance, each with its binomial p",
    )
    if len(at) == len(study.variants):
        add("chanceEvery", "1", "every configuration is at chance")
    if study.comparisons is not None and study.baseline in at:
        add("chanceBaseline", "1", "the baseline of the comparisons is at chance")


def wilcoxon_limit(comparisons, alpha: float) -> str:
    """What the exact two-sided Wilcoxon signed-rank test cannot reject with this many matched seeds: its smallest p
    is 2/2^n (every difference of one sign), and Holm's correction over m comparisons lifts a p that small to m
    times it; "" where the test can reach below ``alpha`` after Holm, or the pairs differ between comparisons."""
    pairs = sorted({int(p) for p in comparisons["n_pairs"]})
    if len(pairs) != 1 or pairs[0] < 2:
        return ""
    n, m = pairs[0], len(comparisons)
    floor = 2 / 2**n
    holm = min(1.0, m * floor)
    if holm < alpha:
        return ""
    said = (
        f"With {n} matched seeds the smallest $p$ an exact two-sided Wilcoxon signed-rank test can give is "
        f"$2/2^{{{n}}} = {floor:.3g}$, reached only when every paired difference has the same sign"
    )
    if n < MIN_PAIRS_WILCOXON:
        return said + (
            f", which is not below $\\alpha = {alpha:g}$: whatever the differences, the test cannot reject, so the "
            f"paper gives no Wilcoxon $p$ below {MIN_PAIRS_WILCOXON} pairs and significance rests on the paired t-test."
        )
    if floor >= alpha:
        said += f", which is not below $\\alpha = {alpha:g}$: whatever the differences, the test cannot reject"
    else:
        said += (
            f"; Holm's correction over the main family's {m} comparisons multiplies the smallest $p$ by {m}, "
            f"to {holm:.3g}"
        )
    return said + (
        f". A Holm-corrected Wilcoxon $p$ of {holm:.3g} is this floor (Holm lifts every $p$ at the floor to $m$ "
        f"times it, here {m}): it says the seeds all went one way, not that the difference is small, and significance "
        "rests on the paired t-test."
    )


def repeat_words(study) -> str:
    """The configurations not tested, each repeating another in every setting that changes training (stats.families):
    "X repeats Y in every setting that changes training (it differs only in \\texttt{train.log\\_every})"."""
    said = []
    for variant, (kept, differ) in study.repeats.items():
        keys = words([rf"\texttt{{{latex_escape(key)}}}" for key in differ]) or "its name"
        said.append(
            f"{study.marked(variant)} repeats {study.marked(kept)} in every setting that changes training (it differs "
            f"only in {keys})"
        )
    return "; ".join(said)
