"""A node of GPUs, faked on the CPU: the local executor gives each worker slot one of the visible GPUs as
CUDA_VISIBLE_DEVICES (read without initialising CUDA), each run records it, ``--runs-per-gpu`` caps how many
share one GPU, and the Ray and Slurm executors ask for a GPU per run where the runs' train.device is cuda."""

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from test_runner import BASE, cli_study_here
from testkit import needs_fashion_mnist

from peftlab.study.executors import gpus
from peftlab.study.executors.executors import ExecutorOptions
from peftlab.utils.errors import UserError


def write_cpu_study(directory: Path, seeds: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    base = {
        **BASE,
        "data": {**BASE["data"], "train_subset": 64, "val_subset": 32, "test_subset": 32},
        "train": {**BASE["train"], "epochs": 1, "device": "cpu"},
    }
    (directory / "base.yaml").write_text(yaml.safe_dump(base))
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "base": "base.yaml", "seeds": seeds, "methods": {"lora": {}}}))
    return path


def recorded_gpus(out: Path) -> Counter:
    results = [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")]
    assert results and all(r["status"] == "completed" for r in results), [r.get("error") for r in results]
    return Counter(r["provenance"]["hardware"]["cuda_visible_devices"] for r in results)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0,1,2,3", ["0", "1", "2", "3"]),
        (" 2, 5 ", ["2", "5"]),
        ("", []),
        ("-1", []),
        ("0,-1,2", ["0"]),  # CUDA ignores everything from the first invalid entry
        ("GPU-8d1f2c3a-aaaa,1", ["GPU-8d1f2c3a-aaaa", "1"]),
    ],
)
def test_visible_gpus_are_read_from_cuda_visible_devices_as_cuda_reads_them(monkeypatch, text, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", text)
    monkeypatch.setattr(gpus, "nvidia_smi_gpus", lambda: pytest.fail("nvidia-smi asked although the env says"))
    assert gpus.visible_gpus() == expected


def test_without_the_env_nvidia_smi_lists_the_gpus_and_cuda_stays_uninitialised(monkeypatch):
    from types import SimpleNamespace

    import torch

    import peftlab.utils.programs as programs

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpus.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    listing = "GPU 0: NVIDIA H100 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)\n"
    monkeypatch.setattr(programs, "run_program", lambda *a, **k: SimpleNamespace(returncode=0, stdout=listing))
    assert gpus.visible_gpus() == ["0", "1"]
    mig = "GPU 0: NVIDIA A100 (UUID: GPU-a)\n  MIG 1g.10gb     Device  0: (UUID: MIG-x1)\n"
    monkeypatch.setattr(programs, "run_program", lambda *a, **k: SimpleNamespace(returncode=0, stdout=mig))
    assert gpus.visible_gpus() == ["MIG-x1"]
    monkeypatch.setattr(gpus.shutil, "which", lambda name: None)
    assert gpus.visible_gpus() == []
    assert not torch.cuda.is_initialized()


def test_worker_slots_take_the_visible_gpus_in_turn_and_runs_per_gpu_is_a_cap():
    four = ["0", "1", "2", "3"]
    assert gpus.worker_gpus(8, gpus=four) == four + four
    assert gpus.worker_gpus(3, runs_per_gpu=1, gpus=four) == ["0", "1", "2"]
    assert gpus.worker_gpus(2, gpus=[]) == [None, None]  # no GPU: workers left as they are
    with pytest.raises(UserError) as err:
        gpus.worker_gpus(9, runs_per_gpu=2, gpus=four)
    assert str(err.value) == (
        "--workers=9 is more than --runs-per-gpu=2 on the 4 visible GPUs hold: expected at most 8"
    )
    with pytest.raises(UserError, match=r"^--runs-per-gpu=1 needs visible GPUs: none here"):
        gpus.worker_gpus(1, runs_per_gpu=1, gpus=[])


def test_use_gpu_sets_the_env_and_none_leaves_it(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    gpus.use_gpu(None)
    assert gpus.os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    gpus.use_gpu("1")
    assert gpus.os.environ["CUDA_VISIBLE_DEVICES"] == "1"


@pytest.mark.parametrize("name, field", [("ray", "ray_gpus"), ("submitit", "slurm_gpus")])
def test_remote_runs_ask_for_a_gpu_where_train_device_is_cuda(name, field):
    options = ExecutorOptions(name=name)
    assert getattr(gpus.with_gpu_requests(options, ["cpu", "cuda"]), field) == 1
    assert getattr(gpus.with_gpu_requests(options, ["cuda:1"]), field) == 1
    assert getattr(gpus.with_gpu_requests(options, ["auto", "cpu"]), field) == 0
    assert getattr(gpus.with_gpu_requests(ExecutorOptions(name=name, **{field: 2}), ["cuda"]), field) == 2
    flag = "--" + field.replace("_", "-")
    with pytest.raises(UserError) as err:
        gpus.with_gpu_requests(ExecutorOptions(name=name, **{field: 0}), ["cuda"])
    assert str(err.value) == f"{flag}=0 gives no GPU to runs whose train.device is cuda: expected {flag} >= 1 or none"


def test_the_slurm_job_asks_for_the_gpu_its_runs_need():
    from peftlab.study.executors.slurm import slurm_parameters

    options = gpus.with_gpu_requests(ExecutorOptions(name="submitit"), ["cuda"])
    assert slurm_parameters(options)["gpus_per_node"] == 1
    assert slurm_parameters(ExecutorOptions(name="submitit"))["gpus_per_node"] == 0


@pytest.mark.e2e
@needs_fashion_mnist()
@pytest.mark.parametrize("start_method, workers", [("forkserver", 4), ("spawn", 2)])
def test_each_worker_of_a_study_gets_one_visible_gpu_and_its_runs_record_it(
    tmp_path, monkeypatch, start_method, workers
):
    """As many runs as workers, 2 faked GPUs (train.device cpu): each run's worker had one GPU. Under forkserver
    4 workers, two runs on each GPU (the slots take the GPUs in turn); under spawn, where each worker is a new
    interpreter that imports torch, 2 workers, one run on each (each slot starts its worker with its run, so the
    count is the same whatever the order; the turn past the last GPU is ``worker_gpus``' for both methods)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    path = write_cpu_study(tmp_path, seeds=workers)
    status, stdout, stderr = cli_study_here(
        path, tmp_path / "out", "--quiet", "--workers", str(workers), "--start-method", start_method
    )
    assert status == 0, stderr
    assert recorded_gpus(tmp_path / "out") == {"3": workers // 2, "5": workers // 2}


def test_runs_per_gpu_sets_the_default_workers_and_refuses_more_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    path = write_cpu_study(tmp_path, seeds=1)
    status, _, stderr = cli_study_here(path, tmp_path / "out", "--quiet", "--workers", "5", "--runs-per-gpu", "2")
    assert status == 2 and stderr.strip().splitlines() == [
        "peftlab: error: --workers=5 is more than --runs-per-gpu=2 on the 2 visible GPUs hold: expected at most 4"
    ]
    assert not (tmp_path / "out" / "runs").exists()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    status, _, stderr = cli_study_here(path, tmp_path / "out", "--quiet", "--runs-per-gpu", "1")
    assert status == 2 and "--runs-per-gpu=1 needs visible GPUs: none here (CUDA_VISIBLE_DEVICES is '')" in stderr
    status, _, stderr = cli_study_here(path, tmp_path / "out", "--quiet", "--runs-per-gpu", "1", "--executor", "ray")
    assert status == 2 and "--runs-per-gpu goes with --executor local, not ray" in stderr
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert gpus.default_workers(3) == 6 and gpus.default_workers(None) == 1
