"""A grid search that stops hopeless trials at rungs (``tune: {search: grid, rungs: [1], reduction_factor: 2}``).

Successive halving over the grid's points, the same rule for every configuration of the study:

- every trial trains to the end of the first rung's epoch (``rungs``: epochs, each before the run's
  last), where its validation score (``tune.metric`` of that epoch's evaluation in metrics.jsonl) is
  compared with its cohort's: the best ``ceil(n / reduction_factor)`` of the ``n`` trials of its
  cohort that reached the rung go on to the next rung, the others are pruned (the better score wins,
  the lower trial number on a tie); the survivors of the last rung train to the end and are scored
  as in any grid;
- a grid trial's cohort is the grid; a trial an edge-following grid adds (``follow_edge``, one at a
  time) has as its cohort every trial up to it, so it goes on where it ranks among the best
  ``ceil(n / reduction_factor)`` of all the scores at that rung so far.

So each configuration gets the same budget: ``trials`` trials, each trained to the first rung, and
the same fraction of them at each later rung. The decisions read the scores alone: a trial's run is
trained to a rung as a job that ends at the rung's epoch (``RunSpec.last_epoch``: the training loop
stops at that epoch's end, its checkpoint written, before another step), so it stays resumable and
trains not one step past the rung; a survivor's run resumes from that checkpoint and ends with the bits
an uninterrupted run has, and a search killed anywhere decides the same when started again, with any
number of workers. A pruned trial is never chosen; the edge rule follows completed
trials only. A trial whose run ended before a rung (failed, diverged) is told so as in any grid.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from peftlab.config.checks import shown
from peftlab.study.tuning.metric import METRICS
from peftlab.training.run_result import read_result, run_status, set_aside_damaged_result
from peftlab.utils.errors import ConfigError, UserError
from peftlab.utils.files import read_lines, write_json_atomic

FINISHED = ("completed", "failed", "diverged")


def read_rungs(value: Any, search: str, seeds: tuple[int, ...]) -> tuple[int, ...]:
    """``tune.rungs``: the epochs at whose end a grid's trials are compared, ascending; () when unset."""
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in value)
        or value != sorted(set(value))
    ):
        raise ConfigError(f"study tune.rungs={shown(value)} is invalid: expected ascending distinct epochs (>= 1)")
    if search != "grid":
        raise ConfigError(
            f"study tune.rungs={shown(value)} is invalid with search: {search}: expected search: grid "
            "(halving's rungs are its pruner's)"
        )
    if len(seeds) > 1:
        raise ConfigError(
            f"study tune.rungs={shown(value)} is invalid with tune.seeds={shown(list(seeds))}: expected one "
            "seed (a rung compares one run per trial)"
        )
    return tuple(value)


def check_rungs(rungs: tuple[int, ...], epochs: int, method: str) -> None:
    """Every rung ends before the run's last epoch: a rung at the last would decide nothing."""
    if rungs and rungs[-1] >= epochs:
        raise ConfigError(
            f"study method '{method}' tune.rungs={shown(list(rungs))} is invalid: its runs train "
            f"train.epochs={epochs}: expected epochs below {epochs}"
        )


def rung_score(run_dir: Path, metric: str, rung: int, minimize: bool) -> float | None:
    """The trial run's score at the end of epoch ``rung`` (metrics.jsonl's evaluation records; a best_*
    metric's running best up to it), or None before it got there."""
    field, best_of, best = METRICS[metric], metric.startswith("best_"), None
    for record in records(run_dir / "metrics.jsonl"):
        value = record.get(field)
        if record.get("kind") not in ("eval", "epoch") or not isinstance(value, (int, float)):
            continue
        if best_of and best is not None:
            value = min(best, value) if minimize else max(best, value)
        best = value
        if record["kind"] == "epoch" and record.get("epoch") == rung - 1:
            return float(value)
    return None


def records(path: Path) -> list[dict]:
    """metrics.jsonl's records so far ([] without one; a line being written is skipped)."""
    try:
        lines = read_lines(path, "run directory entry") or []
    except (OSError, UserError):  # the run's own check names it; no score is read from it
        return []
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def kept(number: int, reached: dict[int, float], grid: int, factor: int, minimize: bool) -> bool:
    """Whether trial ``number`` goes on past a rung: ``reached`` holds the rung's score of every trial
    that reached it; the trial's cohort is the grid, or for an added trial every trial up to it."""
    cohort = [n for n in reached if (n < grid if number < grid else n <= number)]
    ranked = sorted(cohort, key=lambda n: (reached[n] if minimize else -reached[n], n))
    return ranked.index(number) < math.ceil(len(cohort) / factor)


