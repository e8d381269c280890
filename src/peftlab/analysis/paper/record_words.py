"""What a study's own records say beside its runs: how long its runs took in all, by phase (phases.jsonl; for
an older study, the final runs' and the tuning trials' result.json files)."""

from __future__ import annotations

from peftlab.analysis.results.record import trial_seconds
from peftlab.analysis.results.units import words
from peftlab.study.phases import PHASES, read_phases

PHASE_WORDS = {"pretrain": "the base's pretraining", "trials": "the tuning trials", "final runs": "the final runs"}


def define_wall_time(numbers, study) -> None:
    """studyWallMinutes, the run time in all, and studyWallPhases, the phases it sums, named: every phase
    phases.jsonl records, else the final runs and the tuning trials whose records are there."""
    add, done = numbers.add, study.done
    phases = [r for r in read_phases(study.dir) or [] if r["runs"]]
    if phases:  # every run of every call and phase: the pretraining, the tuning trials and the final runs
        wall = sum(r["run_seconds"] for r in phases)
        source = "phases.jsonl: summed timing.wall_seconds of the runs that ended in each phase of each call, minutes"
        add("studyWallMinutes", f"{wall / 60:.1f}", source)
        ran = [PHASE_WORDS[name] for name in PHASES if any(r["phase"] == name for r in phases)]
        add("studyWallPhases", words(ran), "the phases whose runs studyWallMinutes sums (phases.jsonl)")
    else:  # no phases.jsonl (an older study): the final runs, and the tuning trials whose records are there
        wall = done["timing.wall_seconds"].sum() if "timing.wall_seconds" in done else float("nan")
        trials = trial_seconds(study.dir)
        add(
            "studyWallMinutes",
            f"{(wall + sum(trials)) / 60:.1f}",
            "sum of timing.wall_seconds over completed runs and the tuning trials' result.json files, in minutes",
        )
        ran = (["the tuning trials"] if trials else []) + ["the final runs"]
        add("studyWallPhases", words(ran), "the runs studyWallMinutes sums (no phases.jsonl: result.json files)")
