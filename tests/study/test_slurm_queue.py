"""The submitit driver's view of Slurm's queue: when a job without a result counts as lost.

squeue is a stand-in here (its answers are scripted) and the clock is the test's; the real
cluster's cases are in test_slurm_real.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from peftlab.study.executors import slurm


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    """A job folder, the test's clock, and squeue answering what ``states`` holds."""
    clock = Clock()
    states: dict[str, str] = {}
    monkeypatch.setattr(slurm.time, "time", clock)
    monkeypatch.setattr(slurm, "slurm_command", lambda *args: ("".join(f"{j} {s}\n" for j, s in states.items()), None))
    folder = tmp_path / "7"
    folder.mkdir()
    job = SimpleNamespace(
        job_id="7",
        paths=SimpleNamespace(folder=folder, result_pickle=folder / "7_result.pkl", stderr=folder / "7_0_log.err"),
    )
    return SimpleNamespace(clock=clock, states=states, job=job, queue=slurm.SlurmQueue(lost_after=15.0))


def step(cluster, state: str, seconds: float) -> tuple[bool, str | None]:
    """Slurm shows the job in ``state`` for ``seconds``; the driver polls as it does; its last verdict."""
    cluster.states[cluster.job.job_id] = state
    end = cluster.clock.now + seconds
    verdict = (False, None)
    while cluster.clock.now < end:
        cluster.clock.now += slurm.POLL_SECONDS
        cluster.queue.ask([cluster.job.job_id])
        verdict = slurm.job_end(cluster.job, cluster.queue)
        if verdict[0]:
            return verdict
    return verdict


def mark_requeued(folder: Path, mtime: float) -> None:
    mark = folder / slurm.REQUEUE_MARK
    mark.write_text("7\n")
    os.utime(mark, (mtime, mtime))


def test_a_job_in_a_final_state_without_its_result_is_lost_after_lost_after(cluster):
    assert step(cluster, "RUNNING", 60) == (False, None)
    assert step(cluster, "FAILED", 10) == (False, None)
    ended, why = step(cluster, "FAILED", 10)
    assert ended and why.startswith("job 7, FAILED; log ") and why.endswith("7_0_log.err"), why


def test_a_job_that_marked_itself_requeued_is_waited_for_while_slurm_shows_it_failed(cluster):
    """A busy controller showed a requeued job FAILED for longer than --slurm-lost-after (CI, stop 41):
    with its mark the driver waits for it to come back, and it does."""
    step(cluster, "RUNNING", 30)
    mark_requeued(cluster.job.paths.folder, mtime=12345.0)
    assert step(cluster, "FAILED", 120) == (False, None)
    assert step(cluster, "PENDING", 10) == (False, None)
    assert step(cluster, "RUNNING", 30) == (False, None)
    cluster.job.paths.result_pickle.write_bytes(b"")  # its second life ends with its result
    assert step(cluster, "COMPLETED", 5)[0]


def test_a_requeued_job_that_never_comes_back_is_lost_once_its_grace_ran_out(cluster):
    step(cluster, "RUNNING", 30)
    mark_requeued(cluster.job.paths.folder, mtime=12345.0)
    seen = cluster.clock.now + slurm.POLL_SECONDS
    ended, why = step(cluster, "FAILED", slurm.REQUEUE_SECONDS + 30)
    assert ended and why.startswith("job 7, FAILED"), why
    assert cluster.clock.now - seen == pytest.approx(slurm.REQUEUE_SECONDS, abs=slurm.POLL_SECONDS)


def test_each_requeue_starts_its_own_grace_and_an_old_mark_gives_none(cluster):
    step(cluster, "RUNNING", 30)
    mark_requeued(cluster.job.paths.folder, mtime=12345.0)
    assert step(cluster, "FAILED", 100) == (False, None)
    assert step(cluster, "RUNNING", slurm.REQUEUE_SECONDS) == (False, None)  # back, and trains past the grace
    mark_requeued(cluster.job.paths.folder, mtime=23456.0)  # a second preemption
    assert step(cluster, "FAILED", slurm.REQUEUE_SECONDS - 10) == (False, None)
    assert step(cluster, "PENDING", 5) == (False, None)
    assert step(cluster, "RUNNING", slurm.REQUEUE_SECONDS) == (False, None)
    ended, why = step(cluster, "OUT_OF_MEMORY", 20)  # killed long after its last requeue: lost as any job
    assert ended and why.startswith("job 7, OUT_OF_MEMORY"), why
