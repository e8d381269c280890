"""What a study's own records say beside its runs: how long its runs took in all, by phase (phases.jsonl; for
an older study, the final runs' and the tuning trials' result.json files)."""

from __future__ import annotations

from peftlab.analysis.paper.macro_text import PHASE_LOG, made_from
from peftlab.analysis.results.escape import latex_escape
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
        add(
            "studyWallPhases",
            words(ran) + superseded_words(study.dir),
            "the phases whose runs studyWallMinutes sums (phases.jsonl), and the superseded runs it leaves out",
        )
        elapsed = sum(r["wall_seconds"] for r in read_phases(study.dir) or [])  # every phase of every call, as timed
        add(
            "studyElapsedMinutes",
            f"{elapsed / 60:.1f}",
            "phases.jsonl: summed wall_seconds of every phase of every call (not the span from the first start to the "
            "last end: the time between phases and between calls is not in it), minutes",
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
        add(
            "studyWallPhases",
            words(ran) + superseded_words(study.dir),
            "the runs studyWallMinutes sums (no phases.jsonl: result.json files), and the superseded ones left out",
        )


SHOWN_SUPERSEDED = 4  # superseded runs named in the paper; the others counted


def superseded_words(study_dir) -> str:
    """What the paper's limitations say of the superseded runs (``superseded_runs``), which every number leaves
    out: ", leaving out N runs of another version of the study, which its file no longer names (a, b)"; "" for none."""
    old = [path.name for path in superseded_runs(study_dir)]
    if not old:
        return ""
    names = [f"\\texttt{{{latex_escape(name)}}}" for name in old[:SHOWN_SUPERSEDED]]
    more = len(old) - SHOWN_SUPERSEDED
    names += [f"{more} more"] if more > 0 else []
    return (
        f", leaving out {len(old)} run{'s' if len(old) != 1 else ''} of another version of the study, which its file "
        f"no longer names ({words(names)})"
    )


def superseded_seconds(run_dir) -> float:
    """The run time a superseded run's result.json records, its earlier processes' with its last one's, as
    phases.jsonl counted it when it ended."""
    timing = read_result(run_dir).get("timing") or {}
    seconds = [timing.get("wall_seconds"), timing.get("earlier_wall_seconds", 0.0)]
    return sum(float(s) for s in seconds if isinstance(s, int | float) and not isinstance(s, bool))
