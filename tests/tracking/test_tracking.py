"""The log seam with the real TensorBoard, MLflow and W&B (offline) libraries.

A run killed with SIGKILL in the middle of training and resumed holds every step exactly
once in every sink: read back from TensorBoard's event files, through MLflow's own client,
and from W&B's offline transaction logs.
"""

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from testkit import REPO, TINY_MODEL, assert_one_line_refusal, command_in_process

from peftlab.config.schema import config_hash, dump_config, load_config
from peftlab.data.sources import fashion_mnist_dir
from peftlab.utils.errors import ConfigError

HAS_DATA = (fashion_mnist_dir() / "train-labels-idx1-ubyte.gz").exists()
STEPS = 12  # 192 images, batch 32, 2 epochs

KILL_AT_STEP_8 = """
import os, signal, sys
from pathlib import Path
from peftlab.config.schema import load_config
from peftlab.training.run import train
from peftlab.tuners.base import Tuner

original = Tuner.after_backward

def kill_at_step_8(self, step, skip):
    if step == 7:  # in the 8th optimizer step: steps 1-7 logged, step 6 (end of epoch 1) checkpointed
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, step, skip)

Tuner.after_backward = kill_at_step_8
train(load_config(sys.argv[1]), Path(sys.argv[2]), progress=False)
"""


def small_config(**extra):
    return load_config(
        overrides={
            "name": "track-study",
            "model": TINY_MODEL,
            "method": {"name": "lora", "r": 4},
            "data": {"name": "fashion_mnist", "train_subset": 192, "val_subset": 64, "test_subset": 96},
            "train": {
                "epochs": 2,
                "batch_size": 32,
                "eval_batch_size": 96,
                "lr": 3e-3,
                "log_every": 1,
                "ckpt_every": 4,
                "eval_every": 3,
            },
            **extra,
        }
    )


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_each_step_once(name: str, steps_by_key: dict[str, list[int]]) -> None:
    assert steps_by_key, name
    for key, steps in steps_by_key.items():
        repeated = [s for s, n in Counter(steps).items() if n > 1]
        assert not repeated, f"{name}: {key} logged twice at steps {repeated}"


@pytest.mark.e2e
@pytest.mark.skipif(not HAS_DATA, reason="Fashion-MNIST is not installed (make data installs it)")
def test_a_killed_and_resumed_run_logs_every_step_once_in_every_sink(tmp_path):
    from mlflow.tracking import MlflowClient

    from peftlab.training.run import train
    from peftlab.training.tracking.tensorboard_sink import read_scalars
    from peftlab.training.tracking.wandb_sink import read_history

    cfg = small_config(track=["tensorboard", "mlflow", "wandb"])
    study_dir = tmp_path / "study"
    run_dir = study_dir / "runs" / config_hash(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(
        json.dumps(
            {
                "run_id": config_hash(cfg),
                "variant": "lora r=4",
                "method": "lora",
                "seed": 0,
                "groups": ["main"],
                "axes": {},
            }
        )
    )
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(dump_config(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), MLFLOW_TRACKING_URI="")
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_STEP_8, str(cfg_path), str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run_dir / "result.json").exists()
    assert max(r["step"] for r in jsonl(run_dir / "metrics.jsonl")) == 7

    result = train(cfg, run_dir, progress=False)
    assert result["status"] == "completed", result.get("error")
    records = jsonl(run_dir / "metrics.jsonl")
    losses = {r["step"]: r["loss"] for r in records if r["kind"] == "step"}
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert [r["step"] for r in jsonl(run_dir / "monitors.jsonl")] == list(range(1, STEPS + 1))

    # TensorBoard: every event file of the run, read raw
    scalars = read_scalars(run_dir / "tensorboard")
    assert len(list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))) == 2  # killed + resumed
    assert_each_step_once("tensorboard", {tag: [s for s, _ in v] for tag, v in scalars.items()})
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, STEPS + 1))
    for step, value in scalars["train/loss"]:  # the resumed run recomputes bit-identical steps
        assert value == pytest.approx(losses[step], rel=1e-6)
    assert [s for s, _ in scalars["grad/blocks.0.attn.qkv.q.lora_B"]] == list(range(1, STEPS + 1))
    assert [s for s, _ in scalars["test/top1"]] == [STEPS]

    # MLflow: the study's SQLite store, through MLflow's client
    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("track-study")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("role") == "study"]
    child = [r for r in runs if r.data.tags.get("run_id") == config_hash(cfg)]
    assert len(parent) == 1 and len(child) == 1 and len(runs) == 2
    child = child[0]
    assert child.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
    assert {k: child.data.tags[k] for k in ("study", "variant", "seed")} == {
        "study": "track-study",
        "variant": "lora r=4",
        "seed": "0",
    }
    assert child.info.status == "FINISHED" and child.data.tags["status"] == "completed"
    assert child.data.params["method.r"] == "4" and child.data.params["track"] == '["tensorboard", "mlflow", "wandb"]'
    history = {key: [m.step for m in client.get_metric_history(child.info.run_id, key)] for key in child.data.metrics}
    assert_each_step_once("mlflow", history)
    assert sorted(history["train/loss"]) == list(range(1, STEPS + 1))
    assert child.data.metrics["test/top1"] == pytest.approx(result["metrics"]["test_top1"])
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"adapter.safetensors", "result.json"} <= artifacts

    # W&B: the offline runs of this run id, read by W&B's own reader
    offline = sorted(run_dir.glob("wandb/offline-run-*"))
    assert len(offline) == 2 and all(d.name.endswith(config_hash(cfg)) for d in offline)
    rows = read_history(run_dir)
    by_key: dict[str, list[int]] = {}
    for row in rows:
        for key in row:
            if not key.startswith("_"):
                by_key.setdefault(key, []).append(row["_step"])
    assert_each_step_once("wandb", by_key)
    assert sorted(by_key["train/loss"]) == list(range(1, STEPS + 1))
    assert sorted(by_key["val/top1"]) == sorted(r["step"] for r in records if "val_top1" in r)

    assert result["health"]["verdict"] in ("stable", "warnings")
    assert result["frozen_base"]["equal"] and result["frozen_base"]["rebuilt_equal"]
    assert result["monitors"]["log_points"] == STEPS
    assert set(result["convergence"]["steps_to"]) == {"90", "95", "99"}

    # the study's report files go to the study's parent MLflow run, below report/
    from peftlab.training.tracking.mlflow_sink import attach_report

    report = study_dir / "report"
    (report / "figures").mkdir(parents=True)
    (report / "report.md").write_text("# Study report\n")
    (report / "figures" / "convergence.png").write_bytes(b"\x89PNG\r\n")
    assert (
        attach_report(study_dir, [report / "report.md", report / "figures" / "convergence.png"], report)
        == parent[0].info.run_id
    )
    assert {a.path for a in client.list_artifacts(parent[0].info.run_id, "report")} == {
        "report/report.md",
        "report/figures",
    }
    assert [a.path for a in client.list_artifacts(parent[0].info.run_id, "report/figures")] == [
        "report/figures/convergence.png"
    ]
    assert attach_report(tmp_path, [report / "report.md"], report) is None  # a study without MLflow: nothing


