"""What a grid with rungs would have decided, read off a full grid search that already ran.

A survivor of a rung resumes from the rung's checkpoint and ends with the bits of a run trained at once, and a
pruned trial's score at its rung is the full run's evaluation at that epoch: so a finished full search (its
selection.json and its trial runs' metrics.jsonl) holds every score the rung rule reads. ``replay`` applies
the rule to them, trial by trial in the search's order, and an edge-following grid's added points with it,
as long as each point the rule adds is one the full search trained (else it says where they part)::

    python -m peftlab.study.tuning.replay configs/studies/default.yaml runs/default --rungs 1 --reduction-factor 2

prints, per search, the full search's choice and the replayed one, and the epochs each would train.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from peftlab.study.records import SELECTION, read_selection
from peftlab.study.tuning.edge import best_trial, next_point
from peftlab.study.tuning.rungs import kept, rung_score


def replay(search, directory: Path, epochs: int) -> dict:
    """The rung search ``search`` (a grid with ``rungs``) replayed on the full grid search in ``directory``:
    the full search's choice and the replayed one, where the replay parted from the full search (``{trial, adds}``:
    the rule adds there a point the full search did not train; None where it never did, and then no choice is
    replayed), the trials pruned before it (number, epoch) and the epochs each search trains (its trial runs
    ``epochs`` long; a failed trial counted whole)."""
    selection = read_selection(directory / SELECTION)
    if selection is None or not selection["done"]:
        raise FileNotFoundError(f"{directory / SELECTION}: no finished search to replay")
    full = sorted(selection["trials"], key=lambda t: t["number"])
    grid, minimize = len(search.proposals()), search.direction == "minimize"
    replayed: list[dict] = []
    reached: dict[int, dict[int, float]] = {rung: {} for rung in search.rungs}
    parted = None
    for cohort in [full[:grid]] + [[t] for t in full[grid:]]:
        if cohort[0]["number"] >= grid:  # an added point: it must be the one the rule adds after the replayed trials
            point, _ = next_point(search, replayed)
            if point is None or point.params != cohort[0]["params"]:
                parted = {"trial": cohort[0]["number"], "adds": point.params if point else None}
                break
        alive = [t for t in cohort if t["state"] == "COMPLETE"]
        for rung in search.rungs:
            for trial in alive:
                run = directory / "runs" / str(trial["run_ids"][0])
                reached[rung][trial["number"]] = rung_score(run, search.metric, rung, minimize)
            if any(reached[rung][t["number"]] is None for t in alive):
                raise ValueError(f"{directory}: a trial run has no evaluation at the end of epoch {rung}")
            keep = [t for t in alive if kept(t["number"], reached[rung], grid, search.reduction_factor, minimize)]
            replayed += [{**t, "state": "PRUNED", "value": None, "pruned_at": rung} for t in alive if t not in keep]
            alive = keep
        replayed += alive + [t for t in cohort if t["state"] != "COMPLETE"]
    return {
        "full": selection["chosen"],
        "replayed": None if parted else best_trial(replayed, minimize),
        "parted": parted,
        "pruned": sorted((t["number"], t["pruned_at"]) for t in replayed if t["state"] == "PRUNED"),
        "epochs_full": epochs * len(full),
        "epochs_rungs": None if parted else sum(t.get("pruned_at", epochs) for t in replayed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peftlab.study.tuning.replay", description=__doc__.split("\n")[0])
    parser.add_argument("study", help="the study YAML of the full grid search")
    parser.add_argument("study_dir", help="its study directory (tune/<search>/ with selection.json and runs/)")
    parser.add_argument("--rungs", type=int, nargs="+", default=[1], help="epochs at whose end trials are compared")
    parser.add_argument("--reduction-factor", type=int, default=2, help="the best 1/this of a cohort go on")
    args = parser.parse_args(argv)
    from peftlab.study.search import tune_dir
    from peftlab.study.spec import load_study

    study = load_study(Path(args.study))
    for key, search in study.tune.items():
        rungs = dataclasses.replace(search, rungs=tuple(args.rungs), reduction_factor=args.reduction_factor)
        out = replay(rungs, tune_dir(Path(args.study_dir), key), search.template.train.epochs)
        print(json.dumps({"search": key, **out}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
