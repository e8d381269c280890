"""benchmarks/compare_study.py: a study's trials and final runs recorded, then compared run by run with another
study folder; an equal study says so and exits 0, a moved score is named with both values and exits 1."""

import json
import subprocess
import sys

import pandas as pd
from testkit import REPO

SCRIPT = REPO / "benchmarks" / "compare_study.py"
COLUMNS = ["variant", "seed", "run_id", "metrics.test_top1", "metrics.val_top1", "metrics.merged_test_top1"]
COLUMNS += ["timing.train_seconds", "timing.val_seconds", "timing.wall_seconds"]


def study(folder, lora_val=0.7, full_test=0.75):
    for method, lr, val in (("lora", 1e-3, lora_val), ("full", 3e-4, 0.6)):
        run = folder / "tune" / method / "runs" / f"{method}{lr}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"config": {"train": {"lr": lr}}, "metrics": {"val_top1": val}}))
    (folder / "report").mkdir()
    rows = [["full", 0, "a1", full_test, 0.7, None, 10.0, 1.0, 12.0], ["lora", 0, "b2", 0.7, 0.71, 0.7, 9, 1, 11]]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(folder / "report" / "results.csv", index=False)
    return folder


def compare(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_a_recorded_study_compares_equal_and_a_moved_score_is_named(tmp_path):
    record = tmp_path / "record"
    assert compare(record, study(tmp_path / "a"), "--write").returncode == 0
    same = compare(record, study(tmp_path / "b"))
    assert same.returncode == 0, same.stderr
    assert "trials: 2 of 2 equal; final runs: 2 of 2 equal" in same.stdout
    moved = compare(record, study(tmp_path / "c", lora_val=0.702, full_test=0.7505))
    assert moved.returncode == 1
    assert "trial lora lr=0.001: 0.702 here, 0.7 recorded" in moved.stdout
    assert "final full seed 0: metrics.test_top1: 0.7505 here, 0.75 recorded" in moved.stdout
    assert "trials: 1 of 2 equal; final runs: 1 of 2 equal" in moved.stdout


def test_a_merged_score_measured_on_one_side_only_is_counted_not_compared(tmp_path):
    """A record made when every merge was tested merged, against a study whose exact merges were not
    (train.merged_test auto: merged_test_top1 null): equal, and the line says how many were not compared."""
    record = tmp_path / "record"
    assert compare(record, study(tmp_path / "a"), "--write").returncode == 0
    later = study(tmp_path / "b")
    table = pd.read_csv(later / "report" / "results.csv")
    table["metrics.merged_test_top1"] = None
    table.to_csv(later / "report" / "results.csv", index=False)
    same = compare(record, later)
    assert same.returncode == 0, same.stdout
    assert same.stdout.strip().endswith("1 tested merged on one side only, their merged top-1 not compared")


def test_a_folder_without_a_record_is_named_in_one_line(tmp_path):
    """The folder above a record (benchmarks/default-study-amd-epyc, not its pin/) is refused saying what is
    missing, not with a traceback."""
    (tmp_path / "record").mkdir()
    refused = compare(tmp_path / "record", study(tmp_path / "a"))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"compare_study: {tmp_path / 'record'} holds no record (trials.json and finals.csv missing): "
        "name a folder with both"
    ]
