"""The paper's tuning table (LaTeX): per search (a method's, or a configuration's) its search space, trials,
chosen values and the final runs' scores, from the selection.json records that tuning.py reads (``load_searches``).
"""

from __future__ import annotations

import pandas as pd

from peftlab.analysis.paper.macro_text import TUNING, made_from
from peftlab.analysis.paper.names import config_value, integer
from peftlab.analysis.report.tuning import added_count, final_scores, scores_of, shown_score, state
from peftlab.analysis.results.certainty_words import amount, measured_noun, points, score_words
from peftlab.analysis.results.escape import latex_escape, latex_text
from peftlab.analysis.results.tuning_choices import (
    borrowed_note,
    borrowers,
    edges,
    search_name,
    search_unit,
    tie_breaks,
    unreached_ends,
)
from peftlab.analysis.results.units import display_name, scale, score_name, units, words
from peftlab.analysis.stats.choice_stability import MC_ERRORS, RESAMPLES, SURE_SHARE
from peftlab.training.run_result import lower_is_better

TABLE_CAPTION = (
    "Hyper-parameter search of each {unit} on the validation split: the search space, the trials run "
    "(complete/pruned), the chosen values and trial, the {metric} of the chosen trial (the mean "
    "over the tuning seeds when there are several), and the mean validation and test {score} of the "
    "final runs at the chosen values over $n$ seeds, {units}."
)
# the caption's name of a search metric's score (best_val_top1's final runs: their last evaluation's top-1)
SCORE_WORDS = {"top1": "top-1", "f1": "F1", "matthews": "Matthews correlation", "perplexity": "perplexity"}


# a key this long may break after its dots (method.\\allowbreak target_modules): typewriter text never hyphenates, and
# the tuning table's narrow columns and the text's lines overran the margin by up to 63 pt at a key such as this
LONG_KEY = 12


def latex_key(key: str) -> str:
    """A config key as the paper prints it: train.lr -> \\texttt{train.lr}; a key longer than LONG_KEY may break
    after each dot."""
    parts = [latex_escape(part) for part in str(key).split(".")]
    return "\\texttt{" + (".\\allowbreak{}" if len(str(key)) > LONG_KEY else ".").join(parts) + "}"


def latex_value(value) -> str:
    """A searched or chosen value to 3 significant digits (an added point such as 0.0547723 reads 0.0548); a text
    of several comma-separated names (attn.qkv,attn.proj) in quotes, so a set of them reads apart, and breakable
    after each comma."""
    if isinstance(value, float):
        return latex_escape(f"{value:.3g}")
    text = latex_escape(value)
    if isinstance(value, str) and "," in value:
        return "`" + ",\\allowbreak{}".join(text.split(",")) + "'"
    return text


def chosen_value(value, mark: str) -> str:
    """A chosen value with its mark, held on one line unless it has break points of its own (latex_value)."""
    text = latex_value(value) + mark
    return "{}" + text if "\\allowbreak" in text else f"\\mbox{{{text}}}"


def latex_space(record: dict) -> str:
    """The search space in LaTeX: \\texttt{train.lr} $\\in$ \\{0.001, 0.01\\}, ranges as [low, high] (log),
    and "$+$2" for the points an edge-following search added (the table's note says what it means)."""
    parts = []
    for axis in record["search"]["axes"]:
        if "values" in axis:
            values = ", ".join(latex_value(v) for v in axis["values"])
            parts.append(f"{latex_key(axis['key'])} $\\in$ \\{{{values}\\}}")
        else:
            log = " (log)" if axis.get("log") else ""
            low, high = (
                f"{v:g}" if isinstance(v, (int, float)) else latex_escape(v) for v in (axis["low"], axis["high"])
            )
            parts.append(f"{latex_key(axis['key'])} $\\in$ [{low}, {high}]{log}")
    added = added_count(record)
    return "; ".join(parts) + (f" $+${added}" if added else "")


def latex_trials(record: dict) -> str:
    """Complete/pruned trials; failed ones and an unfinished search said after them."""
    states = pd.Series([state(t) for t in record["trials"]], dtype=object).value_counts()
    text = f"{states.get('COMPLETE', 0)}/{states.get('PRUNED', 0)}"
    for name in ("DIVERGED", "AT CHANCE"):  # a trial at chance completed: it did not diverge
        if states.get(name, 0):
            text += f" +{states[name]} {name.lower()}"
    failed = len(record["trials"]) - sum(
        states.get(name, 0) for name in ("COMPLETE", "PRUNED", "DIVERGED", "AT CHANCE")
    )
    if failed:
        text += f" +{failed} failed"
    return text if record.get("done") else text + " (unfinished)"


