"""The report's Tuning section's lines beside its table: the configurations at another's choice (``borrowed_lines``),
the points an edge-following search added (``added_lines``), the trials that diverged (``diverged_lines``), and how
sure each choice is (``certainty_lines``: the chosen trial's bootstrap win share, ``stats.trial_predictions``), in
the words of the search's metric (``results.certainty_words``)."""

from __future__ import annotations

from peftlab.analysis.results.certainty_words import amount, measured_noun, points, score_words
from peftlab.analysis.results.escape import markdown_text
from peftlab.analysis.results.tuning_choices import BORROWED_MARK, borrowers, search_name
from peftlab.analysis.results.units import display_name
from peftlab.analysis.stats.choice_stability import MC_ERRORS, RESAMPLES, SEED, SURE_SHARE


def search_label(record: dict, labels: dict | None = None) -> str:
    """A search's configuration as the report's Markdown names it: its label (``labels``), escaped, so that a name
    holding Markdown's link, image or table syntax prints as itself."""
    return markdown_text(display_name(search_name(record), record["search"]["method"], labels))


def _values(params: dict) -> str:
    """Chosen or tried values, "train.lr=0.01, method.target_modules=standard", the study file's keys and text
    values Markdown-escaped (``markdown_text``)."""
    return ", ".join(
        f"{markdown_text(k)}={v:.3g}" if isinstance(v, float) else f"{markdown_text(k)}={markdown_text(v)}"
        for k, v in params.items()
    )


def added_lines(searches: list[dict], labels: dict | None = None) -> list[str]:
    """The report's lines on edge-following searches: each added point and why, the values the config
    refused, and a budget that ran out with the best still at an edge or was left unspent; each search
    named as the tables name it (``labels``)."""
    lines = []
    for record in searches:
        summary = record.get("follow_edge")
        method = search_label(record, labels)
        added = [t for t in record["trials"] if t.get("added")]
        if not added and not summary:
            continue
        text = "; ".join(f"trial {t['number']} {_values(t['params'])}, {t['added']}" for t in added) or "none"
        lines.append(
            f"- {method}: the grid's {len(record['trials']) - len(added)} trials, then {len(added)} added: {text}."
        )
        for refused in dict.fromkeys(r for t in added for r in t.get("refused", [])):
            lines.append(f"  - not added, {refused}.")
        if summary and summary.get("at_edge"):
            lines.append(f"  - {summary['at_edge'][0].upper()}{summary['at_edge'][1:]}.")
        if summary and summary.get("unspent"):
            lines.append(f"  - {summary['unspent']} trials of the budget were not spent: {summary['stopped']}.")
    return lines


def diverged_lines(searches: list[dict], labels: dict | None = None) -> list[str]:
    """One line per trial that diverged or scored at chance (never chosen), its search named by ``labels``."""
    return [
        f"- {search_label(r, labels)} trial {t['number']} ({_values(t['params'] or {})}): {t['diverged']}."
        for r in searches
        for t in r["trials"]
        if t.get("diverged")
    ]


def borrowed_lines(searches: list[dict], labels: dict | None) -> list[str]:
    """The configurations that ran at another's choice (``tune.share``), each said with whose: the tables
    mark them ``BORROWED_MARK``."""
    lines = [
        f"- {', '.join(markdown_text(display_name(b, None, labels)) for b in borrowers(r))}: at the values chosen for "
        f"{search_label(r, labels)}" + (f" ({_values(r['chosen']['params'])})" if r.get("chosen") else "") + "."
        for r in searches
        if borrowers(r)
    ]
    if not lines:
        return []
    return [
        f"Not tuned themselves ({BORROWED_MARK} in the tables; the study file's `tune.share`): these configurations "
        "ran at the hyper-parameters another configuration's search chose, so they are compared untuned:",
        "",
        *lines,
        "",
    ]


