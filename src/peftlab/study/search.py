"""A tuned study's searches: Optuna proposes and prunes, peftlab runs the trials, validation decides.

For each search (``study.tune``, one per configuration, see ``peftlab.study.tuning.tune``), in
``<study dir>/tune/<search>/``:

- ``search-<fingerprint>.journal``: the Optuna study (JournalStorage on a JournalFileBackend, an
  append-only log that a kill cannot corrupt). The fingerprint hashes the search and the method's
  configuration, so a changed study file starts a new search. The journal only caches what the
  trials' run directories hold: a damaged one is set aside and a fresh one started (``journal``).
- ``runs/<run_id>/``: each trial's runs (one per tuning seed), ordinary peftlab runs with ids,
  locks, resume and the study's executor. The final runs live in ``runs/`` of the study, on
  other seeds: a trial's run id never equals a final run's.
- ``selection.json``: the search, the configurations whose final runs take its choice (the one
  searched, and those ``tune.share`` lent it to), every trial (number, state, values, validation
  score, its run ids, the scores each evaluation reported) and the chosen trial; rewritten after
  each trial.

Kill-safety: the search enqueues trial k's values (``Search.proposals()[k]``, a grid in product
order or seeded random draws) before asking, so trial k always gets the same values. A search
killed mid-way finds its finished trials in the journal and their runs' result.json (nothing is
trained again), trials that were running are resumed from their checkpoints under the same
trial numbers, and the rest are asked in order: it ends with the trials an uninterrupted search
has. With ``halving`` the pruner (Optuna's SuccessiveHalvingPruner, asynchronous successive
halving) sees each evaluation's validation score as the run writes it to metrics.jsonl; a
pruned trial's worker is stopped (SIGTERM: its run stays resumable, and is never resumed). Its
decisions depend on which trials have reached a rung, so with several workers at once a
resumed search can prune differently from an uninterrupted one; with one worker it cannot. A
grid with ``rungs`` (``peftlab.study.tuning.rungs``) trains its trials to each rung, then prunes from their
scores there alone: it decides the same with any number of workers, resumed or not.

An edge-following grid (``follow_edge``) adds its points after the grid's, one at a time, each from
the trials finished before it (``peftlab.study.tuning.edge``): a resumed search checks the journal's added
trials against that rule and adds what an uninterrupted one would.

A search is a generator of batches of trial runs (``search_steps``): ``run_search`` trains its batches
one after another through the study's executor, and with several local workers, Slurm or Ray
``tune_study`` runs the searches side by side (``side_by_side``), so that a worker one search leaves idle
trains another's trial; each search makes the same decisions either way, from its own trials only.

Selection reads ``result.json``'s validation metric (``tune.metric``) only, the mean over the
tuning seeds; the trial with the best value wins, the highest or, for a perplexity, the lowest (the
Optuna study's direction, which halving's pruner follows too), the lower trial number on a tie. A trial one of
whose runs diverged (a non-finite loss, or a last validation top-1 at chance: ``trials.divergence``) is
marked so in selection.json and is never chosen.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from peftlab.study.journal import open_journal, set_aside_damaged
from peftlab.study.pruning import PruneWatch
from peftlab.study.records import SELECTION, Selection, read_selection
from peftlab.study.side_by_side import Request, drive, run_side_by_side
from peftlab.study.spec import RunSpec, Study, run_id
from peftlab.study.trials import trial_record, trial_records, trial_value, trial_values, unchosen
from peftlab.study.tuning.configurations import search_key
from peftlab.study.tuning.edge import added_points, best_trial, edge_summary, minimizes, next_point, numeric_axes
from peftlab.study.tuning.metric import missing_metric
from peftlab.study.tuning.rungs import prepare_run, rung_steps
from peftlab.study.tuning.tune import Search, apply_values
from peftlab.training.run_result import read_result
from peftlab.utils.errors import UserError
from peftlab.utils.files import printable, write_json_atomic
from peftlab.utils.typed_json import DamagedFile

log = logging.getLogger(__name__)  # one "peftlab: warning:" line on stderr
# run_jobs(jobs, on_done, stop_when): the study's executor; stop_when(spec, run_dir) -> True stops
# a running job (its on_done then gets {"status": "stopped"}); None where the executor cannot stop one
RunJobs = Callable[[list[tuple[RunSpec, Path]], Callable[[RunSpec, dict], None], Any], None]
Ended = Callable[[RunSpec, Path, str], None]  # a trial run the search pruned, its directory, where (in words)


def optuna_module():
    """Optuna with its log records sent to the root logger (peftlab.utils.libraries), not to stderr."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    return optuna