def latex_table(searches: list[dict], df: pd.DataFrame, labels: dict | None = None) -> str:
    """The paper's tuning table (booktabs, tabularx): one row per search, named by the study's labels; a chosen
    value at an end of its axis (``edges``) is marked $^{\\dagger}$."""
    metric = searches[0]["search"]["metric"]
    scores, times = final_scores(df, metric), scale(metric)
    at_edge = {(method, key) for method, key, _, _ in edges(searches)}
    caption = TABLE_CAPTION.format(
        unit=search_unit(searches),
        metric=latex_key(metric) + (" (lower is better)" if lower_is_better(metric) else ""),
        score=SCORE_WORDS.get(score_name(metric), score_name(metric)),
        units=latex_escape(units([metric])),
    )
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{caption}}}",
        r"\label{tab:tuning}",
        # the search space gets more of the width than the chosen values (X columns share it)
        r"\begin{tabularx}{\linewidth}{@{}l>{\raggedright\arraybackslash\hsize=1.25\hsize}Xc"
        r">{\raggedright\arraybackslash\hsize=0.75\hsize}Xrrrrr@{}}",
        r"\toprule",
        r" & & & \multicolumn{3}{c}{Chosen} & \multicolumn{3}{c}{Final runs} \\",
        r"\cmidrule(lr){4-6}\cmidrule(l){7-9}",
        rf"{search_unit(searches).capitalize()} & Search space & Trials & Values & Trial & Val & Val & Test & $n$ \\",
        r"\midrule",
    ]
    for record in searches:
        search, chosen = record["search"], record.get("chosen")
        method = search_name(record)
        name = latex_text(display_name(method, search["method"], labels))
        if chosen:
            values = ", ".join(
                # a line may break after "=": a narrow column holds the key, then the value (with its mark)
                f"{latex_key(k)}=\\allowbreak" + chosen_value(v, "$^{\\dagger}$" if (method, k) in at_edge else "")
                for k, v in chosen["params"].items()
            )
            chosen_text = f"{values} & {latex_escape(chosen['trial'])} & {times * chosen['value']:.1f}"
        else:
            chosen_text = "-- & -- & --"
        final = scores_of(record, scores)
        finals = (
            f"{shown_score(final['val'], 1, '--')} & {shown_score(final['test'], 1, '--')} & {int(final['n'])}"
            if final is not None
            else "-- & -- & --"
        )
        lines.append(f"{name} & {latex_space(record)} & {latex_trials(record)} & {chosen_text} & {finals} \\\\")
    lines += [r"\bottomrule", r"\end{tabularx}"]
    notes = []
    if any(added_count(record) for record in searches):
        notes.append(
            r"$+k$: $k$ points added after the grid by following the edge (past its end or between the best "
            r"and its better neighbour), so a chosen value may lie outside the grid shown."
        )
    if at_edge:
        notes.append(edge_note(searches, at_edge))
    lent = {
        latex_text(display_name(b, None, labels)): latex_text(display_name(search_name(r), None, labels))
        for r in searches
        for b in borrowers(r)
    }
    if lent:  # they have no row: the note names them and whose values they ran at
        notes.append(borrowed_note(lent, str, r"$^{\ddagger}$ (in the other tables)"))
    if notes:
        lines += [r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize " + " ".join(notes) + "}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# the macros of results.tex on the study's tuning (macros.define_numbers calls it for a tuned study)

# what a reader calls the scores a search can be chosen by (search.metric); the key follows in type
TUNING_METRIC_WORDS = {
    "val_top1": "validation top-1 accuracy",
    "best_val_top1": "the best validation top-1 accuracy of the run",
    "val_perplexity": "validation perplexity",
    "val_loss": "validation loss",
}


def edge_note(searches: list[dict], at_edge: set) -> str:
    """The tuning table's note on its daggers: what a chosen value at an end of what was searched may mean, by
    kind (an end of the range, the extreme of what a range's trials tried, a tie-break)."""
    broken = tie_breaks(searches)  # chosen among trials of equal score: says nothing beyond
    beyond = at_edge - set(broken)
    inside = beyond & set(unreached_ends(searches))  # the extreme of the values a range tried
    said = r"$^{\dagger}$: the smallest or largest value searched"
    if beyond - inside:
        said += "; the best value may lie outside the searched range"
    if inside:
        said += (
            "; where the text names the end of a range no trial reached, the best value may lie between "
            "the chosen value and that end"
        )
    if broken:
        said += (
            "; where the text calls it a tie-break" if beyond else "; each a tie-break"
        ) + " between trials of equal validation score, which says nothing of values beyond the range"
    return said + "."


