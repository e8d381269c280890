"""What tuning did, for the report and the paper: the search space, the trials, the choices.

Reads ``tune/<method>/selection.json`` (written by ``peftlab.study.search`` after every trial)
and the final runs' results; never torch. A study without ``tune:`` gets one sentence saying
its methods share one set of hyper-parameters.

- ``load_searches``: one record per tuned method (its search, trials and choice).
- ``plot_tuning``: the validation score of every trial, one panel per search, with the chosen
  trial marked (pruned trials hollow, at their last score): against the searched value when the
  search has one numeric axis (a learning-rate curve, log-scaled over a wide range), else in
  trial order with the best so far; points an edge-following grid added are diamonds, diverged
  trials black crosses (a validation score at chance) or black triangles (a non-finite loss): FELL, a colour
  no panel is drawn in but a seventh method's.
- ``edges`` / ``edge_choices``: chosen values at the end of a numeric axis, where the best may lie outside.
- ``added_lines`` / ``diverged_lines``: the points an edge-following grid added and why, a budget that
  ran out at an edge, and the trials that diverged (never chosen).
- ``report_section``: the report's "Tuning" section. The paper's tuning table is in tuning_table.py,
  its text about tuning in paper.py and its template.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from peftlab.analysis.figures.style import figure_name, neutral_entry, save_figure
from peftlab.analysis.figures.ticks import searched_ticks
from peftlab.analysis.report.tuning_lines import (
    _values,
    added_lines,
    borrowed_lines,
    certainty_lines,
    diverged_lines,
    search_label,
)
from peftlab.analysis.results.escape import markdown_text
from peftlab.analysis.results.tuning_choices import borrowers, edge_choices, log_scaled, search_name
from peftlab.analysis.results.units import natural_key, scale, unit, units
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.analysis.stats.ties import coarse_validation
from peftlab.analysis.stats.tuning_finals import search_certainty
from peftlab.study.records import SELECTION, read_selection
from peftlab.training.run_result import lower_is_better

UNTUNED = (
    "The methods share one set of hyper-parameters (not tuned per method on validation): rankings may "
    "change when each method is tuned (a `tune:` section in the study file)."
)
FIGURE = "tuning"
PANELS_PER_ROW = 3


def load_searches(
    study_dir: str | Path,
    methods: list[str] | None = None,
    variants: list[str] | None = None,
    df: pd.DataFrame | None = None,
) -> list[dict]:
    """The selection.json of every search (``records.read_selection``: a damaged one is a ``DamagedFile``), in
    the order of ``methods`` (the report's palette order), then
    alphabetical; a method's configurations in the order of ``variants`` (the palette's: by the values
    the ablation varies, r=2 before r=8 before r=16), then in natural order, as the figures list them. With the
    study's runs (``df``) each choice's certainty has its final runs' seed spread in it (``search_certainty``)."""
    paths = sorted(Path(study_dir).glob(f"tune/*/{SELECTION}"))
    read = [(path, read_selection(path)) for path in paths]  # a damaged one: DamagedFile
    searches = [record for _, record in read if record is not None]
    for path, record in read:  # how sure each choice is, from what the trials kept of their validation split
        if record is not None:
            record["certainty"] = search_certainty(record, path.parent, df)
    order = {m: i for i, m in enumerate(methods or [])}
    within = {v: i for i, v in enumerate(variants or [])}

    def place(record: dict) -> tuple:
        method, name = record["search"]["method"], search_name(record)
        return order.get(method, len(order)), method, within.get(name, len(within)), natural_key(name)

    return sorted(searches, key=place)


def _space(record: dict) -> str:
    """The search space as a Markdown table cell: the study file's keys and values escaped (``markdown_text``)."""
    parts = []
    for axis in record["search"]["axes"]:
        key = markdown_text(axis["key"])
        if "values" in axis:
            parts.append(f"{key} in {{{', '.join(markdown_text(v) for v in axis['values'])}}}")
        else:
            parts.append(f"{key} in [{axis['low']:g}, {axis['high']:g}]{' (log)' if axis.get('log') else ''}")
    return "; ".join(parts) + _added_words(record)


