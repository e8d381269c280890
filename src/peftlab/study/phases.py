"""The phases of a study as each call of ``peftlab study`` ran them: ``STUDY_DIR/phases.jsonl``.

A study runs in phases: its pretraining (the base model, one process), its trials (every search) and its
final runs. Each call of ``peftlab study`` appends one line per phase it entered (``PhaseRecord``), when
the phase ends, stopped or not; the lines of earlier calls stay. A line holds the phase's wall time in this call,
the workers and executor it ran on, and the runs that ended in it with their summed times from their results:
training and validation (``timing.train_seconds + timing.val_seconds``, kept across a resume) and the whole run
(``timing.wall_seconds``: building the model, reading the data, testing and the merge check too, in the run's
last process, plus its earlier processes', each up to its last checkpoint: ``timing.earlier_wall_seconds``, the
``wall_seconds`` of the checkpoint the last one resumed from, on every executor; a run that ended without a result,
on the local executor, ``EARLIER_WALL``, the same read from its checkpoint as its last worker started). A run
stopped and resumed (a killed worker, Ctrl-C, a rung's survivor, a requeued Slurm job) is one run, counted once, in
the call that ends it, with the time of every process that trained it, in this call or an earlier one: so a call's
line may hold time spent in an earlier call, whose line left that run out, and the sums over the calls count each
run once.

A trial run that its search stopped and pruned (a grid's rung, halving's pruner) writes no result: it ends when
pruned, with what its checkpoint kept (``local.stopped_outcome``: training and validation; its last process's wall
time as the executor measured it, and its earlier processes' as above). One stopped in an earlier call and pruned
after a restart without training again ends in the call that prunes it, with its checkpoint's time alone (each of
its processes up to its last checkpoint: what a process ran after it, its exit at a rung, the steps a pruner's
stop threw away, left out). One whose run ended with a result before its search pruned it was counted when it ended. The
report (``analysis.report.phases``) sums the calls: a phase's wall time against those times divided by its workers.
"""

import contextlib
import json
import os
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

from peftlab.utils.files import read_lines
from peftlab.utils.typed_json import checked

PHASES_FILE = "phases.jsonl"
# an outcome's (what an executor's on_done gets, in memory, never in result.json): the wall seconds of the run's
# processes before the one that ended, each up to its last checkpoint
EARLIER_WALL = "earlier_wall_seconds"
PhaseName = Literal["pretrain", "trials", "final runs"]
PHASES = typing.get_args(PhaseName)


class PhaseRecord(TypedDict):
    """One phase of one call of ``peftlab study`` (a line of phases.jsonl)."""

    phase: PhaseName
    started: str  # when it started, ISO 8601 in UTC
    wall_seconds: float  # how long it took in this call
    workers: int  # the runs trained at once on the local executor (the pretraining: 1)
    executor: Literal["local", "submitit", "ray"]
    runs: int  # runs that ended in it and say how long they ran (a cached base: 0)
    train_eval_seconds: float  # their summed timing.train_seconds + timing.val_seconds
    run_seconds: float  # their summed timing.wall_seconds, with their earlier processes' (EARLIER_WALL)
    # their summed timing.test_seconds (the test passes, inside run_seconds); absent where a run's result does not
    # say it (one of an earlier version) and in a line of an earlier version
    test_seconds: NotRequired[float]
    complete: bool  # false: the call stopped in it (Ctrl-C, an error)


@dataclass
class Phase:
    """A phase under way: what its runs' results say as they end."""

    runs: int = 0
    train_eval_seconds: float = 0.0
    run_seconds: float = 0.0
    test_seconds: float | None = 0.0  # None once a run's result does not say (one of an earlier version)

    def count(self, result: dict) -> None:
        """Add a run that ended (its result.json, or the result on_done got: ``EARLIER_WALL`` too) if it says how
        long it ran: its earlier processes' time is its result's own record of it (every executor) or, for one
        without it (stopped, or of an earlier version), ``EARLIER_WALL`` (the local executor's)."""
        timing = result.get("timing") or {}
        seconds = [timing.get(key) for key in ("wall_seconds", "train_seconds", "val_seconds")]
        earlier = timing.get("earlier_wall_seconds", result.get(EARLIER_WALL, 0.0))
        if all(map(is_seconds, [*seconds, earlier])):
            self.runs += 1
            self.run_seconds += float(seconds[0] + earlier)
            self.train_eval_seconds += float(seconds[1] + seconds[2])
            tested = timing.get("test_seconds")
            known = self.test_seconds is not None and is_seconds(tested)
            self.test_seconds = self.test_seconds + float(tested) if known else None


def is_seconds(value) -> bool:
    """Whether a result's time field is a number (JSON's: not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@contextlib.contextmanager
def timed_phase(study_dir: Path, name: str, workers: int, executor: str) -> Iterator[Phase]:
    """Time the phase ``name`` of this call; its line is appended to phases.jsonl when it ends, however."""
    started, clock = datetime.now(UTC), time.perf_counter()
    phase, complete = Phase(), False
    try:
        yield phase
        complete = True
    finally:
        record: PhaseRecord = {
            "phase": name,
            "started": started.isoformat(timespec="seconds"),
            "wall_seconds": round(time.perf_counter() - clock, 3),
            "workers": workers,
            "executor": executor,
            "runs": phase.runs,
            "train_eval_seconds": round(phase.train_eval_seconds, 3),
            "run_seconds": round(phase.run_seconds, 3),
            "complete": complete,
        }
        if phase.test_seconds is not None:
            record["test_seconds"] = round(phase.test_seconds, 3)
        with contextlib.suppress(OSError):  # a full disk: the study's own outcome matters, not this line
            fd = os.open(study_dir / PHASES_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
            with open(fd, "a") as f:  # never through a link: a received study's phases.jsonl could be one
                f.write(json.dumps(record) + "\n")


def read_phases(study_dir: Path) -> list[PhaseRecord] | None:
    """The records of phases.jsonl, each line checked against ``PhaseRecord`` (one of another shape is a
    ``DamagedFile`` naming the line and the field); a line that is no JSON (cut short by a kill) is skipped.
    None when the study has none (run before peftlab recorded its phases)."""
    path = study_dir / PHASES_FILE
    lines = read_lines(path, "study directory entry")
    if lines is None:
        return None
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut short by a kill
        records.append(checked(record, PhaseRecord, path, f"line {number}"))
    return records
