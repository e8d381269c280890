"""A tuned study's searches side by side on one executor, so that a worker one search leaves idle (an
edge-following grid adds its points one at a time) trains another search's trial.

A search is a generator of requests (``search.search_steps``): each request is ``run_jobs``' arguments
(jobs, on_done, stop_when), a batch of trial runs, and the search goes on once every one of them has
ended. ``drive`` runs one search alone: each request through ``run_jobs``, one after another.
``run_side_by_side`` runs several: every search's requests go into one queue the executor takes in
order, and a search whose request has ended is resumed at once, inside the executor's ``on_done``,
adding its next request to the queue while the executor runs the others'. A search's decisions read its
own trials only (its journal and its runs' result.json), so each makes the decisions, and gets the trial
values, run ids and results, that it makes alone; only the order in which the trials of different
searches train changes. A halving search's pruning depends on which of its trials have reached a rung
when it looks, as with several workers it always did.

The local executors take the jobs that ``on_done`` appends to the list they were given
(``local.run_local``, ``spawn.run_spawned``). One that takes its list once (``run_remote``: one job array
or set of Ray tasks per call) is called again with the jobs it left, as long as any are left.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.study.spec import RunSpec

Job = tuple[RunSpec, Path]
# run_jobs' arguments: the jobs, on_done(spec, result) for each as it ends, stop_when(spec, run_dir) or None
Request = tuple[list[Job], Callable[[RunSpec, dict], None], Any]


def drive(steps: Generator[Request, None, Any], run_jobs: Callable[..., None]) -> Any:
    """Run one search's requests through ``run_jobs``, one after another; returns what the search returns."""
    try:
        request = next(steps)
    except StopIteration as end:
        return end.value
    while True:
        run_jobs(*request)
        try:
            request = next(steps)
        except StopIteration as end:
            return end.value


@dataclass(eq=False)
class Running:
    """A search under way: its steps, and the request whose jobs it waits for."""

    steps: Generator[Request, None, Any]
    on_done: Callable[[RunSpec, dict], None] | None = None
    stop_when: Any = None
    left: int = 0  # its request's jobs that have not ended


def job_key(spec: RunSpec) -> tuple[str, str]:
    # a trial's variant names its search and trial number: no two searches' jobs share one
    return spec.variant, spec.run_id


def run_side_by_side(
    steps: dict[str, Generator[Request, None, Any]], run_jobs: Callable[..., None], may_stop: bool = False
) -> dict[str, Any]:
    """Run every search of ``steps`` to its end through one ``run_jobs``; returns what each returned, by key,
    in the order of ``steps``. A search that raises an error ends there, the others go on, and the error of
    the first such search (in the order of ``steps``) is raised once they have ended. ``may_stop``: some
    search stops jobs (halving), so the executor is asked about each running job (``stop_when``)."""
    returned: dict[str, Any] = {}
    errors: dict[str, Exception] = {}
    owner: dict[tuple[str, str], tuple[str, Running]] = {}
    queue: list[Job] = []  # this call of run_jobs's jobs: advance appends to it while run_jobs runs
    ended = 0  # jobs that have ended

    def advance(key: str, running: Running) -> None:
        """Resume ``running`` until it asks for jobs (queued) or ends."""
        jobs: list[Job] = []
        while not jobs:
            try:
                jobs, running.on_done, running.stop_when = next(running.steps)
            except StopIteration as end:
                returned[key] = end.value
                return
            except Exception as err:  # its own failure (a UserError line): the other searches go on
                errors[key] = err
                return
        running.left = len(jobs)
        for job in jobs:
            if job_key(job[0]) in owner:
                raise RuntimeError(f"two searches asked for the run {job[0].run_id} of {job[0].variant} at once")
            owner[job_key(job[0])] = (key, running)
            queue.append(job)

    def on_done(spec: RunSpec, result: dict) -> None:
        nonlocal ended
        ended += 1
        key, running = owner.pop(job_key(spec))
        running.on_done(spec, result)
        running.left -= 1
        if running.left == 0:
            advance(key, running)

    def stop_when(spec: RunSpec, run_dir: Path) -> bool:
        running = owner[job_key(spec)][1]
        return running.stop_when is not None and bool(running.stop_when(spec, run_dir))

    for key, searching in steps.items():
        advance(key, Running(searching))
    while owner:
        queue = [job for job in queue if job_key(job[0]) in owner]  # all of them, or those run_jobs left
        before = ended
        run_jobs(queue, on_done, stop_when if may_stop else None)
        if ended == before:
            raise RuntimeError("the executor ended none of the trial runs it was given")
    for key in steps:
        if key in errors:
            raise errors[key]
    return {key: returned[key] for key in steps}
