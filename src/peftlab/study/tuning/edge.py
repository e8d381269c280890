"""A grid search that follows the edge (``tune: {search: grid, follow_edge: true, trials: N}``).

The grid's points are the first trials; the rest of the budget, N minus the grid's size, goes to
points added one at a time, each a function of the finished trials' validation scores alone (so a
search killed and started again adds the same points):

- the best trial (``best_trial``: diverged trials never count; the lowest value where the metric is
  lower-better, a perplexity) is looked at along each numeric axis
  of the grid, on the line through it (the other values fixed at the best's);
- where it sits at an end of that line, the next point lies beyond that end by the grid's own step
  at that end: the ratio of the last two values on a log-spaced axis (lr 1e-3, 1e-2, 1e-1 -> 1),
  their difference on a linear one;
- otherwise the next point lies between the best and its better neighbour: the geometric midpoint
  on a log-spaced axis, the arithmetic one on a linear axis (ints rounded, never onto a tried value);
- a point the config refuses (lr <= 0, a dropout >= 1, r < 1) is never added: that axis's end is
  closed and the point between the best and its neighbour is taken instead; the refusal is recorded.

A point beyond an end is preferred to a point between two; among axes of one kind, the axis with the
fewest values tried on the best's line, then the grid's axis order. Categorical axes (strings,
booleans, a mixed list) and axes of one value are never extended, nor an axis with fewer than two
values on the best's line (the best is a point added on another axis): the search is coordinate-wise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peftlab.utils.errors import ConfigError

DIGITS = 12  # added float values are rounded to 12 significant digits: 0.1 * (0.1 / 0.01) is 1, not 1.0000000000000002


@dataclass(frozen=True)
class Added:
    """A point the search adds: its values, why, and the points the config refused on the way."""

    params: dict
    why: str
    kind: str  # "beyond" an end of a line, or "between" the best and its better neighbour
    refused: tuple[str, ...] = field(default=())


def usable(trial: dict) -> bool:
    """A complete trial with a validation score that did not diverge: the only kind selection may choose."""
    return trial["state"] == "COMPLETE" and trial.get("value") is not None and not trial.get("diverged")


def best_trial(trials: list[dict], minimize: bool = False) -> dict | None:
    """The usable trial with the best validation ``value``, the highest, or the lowest with ``minimize``
    (a perplexity), the lower number on a tie; None when no trial is usable. A trial record carries no
    test score, so none can decide."""
    complete = [t for t in trials if usable(t)]
    return max(complete, key=lambda t: (score(t, minimize), -t["number"])) if complete else None


def minimizes(search) -> bool:
    """Whether the search's metric is lower-better (a perplexity): its best trial has the lowest value."""
    return search.direction == "minimize"


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def numeric_axes(axes) -> list:
    """The grid's axes that can be extended: two or more values, all numbers."""
    return [a for a in axes if a.values is not None and all(map(is_number, a.values)) and len(set(a.values)) >= 2]


def spacing(values) -> str:
    """ "log" when the values are positive and their ratios are at least as even as their differences
    (a tie, as with two values, goes to log when they span a factor of 10 or more), else "linear"."""
    ordered = sorted(set(values))
    if len(ordered) < 2 or ordered[0] <= 0:
        return "linear"
    diffs = [b - a for a, b in zip(ordered, ordered[1:])]
    logs = [math.log(b / a) for a, b in zip(ordered, ordered[1:])]
    uneven_diffs, uneven_logs = max(diffs) / min(diffs), max(logs) / min(logs)
    if math.isclose(uneven_logs, uneven_diffs):
        return "log" if ordered[-1] / ordered[0] >= 10 else "linear"
    return "log" if uneven_logs < uneven_diffs else "linear"


def axis_value_text(value) -> str:
    """An axis value as a note writes it: a float in its shortest form (%g)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def tidy(value: float, integer: bool):
    return int(value) if integer else float(f"{value:.{DIGITS}g}")


def score(trial: dict, minimize: bool = False) -> float:
    """A trial's value signed so that higher is better (negated with ``minimize``); -inf when it is not usable."""
    if not usable(trial):
        return -math.inf
    return -trial["value"] if minimize else trial["value"]


def line_of(trials: list[dict], best: dict, key: str, minimize: bool = False) -> dict:
    """{value of ``key``: the best score there (``score``)} over the trials that share the best's other values."""
    others = {k: v for k, v in best["params"].items() if k != key}
    line: dict = {}
    for trial in trials:
        params = trial["params"] or {}
        if key in params and all(params.get(k) == v for k, v in others.items()):
            line[params[key]] = max(line.get(params[key], -math.inf), score(trial, minimize))
    return line