@made_from(TUNING)
def define_tuning(numbers, study) -> None:
    """How each method was tuned (``study.searches``: the selection.json records), and the chosen values
    at an end of their searched range (tuning.edges)."""
    from peftlab.analysis.results import tuning_choices

    add, searches = numbers.add, study.searches
    keys = list(dict.fromkeys(axis["key"] for s in searches for axis in s["search"]["axes"]))
    add(
        "tuneKeys",
        words([latex_key(key) for key in keys]),
        "the config keys searched (tune/*/selection.json)",
    )
    add("tuneMethods", str(len(searches)), "searches run (tune/*/selection.json)")
    unit = tuning_choices.search_unit(searches)
    add("tuneUnit", unit, "what one search tuned: a method, or a configuration (a method with its axis values)")
    kinds = [
        latex_escape(kind)
        for kind in dict.fromkeys(
            "grid (then edge-following)" if s["search"].get("follow_edge") else s["search"]["search"] for s in searches
        )
    ]
    add(
        "tuneSearch",
        words(kinds).replace(" and ", " or "),
        "the kind of search (search.search; follow_edge: points added after the grid)",
    )
    add("tuneTrials", trial_budgets(study), "the trial budget per search (search.trials), by search where they differ")
    key = searches[0]["search"]["metric"]
    add("tuneMetric", latex_key(key), "the score trials were chosen by (search.metric)")
    spoken = TUNING_METRIC_WORDS.get(key)
    words_of = f"{spoken} ({latex_key(key)})" if spoken else latex_key(key)
    add("tuneMetricWords", words_of, "tuneMetric in words where it has them, the key after them")
    seeds = sorted({seed for s in searches for seed in s["search"]["seeds"]})
    add("tuneSeeds", words([latex_escape(seed) for seed in seeds]), "the seeds of the tuning trials (search.seeds)")
    add("tuneSeedWord", "seed" if len(seeds) == 1 else "seeds", "tuneSeeds' noun")
    grouped: dict[tuple[str, str], list[str]] = {}  # (key, smallest or largest): the configurations' labels
    tie_breaks = tuning_choices.tie_breaks(searches)  # chosen among trials of equal score: no best beyond the end
    broken = []
    unreached = tuning_choices.unreached_ends(searches)  # the extreme of the values tried, inside its range
    for name, key, _, where in tuning_choices.edges(searches):
        if (name, key) in tie_breaks:
            others = words([config_value(v) for v in tie_breaks[name, key]])
            broken.append(
                f"{study.name(name)}'s {latex_key(key)}, the {where} value searched, scored the same validation "
                f"value as {latex_key(key)} = {others}, and the earliest trial is taken"
            )
        else:
            inside = unreached.get((name, key))
            phrase = f"{where} value tried, inside its range (to {inside})," if inside else f"{where} value searched"
            grouped.setdefault((key, phrase), []).append(study.name(name))
    at_edge = [f"the {latex_key(k)} is the {phrase} for {words(n)}" for (k, phrase), n in grouped.items()]
    if at_edge:
        add("tuneEdges", "; ".join(at_edge), "chosen values at an end of their searched range (tuning.edges)")
    if broken:
        add("tuneTieBreaks", "; ".join(broken), "chosen values at an end of their range that a tie-break chose")
    stability = stability_words(study)
    if stability:
        add("tuneStability", stability, "how sure each choice is: the chosen trial's bootstrap win share (tuning)")


