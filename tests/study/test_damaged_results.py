"""A completed result.json whose metrics are no result (out of range, of the wrong type: ``run_result.metric_damage``)
is damaged for every reader, as ``peftlab results`` says: ``peftlab summary`` and ``peftlab study --dry-run`` call it
damaged, never completed, and the study trains it again, its record moved aside.

Nothing trains here: the study's executor is replaced by one that records the runs it is given."""

import contextlib
import io
import json
import signal

import pytest
import yaml
from testkit import TINY_MODEL

from peftlab import cli

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32},
    "train": {"epochs": 1, "batch_size": 16},
}
SOUND = {"test_top1": 0.5, "val_top1": 0.5}
DAMAGE = {  # what result.json's metrics hold -> the words that name it
    "out of range": ({"test_top1": 12345.0, "val_top1": 0.5}, "metrics.test_top1 is 12345.0"),
    "inf": ({"test_top1": float("inf")}, "metrics.test_top1 is inf"),
    "a string": ({"test_top1": "0.9"}, "metrics.test_top1 is '0.9'"),
    "true": ({"test_top1": 0.5, "val_top1": True}, "metrics.val_top1 is True"),
    "no metrics": (None, "no metrics object"),
}


def cli_call(cwd, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``peftlab ARGS`` in this process."""
    stdout, stderr, previous = io.StringIO(), io.StringIO(), signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = cli.run_command(list(args))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return status, stdout.getvalue(), stderr.getvalue()


def result(metrics) -> dict:
    record = {"status": "completed", "error": None, "step": 4, "config": {}}
    record = record if metrics is None else {**record, "metrics": metrics}
    return {
        **record,
        "params": {"total": 100, "trainable": 10, "trainable_ratio": 0.1},
        "timing": {"train_seconds": 1.0, "val_seconds": 0.1, "wall_seconds": 2.0},
    }


@pytest.fixture
def study(tmp_path):
    """A study of two runs, linear and lora, whose directories hold a sound and a damaged completed result.json."""
    from peftlab.study.spec import load_study

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "study.yaml"
    study = {"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"linear": {}, "lora": {}}}
    path.write_text(yaml.safe_dump(study))
    with contextlib.chdir(tmp_path):
        specs = {spec.method: spec for spec in load_study(path).runs}
    out = tmp_path / "out"
    for spec in specs.values():
        (out / "runs" / spec.run_id).mkdir(parents=True)
        (out / "runs" / spec.run_id / "spec.json").write_text(json.dumps({**spec.record(), "order": 0}))
        (out / "runs" / spec.run_id / "result.json").write_text(json.dumps(result(SOUND)))
    return path, out, specs["linear"].run_id, specs["lora"].run_id


def damage(out, run_id, case):
    (out / "runs" / run_id / "result.json").write_text(json.dumps(result(DAMAGE[case][0])))


@pytest.mark.parametrize("case", DAMAGE)
def test_summary_calls_a_damaged_result_damaged(study, case):
    path, out, sound, damaged = study
    damage(out, damaged, case)
    status, stdout, _ = cli_call(path.parent, "summary", str(out / "runs" / sound), str(out / "runs" / damaged))
    lines = stdout.splitlines()
    assert status == 1 and f"{out / 'runs' / sound}: completed  test top-1 50.00%" in lines[0], stdout
    assert lines[1].startswith(f"{out / 'runs' / damaged}: damaged: result.json: {DAMAGE[case][1]}"), stdout
    assert "%" not in lines[1]


@pytest.mark.parametrize("case", DAMAGE)
def test_the_dry_run_counts_a_damaged_run_as_one_to_train_again(study, case):
    path, out, sound, damaged = study
    damage(out, damaged, case)
    status, stdout, stderr = cli_call(path.parent, "study", str(path), "--study-dir", str(out), "--dry-run")
    assert status == 0, stderr
    rows = {line.split()[0]: line.split()[1] for line in stdout.splitlines() if line.startswith((sound, damaged))}
    assert rows == {sound: "completed", damaged: "damaged"}, stdout
    assert "2 runs: 1 done, 0 failed, 0 diverged, 0 partial, 0 pending, 1 damaged (trained again)" in stdout


def test_the_study_trains_a_damaged_run_again_and_keeps_its_record_aside(study, monkeypatch):
    from peftlab.study import runner
    from peftlab.study.spec import load_study

    path, out, sound, damaged = study
    damage(out, damaged, "out of range")
    given = []

    def run_locally(jobs, workers, progress, on_done, stop_when=None, executor=None):
        for spec, run_dir in jobs:
            given.append(spec.run_id)
            (run_dir / "result.json").write_text(json.dumps(result(SOUND)))
            on_done(spec, result(SOUND))

    monkeypatch.setattr(runner, "run_locally", run_locally)
    with contextlib.chdir(path.parent):
        summary = runner.run_study(load_study(path), out, progress=False)
    assert given == [damaged] and summary.skipped == 1 and len(summary.completed) == 2, summary
    aside = out / "runs" / damaged / "result.json.damaged-1"
    assert json.loads(aside.read_text())["metrics"]["test_top1"] == 12345.0


def test_a_result_damaged_while_its_run_was_out_is_pending_not_completed(study):
    from peftlab.study.runner import StudySummary, record
    from peftlab.study.spec import load_study

    path, *_ = study
    with contextlib.chdir(path.parent):
        spec = load_study(path).runs[0]
    summary = StudySummary(total=1)
    record(summary, spec, result(DAMAGE["inf"][0]))
    assert not summary.completed and "its result.json is damaged (metrics.test_top1 is inf" in summary.pending[0][1]


def test_training_a_damaged_run_again_moves_its_record_aside_first(tmp_path):
    from peftlab.training.run_result import run_status, set_aside_damaged_result

    (tmp_path / "result.json").write_text(json.dumps(result(SOUND)))
    assert set_aside_damaged_result(tmp_path) is None and run_status(tmp_path) == "completed"
    (tmp_path / "result.json").write_text(json.dumps(result(DAMAGE["a string"][0])))
    (tmp_path / "result.json.damaged-1").write_text("an earlier one")
    assert run_status(tmp_path) == "damaged"
    assert set_aside_damaged_result(tmp_path) == "metrics.test_top1 is '0.9': expected a finite number in [0, 1]"
    assert (tmp_path / "result.json.damaged-2").is_file() and run_status(tmp_path) == "pending"


def test_the_dry_run_of_a_search_whose_selection_json_is_damaged_says_so_and_counts_it_not_done(tmp_path, caplog):
    """The search rewrites selection.json from its journal and its runs: the dry-run says it is damaged in one
    warning line and lists the search as not done, as the study would run it."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "method": {"name": "lora", "r": 2}}))
    path = tmp_path / "study.yaml"
    tune = {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"}
    path.write_text(
        yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"lora": {}}, "tune": tune})
    )
    selection = tmp_path / "out" / "tune" / "lora" / "selection.json"
    selection.parent.mkdir(parents=True)
    selection.write_text(
        json.dumps({"fingerprint": "0", "done": True, "chosen": "trial 1", "search": {}, "trials": []})
    )
    status, stdout, stderr = cli_call(tmp_path, "study", str(path), "--study-dir", str(tmp_path / "out"), "--dry-run")
    assert status == 0 and "tune lora: grid, 2 trials, not done" in stdout, (stdout, stderr)
    assert "error" not in stderr and "Traceback" not in stderr, stderr
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]  # one "peftlab: warning:" line
    assert warnings == [f"{selection} is damaged: search.method is missing; the search rewrites it"]
