"""The report header's phases (pretraining, trials, final runs), as the calls of ``peftlab study`` measured
them in ``STUDY_DIR/phases.jsonl`` (``peftlab.study.phases``): each phase's wall time, the runs that ended
in it with their summed training and validation time (result.json's ``timing.train_seconds + val_seconds``)
and whole-run time (``timing.wall_seconds``), and the wall time over each divided by the workers: 1 where
every worker trained (or ran) a run all the time and nothing else took time.
"""

from __future__ import annotations

from pathlib import Path

from peftlab.study.phases import PHASES, PHASES_FILE, PhaseRecord, read_phases

SUMS = ("train_eval_seconds", "run_seconds")  # what the wall time is set against
NAMES = {"pretrain": "pretraining", "trials": "trials", "final runs": "final runs"}


def phase_lines(study_dir: Path) -> list[str]:
    """The header's lines on the study's phases: one per phase the calls entered and one for them all."""
    records = read_phases(study_dir)
    if not records:
        return [f"- phases: not recorded (this study ran before peftlab recorded them in {PHASES_FILE})"]
    lines = [
        f"- phases, as {calls(records)} of `peftlab study` measured them ({PHASES_FILE}): wall time; the runs that "
        "ended in the phase, their summed training and validation time (result.json's timing.train_seconds + "
        "val_seconds) and whole-run time (timing.wall_seconds); the workers; wall time / (each time / workers)"
    ]
    for name in PHASES:
        ran = [r for r in records if r["phase"] == name]
        if ran:
            lines.append(f"  - {NAMES[name]}: {phase_summary(ran)}")
    if len({r["phase"] for r in records}) > 1:
        lines.append(f"  - all phases: {phase_summary(records)}")
    return lines


def calls(records: list[PhaseRecord]) -> str:
    starts = len({r["started"] for r in records if r["phase"] == records[0]["phase"]})
    return "1 call" if starts == 1 else f"{starts} calls"


def phase_summary(records: list[PhaseRecord]) -> str:
    """A phase's (or all phases') wall time, runs and their times summed over the calls, and the ratios."""
    wall = sum(r["wall_seconds"] for r in records)
    runs = sum(r["runs"] for r in records)
    parts = [f"{minutes(wall)} wall"]
    if runs == 0:
        cached = all(r["phase"] == "pretrain" for r in records)
        return f"{parts[0]}; no run ended in it" + (" (its base was already trained)" if cached else "")
    totals = [minutes(sum(r[key] for r in records)) for key in SUMS]
    parts.append(f"{runs} run{'s' if runs != 1 else ''}, {totals[0]} training and validation, {totals[1]} whole")
    workers = sorted({r["workers"] for r in records if r["runs"]})
    parts.append(f"{' and '.join(map(str, workers))} worker{'s' if workers != [1] else ''}")
    remote = sorted({r["executor"] for r in records if r["executor"] != "local" and r["runs"]})
    if remote:  # Slurm jobs or Ray tasks: no fixed number of them run at once
        return "; ".join(parts) + f"; runs as {' and '.join(remote)} jobs, no worker count to divide by"
    ratios = []
    for key, name in zip(SUMS, ("training and validation", "whole runs")):
        ideal = sum(r[key] / r["workers"] for r in records if r["workers"] > 0)  # every worker busy all along
        if ideal > 0:
            ratios.append(f"{wall / ideal:.2f} to {name}")
    return "; ".join(parts + ([f"ratio {', '.join(ratios)}"] if ratios else []))


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"