def stability_words(study) -> str:
    """How sure each search's choice is (``load_searches``' ``certainty``): the chosen trial's share of the
    bootstrap resamples of the validation examples (a text study's sequences) and the final runs' seeds that it
    wins under its search's metric (``results.certainty_words``), with its Monte-Carlo error, those below SURE_SHARE
    called uncertain and those within MC_ERRORS errors of it borderline; the winner's optimism of each; the
    searches without a share said so; "" where no search has a choice."""
    measured, alone, said, unknown = [], [], {"uncertain": [], "borderline": [], "examples": []}, {}
    for record in study.searches:
        certainty, name = record.get("certainty"), study.name(search_name(record))
        if not certainty or not record.get("chosen"):
            continue
        if certainty["share"] is None:
            unknown.setdefault(latex_escape(certainty["why"]), []).append(name)
            continue
        measured.append(f"{certainty['share']:.2f}~$\\pm$~{certainty['error']:.2f} for {name}")
        if certainty["verdict"] in ("uncertain", "borderline"):
            said[certainty["verdict"]].append(name)
        if not certainty["seeds"]:
            said["examples"].append(name)
        else:
            alone.append(f"{certainty['examples_share']:.2f} for {name}")
    text = ""
    if measured:
        uncertain, noun = said["uncertain"], measured_noun(study.searches)
        score = score_words(study.searches[0]["search"]["metric"])
        text = (
            f"The share of {integer(RESAMPLES)} bootstrap resamples of the validation {noun} (ties split), each "
            f"moving every trial's validation {score.moved} by a seed-to-seed deviation drawn from its "
            f"configuration's final runs, in which the chosen trial has the {score.best} among all the trials of "
            f"its search that completed (those at chance included) is {words(measured)} (the Monte-Carlo standard "
            f"error after $\\pm$); a choice that wins less than {SURE_SHARE:g} of them is called uncertain, "
            + (
                f"as the choice{'' if len(uncertain) == 1 else 's'} for {words(uncertain)} "
                f"{'is' if len(uncertain) == 1 else 'are'}."
                if uncertain
                else "and none is."
            )
        )
        text += borderline_words(said["borderline"], said["examples"], noun)
        if alone:
            text += f" Resampling the validation {noun} alone, each trial's model fixed, gives {words(alone)}."
        text += optimism_sentence(study)
    for why, names in unknown.items():
        each = "the choice" if len(names) == 1 else "each choice"
        text += f" How sure {each} is cannot be said for {words(names)}: {why}."
    return text.strip()


def borderline_words(borderline: list[str], examples: list[str], noun: str = "examples") -> str:
    """The choices within MC_ERRORS Monte-Carlo errors of SURE_SHARE, and those whose share leaves the seed out."""
    text = (
        f" A choice is called sure only when it wins at least {SURE_SHARE:g} of them with its seed spread in it, "
        f"and borderline where {MC_ERRORS} Monte-Carlo standard errors reach {SURE_SHARE:g}."
    )
    if borderline:
        text += (
            f" The choice{'' if len(borderline) == 1 else 's'} for {words(borderline)} "
            f"{'is' if len(borderline) == 1 else 'are'} borderline: within {MC_ERRORS} Monte-Carlo standard errors "
            f"of {SURE_SHARE:g}, where another resampling seed could say either."
        )
    if examples:
        text += (
            f" For {words(examples)} the share resamples the {noun} alone (fewer than two final runs have a "
            "validation score): the seed's spread is not in it."
        )
    return text


def optimism_sentence(study) -> str:
    """ " The winner's optimism, ..., is 3.1 points for LoRA (seed-to-seed standard deviation 2.0), ..." (a
    perplexity's as it is, "$-$0.52 for LoRA")."""
    parts, metric = [], study.searches[0]["search"]["metric"] if study.searches else "val_top1"
    for record in study.searches:
        certainty = record.get("certainty") or {}
        if certainty.get("optimism") is None:
            continue
        sd = f", their seed-to-seed standard deviation {amount(metric, certainty['sd'])}" if certainty.get("sd") else ""
        value = amount(metric, certainty["optimism"]).replace("-", "$-$")
        runs = f"{certainty['finals']} final run{'s' if certainty['finals'] != 1 else ''}"
        parts.append(f"{value}{points(metric)} for {study.name(search_name(record))} ({runs}{sd})")
    if not parts:
        return ""
    score = score_words(metric)
    return (
        f" The winner's optimism, the chosen trial's {score.score} less its final runs' mean {score.score} "
        f"(the best of several trials is chosen partly for scoring {score.chance} by chance), is {words(parts)}."
    )


def trial_budgets(study) -> str:
    """Every search's budget: "4" where all are equal, else each with its searches' labels, "2 trials for Full
    FT and 4 for LoRA", "4 trials for Full FT and Linear, and 3 for LoRA" (in the searches' order)."""
    named: dict[int, list[str]] = {}
    for s in study.searches:
        named.setdefault(s["search"]["trials"], []).append(study.name(search_name(s)))
    if len(named) == 1:
        return latex_escape(next(iter(named)))
    parts = [f"{latex_escape(t)}{' trials' if i == 0 else ''} for {words(n)}" for i, (t, n) in enumerate(named.items())]
    last = " and " if len(parts) == 2 and all(len(n) == 1 for n in named.values()) else ", and "
    return ", ".join(parts[:-1]) + last + parts[-1]