def most_epochs(search, epochs: int) -> list[int]:
    """The most epochs each trial of ``search`` (its runs ``epochs`` long) can train, before it starts: with rungs,
    of a grid's ``n`` points all reach the first rung and ``ceil(n / reduction_factor)`` go on past each (exactly
    that many where every trial reaches every rung: a trial that fails first shrinks its cohort), and each point added
    after the grid may rank among the best at each rung, so it counts whole; without rungs, every trial whole (a
    run stopped at a rung trains no step past it: ``train_to_rung``)."""
    if not search.rungs:
        return [epochs] * search.trials
    grid = len(search.proposals())
    out, going = [], grid
    for rung in search.rungs:
        kept_on = math.ceil(going / search.reduction_factor)
        out += [rung] * (going - kept_on)
        going = kept_on
    return out + [epochs] * (going + search.trials - grid)


def prepare_run(spec, run_dir: Path) -> dict | None:
    """A trial run's directory, ready to train or resume; its result when it has finished (read, not trained again)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "spec.json", spec.record())
    set_aside_damaged_result(run_dir)  # a damaged result.json is no score: its run trains again
    return (read_result(run_dir) or {}) if run_status(run_dir) in FINISHED else None


def rung_steps(
    search,
    directory: Path,
    study,
    ask: Callable[[int], Any],
    spec_of: Callable[[Any], Any],  # a trial -> its RunSpec
    say: Callable[[str], None],
    ended: Callable[[Any, Path, str], None],  # a pruned trial's run, its directory, where: it ends (counted)
) -> Generator[tuple, None, None]:
    """The rungs of a grid with ``rungs``: every waiting trial is asked (``ask(number)``), then at each rung
    its running trials train to the rung's end (one request to the executor) and those the rule does not
    keep are told pruned, their runs to ``ended``. The survivors stay running: ``search.run_pending`` trains
    them to the end."""
    from optuna.trial import Trial, TrialState

    if not search.rungs:
        return
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        ask(waiting.number)
    grid, minimize = len(search.proposals()), search.direction == "minimize"
    for rung in search.rungs:
        alive = {t.number: Trial(study, t._trial_id) for t in study.get_trials(states=(TrialState.RUNNING,))}
        runs = {number: spec_of(trial) for number, trial in alive.items()}
        yield from train_to_rung(search, directory, alive, runs, rung)
        before = {t.number: t.intermediate_values for t in study.get_trials(deepcopy=False)}
        for number, trial in alive.items():
            value = rung_score(directory / "runs" / runs[number].run_id, search.metric, rung, minimize)
            if value is not None and rung not in before[number]:
                trial.report(value, rung)
        reached = {t.number: t.intermediate_values[rung] for t in study.get_trials() if rung in t.intermediate_values}
        for number, trial in alive.items():
            if number in reached and not kept(number, reached, grid, search.reduction_factor, minimize):
                study.tell(trial, state=TrialState.PRUNED)
                say(
                    f"tune {search.name}: trial {number} pruned at epoch {rung} ({search.metric}={reached[number]:.4f})"
                )
                ended(runs[number], directory / "runs" / runs[number].run_id, f"pruned at epoch {rung}")


def train_to_rung(search, directory: Path, alive: dict, runs: dict, rung: int):
    """Train each trial's run to the end of epoch ``rung`` and stop it there (its job's ``last_epoch``), unless it is
    there or has finished; a run stopped by an outside cause (a killed worker) is resumed once, a second time stops
    the search in one line."""
    for attempt in range(2):
        jobs = []
        for number, spec in runs.items():
            alive[number].set_user_attr("run_ids", [spec.run_id])
            run_dir = directory / "runs" / spec.run_id
            scored = rung_score(run_dir, search.metric, rung, search.direction == "minimize") is not None
            if prepare_run(spec, run_dir) is None and not scored:
                jobs.append((dataclasses.replace(spec, last_epoch=rung), run_dir))
        if not jobs:
            return
        outcomes: dict[str, dict] = {}
        yield jobs, (lambda spec, result, into=outcomes: into.update({spec.run_id: result})), None
        outside = [r.get("error") for r in outcomes.values() if r.get("status") == "pending"]
        if outside and attempt:
            raise UserError(
                f"tuning of method '{search.name}': {len(outside)} trial runs were stopped by an outside cause "
                f"twice ({outside[0]}); run the same command again to resume them"
            )
        if not outside:
            return
