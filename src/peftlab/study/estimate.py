"""What a study will cost: the dry-run's table of runs, with the time left from finished runs, or before
any has finished its training FLOPs, counted on meta models.

A dry-run's time estimate comes from finished runs once there are some; before that, this
module counts the backbone's forward FLOPs per image (torch's FlopCounterMode on the meta device:
no weights, no data) and multiplies out every run and tuning trial (a text model's tokens per example are
known only once its data is tokenized: its runs are counted as unknown):

    3 x forward FLOPs x training images x epochs  +  forward FLOPs x validation images x epochs

(the backward pass costs about twice the forward; a method's own arithmetic, VPT's extra tokens
and the test evaluation are left out: a tested causal LM passes over its test split twice, once more for its
base alone, but its runs are counted as unknown, and the seconds left from finished runs hold both passes).
The images per run are known without reading data for VTAB-1k (800 training and 200 validation images,
1,000 and none for the final runs on train + val), for an image folder (its folders listed, no image opened)
and for configs that set ``data.train_subset``; other runs are counted as unknown.
The GPU-hours are at a stated sustained rate, not a measurement.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from peftlab.config.schema import RunConfig, to_dict
from peftlab.config.sections import architecture_only
from peftlab.study.records import SELECTION, read_selection
from peftlab.study.runner import FINISHED, run_dir_of, run_statuses
from peftlab.study.search import read_choices, tune_dir, with_choices
from peftlab.study.spec import RunSpec, Study
from peftlab.study.tuning.configurations import search_key
from peftlab.study.tuning.rungs import most_epochs
from peftlab.study.tuning.tune import Search
from peftlab.training.run_result import read_result
from peftlab.utils.typed_json import DamagedFile

ASSUMED_TFLOPS = 300.0  # sustained training rate of one H100 in bf16 (about 30% of its dense peak)


def images_per_epoch(cfg: RunConfig, cache: dict | None = None) -> tuple[int, int] | None:
    """(training, validation) images one epoch of ``cfg`` sees, when known without the data. ``cache``: an image
    folder's count by folder, so a study's runs on one folder list it once."""
    from peftlab.data.checks import folder_train_images  # lists an image folder's class folders

    data, cache = cfg.data, {} if cache is None else cache
    key = ("listed", data.name, data.root, data.split_seed, data.test_dir)
    if data.name == "imagefolder" and key not in cache:
        cache[key] = folder_train_images(data)
    if data.name.startswith("vtab1k/"):
        train, val = (1000, 0) if data.trainval else (800, 200)
    elif data.name == "imagefolder" and (listed := cache[key]) is not None:
        val = 0 if data.trainval else int(round(data.val_fraction * listed))  # as data.splits carves it
        train = listed - val
    elif data.train_subset is not None:
        train, val = data.train_subset, data.val_subset or 0
    else:
        return None
    return (min(train, data.train_subset or train), 0 if data.trainval else min(val, data.val_subset or val))


def forward_flops(cfg: RunConfig, cache: dict) -> int | None:
    """The backbone's forward FLOPs for one image at the config's input size (None if it cannot be counted)."""
    key = json.dumps(to_dict(architecture_only(cfg.model)), sort_keys=True, default=str)
    if key not in cache:
        from peftlab.records.answers import forward_flops as recorded_flops

        cache[key] = recorded_flops(cfg)  # a model record: torch only when it is built
    return cache[key]


def run_flops(cfg: RunConfig, cache: dict, epochs: int | None = None) -> int | None:
    """The training FLOPs of a run of ``cfg`` over ``epochs`` (default: its own), None if they cannot be counted."""
    images, flops = images_per_epoch(cfg, cache), forward_flops(cfg, cache)
    if images is None or flops is None:
        return None
    train, val = images
    return (cfg.train.epochs if epochs is None else epochs) * (3 * train + val) * flops


def training_estimate(configs: list[RunConfig], epochs: list[int] | None = None, bounds: tuple[str, ...] = ()) -> str:
    """One line: the training FLOPs of ``configs`` (every run and trial), each over its ``epochs`` (default: its
    own), and GPU-hours at ASSUMED_TFLOPS; an upper bound, said so, where ``bounds`` says why (``stopping_bounds``)."""
    cache: dict = {}
    counted = [run_flops(cfg, cache, e) for cfg, e in zip(configs, epochs or [None] * len(configs), strict=True)]
    known = [f for f in counted if f is not None]
    unknown = len(counted) - len(known)
    text = any(cfg.model.source == "hf-text" for cfg in configs)
    examples = "examples" if text else "images"
    if not known:
        known_when = "example and token counts are known only once their data is read and tokenized"
        if not text:
            known_when = "image counts are known only once their data is read"
        return f"compute: unknown ({unknown} runs whose {known_when})"
    total = sum(known)
    hours = total / (ASSUMED_TFLOPS * 1e12) / 3600
    amount = f"{total / 1e15:,.1f} PFLOP" if total >= 1e15 else f"{total / 1e12:,.2f} TFLOP"
    time = f"{hours:,.1f} GPU-hours" if hours >= 1 else f"{hours * 60:,.1f} GPU-minutes"
    left_out = f"; {unknown} runs of unknown size not counted" if unknown else ""
    most = "at most " if bounds else ""
    return (
        f"compute: {most}{amount} of training in {len(known)} runs and trials (3 x forward FLOPs x {examples} x "
        f"epochs, counted on the meta model), about {time} at a sustained {ASSUMED_TFLOPS:.0f} TFLOP/s "
        f"(an H100 at about 30% of its bf16 peak){left_out}" + "".join(f"; {bound}" for bound in bounds)
    )


def stopping_bounds(searches: list[Search]) -> tuple[str, ...]:
    """Why a study's compute is a bound, one phrase per search that stops trials while they train; () for none."""
    bounds = []
    for search in searches:
        epochs = search.template.train.epochs
        if search.rungs:
            most = sum(most_epochs(search, epochs))
            bounds.append(
                f"{search.name}'s trials counted at most {most} of their {search.trials * epochs} epochs, as its "
                f"rungs {list(search.rungs)} allow (the best 1/{search.reduction_factor} of each cohort go on)"
            )
        elif search.stops_trials:
            bounds.append(f"{search.name}'s trials counted whole, though its pruner stops some early")
    return tuple(bounds)