def added_count(record: dict) -> int:
    """How many points an edge-following search added after its grid."""
    return sum(1 for t in record["trials"] if t.get("added"))


def _added_words(record: dict) -> str:
    """ ", then 2 points added by following the edge" for a search that added points past its grid:
    a chosen value may lie outside the grid the space names."""
    added = added_count(record)
    return f", then {added} point{'s' if added != 1 else ''} added by following the edge" if added else ""


def state(trial: dict) -> str:
    """A trial's outcome as the report counts it: Optuna's state, DIVERGED for a run that diverged, AT CHANCE for
    one that completed at chance on validation (selection.json's ``diverged``: ``study.trials.divergence``)."""
    reason = trial.get("diverged")
    return trial["state"] if not reason else "DIVERGED" if str(reason).startswith("diverged:") else "AT CHANCE"


def _counts(trials: list[dict]) -> str:
    states = pd.Series([state(t) for t in trials], dtype=object).value_counts().to_dict()
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))


def final_metrics(metric: str) -> tuple[str, str]:
    """The validation and test columns of the final runs of a search on ``metric`` (a best-over-training
    metric's are the last evaluation's): val_f1 -> metrics.val_f1, metrics.test_f1."""
    name = metric.removeprefix("best_").removeprefix("val_")
    return f"metrics.val_{name}", f"metrics.test_{name}"


def final_scores(df: pd.DataFrame, metric: str = "val_top1") -> pd.DataFrame:
    """Per configuration and, for selection.json files that do not name theirs, per method: mean validation
    and test score of the search's ``metric`` (top-1 in %, F1 and Matthews times 100, a perplexity as it is)
    of its completed runs (a method's: its main-table runs), and their count. Final runs on train + val
    (data.trainval) have no validation score: their val is NaN, their test is there."""
    done, (val, test) = completed_runs(df), final_metrics(metric)
    if done.empty or test not in done:
        return pd.DataFrame(columns=["val", "test", "n"])
    done = done.assign(**{column: pd.to_numeric(done.get(column), errors="coerce") for column in (val, test)})
    main, times = done[done["groups"].str.split(",").apply(lambda g: "main" in g)], scale(metric)
    per_method = main.groupby("method").agg(val=(val, "mean"), test=(test, "mean"), n=("seed", "nunique"))
    if "variant" not in done:  # a table of methods only
        return per_method * [times, times, 1]
    per_config = done.groupby("variant").agg(val=(val, "mean"), test=(test, "mean"), n=("seed", "nunique"))
    per_config = per_config[~per_config.index.isin(per_method.index)]
    return pd.concat([per_method, per_config]) * [times, times, 1]


def scores_of(record: dict, scores: pd.DataFrame):
    """The final runs' scores of the configuration a search ran on (``final_scores``), or None."""
    name = search_name(record)
    if (record.get("configurations") or {}).get("searched") and name in scores.index:
        return scores.loc[name]
    method = record["search"]["method"]
    return scores.loc[method] if name == method and method in scores.index else None


def numeric_axis(search: dict) -> dict | None:
    """The search's one axis when it is its only axis and numeric (a list of numbers or a range)."""
    axes = search["axes"]
    if len(axes) != 1:
        return None
    values = axes[0].get("values")
    if values is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return axes[0]


