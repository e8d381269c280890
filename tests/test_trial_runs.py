"""A tuning trial is a run like any other: it trains with train.test=false (chosen on validation, its
test split unseen), and every command that reads a run reads it, showing its validation top-1."""

import json

import pytest
from testkit import cli_here, needs_fashion_mnist, write_tiny_run

pytestmark = [needs_fashion_mnist(), pytest.mark.e2e]
NOT_TESTED = "not tested (a tuning trial: train.test=false)"


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """A finished tiny trial run: its run directory (config.yaml, result.json without test metrics)."""
    tmp = tmp_path_factory.mktemp("trial")
    run_dir = tmp / "trial"
    proc = cli_here("train", str(write_tiny_run(tmp / "tiny.yaml", test=False)), "--run-dir", str(run_dir), "--quiet")
    assert json.loads((run_dir / "result.json").read_text())["status"] == "completed", proc.stderr
    (tmp / "first-train.txt").write_text(f"{proc.returncode}\n{proc.stdout}")  # its own test reads it
    return run_dir


def test_train_of_a_finished_trial_in_its_directory_shows_its_validation_accuracy(trial):
    """It was a TypeError traceback: the summary line multiplied test_top1, which a trial has not (the
    trial's own training ended in it too, exit 1, after writing its result)."""
    result = json.loads((trial / "result.json").read_text())
    assert result["metrics"]["test_top1"] is None and result["metrics"]["val_top1"] is not None
    # its merge checked on validation, not timed: nothing reads a trial's latency (a final run's has it: test_train)
    assert result["merge"]["ok"] and "merged_vs_adapter_latency_ratio" not in result["merge"]
    line = f"{trial}: completed  val top-1 {100 * result['metrics']['val_top1']:.2f}%, {NOT_TESTED}  trainable "
    assert (trial.parent / "first-train.txt").read_text().startswith(f"0\n{line}")
    proc = cli_here("train", str(trial / "config.yaml"), "--run-dir", str(trial), "--quiet")
    # stderr: at most the result's own warnings (a slow validation, depending on the machine's load)
    assert proc.returncode == 0 and all(x.startswith("peftlab: warning: ") for x in proc.stderr.splitlines()), (
        proc.stderr
    )
    assert proc.stdout.startswith(line), proc.stdout
    assert json.loads((trial / "result.json").read_text()) == result  # read, not trained again


def test_summary_of_a_trial_is_its_line_not_a_corrupt_result(trial, tmp_path):
    """It called a valid completed trial "incomplete or corrupt" and exited 1."""
    proc = cli_here("summary", str(trial))
    assert proc.returncode == 0 and f"{trial}: completed  val top-1 " in proc.stdout and NOT_TESTED in proc.stdout
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    result = json.loads((trial / "result.json").read_text())
    del result["metrics"]["test_top1"]
    (damaged / "result.json").write_text(json.dumps(result))
    proc = cli_here("summary", str(trial), str(damaged))
    assert proc.returncode == 1 and f"{damaged}: result.json is incomplete or corrupt" in proc.stdout


def test_a_trial_exports_merged_and_in_pefts_format(trial, tmp_path):
    """What export computes from a trial, in this process (the command's own exit statuses and errors:
    tests/test_train.py, tests/test_cli_errors.py)."""
    proc = cli_here("export", str(trial), "--merged", str(tmp_path / "merged.safetensors"))
    assert proc.returncode == 0 and (tmp_path / "merged.safetensors").is_file(), proc.stderr
    proc = cli_here("export", str(trial), "--peft", str(tmp_path / "peft"))
    assert proc.returncode == 0 and (tmp_path / "peft" / "adapter_model.safetensors").is_file(), proc.stderr


def test_a_trials_final_numbers_for_the_trackers_hold_no_missing_test_metrics(trial):
    from peftlab.training.tracking import result_scalars

    scalars = result_scalars(json.loads((trial / "result.json").read_text()))
    assert scalars["val/best_top1"] is not None and not any(k.startswith("test/") for k in scalars)
    assert all(isinstance(v, float) for v in scalars.values())


def test_a_trial_keeps_its_validation_predictions_as_data_that_give_its_validation_top1(trial):
    """Issue 82 item 9: how sure a search's choice is needs each trial's validation predictions; they are kept as
    a numpy array that loads without pickle, one (label, predicted) per validation example, in order."""
    import numpy as np

    from peftlab.analysis.stats.trial_predictions import read_predictions

    result = json.loads((trial / "result.json").read_text())
    kept = np.load(trial / "val_predictions.npy", allow_pickle=False)
    assert kept.dtype.names == ("label", "predicted")
    assert len(kept) == result["provenance"]["data"]["split_sizes"]["val"]
    assert np.mean(kept["label"] == kept["predicted"]) == pytest.approx(result["metrics"]["val_top1"], abs=1e-12)
    assert np.array_equal(read_predictions(trial), kept)