def finished_walls(study_dir: Path, specs: list[RunSpec], statuses: dict[str, str]) -> list[float]:
    """The wall seconds of the completed runs among ``specs``."""
    walls = []
    for spec in specs:
        if statuses[spec.run_id] != "completed":
            continue
        result = read_result(run_dir_of(study_dir, spec)) or {}
        wall = (result.get("timing") or {}).get("wall_seconds")
        if result.get("status") == "completed" and wall:
            walls.append(wall)
    return walls


def remaining_runs(specs: list[RunSpec], statuses: dict[str, str]) -> int:
    return sum(statuses[s.run_id] not in FINISHED for s in specs)


def trials_left(study: Study, study_dir: Path) -> tuple[list[float], int]:
    """(the wall seconds of every tuning trial run that finished, the trial runs the searches have still to run):
    a search's budget is its trials times its tuning seeds, less the runs of the trials that ended (a pruned trial's
    run, stopped without a result, among them)."""
    walls, left = [], 0
    for key, search in study.tune.items():
        finished = 0
        pruned = pruned_runs(tune_dir(study_dir, key), search)
        for run_dir in sorted((tune_dir(study_dir, key) / "runs").glob("*")):
            result = read_result(run_dir) or {}
            wall = (result.get("timing") or {}).get("wall_seconds")
            if result.get("status") in FINISHED or run_dir.name in pruned:
                finished += 1
                if result.get("status") == "completed" and isinstance(wall, int | float) and wall > 0:
                    walls.append(float(wall))
        left += max(0, search.trials * len(search.seeds) - finished)
    return walls, left


def pruned_runs(directory: Path, search: Search) -> set[str]:
    """The run ids of the search's pruned trials, as its selection.json (this search's) records them."""
    try:
        selection = read_selection(directory / SELECTION)
    except DamagedFile:  # the search rewrites it; until then its pruned runs count as left
        return set()
    if selection is None or selection["fingerprint"] != search.fingerprint():
        return set()
    return {str(run) for trial in selection["trials"] if trial["state"] == "PRUNED" for run in trial["run_ids"]}


def dry_run_plan(study: Study, study_dir: Path) -> dict:
    """What a dry-run says, as data (``study --dry-run --json``): the searches, one row per run (a final run whose
    search has not chosen yet has no run id), the seconds left and how many finished runs they come from."""
    planned, searches, waiting = planned_runs(study), [], []
    bounds = stopping_bounds(list(study.tune.values()))
    if study.tune:
        chosen = read_choices(study, study_dir)
        for method, search in study.tune.items():
            epochs = search.template.train.epochs
            searches.append(
                {
                    "search": method,
                    "kind": search.search,
                    "trials": search.trials,
                    "seeds": len(search.seeds),
                    "grid_points": len(search.proposals()) if search.follow_edge else None,
                    "done": method in chosen,
                    "lent_to": list(search.borrowers),
                    "rungs": list(search.rungs),
                    "trial_epochs": search.trials * epochs,  # every trial whole
                    "most_trial_epochs": sum(most_epochs(search, epochs)),  # what its rungs may train
                    "stops_trials": search.stops_trials and method not in chosen,
                }
            )
        known = with_choices(study, chosen)
        ready = [s for s in known.runs if search_key(s, study.tune) in (*chosen, None)]
        waiting = [s for s in known.runs if search_key(s, study.tune) not in (*chosen, None)]
        study = dataclasses.replace(known, runs=ready)
    statuses = run_statuses(study_dir, study.runs)
    runs = [
        {"run_id": spec.run_id, "status": statuses[spec.run_id], "seed": spec.seed, "groups": list(spec.groups)}
        | {"variant": spec.variant}
        for spec in study.runs
    ] + [
        {"run_id": None, "status": "pending", "seed": spec.seed, "groups": list(spec.groups), "variant": spec.variant}
        for spec in waiting
    ]
    # seconds left: the mean wall time of the finished runs (final runs and tuning trials) times the runs still
    # to train: pending final runs, those waiting for their search, and the searches' trial runs not yet run
    walls, left = finished_walls(study_dir, study.runs, statuses), remaining_runs(study.runs, statuses)
    if study.tune:
        trial_walls, trial_runs_left = trials_left(study, study_dir)
        walls, left = walls + trial_walls, left + len(waiting) + trial_runs_left
    seconds = statistics.mean(walls) * left if walls else None
    return {
        "searches": searches,
        "runs": runs,
        "remaining_seconds": seconds,
        "finished_runs_timed": len(walls),
        "training_estimate": training_estimate([c for c, _ in planned], [e for _, e in planned], bounds)
        if seconds is None
        else None,
    }


