"""What a study's own records say beside its runs: how long its runs took in all, by phase (phases.jsonl; for
an older study, the final runs' and the tuning trials' result.json files)."""

from __future__ import annotations

from peftlab.analysis.paper.sources import PHASE_LOG, made_from
from peftlab.analysis.results.load import read_result, superseded_runs
from peftlab.analysis.results.record import trial_seconds
from peftlab.analysis.results.units import words
from peftlab.study.phases import PHASES, read_phases

PHASE_WORDS = {"pretrain": "the base's pretraining", "trials": "the tuning trials", "final runs": "the final runs"}


@made_from(PHASE_LOG)
def define_wall_time(numbers, study) -> None:
    """studyWallMinutes, the run time in all, and studyWallPhases, the phases it sums, named: every phase
    phases.jsonl records, else the final runs and the tuning trials whose records are there."""
    add, done = numbers.add, study.done
    phases = [r for r in read_phases(study.dir) or [] if r["runs"]]
    if phases:  # every run of every call and phase: the pretraining, the tuning trials and the final runs
        # less the final runs of another version of the study (superseded_runs), which the paper leaves out
        old = sum(superseded_seconds(p) for p in superseded_runs(study.dir))
        wall = sum(r["run_seconds"] for r in phases) - old
        source = (
            "phases.jsonl: summed timing.wall_seconds of the runs that ended in each phase of each call"
            f"{', less those of superseded runs' if old else ''}, minutes"
        )
        add("studyWallMinutes", f"{wall / 60:.1f}", source)
        ran = [PHASE_WORDS[name] for name in PHASES if any(r["phase"] == name for r in phases)]
        add("studyWallPhases", words(ran), "the phases whose runs studyWallMinutes sums (phases.jsonl)")
        elapsed = sum(r["wall_seconds"] for r in read_phases(study.dir) or [])  # every phase of every call, as timed
        add(
            "studyElapsedMinutes",
            f"{elapsed / 60:.1f}",
            "phases.jsonl: summed wall_seconds of every phase of every call (the study's elapsed time), minutes",
        )
        workers = sorted({int(r["workers"]) for r in phases if r["phase"] != "pretrain"})
        if workers:
            add(
                "studyWorkers",
                " or ".join(str(w) for w in workers) + (" worker" if workers == [1] else " workers"),
                "phases.jsonl: the runs trained at once in the tuning and final phases (workers)",
            )
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


def superseded_seconds(run_dir) -> float:
    """The run time a superseded run's result.json records (phases.jsonl counted it when it ended)."""
    seconds = (read_result(run_dir).get("timing") or {}).get("wall_seconds")
    return float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else 0.0
