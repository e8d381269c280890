"""The requeue a preempted or timed-out Slurm job asks for (``slurm_requeue.requeue``), with an ``scontrol``
on PATH that behaves as Slurm's does: it succeeds, Slurm's own SIGTERM to the requeued job stops it, or it fails."""

import os
import stat
import subprocess

import pytest

pytest.importorskip("submitit")

from peftlab.study.executors.slurm_requeue import requeue


class Environment:
    job_id = "17"  # what SlurmJobEnvironment reads from SLURM_JOB_ID


@pytest.mark.parametrize(
    "script, fails",
    [
        ('echo "$@" > "$LOG"', False),
        ('echo "$@" > "$LOG"; kill -TERM $$', False),  # the requeue's own SIGTERM reached scontrol first
        ('echo "$@" > "$LOG"; echo "Invalid job id" >&2; exit 1', True),
    ],
    ids=["requeued", "stopped-by-its-requeue", "refused"],
)
def test_an_scontrol_stopped_by_the_requeue_it_asked_for_has_requeued_the_job(tmp_path, monkeypatch, script, fails):
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f"#!/bin/sh\n{script}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LOG", str(tmp_path / "log"))
    if fails:
        with pytest.raises(subprocess.CalledProcessError):
            requeue(Environment(), 1)
    else:
        requeue(Environment(), 1)
    assert (tmp_path / "log").read_text() == "requeue 17\n"