def tune_dir(study_dir: Path, key: str) -> Path:
    # a per-dataset search: "lora@vtab1k-dtd"; a configuration's: "lora_r=16"
    return study_dir / "tune" / key.replace("/", "-").replace(" ", "_")


def journal_path(directory: Path, search: Search) -> Path:
    return directory / f"search-{search.fingerprint()}.journal"


def trial_spec(search: Search, number: int, params: dict, seed: int) -> RunSpec:
    cfg = search.trial_config(params, seed)
    return RunSpec(run_id(cfg), f"{search.name} trial {number}", search.method, seed, ("tune",), params, cfg)


def tune_study(
    study: Study,
    study_dir: Path,
    run_jobs: RunJobs,
    slots: int,
    say: Callable[[str], None] = lambda line: None,
    side_by_side: bool = False,
    ended: Ended = lambda *pruned: None,
) -> Study:
    """Run every search, then return the study whose tuned runs are the final runs: each at its
    configuration's chosen values (or those ``tune.share`` lent it), with ``tuned_by`` naming the trial. A
    halving search needs ``run_jobs`` that can stop a job (``preflight.check_executor`` refused the others).
    ``side_by_side``: the searches share the executor's workers (``side_by_side.run_side_by_side``), each
    making the decisions it makes alone; else one search after another. Either way a search that fails ends
    there, the others go on to their choice, and the first failure is raised once they have ended (``ended``: see
    ``search_steps``)."""
    steps = {key: search_steps(s, tune_dir(study_dir, key), slots, say, ended) for key, s in study.tune.items()}
    if side_by_side:
        chosen = run_side_by_side(steps, run_jobs, may_stop=any(s.stops_trials for s in study.tune.values()))
    else:
        chosen, failed = {}, []
        for key, searching in steps.items():
            try:
                chosen[key] = drive(searching, run_jobs)
            except Exception as err:  # its own failure (a UserError line): the other searches go on
                failed.append(err)
        if failed:
            raise failed[0]
    return with_choices(study, chosen)


def with_choices(study: Study, chosen: dict[str, dict]) -> Study:
    """The study's runs with each search's chosen values set (new run ids) and recorded; a configuration
    that borrows another's choice (``tune.share``) records whose in ``tuned_by.borrowed_from``."""
    runs: dict[str, RunSpec] = {}
    for spec in study.runs:
        key = search_key(spec, study.tune)
        choice = chosen.get(key) if key is not None else None
        if choice is not None and spec.variant in study.tune[key].borrowers:  # tune.share: said in spec.json
            choice = {**choice, "borrowed_from": study.tune[key].label}
        if choice is not None:
            final = {"data.trainval": True} if study.tune[key].final_trainval else {}
            cfg = apply_values(spec.config, {**choice["params"], **final})
            spec = dataclasses.replace(spec, run_id=run_id(cfg), config=cfg, tuned_by=choice)
        if spec.run_id in runs:  # two configurations the choice made equal: one run, both groups
            old = runs[spec.run_id]
            spec = dataclasses.replace(old, groups=tuple(dict.fromkeys(old.groups + spec.groups)))
        runs[spec.run_id] = spec
    return dataclasses.replace(study, runs=list(runs.values()))


def read_choices(study: Study, study_dir: Path) -> dict[str, dict]:
    """The choices of the searches that have finished, from their selection.json (dry runs)."""
    chosen = {}
    for method, search in study.tune.items():
        try:
            selection = read_selection(tune_dir(study_dir, method) / SELECTION)
        except DamagedFile as err:  # the search rewrites it from its journal and its runs: not done, said once
            log.warning(f"{err}; the search rewrites it")
            continue
        if selection and selection["fingerprint"] == search.fingerprint() and selection["done"] and selection["chosen"]:
            chosen[method] = selection["chosen"]
    return chosen


