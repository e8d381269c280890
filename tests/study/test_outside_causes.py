"""A run stopped by an outside cause (a signal such as the out-of-memory killer's SIGKILL, a full
disk) is not a failure of the run: it stays pending with its checkpoint, the driver says so in
one line per run, and the same command resumes it. Real processes, a real full file system."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_runner import cli_study_here, results_by_run, write_study
from testkit import REPO, needs_fashion_mnist

pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]


def study_cli(path: Path, out: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO / "src"), **env)
    return subprocess.run(
        [sys.executable, "-m", "peftlab.cli", "study", str(path), "--study-dir", str(out), "--quiet"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=600,
    )


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (too small for a checkpoint) and a function that grows it to 64 MiB."""
    directory = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here (not root, or no permission): {mount.stderr.strip()}")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=64m", str(directory)], check=True)

    yield directory, grow
    subprocess.run(["umount", str(directory)], check=False)


def assert_one_line_per_run(stderr: str, runs: int, why: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == runs and all(why in line and "stays pending" in line for line in lines), stderr


def test_a_worker_killed_by_sigkill_stays_pending_and_the_same_command_resumes_it(tmp_path):
    path = write_study(tmp_path, {"seeds": 1, "methods": {"lora": {}}})
    out = tmp_path / "out"
    killed = study_cli(path, out, tmp_path, PEFTLAB_KILL_AT="step:7")  # after the checkpoint of step 6
    assert killed.returncode == 1, killed.stderr
    assert_one_line_per_run(killed.stderr, 1, "killed by SIGKILL")
    assert "stopped by an outside cause" in killed.stdout
    assert not list(out.glob("runs/*/result.json")), "a killed run was recorded"
    assert list(out.glob("runs/*/checkpoint/last.pt")), "the killed run's checkpoint is gone"

    status, stdout, stderr = cli_study_here(path, out, "--quiet")  # the same command, in this process
    assert status == 0, stderr
    assert "1 completed, 0 failed, 0 diverged of 1 runs (0 were already finished)" in stdout
    ((run_id, result),) = results_by_run(out).items()
    records = [json.loads(x) for x in (out / "runs" / run_id / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["kind"], r["step"]) for r in records]
    assert len(steps) == len(set(steps)), "a step was trained twice: the run did not resume"


def test_a_full_disk_leaves_runs_pending_with_one_line_each_and_they_resume(tmp_path, tiny_tmpfs):
    disk, grow = tiny_tmpfs
    path = write_study(tmp_path, {"seeds": 2, "methods": {"lora": {}}})
    out = disk / "out"
    full = study_cli(path, out, tmp_path)
    assert full.returncode == 1, full.stderr
    assert_one_line_per_run(full.stderr, 2, "file system or quota is full")
    assert not list(out.glob("runs/*/result.json")), "a run stopped by the full disk was recorded"
    # the worker that met the full disk says so in its log (one started after it may find no room to write it)
    assert any("No space left on device (ENOSPC)" in log.read_text() for log in out.glob("runs/*/worker.log"))

    grow()
    status, stdout, stderr = cli_study_here(path, out, "--quiet")
    assert status == 0, stderr
    assert "2 completed, 0 failed, 0 diverged of 2 runs (0 were already finished)" in stdout
    assert all(r["status"] == "completed" for r in results_by_run(out).values())


def test_disk_full_sees_through_library_wrappers_and_nothing_else():
    """(A real failure, such as a class out of range, stays failed: test_runner.py checks it.)"""
    from peftlab.study.executors.worker import disk_full

    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail] unexpected pos 704 vs 598")  # noqa: B904 - torch.save's implicit chaining
    except RuntimeError as err:
        assert disk_full(err) == "No space left on device (ENOSPC)"
    assert disk_full(ValueError("class 99 is out of range")) is None
    assert disk_full(OSError(5, "Input/output error")) is None