def test_a_tracker_without_its_package_is_one_config_error_line(tmp_path, monkeypatch):
    import peftlab.training.tracking as tracking
    from peftlab.training.run import train

    real = tracking.find_spec
    monkeypatch.setattr(tracking, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError) as err:
        train(small_config(track=["tensorboard", "wandb"]), tmp_path / "run", progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith("track=['tensorboard', 'wandb'] is invalid")
    assert "'wandb' package" in message and "pip install -e '.[track]'" in message
    assert not (tmp_path / "run").exists()  # refused before the run folder is made: no failed run to move aside
    config = tmp_path / "run.yaml"
    config.write_text(dump_config(small_config()))
    status, stderr = command_in_process("train", str(config), "track=[wandb]", "--run-dir", str(tmp_path / "run"))
    assert_one_line_refusal(status, stderr, "track=['wandb'] is invalid", "'wandb' package")
    assert not (tmp_path / "run").exists()
    tracking.check_trackers(("tensorboard", "mlflow"))  # installed here: no error


def test_tracking_changes_neither_the_run_id_nor_the_run_directory(tmp_path):
    from peftlab.training.run import prepare_run_dir

    plain, tracked = small_config(), small_config(track=["mlflow"])
    assert config_hash(plain) == config_hash(tracked)
    with pytest.raises(ConfigError, match="track"):
        small_config(track=["mlflow", "mlflow"])
    prepare_run_dir(plain, tmp_path)
    prepare_run_dir(tracked, tmp_path)  # a sink added before a resume: accepted, config.yaml updated
    assert load_config(tmp_path / "config.yaml").track == ("mlflow",)
    with pytest.raises(ConfigError, match="different config.yaml"):
        prepare_run_dir(small_config(seed=1), tmp_path)


def test_lora_names_rename_what_the_sinks_get_and_nothing_else():
    from peftlab.training.tracking import renamed

    numbers = {
        "train/loss": 1.0,
        "adapter/blocks.0.attn.qkv.q/norm_A": 2.0,
        "adapter/blocks.0.attn.qkv.q/stable_rank": 3.0,
        "params/trainable": 4.0,
        "timing/images_per_s": 5.0,
        "memory/estimate/total_bytes": 6.0,
        "merge/ok": 1.0,
        "frozen_base/equal": 1.0,
        "test/top1": 0.5,
    }
    assert renamed(numbers, "peftlab") == numbers
    assert renamed(numbers, "lora") == {
        "train/loss": 1.0,
        "lora_adapters/blocks.0.attn.qkv.q/norm_A": 2.0,
        "lora_rank/blocks.0.attn.qkv.q/stable_rank": 3.0,
        "efficiency/params_trainable": 4.0,
        "efficiency/timing_images_per_s": 5.0,
        "efficiency/memory_estimate_total_bytes": 6.0,
        "verification/merge_ok": 1.0,
        "verification/frozen_base_equal": 1.0,
        "test/top1": 0.5,
    }


@pytest.mark.skipif(not HAS_DATA, reason="Fashion-MNIST is not installed (make data installs it)")
def test_a_run_with_lora_names_sends_the_lora_documents_namespaces_to_tensorboard(tmp_path):
    from peftlab.training.run import train
    from peftlab.training.tracking.tensorboard_sink import read_scalars

    cfg = small_config(track=["tensorboard"], track_names="lora")
    assert config_hash(cfg) == config_hash(small_config())  # where numbers go is not the run's identity
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result.get("error")
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    namespaces = {tag.partition("/")[0] for tag in scalars}
    assert {"lora_adapters", "lora_rank", "efficiency", "verification", "train", "val", "test"} <= namespaces
    assert not namespaces & {"adapter", "params", "timing", "memory", "merge", "frozen_base"}
    assert [s for s, _ in scalars["lora_adapters/blocks.0.attn.qkv.q/norm_B"]] == list(range(1, STEPS + 1))
    assert scalars["verification/merge_ok"] == [(STEPS, 1.0)] and scalars["verification/frozen_base_equal"][0][1] == 1
    trainable = scalars["efficiency/params_trainable"][0][1]
    assert trainable == result["params"]["trainable"]
