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
    monkeypatch.setattr(  # a state alone, or "STATE|REASON"
        slurm,
        "slurm_command",
        lambda *args: ("".join(f"{j}|{s}{'' if '|' in s else '|None'}\n" for j, s in states.items()), None),
    )
    folder = tmp_path / "7"
    folder.mkdir()
    job = SimpleNamespace(
        job_id="7",
        paths=SimpleNamespace(folder=folder, result_pickle=folder / "7_result.pkl", stderr=folder / "7_0_log.err"),
        result=lambda: None,
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


def waiting(cluster, *states: str, jobs: list | None = None) -> str:
    """What the driver says the jobs wait for once squeue shows each of ``states`` ("STATE|REASON") in turn."""
    jobs = jobs or [cluster.job]
    for state in states:
        cluster.states.clear()
        cluster.states.update({job.job_id: state for job in jobs})
        cluster.clock.now += slurm.QUEUE_SECONDS
        cluster.queue.ask([job.job_id for job in jobs])
        for job in jobs:
            slurm.job_end(job, cluster.queue)
    return cluster.queue.waiting(jobs)


def test_what_a_job_waits_for_is_said_in_squeue_s_words(cluster):
    assert waiting(cluster, "PENDING|None") == ""  # just submitted: the scheduler has not looked at it yet
    assert waiting(cluster, "PENDING|Resources") == "Slurm: job 7 PENDING (Resources)"
    assert waiting(cluster, "RUNNING|None") == ""
    mark_requeued(cluster.job.paths.folder, mtime=12345.0)
    assert waiting(cluster, "PENDING|BeginTime") == "Slurm: job 7 requeued, PENDING (BeginTime)"
    assert waiting(cluster, "REQUEUE_HOLD|JobHeldAdmin") == "Slurm: job 7 requeued, REQUEUE_HOLD (JobHeldAdmin)"
    paths = SimpleNamespace(folder=cluster.job.paths.folder.parent, result_pickle=cluster.job.paths.folder / "none")
    others = [SimpleNamespace(job_id=f"8_{i}", paths=paths) for i in range(3)]  # folders without a requeue mark
    assert waiting(cluster, "PENDING|Priority", jobs=others) == "Slurm: 3 jobs PENDING (Priority)"


def test_the_driver_tells_what_its_jobs_wait_for_as_it_changes(cluster, monkeypatch):
    """slurm.submit on a scripted queue: on_wait hears each change of what the job waits for, "" once it runs."""
    answers = iter(["PENDING|None", "PENDING|Priority", "PENDING|Priority", "RUNNING|None", "COMPLETED|None"])

    def squeue(*args):
        state = next(answers, "COMPLETED|None")
        if state.startswith("COMPLETED"):
            cluster.job.paths.result_pickle.write_bytes(b"")
        return f"7|{state}\n", None

    executor = SimpleNamespace(map_array=lambda fn, *args: [cluster.job])
    monkeypatch.setattr(slurm, "make_executor", lambda options, names: executor)
    monkeypatch.setattr(slurm, "slurm_command", squeue)
    monkeypatch.setattr(slurm.time, "sleep", lambda seconds: setattr(cluster.clock, "now", cluster.clock.now + seconds))
    heard: list[str] = []
    options = SimpleNamespace(slurm_cluster="slurm", slurm_lost_after=15.0)
    assert list(slurm.submit(print, [(1,)], options, ["peftlab:s:7"], heard.append)) == [(0, None)]
    assert heard == ["Slurm: job 7 PENDING (Priority)", ""]
