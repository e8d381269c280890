"""`peftlab study --executor submitit --detach` (``study.executors.detach``) on a real single-node Slurm whose
node has two fake GPUs (scripts/install-slurm.sh with PEFTLAB_SLURM_GPUS=2: a gpu gres on links to /dev/null, so
the two trials run side by side): the command submits a tuned study's trials and returns; the chain of jobs it
leaves (trials, a continuation that submits the final run, a continuation that ends the study) completes with no
driver alive, to the local executor's numbers; each job asked Slurm for its GPU and each run records the one it
was given. Skipped, saying why, where Slurm is not installed or the cluster cannot start (as test_slurm_real.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_runner import cli_study_here, study_here, write_study
from testkit import REPO, needs_fashion_mnist

from peftlab.utils.errors import UserError

INSTALL = REPO / "scripts" / "install-slurm.sh"
TUNED = {
    "seeds": 1,
    "methods": {"lora": {"set": {"method.r": 2}}},
    "set": {"train.epochs": 1, "data.train_subset": 128},
    "tune": {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"},
}
GUARD_SECONDS = 1800  # against a chain that never ends (a hang), not a time limit: the jobs wait for each other


def test_detach_goes_with_slurm_only(tmp_path):
    path = write_study(tmp_path, TUNED)
    status, _, said = cli_study_here(path, tmp_path / "out", "--detach")
    assert status == 2 and said.strip() == (
        "peftlab: error: --detach goes with --executor submitit (Slurm jobs that outlive the command), not local"
    ), said


def test_a_run_submitted_too_often_without_a_result_stops_the_chain_before_sbatch(tmp_path, monkeypatch):
    from peftlab.study.executors import detach, slurm
    from peftlab.study.executors.executors import ExecutorOptions, Needed

    monkeypatch.setattr(slurm, "make_executor", lambda *args: pytest.fail("submitted"))
    options = ExecutorOptions(name="submitit", folder=str(tmp_path))
    run = str(tmp_path / "runs" / "0123456789ab")
    needed = Needed(print, [({}, run, str(tmp_path), "submitit")], ["peftlab:s:0123456789ab"], options)
    record = {"submissions": {run: detach.MAX_SUBMISSIONS}}
    with pytest.raises(UserError) as err:
        detach.submit_stage(needed, None, tmp_path, options, (print, False), record)
    assert str(err.value) == (
        f"{run}: submitted {detach.MAX_SUBMISSIONS} times without ending with a result (see its jobs' logs in "
        f"{tmp_path}): the detached study stops there"
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gpu_slurm(tmp_path_factory):
    """A single-node cluster whose node has two fake GPUs, for this module; the environment its commands need."""
    pytest.importorskip("submitit")
    missing = [tool for tool in ("sbatch", "slurmctld", "slurmd", "munged") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} not on PATH; scripts/install-slurm.sh installs it)")
    directory = tmp_path_factory.mktemp("slurm-gpu")
    env = {
        **os.environ,
        "PEFTLAB_SLURMCTLD_PORT": str(free_port()),
        "PEFTLAB_SLURMD_PORT": str(free_port()),
        "PEFTLAB_SLURM_GPUS": "2",
    }
    configure = subprocess.run(["bash", str(INSTALL), str(directory)], capture_output=True, text=True, env=env)
    if configure.returncode != 0:
        pytest.skip(f"the Slurm cluster cannot be configured: {configure.stderr.strip()}")
    try:
        start = subprocess.run(["bash", str(INSTALL), "start", str(directory)], capture_output=True, text=True, env=env)
        if start.returncode != 0:
            pytest.skip(f"the Slurm cluster cannot start: {start.stderr.strip()}")
        yield {"SLURM_CONF": str(directory / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(INSTALL), "stop", str(directory)], capture_output=True, text=True, env=env)


def results(study_dir: Path) -> dict[str, dict]:
    """Every result.json of the study, trials and final runs, by its path in the study directory."""
    found = [*study_dir.glob("runs/*/result.json"), *study_dir.glob("tune/*/runs/*/result.json")]
    return {str(path.parent.relative_to(study_dir)): json.loads(path.read_text()) for path in found}


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_detached_tuned_study_completes_without_its_driver_as_the_local_one(tmp_path, gpu_slurm, monkeypatch):
    path, out = write_study(tmp_path / "slurm", TUNED), tmp_path / "slurm" / "out"
    args = ["--executor", "submitit", "--slurm-cpus", "1", "--slurm-gpus", "1", "--slurm-time", "20", "--detach"]
    monkeypatch.setenv("SLURM_CONF", gpu_slurm["SLURM_CONF"])
    # the driver, in this process (cli.run_command): its jobs are Slurm's, which nothing of it outlives once it returns
    status, said, stderr = cli_study_here(path, out, *args)
    assert status == 0, stderr
    assert said.startswith("study s: submitted the trials as Slurm job array "), said
    status, said, _ = cli_study_here(path, out, *args)  # the same command, while the chain is in Slurm's queue
    assert status == 0 and said.startswith("study s: detached on Slurm, "), said
    reference_study = write_study(tmp_path / "local", TUNED)  # trained here while the chain runs in Slurm
    study_here(reference_study, tmp_path / "local" / "out")
    reference = results(tmp_path / "local" / "out")
    record = out / "slurm" / "detached.json"
    deadline = time.time() + GUARD_SECONDS
    while json.loads(record.read_text()).get("stage") != "done" and time.time() < deadline:
        time.sleep(0.2)
    assert json.loads(record.read_text())["stage"] == "done", record.read_text()
    detached = results(out)
    assert detached.keys() == reference.keys() and len(detached) == 3, (detached.keys(), reference.keys())
    for where, result in detached.items():
        assert result["status"] == "completed", result.get("error")
        assert result["metrics"] == reference[where]["metrics"], where  # same config and seed: same numbers
        job = result["execution"]["job_id"]
        gpu = result["execution"]["gpus"]
        assert gpu in ("0", "1"), result["execution"]  # Slurm gave the job one of the node's GPUs, and told it which
        assert result["provenance"]["hardware"]["cuda_visible_devices"] == gpu
        array = job.split("_")[0]
        assert "#SBATCH --gpus-per-node=1\n" in (out / "slurm" / array / f"{array}_submission.sh").read_text()
    continuations = [p.read_text() for p in out.glob("slurm/*/*_submission.sh") if ":continue" in p.read_text()]
    assert len(continuations) == 2 and not any("--gpus-per-node=1" in script for script in continuations)
    status, said, _ = cli_study_here(path, out, *args)  # done: the same command says so, and submits nothing
    assert status == 0 and "1 completed, 0 failed, 0 diverged of 1 runs (1 were already finished)" in said, said
