"""Long-lived local workers for the ``spawn`` start method: torch, timm and PEFT imported once per worker.

A spawned process starts a fresh interpreter, so a worker per run would pay the imports per run.
Instead each parallel slot holds a worker that imports them once and then trains the runs the study
sends it over a pipe, one after another (``worker.serve_runs``); it answers each with the exit code a
one-run worker would have ended with, so ``local_executor.worker_outcome`` decides as it does for
``forkserver``. A worker that dies (kill -9, the out-of-memory killer) ends only its own run, whose
outcome is read from its exit code; the slot gets a new worker for the next run. A worker stopped
by SIGTERM (Ctrl-C, a halving search's pruner) ends after its run and is not reused. Idle workers
wait between the calls of one study (a tuned study's searches, then its final runs) and stop with it
(``stop_idle_workers``); they die with the study like any worker (``worker.die_with_study``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peftlab.config.schema import to_dict
from peftlab.study.executors.local import (
    POLL_SECONDS,
    PRELOAD,
    earlier_wall,
    start_held,
    stop_processes,
    worker_context,
    worker_outcome,
)
from peftlab.study.spec import RunSpec


@dataclass(eq=False)
class Worker:
    proc: multiprocessing.Process
    conn: multiprocessing.connection.Connection  # the study's end of the worker's pipe
    gpu: str | None = None  # its CUDA_VISIBLE_DEVICES, for its life (``gpus.use_gpu``)


IDLE: list[Worker] = []  # live workers of this study that wait for a run


def start_worker(ctx, gpu: str | None = None) -> Worker:
    """Spawn a worker on ``gpu`` (SIGINT held back while it imports, ``local_executor.start_held``)."""
    from peftlab.study.executors.worker import serve_runs

    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=serve_runs, name="peftlab-worker", args=(theirs, os.getpid(), PRELOAD, gpu))
    start_held(proc)
    theirs.close()
    return Worker(proc, ours, gpu)


def take_worker(ctx, gpu: str | None = None) -> Worker:
    """An idle worker on ``gpu`` that is still alive, else a new one (idle ones that died are retired)."""
    for worker in [w for w in IDLE if not w.proc.is_alive()]:
        IDLE.remove(worker)
        retire(worker)
    for worker in IDLE:
        if worker.gpu == gpu:
            IDLE.remove(worker)
            return worker
    return start_worker(ctx, gpu)


def retire(worker: Worker, grace: float = 30.0) -> None:
    """End a worker: its pipe closed (an idle one returns), SIGKILL if it outlives ``grace``."""
    worker.conn.close()
    worker.proc.join(grace)
    if worker.proc.is_alive():
        worker.proc.kill()
        worker.proc.join()


def stop_idle_workers() -> None:
    """End the idle workers (at the end of a study; a new call spawns new ones)."""
    while IDLE:
        retire(IDLE.pop())


def run_spawned(
    jobs: list[tuple[RunSpec, Path]],
    workers: int,
    progress: bool,
    on_done: Callable[[RunSpec, dict], None],
    stop_when: Callable[[RunSpec, Path], bool] | None = None,
    gpus: list[str | None] | None = None,
) -> None:
    """``local_executor.run_local`` with long-lived spawned workers (same arguments, same outcomes; the jobs
    that ``on_done`` appends to ``jobs`` run too). A worker keeps the GPU of the slot it was started for."""
    if not jobs:  # every run done: no worker is spawned
        return
    ctx = worker_context("spawn")
    taken = 0  # jobs started, in order
    busy: dict[Worker, tuple[RunSpec, Path, int]] = {}
    started: dict[Worker, tuple[float, float]] = {}  # when each busy worker was sent its run, ``earlier_wall``
    free_positions = list(range(1, workers + 1))
    gpus = gpus or [None] * workers
    stopping: set[Worker] = set()
    try:
        while taken < len(jobs) or busy:
            while taken < len(jobs) and len(busy) < workers:
                spec, run_dir = jobs[taken]
                taken += 1
                position = free_positions.pop(0)
                worker = take_worker(ctx, gpus[position - 1])
                busy[worker] = (spec, run_dir, position)  # first: a Ctrl-C from here on stops it
                started[worker] = (time.perf_counter(), earlier_wall(run_dir))
                send_run(worker, spec, run_dir, progress, position)
            waited = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            ready = set(multiprocessing.connection.wait(waited, timeout=POLL_SECONDS if stop_when else None))
            ended = [w for w in busy if w.conn in ready or w.proc.sentinel in ready]
            if stop_when is not None:
                for worker, (spec, run_dir, _) in busy.items():
                    if worker not in ended and worker not in stopping and stop_when(spec, run_dir):
                        worker.proc.terminate()  # SIGTERM: the run stops cleanly (INTERRUPTED), resumable
                        stopping.add(worker)
            for worker in ended:
                spec, run_dir, position = busy.pop(worker)
                free_positions.append(position)
                code, (began, earlier) = end_of_run(worker, keep=worker not in stopping), started.pop(worker)
                wall = time.perf_counter() - began
                on_done(spec, worker_outcome(spec, run_dir, code, worker in stopping, wall=wall, earlier=earlier))
    except KeyboardInterrupt:
        stop_processes([w.proc for w in [*busy, *IDLE]])
        IDLE.clear()
        raise


def send_run(worker: Worker, spec: RunSpec, run_dir: Path, progress: bool, position: int) -> None:
    """Send a run; a worker that died since it was found alive ends the run as if it died during it."""
    try:
        worker.conn.send((to_dict(spec.config), str(run_dir), progress, position, spec.last_epoch))
    except OSError:  # its pipe is closed: the worker is gone, and its sentinel says so
        pass


def end_of_run(worker: Worker, keep: bool) -> int | None:
    """The exit code a one-run worker would have had: what the worker answered, or, where it died
    without answering, its own exit code. The worker goes back to ``IDLE`` when it lives on and
    ``keep`` says so; otherwise it is retired."""
    from peftlab.study.executors.worker import INTERRUPTED

    code = None
    answered = False
    try:
        if worker.conn.poll():
            code, answered = worker.conn.recv(), True
    except (EOFError, OSError):  # it died before answering
        pass
    if not answered:
        retire(worker)
        return worker.proc.exitcode
    if keep and worker.proc.is_alive() and code != INTERRUPTED:
        IDLE.append(worker)
    else:
        retire(worker)
    return code