def run_search(
    search: Search, directory: Path, run_jobs: RunJobs, slots: int, say: Callable[[str], None] = lambda line: None
) -> dict:
    """Run (or resume) one method's search; returns the chosen trial ``{trial, value, metric, params}``."""
    return drive(search_steps(search, directory, slots, say), run_jobs)


def search_steps(
    search: Search, directory: Path, slots: int, say: Callable[[str], None], ended: Ended = lambda *pruned: None
) -> Generator[Request, None, dict]:
    """One search, as steps: it yields each batch of trial runs it needs trained (``run_jobs``' arguments:
    jobs, on_done, stop_when) and goes on once they have ended; returns the chosen trial. An
    edge-following grid adds its points after the grid's, one at a time, each from the trials finished
    before it. Its decisions read its own trials only, so it decides the same whoever trains the runs and
    whatever else they train meanwhile (``side_by_side``). Each trial run it prunes is told to ``ended(spec,
    run_dir, status)``: one it stopped (a rung's, halving's pruner) ends there, not where the executor saw it stop."""
    directory.mkdir(parents=True, exist_ok=True)
    proposals = search.proposals()
    study = load_search(search, directory, proposals)
    # the points the journal holds beyond the grid were added by this rule (load_search checked them)
    planned = proposals + [trial_values(t) for t in study.get_trials(deepcopy=False)[len(proposals) :]]
    for params in planned[len(study.trials) :]:  # trial k gets proposals[k], however often this starts
        study.enqueue_trial(params)

    def ask(number: int):  # a grid with rungs asks its waiting trials at once
        return study.ask(trial_distributions(search, planned[number]))

    def spec_of(trial) -> RunSpec:
        return trial_spec(search, trial.number, planned[trial.number], search.seeds[0])

    yield from rung_steps(search, directory, study, ask, spec_of, say, ended)
    yield from run_pending(search, directory, study, planned, slots, say, ended)
    while search.follow_edge and len(planned) < search.trials:
        point, _ = next_point(search, trial_records(study, directory))
        if point is None:
            break
        say(f"tune {search.name}: trial {len(planned)} added {point.why}")
        planned.append(point.params)
        study.enqueue_trial(point.params)
        yield from rung_steps(search, directory, study, ask, spec_of, say, ended)
        yield from run_pending(search, directory, study, planned, slots, say, ended)
    chosen = write_selection(search, directory, study, done=True)
    if chosen is None:
        why = unchosen(trial_records(study, directory), directory)
        raise UserError(
            f"tuning of method '{search.name}': no trial can be chosen: {why} (see {directory / SELECTION}); "
            "its final runs were not started"
        )
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen["params"].items())
    say(f"tune {search.name}: trial {chosen['trial']} chosen, {search.metric}={chosen['value']:.4f} ({shown})")
    return chosen


def run_pending(
    search: Search,
    directory: Path,
    study,
    planned: list[dict],
    slots: int,
    say: Callable[[str], None],
    ended: Ended,
) -> Generator[Request, None, None]:
    """Train the trials that are running (a killed search's) or waiting, ``slots`` at a time."""
    optuna = optuna_module()
    from optuna.trial import TrialState

    stopped_once: set[str] = set()  # runs stopped by an outside cause in this call: resumed once, by a new worker
    while True:
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))  # a killed search's, or a killed run's
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not stale and not waiting:
            return
        batch = [optuna.trial.Trial(study, t._trial_id) for t in stale[:slots]]
        while len(batch) < slots and waiting:
            batch.append(study.ask(trial_distributions(search, planned[waiting.pop(0).number])))
        yield from run_trials(search, directory, study, batch, planned, say, stopped_once, ended)
        write_selection(search, directory, study, done=False)


def trial_distributions(search: Search, params: dict) -> dict:
    """Optuna's distribution of each axis for the trial with ``params``. An edge-following grid's numeric
    axes get numeric ones that span the grid and the trial's value: Optuna allows a categorical axis
    neither a value outside its choices nor other choices in a later trial."""
    from optuna.distributions import FloatDistribution, IntDistribution

    found = {axis.key: axis.distribution() for axis in search.axes}
    for axis in numeric_axes(search.axes) if search.follow_edge else ():
        values = [*axis.values, params[axis.key]]
        low, high = min(values), max(values)
        found[axis.key] = (
            IntDistribution(low, high)
            if all(isinstance(v, int) for v in values)
            else FloatDistribution(float(low), float(high))
        )
    return found