def plot_tuning(searches: list[dict], out_dir: Path, labels: dict | None = None, palette: dict | None = None):
    """Validation score over the trials of each search, a panel each in its configuration's colour (``palette``:
    ``study_palette``'s); returns the paths, or None without trials."""
    searches = [s for s in searches if s["trials"]]
    if not searches:
        return None
    ncols = min(len(searches), PANELS_PER_ROW)
    nrows = -(-len(searches) // ncols)
    # at most a paper's text width (6.5 in), where its 7 pt text prints at 7 pt
    fig = Figure(figsize=(min(2.3 * ncols + 0.4, 6.5), 2.1 * nrows + 0.45), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax in axes[len(searches) :]:
        ax.set_visible(False)
    for ax, record in zip(axes, searches):
        method = record["search"]["method"]
        draw_panel(ax, record, search_color(record, palette))
        ax.set_title(figure_name(search_name(record), method, labels), fontsize=8)
    metric = searches[0]["search"]["metric"]
    for ax in axes[::ncols]:
        ax.set_ylabel(f"{metric} (validation{', ' + unit(metric) if unit(metric) else ''})", fontsize=7)
    legend = {}  # every panel's markers, each once (a diverged trial may be in one panel only), in grey
    for ax, record in zip(axes, searches):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, neutral_entry(handle, search_color(record, palette)))
    # about two entries fit a panel's width: one column under a lone panel, 3 under two, 5 under three
    fig.legend(
        legend.values(),
        legend.keys(),
        loc="outside lower center",
        ncols=min(len(legend), 2 * ncols - 1),
        fontsize=7,  # the least a paper prints (issue 82)
        frameon=False,
    )
    return save_figure(fig, out_dir, FIGURE)


def search_color(record: dict, palette: dict | None) -> str:
    """A search's colour: its configuration's shade where it ran on one (a rank study: r=2 light, r=16 dark,
    as every other figure draws them), else its method's hue."""
    palette = palette or {}
    shade = palette.get("variant", {}).get(search_name(record))
    return shade or palette.get("method", {}).get(record["search"]["method"], "#0072B2")


def draw_panel(ax, record: dict, color: str) -> None:
    """One method's trials: against the searched value (one numeric axis) or in trial order with the best
    so far; pruned trials hollow, added ones (an edge-following grid) as diamonds, diverged ones as black
    crosses (at their score, or triangles at the panel's foot without one), the chosen trial a star."""
    metric = record["search"]["metric"]
    axis, times, lower = numeric_axis(record["search"]), scale(metric), lower_is_better(metric)
    x_of = (lambda t: t["params"][axis["key"]]) if axis else (lambda t: t["number"])
    trials = sorted(record["trials"], key=lambda t: t["number"])
    done = [(x_of(t), times * t["value"]) for t in trials if state(t) == "COMPLETE" and t["value"] is not None]
    pruned = [(x_of(t), times * t["value"]) for t in trials if state(t) == "PRUNED" and t["value"] is not None]
    added = [(x_of(t), times * t["value"]) for t in trials if t.get("added") and state(t) == "COMPLETE"]
    if done and axis:  # a curve over the searched values
        ax.plot(*zip(*sorted(done)), marker="o", ms=4, color=color, lw=1, zorder=3, label="trial")
    elif done:
        ax.scatter(*zip(*done), s=16, color=color, zorder=3, label="trial")
        best, line = np.inf if lower else -np.inf, []
        for number, value in done:
            best = min(best, value) if lower else max(best, value)
            line.append((number, best))
        ax.step(*zip(*line), where="post", color=color, alpha=0.6, lw=1, label="best so far")
    if pruned:
        ax.scatter(*zip(*pruned), s=16, facecolors="none", edgecolors=color, zorder=3, label="pruned")
    if added:
        ax.scatter(
            *zip(*added),
            s=30,
            marker="D",
            facecolors="white",
            edgecolors=color,
            linewidths=1.2,
            zorder=3.5,
            label="added (edge-following)",
        )
    draw_diverged(ax, [t for t in trials if state(t) in ("DIVERGED", "AT CHANCE")], x_of, times)
    chosen = record.get("chosen")
    if chosen:
        chosen_x = chosen["params"][axis["key"]] if axis else chosen["trial"]
        ax.scatter([chosen_x], [times * chosen["value"]], s=70, marker="*", color="black", zorder=4, label="chosen")
    # minor labels too (matplotlib's default size is twice this), at the 7 pt a paper prints at least; labels that
    # would run into each other are left out when it is saved (figures.ticks.thin_log_labels)
    ax.tick_params(which="both", labelsize=7)
    if axis:
        if log_scaled(axis, trials):
            ax.set_xscale("log")
            searched_ticks(ax.xaxis, [(t.get("params") or {}).get(axis["key"]) for t in trials])
        ax.set_xlabel(axis["key"], fontsize=7)
    else:
        ax.set_xlabel("trial", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, lw=0.5)


# the colour of a trial that fell to chance or diverged, and its name in every caption that says so: black, not a
# method's hue (vermillion, the colour these were drawn in before, is the second method's own and reads as orange)
FELL, FELL_WORD = "#000000", "black"


def draw_diverged(ax, trials: list[dict], x_of, times: float = 100.0) -> None:
    """Crosses (FELL) at the score of a trial that fell to chance; triangles on the x-axis itself for
    one without a score (a non-finite loss or gradient), where no score could be read off."""
    scored = [(x_of(t), times * t["value"]) for t in trials if t.get("value") is not None]
    unscored = [x_of(t) for t in trials if t.get("value") is None]
    style = {"color": FELL, "s": 30, "linewidths": 1.5, "zorder": 5}
    if scored:
        ax.scatter(*zip(*scored), marker="x", label="at chance (completed)", **style)
    if unscored:  # x in data, y on the axis line (axes fraction 0): there is no score to place it at
        ax.scatter(
            unscored,
            [0] * len(unscored),
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            marker="v",
            label="diverged: non-finite (on the x-axis)",
            **style,
        )
        ax.update_datalim([(x, 0) for x in unscored], updatey=False)  # autoscaling skips that transform
        ax.autoscale_view()


def report_section(
    study_dir: str | Path, df: pd.DataFrame, fig_dir: Path, labels: dict | None = None, palette: dict | None = None
) -> list[str]:
    """The report's "Tuning" section; the one sentence of an untuned study."""
    searches = load_searches(study_dir, (palette or {}).get("methods"), (palette or {}).get("variants"), df)
    if not searches:
        return ["## Hyper-parameters", "", UNTUNED, ""]
    first = searches[0]["search"]
    seeds = ", ".join(map(str, first["seeds"]))
    scored = (
        f"the mean over the tuning seeds {seeds}"
        if len(first["seeds"]) > 1
        else f"one trial per point, on tuning seed {seeds}"
    )
    metric, lent = first["metric"], any(borrowers(r) for r in searches)
    lines = [
        "## Tuning",
        "",
        "Each configuration was tuned on the validation split before its final runs"
        + (", except those below that the study file's `tune.share` lent another's choice" if lent else "")
        + f": a {search_words(first)} "
        f"trials selected by {metric}{', the lowest winning' if lower_is_better(metric) else ''} ({scored}, which "
        "no final run uses); the test set was evaluated for the final runs only, each at its chosen "
        "values. Budgets (trials per search): "
        + ", ".join(f"{search_label(s, labels)} {s['search']['trials']}" for s in searches)
        + ".",
        "",
        "| configuration | search space | trials run | chosen values | val (chosen trial) | val (final runs) | "
        "test (final runs) |",
        "|---|---|---|---|---:|---:|---:|",
        *search_rows(searches, final_scores(df, metric), labels),
    ]
    if unit(metric) != "%":  # top-1 reads as a percentage without saying so
        lines += ["", f"Scores in the val and test columns: {units([metric])}."]
    lines += ["", *coarse_validation(df, metric)]
    lines += certainty_lines(searches, labels)
    lines += borrowed_lines(searches, labels)
    edges = edge_choices(searches, labels)
    if edges:
        lines += ["Chosen at the edge of the search: " + " ".join(edges), ""]
    if added_lines(searches):
        lines += [
            "Points the search added after the grid (`follow_edge`), each from the trials before it:",
            "",
            *added_lines(searches, labels),
            "",
        ]
    if diverged_lines(searches, labels):
        lines += [
            "Trials that diverged (a non-finite loss or gradient) or fell to chance on validation; none was chosen:",
            "",
            *diverged_lines(searches, labels),
            "",
        ]
    paths = plot_tuning(searches, fig_dir, labels, palette)
    if paths:
        lines += [
            f"![validation score over the trials]({Path('figures') / paths[0].name})",
            "",
            figure_caption(searches),
            "",
        ]
    return lines


def search_rows(searches: list[dict], scores: pd.DataFrame, labels: dict | None) -> list[str]:
    """The Tuning table's row of each search: its space, trials, choice and the final runs' ``scores``."""
    rows = []
    for record in searches:
        search, chosen = record["search"], record.get("chosen")
        final = scores_of(record, scores)
        unfinished = "" if record.get("done") else " (search not finished)"
        chosen_text = f"{_values(chosen['params'])} (trial {chosen['trial']})" if chosen else "-"
        chosen_val = f"{scale(search['metric']) * chosen['value']:.2f}" if chosen else "-"
        final_text = (
            f"{shown_score(final['val'], 2, '-')} | {shown_score(final['test'], 2, '-')} "
            f"({int(final['n'])} seed{'s' if final['n'] != 1 else ''})"
            if final is not None
            else "- | -"
        )
        rows.append(
            f"| {search_label(record, labels)} | {_space(record)} | {len(record['trials'])} of "
            f"{search['trials']} ({_counts(record['trials'])}){unfinished} | {chosen_text} | {chosen_val} | "
            f"{final_text} |"
        )
    return rows


def shown_score(value: float, digits: int, missing: str) -> str:
    """A final-runs score with ``digits`` decimals, or ``missing`` where there is none (no validation split)."""
    return missing if pd.isna(value) else f"{value:.{digits}f}"


def search_words(search: dict) -> str:
    if search.get("follow_edge"):
        return (
            "grid search (Optuna) that follows the edge: the grid's points, then points added one at a time "
            "past the best's end of a numeric axis or between the best and its better neighbour;" + rung_words(search)
        )
    return f"{search['search']} search (Optuna),{rung_words(search)}"


def rung_words(search: dict) -> str:
    """A grid's rungs (``tune.rungs``), the same rule and budget in every search; "" without rungs."""
    rungs = search.get("rungs")
    if not rungs:
        return ""
    ends = ", ".join(map(str, rungs))
    return (
        f" stopped early by the same rule in every search: each trial trained to the end of epoch {rungs[0]}, and at "
        f"the end of epoch{'s' if len(rungs) > 1 else ''} {ends} the best ceil(n/{search['reduction_factor']}) of "
        "the n trials of its cohort that got there (the grid's, or for an added point every trial up to it) went "
        "on, the others were pruned and never chosen;"
    )


def figure_caption(searches: list[dict]) -> str:
    curve = all(numeric_axis(s["search"]) for s in searches)
    how = (
        "against the searched value; the star is the chosen trial"
        if curve
        else "in the order they ran; the line is the best so far, the star the chosen trial"
    )
    extra = []
    if any(t["state"] == "PRUNED" for s in searches for t in s["trials"]):
        extra.append("hollow circles are pruned trials at their last reported score")
    if any(t.get("added") for s in searches for t in s["trials"]):
        extra.append("diamonds are points the edge-following search added after the grid")
    if any(t.get("diverged") for s in searches for t in s["trials"]):
        extra.append(
            f"{FELL_WORD} crosses are trials that fell to chance (at their score), {FELL_WORD} triangles on the "
            "x-axis trials whose loss or gradients went non-finite; neither is ever chosen"
        )
    return (
        f"`figures/{FIGURE}.png`: the {searches[0]['search']['metric']} (validation) of every trial, one panel "
        f"per search, {how}" + "".join(f"; {e}" for e in extra) + "."
    )
