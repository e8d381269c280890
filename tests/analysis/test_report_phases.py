"""The report header's phases (pretraining, trials, final runs): wall time, the runs that ended in each with
their summed training and validation time and whole-run time, and wall / (each time / workers), computed
from the lines the calls of ``peftlab study`` wrote to phases.jsonl; a study from before says they were not
recorded."""

import json

from peftlab.analysis.report.protocol_card import phase_lines


def line(phase, wall, runs, run_seconds, workers=2, executor="local", started="2026-11-26T07:00:00+00:00"):
    return {
        "phase": phase,
        "started": started,
        "wall_seconds": wall,
        "workers": workers,
        "executor": executor,
        "runs": runs,
        "train_eval_seconds": run_seconds * 0.75,  # a quarter of each run builds, reads, tests
        "run_seconds": run_seconds,
        "complete": True,
    }


def write(study_dir, records, tail=""):
    study_dir.mkdir(exist_ok=True)
    (study_dir / "phases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return study_dir


def test_each_phase_sums_its_calls_and_divides_the_run_time_by_the_workers(tmp_path):
    later = "2026-11-26T08:00:00+00:00"
    records = [
        line("pretrain", 120, 1, 114, workers=1),
        line("trials", 600, 10, 1000),  # stopped part-way (Ctrl-C), then resumed by a second call
        line("pretrain", 0.2, 0, 0, workers=1, started=later),  # the second call finds its base trained
        line("trials", 300, 5, 500, started=later),
        line("final runs", 240, 6, 360, started=later),
    ]
    lines = phase_lines(write(tmp_path / "s", records, tail='{"phase": "final ru'))  # a line cut short: skipped
    assert lines[0].startswith("- phases, as 2 calls of `peftlab study` measured them (phases.jsonl)")
    assert lines[1:] == [  # wall / (whole runs / workers), then over 3/4 of it: 4/3 times that
        "  - pretraining: 2.0 min wall; 1 run, 1.4 min training and validation, 1.9 min whole; 1 worker; "
        "ratio 1.41 to training and validation, 1.05 to whole runs",  # 120.2 / 114
        "  - trials: 15.0 min wall; 15 runs, 18.8 min training and validation, 25.0 min whole; 2 workers; "
        "ratio 1.60 to training and validation, 1.20 to whole runs",  # 900 / (1500 / 2)
        "  - final runs: 4.0 min wall; 6 runs, 4.5 min training and validation, 6.0 min whole; 2 workers; "
        "ratio 1.78 to training and validation, 1.33 to whole runs",  # 240 / (360 / 2)
        "  - all phases: 21.0 min wall; 22 runs, 24.7 min training and validation, 32.9 min whole; "
        "1 and 2 workers; ratio 1.61 to training and validation, 1.21 to whole runs",  # 1260.2 / 1044
    ]


def test_a_cached_base_a_remote_executor_and_one_phase(tmp_path):
    records = [line("pretrain", 0.3, 0, 0, workers=1), line("final runs", 90, 4, 300, executor="submitit")]
    remote = "4 runs, 3.8 min training and validation, 5.0 min whole; 2 workers; runs as submitit jobs, no worker"
    assert phase_lines(write(tmp_path / "s", records))[1:] == [
        "  - pretraining: 0.0 min wall; no run ended in it (its base was already trained)",
        f"  - final runs: 1.5 min wall; {remote} count to divide by",
        f"  - all phases: 1.5 min wall; {remote} count to divide by",
    ]
    only = phase_lines(write(tmp_path / "t", [line("final runs", 60, 2, 100, workers=1) | {"test_seconds": 12.0}]))
    assert only[1:] == [  # its runs' test passes, where its line says them (lines of an earlier version do not)
        "  - final runs: 1.0 min wall; 2 runs, 1.2 min training and validation, 0.2 min testing, 1.7 min whole; "
        "1 worker; ratio 0.80 to training and validation, 0.60 to whole runs"
    ]


def test_a_study_run_before_the_phases_were_recorded_says_so(tmp_path):
    assert phase_lines(tmp_path) == [
        "- phases: not recorded (this study ran before peftlab recorded them in phases.jsonl)"
    ]
