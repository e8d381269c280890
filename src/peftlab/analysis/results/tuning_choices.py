"""What a search chose, read from its selection.json (``peftlab.study.search``): the configuration it ran on
(``search_name``), the configurations that ran at its choice without a search of their own (``borrowers``,
the study file's ``tune.share``; ``borrowed_configurations`` reads them from the final runs, and
``borrowed_note`` is what every table that shows one says), and the chosen values at the edge of what the
search tried (``edges``, ``edge_choices``), whatever the search. No torch, no matplotlib.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from peftlab.analysis.results.escape import markdown_text
from peftlab.analysis.results.units import display_name, tied
from peftlab.study.tuning.edge import usable

BORROWED_MARK = "‡"


def borrowed_configurations(df: pd.DataFrame) -> dict[str, str]:
    """Configuration -> the configuration whose tuned values it ran at (``tune.share``), from the final runs'
    spec.json; {} where every configuration was tuned itself."""
    if df.empty or "borrowed_from" not in df:
        return {}
    rows = df.dropna(subset=["borrowed_from"])
    return dict(zip(rows["variant"].astype(str), rows["borrowed_from"].astype(str)))


def borrowed_note(lenders: dict[str, str], show=str, mark: str = BORROWED_MARK) -> str:
    """The note every table with a borrowed configuration carries (and with it any significance mark on it):
    which configurations were not tuned themselves, and whose values they ran at."""
    pairs = {}
    for variant, lender in lenders.items():
        pairs.setdefault(lender, []).append(show(variant))
    said = "; ".join(f"{', '.join(names)} at those of {show(lender)}" for lender, names in pairs.items())
    if len(lenders) == 1:
        return (
            f"{mark}: not tuned itself; ran at the hyper-parameters tuned for another configuration (tune.share): "
            f"{said}. Its comparisons are of an untuned configuration."
        )
    return (
        f"{mark}: not tuned themselves; ran at the hyper-parameters tuned for another configuration (tune.share): "
        f"{said}. Their comparisons are of untuned configurations."
    )


def search_name(record: dict) -> str:
    """The configuration a search ran on (selection.json's ``configurations.searched``: ``lora r=16``), or
    its method in a selection.json that does not say."""
    searched = (record.get("configurations") or {}).get("searched") if isinstance(record, dict) else None
    return searched if isinstance(searched, str) else record["search"]["method"]


def search_unit(searches: list[dict]) -> str:
    """What one search tuned, as the paper's prose and tables name it: "configuration" where a search ran on
    one configuration of its method (a rank study: a search per rank), else "method"."""
    return "configuration" if any(search_name(s) != s["search"]["method"] for s in searches) else "method"


def borrowers(record: dict) -> list[str]:
    """The configurations that ran at this search's choice without a search of their own (``tune.share``)."""
    found = (record.get("configurations") or {}).get("borrowed_by")
    return [b for b in found if isinstance(b, str)] if isinstance(found, list) else []


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounds(axis: dict, trials: list[dict] = ()) -> tuple[float, float]:
    """The ends of an axis: of its grid or range, widened by the values its trials tried (an
    edge-following grid's added points)."""
    values = list(axis["values"]) if axis.get("values") is not None else [axis["low"], axis["high"]]
    values += [t["params"][axis["key"]] for t in trials if _number((t.get("params") or {}).get(axis["key"]))]
    return min(values), max(values)


def log_scaled(axis: dict, trials: list[dict] = ()) -> bool:
    """A range searched on a log scale, or positive values (with those tried) spanning a factor of 10 or more."""
    low, high = _bounds(axis, trials)
    return bool(axis.get("log")) or (low > 0 and high / low >= 10)


def edges(searches: list[dict]) -> list[tuple[str, str, float, str]]:
    """(search, key, chosen value, "smallest" or "largest") per finished search whose chosen value of a
    numeric axis is its smallest or largest searched value: an end of its grid (with the points an
    edge-following search added; on a two-point axis every choice is), within 5% of an end of a range on
    its scale, or the extreme of three or more values the trials of a range tried."""
    return [found[:4] for found in _edges(searches)]


def tie_breaks(searches: list[dict]) -> dict[tuple[str, str], list]:
    """{(search, key): the other values whose trials tied the chosen one} for each chosen value at an end of its
    axis (``edges``) that a tie-break chose."""
    return {(found[0], found[1]): found[5] for found in _edges(searches) if found[5]}


def unreached_ends(searches: list[dict]) -> dict[tuple[str, str], str]:
    """{(search, key): the end of its range no trial reached} for each chosen value of a range axis that is the
    extreme only of the values tried (``edges``), not an end of the range itself: its best may lie in between."""
    return {(found[0], found[1]): found[4] for found in _edges(searches) if found[4]}


def _edges(searches: list[dict]) -> list[tuple[str, str, float, str, str | None]]:
    """``edges`` with the end of the range the choice did not reach, where it is the extreme only of the
    values tried (a random search whose best is its largest rate, well below the range's top)."""
    found = []
    for record in searches:
        chosen = record.get("chosen")
        if not chosen or not record.get("done"):
            continue
        for axis in record["search"]["axes"]:
            value, values = chosen["params"].get(axis["key"]), axis.get("values")
            tried = {
                t["params"][axis["key"]] for t in record["trials"] if _number((t.get("params") or {}).get(axis["key"]))
            }
            if not _number(value) or (values is not None and not all(map(_number, values))):
                continue
            if len(tried | set(values or ())) < 2:
                continue
            low, high = _bounds(axis, record["trials"])
            scale = np.log if axis.get("log") or (values is not None and log_scaled(axis)) else (lambda x: x)
            span = scale(high) - scale(low)
            where = (
                "smallest"
                if scale(value) - scale(low) <= 0.05 * span
                else "largest"
                if scale(high) - scale(value) <= 0.05 * span
                else None
            )
            unreached = None
            if where is None and values is None and len(tried) >= 3 and value in (min(tried), max(tried)):
                where = "smallest" if value == min(tried) else "largest"
                unreached = f"{axis['low'] if where == 'smallest' else axis['high']:g}"
            if where:
                found.append((search_name(record), axis["key"], value, where, unreached, tie_break(record, axis)))
    return found


def tie_break(record: dict, axis: dict) -> list:
    """The other values of ``axis`` whose trials scored the chosen trial's validation value (stats.ties: equal
    up to float rounding): where there are any, the choice among them was the search's tie-break (the earliest
    trial), not a best at the end of the range."""
    chosen, key = record["chosen"], axis["key"]
    if chosen.get("value") is None:
        return []
    return sorted(
        {
            t["params"][key]
            for t in record["trials"]
            if usable(t)
            and _number((t.get("params") or {}).get(key))
            and t["params"][key] != chosen["params"][key]
            and tied(t["value"], chosen["value"])
        }
    )


def edge_choices(searches: list[dict], labels: dict | None = None) -> list[str]:
    """A sentence per chosen value at an end of what its search tried (``edges``), for the report, whatever
    the search, its configuration named by ``labels`` (report.labels); an edge-following search says that its
    budget ran out there. The names and keys from the study's files are Markdown-escaped (``markdown_text``)."""
    ran_out = {search_name(r) for r in searches if (r.get("follow_edge") or {}).get("at_edge")}
    methods = {search_name(r): r["search"]["method"] for r in searches}
    return [
        f"{markdown_text(display_name(name, methods[name], labels))}: the chosen {markdown_text(key)}={value:g} is "
        f"the {where} value searched; "
        + (
            f"it was a tie-break: the trial{'s' if len(ties) > 1 else ''} at {markdown_text(key)}="
            + " and ".join(f"{other:g}" for other in ties)
            + " scored the same validation value, and the earliest trial is taken."
            if ties
            else "the budget ran out before the search could look past it."
            if name in ran_out
            else f"its best may lie beyond it, in the range no trial reached (to {unreached})."
            if unreached
            else "its best may lie outside the searched range."
        )
        for name, key, value, where, unreached, ties in _edges(searches)
    ]