def beyond(axis, values: list, at: int, log: bool, integer: bool):
    """The value one step of the line's own spacing past its end at index ``at`` (0 or -1)."""
    end, inner = values[at], values[1 if at == 0 else -2]
    step = end / inner if log else end - inner
    value = end * step if log else end + step
    if integer:
        value = min(math.floor(value), end - 1) if at == 0 else max(math.ceil(value), end + 1)
    return tidy(value, integer)


def between(a, b, log: bool, integer: bool):
    """The midpoint of a and b (geometric on a log axis); None where it rounds onto either."""
    middle = math.sqrt(a * b) if log else (a + b) / 2
    value = tidy(math.floor(middle + 0.5) if integer else middle, integer)
    return None if value in (a, b) else value


def refusal(search, params: dict) -> str | None:
    """Why the config refuses a point (its validator's one line), or None."""
    try:
        search.trial_config(params, search.seeds[0])
    except ConfigError as err:
        return str(err)
    return None


def axis_candidates(search, axis, trials: list[dict], best: dict) -> tuple[Added | None, list[str]]:
    """The point this axis proposes from the best (beyond an end, else between) and the refusals met."""
    line = line_of(trials, best, axis.key, minimizes(search))
    values = sorted(line)
    if len(values) < 2:
        return None, []
    log, integer = spacing(axis.values) == "log", all(isinstance(v, int) for v in axis.values)
    value, refused = best["params"][axis.key], []
    at = values.index(value)
    if at in (0, len(values) - 1):
        end = "bottom" if at == 0 else "top"
        out = beyond(axis, values, 0 if at == 0 else -1, log, integer)
        params = {**best["params"], axis.key: out}
        why = refusal(search, params) if is_number(out) else f"{out} is not a finite number"
        if why is None:
            return Added(params, f"beyond the {end} of {axis.key} (best at {axis_value_text(value)})", "beyond"), []
        refused.append(f"beyond the {end} of {axis.key}: {axis.key}={axis_value_text(out)} is refused ({why})")
    neighbours = [values[i] for i in (at - 1, at + 1) if 0 <= i < len(values)]
    partner = max(neighbours, key=lambda v: (line[v], -v))  # the better neighbour; the lower value on a tie
    middle = between(value, partner, log, integer)
    if middle is None:
        return None, refused
    params = {**best["params"], axis.key: middle}
    why = refusal(search, params)
    if why is not None:
        return None, refused + [f"between {axis_value_text(value)} and {axis_value_text(partner)} of {axis.key}: {why}"]
    low, high = sorted((value, partner))
    return Added(
        params,
        f"between {axis_value_text(low)} and {axis_value_text(high)} of {axis.key} (best at {axis_value_text(value)})",
        "between",
    ), refused


def next_point(search, trials: list[dict]) -> tuple[Added | None, list[str]]:
    """The point to add after ``trials`` (all finished), and the refusals met; (None, refusals) when
    nothing can be added (no usable trial, every axis refined as far as it goes)."""
    best = best_trial(trials, minimizes(search))
    if best is None:
        return None, []
    tried = [t["params"] for t in trials]
    found, refused = [], []
    for order, axis in enumerate(numeric_axes(search.axes)):
        point, met = axis_candidates(search, axis, trials, best)
        refused += met
        if point is not None and point.params not in tried:
            kind_rank = 0 if point.kind == "beyond" else 1
            found.append(((kind_rank, len(line_of(trials, best, axis.key, minimizes(search))), order), point))
    if not found:
        return None, refused
    point = min(found, key=lambda pair: pair[0])[1]
    return Added(point.params, point.why, point.kind, tuple(refused)), refused


def added_points(search, trials: list[dict]) -> dict[int, Added]:
    """trial number -> the point it was added as, replayed from the trials before it (the grid's are not)."""
    grid = len(search.proposals())
    ordered = sorted(trials, key=lambda t: t["number"])
    return {t["number"]: next_point(search, ordered[: t["number"]])[0] for t in ordered[grid:]}


def edge_summary(search, trials: list[dict]) -> dict:
    """What selection.json says of a finished edge-following search: the grid's size, the points added,
    the budget left unspent and why, and whether the best still sits at an edge."""
    grid = len(search.proposals())
    point, refused = next_point(search, trials)
    summary = {
        "grid": grid,
        "added": max(0, len(trials) - grid),
        "unspent": max(0, search.trials - len(trials)),
        "refused": refused,
        "at_edge": None,
        "stopped": None,
    }
    if point is not None and point.kind == "beyond" and summary["unspent"] == 0:
        summary["at_edge"] = f"the budget ran out with the best still at an edge: next would be {point.why}"
    if summary["unspent"]:
        summary["stopped"] = (
            "no trial completed without diverging: there is no best to follow"
            if best_trial(trials, minimizes(search)) is None
            else "no point is left to add: past each end the config "
            "refuses, and between the best and its neighbours every value is tried"
        )
    return summary