def dry_run_table(study: Study, study_dir: Path) -> str:
    """One line per run (and per search); a final run whose search has not chosen yet is listed with its
    configuration and seed, its run id known once the search is done."""
    plan, lines = dry_run_plan(study, study_dir), []
    for search in plan["searches"]:
        grid = search["grid_points"]
        how = f" ({grid} grid points, then {search['trials'] - grid} following the edge one at a time)" if grid else ""
        lent = f", its choice lent to {', '.join(search['lent_to'])} (tune.share)" if search["lent_to"] else ""
        done = "done" if search["done"] else "not done"
        if search["rungs"]:
            how += (
                f", compared at the end of epoch {', '.join(map(str, search['rungs']))}: at most "
                f"{search['most_trial_epochs']} of their {search['trial_epochs']} epochs trained"
            )
        lines.append(f"tune {search['search']}: {search['kind']}, {search['trials']} trials{how}, {done}{lent}")
    if plan["searches"]:
        trials = sum(search["trials"] for search in plan["searches"])
        runs = sum(search["trials"] * search["seeds"] for search in plan["searches"])
        lines.append(
            f"{len(plan['searches'])} searches, {trials} trials ({runs} trial runs) before the final runs, which "
            "the last line counts"
        )
    lines.append(f"{'run_id':<12}  {'status':<9}  {'seed':>4}  {'groups':<14}  variant")
    counts: dict[str, int] = {}
    for run in plan["runs"]:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
        shown = run["run_id"] or "(tuning)"
        lines.append(
            f"{shown:<12}  {run['status']:<9}  {run['seed']:>4}  {','.join(run['groups']):<14}  {run['variant']}"
        )
    seconds, waiting = plan["remaining_seconds"], sum(run["run_id"] is None for run in plan["runs"])
    stopping = any(search["stops_trials"] for search in plan["searches"])
    eta = (
        f"about {seconds / 60:.1f} min (mean of {plan['finished_runs_timed']} finished runs"
        f"{'; the trial runs left counted whole, though their search may stop some' if stopping else ''})"
        if seconds is not None
        else "unknown until a run finishes"
    )
    tuning = f" ({waiting} wait for their search to choose)" if waiting else ""
    # a damaged result.json (run_result.status_of) is no result: its run trains again, as a pending one
    damaged = f", {counts['damaged']} damaged (trained again)" if counts.get("damaged") else ""
    lines.append(
        f"{len(plan['runs'])} runs: {counts.get('completed', 0)} done, {counts.get('failed', 0)} failed, "
        f"{counts.get('diverged', 0)} diverged, {counts.get('partial', 0)} partial, "
        f"{counts.get('pending', 0)} pending{tuning}{damaged}; remaining time: {eta}"
    )
    if plan["training_estimate"]:
        lines.append(plan["training_estimate"])
    return "\n".join(lines)


def planned_configs(study: Study) -> list:
    """Every run's and trial's configuration a study will train (final runs as configured, untuned)."""
    return [cfg for cfg, _ in planned_runs(study)]


def planned_runs(study: Study) -> list[tuple[RunConfig, int]]:
    """``planned_configs``, each with the most epochs it trains: its own, or a tuning trial's that its search's
    rungs may stop (``rungs.most_epochs``)."""
    runs = []
    for spec in study.runs:
        key = search_key(spec, study.tune)
        final = key is not None and study.tune[key].final_trainval
        cfg = (
            dataclasses.replace(spec.config, data=dataclasses.replace(spec.config.data, trainval=True))
            if final
            else spec.config
        )
        runs.append((cfg, cfg.train.epochs))
    for search in study.tune.values():
        epochs = most_epochs(search, search.template.train.epochs)
        runs += [(search.template, e) for e in epochs for _ in search.seeds]
    return runs