def write_selection(search: Search, directory: Path, study, done: bool) -> dict | None:
    """selection.json: every trial (an added one says why, a diverged one why), and once done the choice
    and, for an edge-following grid, what it added and whether the budget ran out at an edge."""
    trials = trial_records(study, directory)
    for number, point in (added_points(search, trials) if search.follow_edge else {}).items():
        if point is not None:  # None only for a journal load_search has set aside
            trials[number]["added"] = point.why
            trials[number].update({"refused": list(point.refused)} if point.refused else {})
    best = best_trial(trials, minimizes(search)) if done else None
    chosen = (
        {"trial": best["number"], "value": best["value"], "metric": search.metric, "params": best["params"]}
        if best
        else None
    )
    record: Selection = {
        "fingerprint": search.fingerprint(),
        # which final runs take the choice: the configuration searched, then those borrowing it (tune.share)
        "configurations": {"searched": search.label, "borrowed_by": list(search.borrowers)},
        "search": search.record(),
        "done": done,
        "trials": trials,
        "chosen": chosen,
    }
    if search.follow_edge and done:
        record["follow_edge"] = edge_summary(search, trials)
    write_json_atomic(directory / SELECTION, record)
    return chosen


def load_search(search: Search, directory: Path, proposals: list[dict]):
    """The search's Optuna study from its journal; a damaged journal (``journal``), or one whose trials
    are not the search's, is set aside and a fresh one started."""
    optuna = optuna_module()
    path = journal_path(directory, search)
    pruner = (
        optuna.pruners.SuccessiveHalvingPruner(reduction_factor=search.reduction_factor)
        if search.search == "halving"
        else optuna.pruners.NopPruner()
    )

    def load():
        return optuna.create_study(
            study_name=search.method,
            storage=open_journal(path),
            load_if_exists=True,
            direction=search.direction,
            pruner=pruner,
        )

    study = load()
    why = journal_disagreement(study, search, directory, proposals)
    if why is None:
        return study
    set_aside_damaged(path, why)
    return load()


def journal_disagreement(study, search: Search, directory: Path, proposals: list[dict]) -> str | None:
    """Why a journal that replays is not this search's (None when it is): a trial beyond the budget or
    with values other than its proposal (past an edge-following grid: the point the trials before it
    add), or an outcome its runs' result.json contradict."""
    records = []
    for trial in study.get_trials(deepcopy=False):
        number = trial.number
        if number >= search.trials:
            return f"trial {number} is beyond the search's {search.trials} trials"
        values = trial_values(trial)
        expected = proposals[number] if number < len(proposals) else added_after(search, records)
        if values != expected:
            return f"trial {number} has values {values!r}, expected {expected!r}"
        why = outcome_disagreement(trial, search, directory)
        if why is not None:
            return f"trial {number} {why}"
        records.append(trial_record(trial, directory))
    return None


def added_after(search: Search, records: list[dict]) -> dict | None:
    """The values an edge-following grid adds after ``records``, which must all have finished."""
    if not search.follow_edge or any(r["state"] not in ("COMPLETE", "FAIL", "PRUNED") for r in records):
        return None
    point, _ = next_point(search, records)
    return point.params if point else None


def outcome_disagreement(trial, search: Search, directory: Path) -> str | None:
    """What a finished trial's state or value says that its runs do not (as ``run_trials`` tells them):
    complete at the mean of its runs' scores, failed when one has none, pruned only by halving or rungs."""
    state = trial.state.name
    if state == "PRUNED" and not search.stops_trials:
        return f"is pruned in a {search.search} search"
    if state not in ("COMPLETE", "FAIL"):
        return None
    run_ids = trial.user_attrs.get("run_ids")
    if not isinstance(run_ids, list) or len(run_ids) != len(search.seeds):
        return f"has run ids {run_ids!r}, expected one per tuning seed"
    scores = [trial_value(read_result(directory / "runs" / str(r)) or {}, search.metric) for r in run_ids]
    if state == "COMPLETE" and (None in scores or statistics.fmean(scores) != trial.value):
        return f"has value {trial.value!r}, which is not its runs' {search.metric}"
    if state == "FAIL" and None not in scores:
        return "failed, but its runs completed"
    return None


