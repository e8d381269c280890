"""What main.tex says about a tuned study's searches (``tuning_text``, for templates/main.tex.jinja): whether every
method searched the same keys, the tuning figure's caption (its seeds, its pruned and diverged trials), and which
tuning macros results.tex holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftlab.analysis.report import tuning
from peftlab.analysis.results.units import words
from peftlab.training.run_result import lower_is_better

if TYPE_CHECKING:
    from peftlab.analysis.paper.macros import Numbers
    from peftlab.analysis.paper.study import Study


def tuning_text(study: Study, numbers: Numbers, drawn: list[str]) -> dict | None:
    """What the template says about tuning (None for an untuned study): whether every method searched the
    same keys, and the verb for them; the score the tuning table gives of the final runs; whether the figure
    was drawn and its caption; whether a chosen value lies at an end of its range."""
    if not study.searches:
        return None
    lower = lower_is_better(study.searches[0]["search"]["metric"])  # val_perplexity
    keys = [{axis["key"] for axis in s["search"]["axes"]} for s in study.searches]
    curve = all(tuning.numeric_axis(s["search"]) for s in study.searches)
    how = (
        "against the searched value; the star is the chosen trial"
        if curve
        else "in the order they ran; the line is the best so far, the star the chosen trial"
    )
    which = "lower is better" if lower else "\\%"
    unit = numbers.ref("tuneUnit")  # method, or configuration where each had its own search
    caption = (
        f"Validation score ({numbers.ref('tuneMetric')}, {which}, {seed_words(study.searches)}) of every trial "
        f"of each {unit}'s search, one panel per {unit}, {how}"
        + ("; hollow markers are pruned trials at their last reported score" if pruned(study.searches) else "")
        + diverged_words(study.searches)
        + "."
    )
    return {
        "shared": all(k == keys[0] for k in keys),
        "one_budget": len({s["search"]["trials"] for s in study.searches}) == 1,  # else tuneTrials names each
        "verb": "was" if len(keys[0]) == 1 else "were",
        "score": "perplexity (lower is better)" if lower else "top-1",
        "figure": tuning.FIGURE in drawn,
        "caption": caption,
        "edges": "tuneEdges" in numbers.macros,
        "tie_breaks": "tuneTieBreaks" in numbers.macros,
        "stability": "tuneStability" in numbers.macros,  # how sure each choice is (bootstrap win shares)
    }


def diverged_words(searches: list[dict]) -> str:
    """What the tuning figure's marks in report.tuning.FELL are, where it draws any (report.tuning.draw_diverged):
    crosses at the score of a trial that completed at chance on validation, triangles on the x-axis for one whose
    loss was not finite; "" where no trial did either."""
    states = {tuning.state(t) for s in searches for t in s["trials"]}
    said = []
    if "AT CHANCE" in states and any(
        t.get("value") is not None for s in searches for t in s["trials"] if tuning.state(t) == "AT CHANCE"
    ):
        said.append(
            f"{tuning.FELL_WORD} crosses are trials that completed at chance on the validation split, never chosen"
        )
    if any(
        t.get("value") is None and tuning.state(t) in ("DIVERGED", "AT CHANCE") for s in searches for t in s["trials"]
    ):
        said.append(
            f"{tuning.FELL_WORD} triangles on the x-axis are trials whose loss was not finite, with no score to place"
        )
    return "".join("; " + words for words in said)


def pruned(searches: list[dict]) -> bool:
    """Whether a search pruned a trial the tuning figure draws (hollow, at its last reported score)."""
    return any(t.get("state") == "PRUNED" and t.get("value") is not None for s in searches for t in s["trials"])


def seed_words(searches: list[dict]) -> str:
    """What a trial's score is over: "one tuning seed", or "mean over the 2 tuning seeds" (search.seeds)."""
    counts = sorted({len(s["search"]["seeds"]) for s in searches})
    if counts == [1]:
        return "one tuning seed"
    if len(counts) == 1:
        return f"mean over the {counts[0]} tuning seeds"
    return f"mean over its search's {words([str(c) for c in counts]).replace(' and ', ' or ')} tuning seeds"
