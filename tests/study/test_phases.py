"""A study's phases as a call of ``peftlab study`` records them in phases.jsonl: one line per phase when it
ends, stopped or not, with the runs that ended in it and their run time from their results (a run its search
stopped: from what its stop recorded)."""

import json

import pytest
import torch

from peftlab.study.executors.local import earlier_wall, stopped_outcome, worker_outcome
from peftlab.study.executors.worker import AT_LAST_EPOCH
from peftlab.study.phases import EARLIER_WALL, read_phases, timed_phase


def test_a_phase_counts_the_runs_that_report_their_time_and_is_recorded_however_it_ends(tmp_path):
    with timed_phase(tmp_path, "trials", 2, "local") as phase:
        for result in [
            {"status": "completed", "timing": {"wall_seconds": 1.5, "train_seconds": 1, "val_seconds": 0}},
            {"status": "failed", "error": "x"},  # failed before it trained: no time
            {"status": "pending", "error": "killed"},
            {"status": "diverged", "timing": {"wall_seconds": 2, "train_seconds": 0.5, "val_seconds": 1}},
        ]:
            phase.count(result)
    with pytest.raises(KeyboardInterrupt), timed_phase(tmp_path, "final runs", 2, "local") as phase:
        timing = {"wall_seconds": 4.0, "train_seconds": 3.0, "val_seconds": 0.5, "test_seconds": 0.25}
        phase.count({"status": "completed", "timing": timing})
        raise KeyboardInterrupt
    with open(tmp_path / "phases.jsonl", "a") as f:
        f.write('{"phase": "pretr')  # a kill while a line was written
    trials, final = read_phases(tmp_path)
    assert (trials["phase"], trials["runs"], trials["workers"]) == ("trials", 2, 2)
    assert (trials["train_eval_seconds"], trials["run_seconds"]) == (2.5, 3.5)
    assert trials["complete"] and trials["wall_seconds"] >= 0 and trials["started"].endswith("+00:00")
    assert (final["phase"], final["runs"], final["run_seconds"], final["complete"]) == ("final runs", 1, 4.0, False)
    assert final["test_seconds"] == 0.25 and "test_seconds" not in trials  # its results did not say (earlier ones)
    assert read_phases(tmp_path / "none") is None


def test_a_run_its_search_stopped_brings_the_time_its_checkpoint_kept_and_its_workers_wall(tmp_path):
    """A rung's or a pruner's stop writes no result: its time is its checkpoint's training and validation time
    (what the run kept) and the wall time the executor measured, as a phase counts a result's, with the wall time of
    the run's earlier processes (its checkpoint's as its worker started); a run stopped at its job's last epoch (a
    rung's) is stopped too. Stopped in an earlier call, it brings its checkpoint's wall time: every process's."""
    (tmp_path / "checkpoint").mkdir()
    stopped = worker_outcome(None, tmp_path, 130, stopped=True, wall=2.5)
    assert stopped == {"status": "stopped"}  # stopped before its first checkpoint: nothing kept to count
    kept = {"train_seconds": 1.25, "val_seconds": 0.5, "wall_seconds": 2.0, "trainable": {}}
    torch.save(kept, tmp_path / "checkpoint" / "last.pt")
    stopped = worker_outcome(None, tmp_path, 130, stopped=True, wall=2.5)
    spent = {"train_seconds": 1.25, "val_seconds": 0.5, "test_seconds": 0.0, "wall_seconds": 2.5}  # never tested
    assert stopped == {"status": "stopped", "timing": spent}
    at_rung = worker_outcome(None, tmp_path, AT_LAST_EPOCH, stopped=False, wall=2.5, earlier=3.0)
    assert at_rung == {**stopped, EARLIER_WALL: 3.0}
    assert earlier_wall(tmp_path) == 2.0 and earlier_wall(tmp_path / "fresh") == 0.0
    assert stopped_outcome(tmp_path) == {"status": "stopped", "timing": {**stopped["timing"], "wall_seconds": 2.0}}
    (tmp_path / "result.json").write_text(json.dumps({"status": "completed", "timing": stopped["timing"]}))
    assert worker_outcome(None, tmp_path, 0, stopped=False, wall=9.0, earlier=3.0)[EARLIER_WALL] == 3.0
    with timed_phase(tmp_path, "trials", 1, "local") as phase:
        phase.count(stopped)
        phase.count(at_rung)
        phase.count(stopped_outcome(tmp_path))
    assert [(p["runs"], p["train_eval_seconds"], p["run_seconds"]) for p in read_phases(tmp_path)] == [(3, 5.25, 10.0)]
    assert read_phases(tmp_path)[0]["test_seconds"] == 0.0