def certainty_lines(searches: list[dict], labels: dict | None = None) -> list[str]:
    """How sure each search's choice is (``load_searches``' ``certainty``): the chosen trial's share of the
    bootstrap resamples of the validation examples (a text study's sequences) and the final runs' seeds in which it
    has the best validation score of its search's metric (top-1, F1, Matthews; the lowest perplexity), with its
    Monte-Carlo error, "uncertain" below SURE_SHARE and "borderline" within MC_ERRORS errors of it; the winner's
    optimism; and "n/a" with the reason where there is no share."""
    lines = []
    for record in searches:
        certainty = record.get("certainty")
        if not certainty or not record.get("chosen"):
            continue
        name = search_label(record, labels)
        if certainty["share"] is None:
            lines.append(f"- {name}: n/a ({certainty['why']}).")
            continue
        runner = certainty["runner_up"]
        other = f"; trial {runner[0]} wins {runner[1]:.2f}" if runner and certainty["verdict"] != "sure" else ""
        lines.append(
            f"- {name}: trial {record['chosen']['trial']} wins {share_words(certainty)}, {certainty['verdict']}"
            f"{seed_caveat(certainty)}{other}.{optimism_words(certainty)}"
        )
    if not lines:
        return []
    said = score_words(searches[0]["search"]["metric"])
    return [
        f"How sure each choice is: the share of {RESAMPLES:,} bootstrap resamples of the validation "
        f"{measured_noun(searches)} (seed {SEED}, ties split) in which the chosen trial has the {said.best} among "
        "all its search's trials that completed (those at chance included), each resample also moving every trial's "
        f"{said.moved} by a seed-to-seed deviation drawn from its configuration's final runs ({said.deviations}, "
        f"times sqrt(n/(n-1))); a choice that wins less than {SURE_SHARE:g} of them is called uncertain, one within "
        f"{MC_ERRORS} Monte-Carlo standard errors (±, sqrt(p(1-p)/{RESAMPLES:,})) of {SURE_SHARE:g} borderline, and "
        "sure only with the seeds in it (two final runs with a validation score or more). The winner's optimism is "
        f"the chosen trial's {said.score} less its final runs' mean: the best of several trials is chosen partly "
        f"for scoring {said.chance} by chance.",
        "",
        *lines,
        "",
    ]


def share_words(certainty: dict) -> str:
    """ "0.62 ± 0.01 of the resamples of examples and seeds (0.85 of the examples alone; 4 trials, 1 at chance)" """
    counted = f"{certainty['trials']} trials" + (
        f", {certainty['at_chance']} at chance" if certainty["at_chance"] else ""
    )
    noun = certainty.get("noun", "examples")
    of = f"of the resamples of {noun} and seeds" if certainty["seeds"] else f"of the resamples of {noun}"
    alone = f"{certainty['examples_share']:.2f} of the {noun} alone; " if certainty["seeds"] else ""
    return f"{certainty['share']:.2f} ± {certainty['error']:.2f} {of} ({alone}{counted})"


def seed_caveat(certainty: dict) -> str:
    """What a share without the seeds in it did not check."""
    if certainty["seeds"]:
        return ""
    return (
        f" of the {certainty.get('noun', 'examples')} alone (the seed spread needs two final runs with a validation "
        f"score: {certainty['finals']})"
    )


def optimism_words(certainty: dict) -> str:
    """ " Winner's optimism: its validation top-1 is 3.1 points above its 3 final runs' mean (their sd 2.0 points)."
    (a perplexity's as it is: "its validation perplexity is 0.52 below ...")."""
    if certainty.get("optimism") is None:
        return ""
    metric = certainty.get("metric", "val_top1")
    unit = points(metric)
    sd = f" (their sd {amount(metric, certainty['sd'])}{unit})" if certainty.get("sd") is not None else ""
    runs = f"{certainty['finals']} final run{'s' if certainty['finals'] != 1 else ''}"
    size, side = amount(metric, abs(certainty["optimism"])), "above" if certainty["optimism"] >= 0 else "below"
    return f" Winner's optimism: its {score_words(metric).score} is {size}{unit} {side} its {runs}' mean{sd}."