def run_trials(
    search: Search,
    directory: Path,
    study,
    batch: list,
    proposals: list[dict],
    say: Callable[[str], None],
    stopped_once: set[str],
    ended: Ended,
) -> Generator[Request, None, None]:
    """Train the runs of a batch of trials at once (one request to the executor) and tell Optuna each trial's
    outcome. A trial whose run was stopped by an outside cause (its worker killed, a full disk) is told nothing: it
    stays running, and ``run_pending`` resumes the run from its checkpoint with the next batch, as a study goes on
    after a killed worker. A run stopped a second time (``stopped_once``: the out-of-memory killer again, a disk
    still full) stops the search in one line; the same command resumes it."""
    from optuna.trial import TrialState

    jobs, results, runs_of = [], {}, {}
    for trial in batch:
        params = proposals[trial.number]
        if trial.params and trial.params != params:
            raise UserError(
                f"tuning of method '{search.name}': trial {trial.number} of "
                f"{directory} has values {trial.params}, expected {params}: delete that journal"
            )
        specs = [trial_spec(search, trial.number, params, seed) for seed in search.seeds]
        trial.set_user_attr("run_ids", [s.run_id for s in specs])
        runs_of[trial.number] = (trial, specs)
        for spec in specs:
            run_dir = directory / "runs" / spec.run_id
            finished = prepare_run(spec, run_dir)  # trained before a kill: its result is read, not trained again
            if finished is not None:
                results[spec.run_id] = finished
            else:
                jobs.append((spec, run_dir))
    trial_of_run = {s.run_id: trial for trial, specs in runs_of.values() for s in specs}
    stopper = PruneWatch(search, study, trial_of_run) if search.search == "halving" else None

    def on_done(spec: RunSpec, result: dict) -> None:
        results[spec.run_id] = result

    yield jobs, on_done, stopper  # back once every job has ended
    unreported = next(filter(None, (missing_metric(r, search.metric) for r in results.values())), None)
    if unreported:  # a metric its classes do not give, known only once the data was read: never a silent failure
        raise UserError(f"tuning of method '{search.name}': {unreported}")
    stopped_from_outside = {}
    for number, (trial, specs) in runs_of.items():
        outcomes = [results.get(s.run_id, {"status": "failed"}) for s in specs]
        values = [trial_value(r, search.metric) for r in outcomes]
        if any(r.get("status") == "pending" for r in outcomes):  # a signal or a full disk: resumed
            stopped_from_outside |= {
                s.run_id: r["error"] for s, r in zip(specs, outcomes) if r.get("status") == "pending"
            }
        # a halving trial is pruned when its scores say so, whether it was stopped while it ran or
        # finished before the watch looked again (then its result is kept but takes no part)
        elif any(r.get("status") == "stopped" for r in outcomes) or (
            stopper is not None and any(stopper(s, directory / "runs" / s.run_id) for s in specs)
        ):
            study.tell(trial, state=TrialState.PRUNED)
            say(f"tune {search.name}: trial {number} pruned")
            ended(specs[0], directory / "runs" / specs[0].run_id, "pruned")  # its one run (halving: one seed)
        elif all(v is not None for v in values):
            study.tell(trial, statistics.fmean(values))
            say(f"tune {search.name}: trial {number} {search.metric}={statistics.fmean(values):.4f}")
        else:
            study.tell(trial, state=TrialState.FAIL)
            say(f"tune {search.name}: trial {number} {outcomes[0].get('status', 'failed')}")
    again = [why for run, why in stopped_from_outside.items() if run in stopped_once]
    if again:  # its trial stays running in the journal: the same command resumes its runs
        raise UserError(
            f"tuning of method '{search.name}': {len(again)} trial runs were stopped by an outside cause "
            f"twice ({again[0]}); run the same command again to resume them"
        )
    for run, why in stopped_from_outside.items():  # on stderr, --quiet or not, as the runner says a killed run
        print(
            printable(f"peftlab: tune {search.name}: run {run} was stopped by an outside cause ({why}); resuming it"),
            file=sys.stderr,
            flush=True,
        )
        stopped_once.add(run)
