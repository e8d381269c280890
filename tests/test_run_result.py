"""result.json's record (peftlab.training.run_result): what a real run writes is the record exactly, and the
one parser reads every shape a result.json has had (failures, older files, damaged sections)."""

import json
import socket

from testkit import TINY_MODEL, needs_fashion_mnist

from peftlab.config.schema import load_config
from peftlab.training.run_result import (
    RESULT_FILE,
    RunResult,
    failure,
    key_problems,
    parse_result,
    read_result,
    run_status,
    write_result,
)

# a failed run's record as the trainer wrote it before the record existed (tests/analysis/studyfiles.py)
OLD_FAILURE = {
    "status": "failed",
    "error": "RuntimeError: out of memory",
    "step": 12,
    "config": {"seed": 3},
    "metrics": {},
    "params": None,
    "provenance": None,
}


@needs_fashion_mnist()
def test_a_real_run_writes_the_record_with_no_unknown_or_missing_key(tmp_path):
    from peftlab.training.run import train

    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "method": {"name": "lora", "r": 2},
            "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
            "train": {"max_steps": 2, "batch_size": 16},
        }
    )
    returned = train(cfg, tmp_path / "run", progress=False)
    on_disk = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    assert returned["status"] == "completed", returned["error"]
    assert key_problems(on_disk) == []
    assert list(on_disk) == [k for k in RunResult.__annotations__ if k not in ("traceback", "checkpoint_unusable")]
    assert read_result(tmp_path / "run") == on_disk == returned
    # a record of an earlier version (no token rates, no execution) is still what a received archive's reader takes
    from peftlab.utils.typed_json import json_problem

    earlier = {k: v for k, v in on_disk.items() if k != "execution"}
    earlier["timing"] = {k: v for k, v in on_disk["timing"].items() if "tokens" not in k}
    assert json_problem(earlier, RunResult) is None and json_problem(on_disk, RunResult) is None
    # trained outside a study: no executor, this machine
    assert on_disk["execution"] == {
        "executor": None,
        "job_id": None,
        "task_id": None,
        "node": socket.gethostname(),
        "attempt": None,
    }


def test_failure_records_keep_their_keys_in_the_order_they_had():
    assert list(failure("failed", "x", {}, step=3, metrics={}, params=None, provenance=None)) == list(OLD_FAILURE)
    assert list(failure("failed", "x", {}, traceback="tb")) == ["status", "error", "config", "traceback"]


def test_every_failure_shape_round_trips(tmp_path):
    for record in (
        OLD_FAILURE,
        failure("failed", "x", {"seed": 0}, traceback="tb"),
        {**OLD_FAILURE, "status": "diverged", "health": {"verdict": "diverged"}},
        {**OLD_FAILURE, "checkpoint_unusable": True},
    ):
        write_result(tmp_path, record)
        assert read_result(tmp_path) == record
        assert json.loads((tmp_path / RESULT_FILE).read_text()) == record
        assert run_status(tmp_path) == record["status"]


def test_an_older_file_reads_with_its_unknown_keys_and_without_its_damaged_sections():
    old = {**OLD_FAILURE, "status": "completed", "retired_key": [1, 2], "metrics": "damaged", "merge": None}
    parsed = parse_result(old)
    assert parsed["retired_key"] == [1, 2] and parsed["merge"] is None and "metrics" not in parsed
    assert parse_result([1, 2]) is None and parse_result(None) is None


def test_run_status(tmp_path):
    assert run_status(tmp_path) == "pending"
    (tmp_path / "checkpoint").mkdir()
    assert run_status(tmp_path) == "partial"
    (tmp_path / RESULT_FILE).write_text("{not json")
    assert run_status(tmp_path) == "partial"
    (tmp_path / RESULT_FILE).write_text(json.dumps({"error": "no status"}))
    assert run_status(tmp_path) == "failed"


def test_key_problems_names_each_key():
    problems = key_problems(
        {
            "status": "completed",
            "timing": {"train_seconds": 1.0, "extra": 2},
            "merge": {
                "max_abs_diff": 0.0,
                "tolerance": 1e-4,
                "ok": True,
                "merged_vs_adapter_latency_ratio": 1.0,
                "tf32": False,
                "matmul_precision": "highest",
                "codes_unchanged": True,
            },
            "surprise": 1,
        }
    )
    assert "missing error" in problems and "missing timing.val_seconds" in problems
    assert "unknown timing.extra" in problems and "unknown surprise" in problems
    assert not any(p.startswith(("missing merge", "unknown merge")) for p in problems)  # a method adds its own facts
