"""Runs of another version of a study (issue 71): after a plugin's new version the study trains new runs (a plugin's
version is part of a run id) and the old ones stay in runs/. The report, the results table, the paper and its run
time leave them out, named in one line, never a traceback ("several completed runs share variant and seed")."""

import json
import os
import shutil

import pytest
from studyfiles import write_study_dir
from testkit import command_in_process

from peftlab.analysis.results.load import load_results, results_lines, superseded_runs
from peftlab.study.records import RUNS_FILE

FIGURES_DRAWN = ()  # text and files read, no figure drawn (conftest.py)

PLUGIN = {"distribution": "my-adapters", "code_sha256": "ab" * 32}


@pytest.fixture(params=["runs.json", "older study"])
def bumped(request, tmp_path):
    """The study of full and linear, its linear runs made by my-adapters 0.2, and the same runs made by 0.1
    beside them (written earlier): with the runs.json the runner writes, and without one (an older study)."""
    study = write_study_dir(tmp_path / "study", with_failure=False, variants=["full", "linear"])
    current = sorted(p.name for p in (study / "runs").iterdir())
    for seed in range(3):
        run = study / "runs" / f"linear-s{seed}"
        old = study / "runs" / f"linear-old-s{seed}"
        shutil.copytree(run, old)
        for path, version, top1 in ((run, "0.2", None), (old, "0.1", 0.1 + seed / 100)):
            result = json.loads((path / "result.json").read_text())
            result["provenance"]["plugin"] = {**PLUGIN, "version": version}
            if top1 is not None:
                result["metrics"]["test_top1"] = top1
            if version == "0.1":  # 600 s in two processes: its last and, up to its checkpoint, an earlier one
                result["timing"].update(wall_seconds=500.0, earlier_wall_seconds=100.0)
            (path / "result.json").write_text(json.dumps(result))
        for name in ("result.json", "spec.json"):
            os.utime(old / name, ns=(10**18, 10**18))  # written long before the current runs
    if request.param == "runs.json":
        (study / RUNS_FILE).write_text(json.dumps({"run_ids": current}))
    return study


def test_superseded_runs_are_left_out_of_every_table_and_named(bumped):
    assert sorted(p.name for p in superseded_runs(bumped)) == [f"linear-old-s{seed}" for seed in range(3)]
    df = load_results(bumped)
    assert len(df) == 6 and not df["run_id"].str.contains("old").any()
    assert "linear-old" not in results_lines(bumped)  # the results hash covers the reported runs only


@pytest.mark.parametrize("command", [("report",), ("results",), ("paper", "--no-compile")])
def test_report_results_and_paper_end_well_naming_the_superseded_runs(bumped, command):
    status, stderr = command_in_process(command[0], str(bumped), *command[1:])
    assert status == 0, stderr
    (note,) = [line for line in stderr.splitlines() if "another version of the study" in line]
    assert "left out 3 runs" in note and "my-adapters 0.1" in note and "linear-old-s0" in note


def test_the_papers_run_time_counts_only_the_reported_runs(bumped):
    phases = [  # the final runs of both calls: 0.1's linear runs (600 s each, two processes), then the full and 0.2's
        {"phase": "final runs", "started": "2026-11-27T05:00:00Z", "wall_seconds": 1800.0, "workers": 1}
        | {"executor": "local", "runs": 3, "train_eval_seconds": 1700.0, "run_seconds": 3 * 600.0, "complete": True},
        {"phase": "final runs", "started": "2026-11-27T06:00:00Z", "wall_seconds": 180.0, "workers": 1}
        | {
            "executor": "local",
            "runs": 6,
            "train_eval_seconds": 150.0,
            "run_seconds": 3 * 40.0 + 3 * 20.0,
            "complete": True,
        },
    ]
    assert status_ok(command_in_process("paper", str(bumped), "--no-compile"))
    (bumped / "phases.jsonl").write_text("".join(json.dumps(p) + "\n" for p in phases))
    assert status_ok(command_in_process("paper", str(bumped), "--no-compile"))
    results = (bumped / "paper" / "results.tex").read_text()
    assert "\\newcommand{\\studyWallMinutes}{3.0}" in results, [line for line in results.splitlines() if "Wall" in line]


def status_ok(result) -> bool:
    assert result[0] == 0, result
    return True


def test_the_report_and_the_papers_limitations_name_the_superseded_runs(bumped):
    assert status_ok(command_in_process("report", str(bumped)))
    report = (bumped / "report" / "report.md").read_text()
    section = report.split("## Superseded runs\n", 1)[1].split("\n## ", 1)[0]
    assert "3 runs of another version of the study, which its file no longer names, are left out" in section
    assert all(f"`runs/linear-old-s{seed}`" in section for seed in range(3))
    assert status_ok(command_in_process("paper", str(bumped), "--no-compile"))
    results = (bumped / "paper" / "results.tex").read_text()
    (phases,) = [line for line in results.splitlines() if line.startswith("\\newcommand{\\studyWallPhases}")]
    assert ", leaving out 3 runs of another version of the study, which its file no longer names (" in phases
    assert all(f"\\texttt{{linear-old-s{seed}}}" in phases for seed in range(3))
    limitations = (bumped / "paper" / "main.tex").read_text().split("\\section{Limitations}", 1)[1]
    assert "the run times of \\studyWallPhases{} sum to" in limitations.split("\\section", 1)[0]
