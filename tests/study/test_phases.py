"""A study's phases as a call of ``peftlab study`` records them in phases.jsonl: one line per phase when it
ends, stopped or not, with the runs that ended in it and their run time from their results."""

import pytest

from peftlab.study.phases import counting, read_phases, timed_phase


def test_a_phase_counts_the_runs_that_report_their_time_and_is_recorded_however_it_ends(tmp_path):
    with timed_phase(tmp_path, "trials", 2, "local") as phase:
        run_jobs = counting(lambda jobs, on_done, stop_when: [on_done(*job) for job in jobs], phase)
        ended = []
        run_jobs(
            [
                ("a", {"status": "completed", "timing": {"wall_seconds": 1.5, "train_seconds": 1, "val_seconds": 0}}),
                ("b", {"status": "failed", "error": "x"}),  # failed before it trained: no time
                ("c", {"status": "pending", "error": "killed"}),
                ("d", {"status": "diverged", "timing": {"wall_seconds": 2, "train_seconds": 0.5, "val_seconds": 1}}),
            ],
            lambda spec, result: ended.append(spec),
            None,
        )
    assert ended == ["a", "b", "c", "d"]  # the study's own on_done still gets every run
    with pytest.raises(KeyboardInterrupt), timed_phase(tmp_path, "final runs", 2, "local") as phase:
        phase.count({"status": "completed", "timing": {"wall_seconds": 4.0, "train_seconds": 3.0, "val_seconds": 0.5}})
        raise KeyboardInterrupt
    with open(tmp_path / "phases.jsonl", "a") as f:
        f.write('{"phase": "pretr')  # a kill while a line was written
    trials, final = read_phases(tmp_path)
    assert (trials["phase"], trials["runs"], trials["workers"]) == ("trials", 2, 2)
    assert (trials["train_eval_seconds"], trials["run_seconds"]) == (2.5, 3.5)
    assert trials["complete"] and trials["wall_seconds"] >= 0 and trials["started"].endswith("+00:00")
    assert (final["phase"], final["runs"], final["run_seconds"], final["complete"]) == ("final runs", 1, 4.0, False)
    assert read_phases(tmp_path / "none") is None
