"""The local executor: a study's runs in worker processes on this machine.

With the start method ``forkserver`` (the default on Linux), each run's worker is forked from a
server that has imported torch, timm and PEFT once, so a run pays no import cost (bitsandbytes is
imported only by a run that quantizes its base, ``worker.process_main``), a crash cannot
take the study down, and each run's peak memory is its own. With ``spawn`` (the default on macOS,
where forking a threaded process is unsafe), long-lived workers import them once each and take
runs one after another (``spawn_workers``), with the same outcomes. Workers
die with the study (``worker.die_with_study``); Ctrl-C or SIGTERM stops them cleanly
(``worker.INTERRUPTED``) and their runs stay resumable. A worker that ends without a result is
told apart here: stopped by its study (``stop_when``, or at its job's last epoch, ``RunSpec.last_epoch``), from
outside (its run stays pending), or failed (its failure recorded). What on_done gets for a run that earlier
processes trained too holds their time (``phases.EARLIER_WALL``, read from its checkpoint as its worker starts).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.resource_tracker
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from peftlab.config.schema import to_dict
from peftlab.study.phases import EARLIER_WALL
from peftlab.study.spec import RunSpec
from peftlab.training.run_result import failure, read_result, write_result
from peftlab.utils.errors import STORAGE_ERRORS, deferred_stops

POLL_SECONDS = 0.5  # how often run_local asks stop_when about each running job
START_METHODS = ("spawn", "forkserver")  # how local workers start (``peftlab study --start-method``)
# imported once per forkserver or spawned worker, so no run pays for them (peft brings transformers;
# bitsandbytes is left to the runs that quantize their base: peftlab.utils.peft_preload)
PRELOAD = (
    "peftlab.study.executors.worker",
    "peftlab.training.run",
    "peftlab.data",
    "timm",
    "peftlab.utils.peft_preload",
)
# where a study has runs that quantize their base: bitsandbytes imports torch's compiler, which cost each
# such run 0.9 CPU-s in its forked worker on an AMD EPYC (0.08 s with it preloaded; issue 64)
QUANTIZED_PRELOAD = ("torch._inductor.compile_fx",)
# next to last: reads the runs' array datasets once and holds them (``held_for``, data.held)
HELD_PRELOAD = "peftlab.study.executors.held_preload"
# last: the server ignores SIGINT from then on, which tells the study that it serves (``await_server``)
SERVING_PRELOAD = "peftlab.study.executors.serving_preload"
SERVER_POLL_SECONDS = 0.02  # how often ``await_server`` reads the forkserver's state

# A worker killed by a signal leaves its semaphores (tqdm's lock) to multiprocessing's resource
# tracker, which removes them and warns on the study's stderr; the runner's own line says what happened.
QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def default_start_method() -> str:
    """``spawn`` where fork-based starts of a threaded process are unsafe (macOS, whose Python
    defaults to it), else ``forkserver``."""
    return "spawn" if sys.platform == "darwin" else "forkserver"


def worker_context(start_method: str = "forkserver", preload: tuple[str, ...] = PRELOAD, held: str | None = None):
    """The multiprocessing context of local workers; ``forkserver``'s server started, ``preload`` imported
    in it, and with ``held`` (``held_for``) the datasets it names read and held there (a server already running
    keeps what it preloaded and held), once it serves (``await_server``)."""
    if QUIET_TRACKER not in sys.warnoptions:  # passed as -W to the tracker, forkserver and spawned processes
        sys.warnoptions.append(QUIET_TRACKER)
    if start_method == "spawn":
        multiprocessing.resource_tracker.ensure_running()  # now: its start unblocks SIGINT (start_forkserver)
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload) + ([HELD_PRELOAD] if held else []) + [SERVING_PRELOAD])
    start_forkserver(held)
    await_server()  # a Ctrl-C meanwhile is taken now, not once a worker's start returns
    return ctx


def await_server() -> None:
    """Wait, taking a Ctrl-C at once, until this process's forkserver has imported its preload (its last module,
    ``SERVING_PRELOAD``, makes it ignore SIGINT, read in /proc/PID/status). A worker's start waits for that too, but
    with SIGINT held back (``start_held``): a Ctrl-C while the server imported torch, timm and PEFT was answered
    only once they were imported (10 to 12 s on a 2-core AMD EPYC, 2026-12-01). The server dies with the study
    (``worker.die_with_starting_study``). Where /proc cannot tell (not Linux), or the server is gone, no wait."""
    import multiprocessing.forkserver

    pid = multiprocessing.forkserver._forkserver._forkserver_pid
    while pid is not None and importing(pid):
        time.sleep(SERVER_POLL_SECONDS)


def importing(pid: int) -> bool:
    """Whether process ``pid`` lives and has yet to ignore SIGINT (/proc/PID/status); False where that is not read."""
    try:
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        ignored = int(status["SigIgn"], 16)
    except (OSError, KeyError, ValueError):
        return False
    return status.get("State", "Z")[0] not in "ZX" and not ignored & (1 << (signal.SIGINT - 1))


# the final jobs of the study this process runs (``serving``), which every forkserver it starts serves too
STUDY_JOBS: list[tuple[RunSpec, Path]] = []


@contextlib.contextmanager
def serving(jobs: list[tuple[RunSpec, Path]]):
    """While a study runs: the forkserver its first local phase starts (the pretraining's, the trials') preloads and
    holds what its final runs need too (``preload_for``, ``held_for``), since a server already running keeps what it
    started with. Started for the pretraining alone, it held no dataset for any later run (each read Fashion-MNIST's
    files again: 0.5 s of a default-study run); started for trials without a quantized base, it lacked the compiler
    the final QLoRA runs import (2026-11-30, issue 87)."""
    STUDY_JOBS[:] = jobs
    try:
        yield
    finally:
        STUDY_JOBS.clear()


def pretraining_context(start_method: str):
    """``worker_context`` for a study's pretraining: its forkserver preloads and holds for the study's final runs
    (``serving``), which later phases then find."""
    return worker_context(start_method, preload_for([]), held_for([]))


def preload_for(jobs: list[tuple[RunSpec, Path]]) -> tuple[str, ...]:
    """``PRELOAD``, and ``QUANTIZED_PRELOAD`` where a job, or a final job of the study (``serving``), quantizes its
    base."""
    quantized = any(spec.config.quant.mode != "none" for spec, _ in [*jobs, *STUDY_JOBS])
    return PRELOAD + QUANTIZED_PRELOAD if quantized else PRELOAD


def held_for(jobs: list[tuple[RunSpec, Path]]) -> str | None:
    """``$PEFTLAB_HELD_DATA`` for the forkserver of ``jobs`` and the study's final jobs (``serving``; ``data.held``):
    the array datasets their runs read that are found without downloading, as a JSON list of [layout, folder]; None
    where there is none."""
    from peftlab.config.checks import TEXT_DATASET_NAMES
    from peftlab.data.build import is_listed
    from peftlab.data.held import HELD_LAYOUTS
    from peftlab.data.sources import find_data

    found = set()
    data = {(spec.config.data.name, spec.config.data.root): spec.config.data for spec, _ in [*jobs, *STUDY_JOBS]}
    for cfg in data.values():
        if cfg.name in TEXT_DATASET_NAMES or is_listed(cfg.name):
            continue
        try:
            layout, directory = find_data(cfg.name, cfg.root, download_allowed=False)
        except Exception:  # missing or unreadable: each run says so itself
            continue
        if layout in HELD_LAYOUTS:
            found.add((layout, str(directory)))
    return json.dumps(sorted(found)) if found else None


def hold_from_environment() -> None:
    """In the forkserver (``HELD_PRELOAD``): read and hold what ``$PEFTLAB_HELD_DATA`` names (``held_for``); a value
    that is not what a study writes holds nothing."""
    from peftlab.data.held import ENV_HELD_DATA, hold
    from peftlab.data.sources import read_layout

    try:
        named = [(str(layout), Path(folder)) for layout, folder in json.loads(os.environ.get(ENV_HELD_DATA) or "[]")]
    except (ValueError, TypeError):
        return
    for layout, directory in named:
        hold(layout, directory, lambda lay, folder: read_layout(lay, folder, split_seed=0))


def start_forkserver(held: str | None = None) -> None:
    """Start the forkserver with SIGINT held back (blocked), which it inherits, and ``held`` in its environment
    (``$PEFTLAB_HELD_DATA``: what its preload reads and holds, ``data.held``).

    A Ctrl-C reaches every process of the terminal's group: without this, one that lands while
    the forkserver imports torch prints its KeyboardInterrupt traceback under the study's line
    (the forkserver ignores SIGINT once its imports are done, and drops one held back). The study
    process takes a Ctrl-C that landed during the spawn when it unblocks SIGINT, and stops the
    workers; each worker unblocks SIGINT once it can stop cleanly (``worker.take_interrupts``).
    (Blocked, not ignored: an ignored signal is discarded, and the Ctrl-C would be lost.)
    """
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    from peftlab.utils.cpu import PINNED

    multiprocessing.resource_tracker.ensure_running()  # first: its start would unblock SIGINT again
    # the workers' arithmetic is the forkserver's, fixed when it imported torch: one started by an earlier study of
    # this process (a notebook's kernel) with other pin switches than this study's is stopped and started again
    environment, server = dict(os.environ), multiprocessing.forkserver._forkserver
    if FORKSERVER_ENV and any(FORKSERVER_ENV[-1].get(name) != environment.get(name) for name in PINNED):
        server._stop()  # multiprocessing's own way to end its server
    running = server._forkserver_pid
    with sigint_held(), study_children(held):
        multiprocessing.forkserver.ensure_running()  # the module's function (a test wraps it)
    if server._forkserver_pid != running:  # started now (first, again, or after it died)
        FORKSERVER_ENV[:] = [environment]


FORKSERVER_ENV: list[dict[str, str]] = []  # the environment this process's forkserver started with


def environment_since_start() -> dict[str, str | None]:
    """The variables this process set (to a value) or unset (None) since its forkserver started, which a worker
    forked from the server applies first (``worker.take_environment``): it runs in the study's environment, as a
    process started now would, not in the server's. A notebook's kernel runs study after study with one server,
    and sets what the runs read between them (a dataset's folder; ``peftlab.reproduce`` sets the folders it checked
    and the products' switch of the archive's runs). What a library reads when the server imports it stays the
    server's; the pin's switches, read so by torch, start a new server (``start_forkserver``)."""
    if not FORKSERVER_ENV:
        return {}
    before = FORKSERVER_ENV[-1]
    changed: dict[str, str | None] = {name: value for name, value in os.environ.items() if before.get(name) != value}
    return {**changed, **{name: None for name in before if name not in os.environ}}


def start_held(proc: multiprocessing.Process) -> None:
    """Start ``proc`` with SIGINT blocked, which a spawned process inherits (a forkserver's children
    inherit the server's): a Ctrl-C while it imports torch is taken once it can stop cleanly
    (``worker.take_interrupts``), not printed as a traceback under the study's line."""
    with sigint_held(), study_children():
        proc.start()


@contextlib.contextmanager
def study_children(held: str | None = None):
    """``$PEFTLAB_STUDY_PID`` set to this process while it starts the forkserver or a spawned worker, which die
    with it from their first import on (``worker.die_with_starting_study``), before torch is imported; with
    ``held``, ``$PEFTLAB_HELD_DATA`` too (``start_forkserver``)."""
    from peftlab.data.held import ENV_HELD_DATA
    from peftlab.study.executors.worker import STUDY_PID

    setting = {STUDY_PID: str(os.getpid()), **({ENV_HELD_DATA: held} if held else {})}
    previous = {name: os.environ.get(name) for name in setting}
    os.environ.update(setting)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def sigint_held():
    """SIGINT blocked in this thread, which a process started meanwhile inherits, and a Ctrl-C or
    SIGTERM taken only once the block ends (``errors.deferred_stops``), as a KeyboardInterrupt then.

    The mask alone does not hold a Ctrl-C back: the study process has other threads (torch's),
    the kernel hands the process's SIGINT to one of them, and Python raises its KeyboardInterrupt
    in the main thread wherever it is, e.g. between a spawned child's start and the call written
    to its pipe; the child then reads nothing and prints an EOFError traceback.
    """
    with deferred_stops():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def stop_processes(procs: list[multiprocessing.Process], grace: float = 30.0) -> None:
    """SIGTERM each process (a clean stop, see ``worker.INTERRUPTED``), SIGKILL what outlives ``grace``."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(grace)
        if proc.is_alive():
            proc.kill()
            proc.join()


def run_local(
    jobs: list[tuple[RunSpec, Path]],
    workers: int,
    progress: bool,
    on_done: Callable[[RunSpec, dict], None],
    stop_when: Callable[[RunSpec, Path], bool] | None = None,
    gpus: list[str | None] | None = None,
) -> None:
    """Run jobs in up to ``workers`` processes at once; each run sets its own threads (train.threads), and
    the worker of slot ``p`` gets the GPU ``gpus[p - 1]`` (``gpus.worker_gpus``; None: as this process).

    Ctrl-C or SIGTERM of the study, or a worker stopped by one, stops every worker cleanly and
    raises KeyboardInterrupt: the interrupted runs stay resumable. ``stop_when(spec, run_dir)``,
    asked about each running job every ``POLL_SECONDS`` (a halving search's pruner), stops a job
    the same way when it says so; that job's ``on_done`` gets ``{"status": "stopped"}``, as does one whose run
    stopped at its ``last_epoch`` (a rung's, ``worker.AT_LAST_EPOCH``). Jobs that
    ``on_done`` appends to ``jobs`` are run too (``side_by_side``: searches add trials as others end).
    Each run in a process forked from the forkserver (``spawn_workers.run_spawned``: long-lived
    spawned workers, the same outcomes).
    """
    from peftlab.study.executors.worker import process_main

    if not jobs:  # every run done: no forkserver is started (it imports torch, timm and PEFT)
        return
    ctx = worker_context(preload=preload_for(jobs), held=held_for(jobs))
    taken = 0  # jobs started, in order
    running: dict[int, tuple[RunSpec, Path, multiprocessing.Process, int]] = {}
    started: dict[int, tuple[float, float]] = {}  # each running job's worker: when it started, ``earlier_wall``
    free_positions = list(range(1, workers + 1))
    gpus = gpus or [None] * workers
    stopping: set[int] = set()
    try:
        while taken < len(jobs) or running:
            while taken < len(jobs) and len(running) < workers:
                spec, run_dir = jobs[taken]
                taken += 1
                position = free_positions.pop(0)
                proc = ctx.Process(
                    target=process_main,
                    name=f"peftlab-{spec.run_id}",
                    args=(
                        to_dict(spec.config),
                        str(run_dir),
                        progress,
                        position,
                        os.getpid(),
                        gpus[position - 1],
                        spec.last_epoch,
                        environment_since_start(),
                    ),
                )
                earlier = earlier_wall(run_dir)  # before its worker writes a checkpoint
                # held: a Ctrl-C in the middle of the start closed the forkserver's socket while it read
                # the new worker's descriptors, and it printed an EOFError traceback under the study's line
                start_held(proc)
                running[proc.sentinel] = (spec, run_dir, proc, position)
                started[proc.sentinel] = (time.perf_counter(), earlier)
            ended = multiprocessing.connection.wait(list(running), timeout=POLL_SECONDS if stop_when else None)
            if stop_when is not None:
                stop_asked(running, ended, stopping, stop_when)
            for sentinel in ended:
                spec, run_dir, proc, position = running.pop(sentinel)
                proc.join()
                free_positions.append(position)
                stopped = sentinel in stopping
                stopping.discard(sentinel)  # a later worker's sentinel may reuse its number: never stopped unasked
                began, earlier = started.pop(sentinel)
                wall = time.perf_counter() - began
                on_done(spec, worker_outcome(spec, run_dir, proc.exitcode, stopped, wall=wall, earlier=earlier))
    except KeyboardInterrupt:
        stop_processes([proc for _, _, proc, _ in running.values()])
        raise


def stop_asked(
    running: dict[int, tuple[RunSpec, Path, multiprocessing.Process, int]],
    ended: list,
    stopping: set[int],
    stop_when: Callable[[RunSpec, Path], bool],
) -> None:
    """Stop each running job that ``stop_when`` asks to stop (once), adding it to ``stopping``."""
    for sentinel, (spec, run_dir, proc, _) in running.items():
        if sentinel not in ended and sentinel not in stopping and stop_when(spec, run_dir):
            proc.terminate()  # SIGTERM: the worker stops cleanly (INTERRUPTED), its run resumable
            stopping.add(sentinel)


def worker_outcome(
    spec: RunSpec, run_dir: Path, exitcode: int | None, stopped: bool, wall: float = 0.0, earlier: float = 0.0
) -> dict:
    """What ``on_done`` gets for a worker that ended with ``exitcode`` after ``wall`` seconds: its run's result,
    or where it wrote none, why (stopped by ``stop_when`` or at its job's last epoch, by another process's lock, by
    an outside cause), or its failure, recorded here; ``earlier``: its run's earlier processes' wall seconds
    (``earlier_wall``), added as ``EARLIER_WALL``. A worker interrupted by Ctrl-C raises KeyboardInterrupt."""
    from peftlab.study.executors.worker import AT_LAST_EPOCH, IN_USE, INTERRUPTED

    result = read_result(run_dir)
    if result is not None:
        return {**result, EARLIER_WALL: earlier} if earlier else result
    if stopped or exitcode == AT_LAST_EPOCH:
        return stopped_outcome(run_dir, wall, earlier)
    if exitcode == INTERRUPTED:  # Ctrl-C reaches the workers too
        raise KeyboardInterrupt(f"run {spec.run_id} was interrupted")
    if exitcode == IN_USE:  # `peftlab train` on it elsewhere: not ours
        return {
            "status": "failed",
            "error": "its run directory is being trained by another "
            "process (see its .lock); run the study again when that ends",
        }
    why = outside_cause(exitcode)
    if why is not None:  # not the run's failure: it stays pending
        return {"status": "pending", "error": why}
    result = failure("failed", f"worker process ended without a result (exit code {exitcode})", to_dict(spec.config))
    try:
        write_result(run_dir, result)
    except OSError as err:  # a full disk, where the worker died too: nothing recorded, pending
        if err.errno not in STORAGE_ERRORS:
            raise
        return {
            "status": "pending",
            "error": "its file system or quota is full (it ended "
            f"without a result, and recording its failure met: {err.strerror})",
        }
    return result


def earlier_wall(run_dir: Path) -> float:
    """The wall seconds of the processes that trained the run in ``run_dir`` so far, each up to its last checkpoint
    (its checkpoint's ``wall_seconds``; 0.0 without one, or from before it was kept): read as a worker starts, the
    time of the processes before it. A run without a checkpoint costs no torch import here."""
    if not (run_dir / "checkpoint").is_dir():
        return 0.0
    from peftlab.training.checkpoint import spent_seconds

    spent = spent_seconds(run_dir / "checkpoint")
    return spent[2] if spent is not None and spent[2] is not None else 0.0


def stopped_outcome(run_dir: Path, wall: float | None = None, earlier: float = 0.0) -> dict:
    """A run stopped by its search (``stop_when``, a rung's last epoch): ``{"status": "stopped"}`` with the time it
    spent, ``timing`` as a result's: training and validation from its checkpoint (kept across resumes; the steps
    after it, which a pruner's stop threw away, left out), ``wall`` seconds, its last process's, measured by the
    executor (the run wrote none), and ``earlier``, its processes' before that one (``EARLIER_WALL``). Without
    ``wall`` (a run stopped in an earlier call of the study), the checkpoint's wall seconds: every process's up to
    its last checkpoint (none from a checkpoint from before they were kept: its time then not counted)."""
    from peftlab.training.checkpoint import spent_seconds

    spent = spent_seconds(run_dir / "checkpoint")
    if spent is None:  # stopped before its first checkpoint: nothing it kept to count
        return {"status": "stopped"}
    train, val, kept = spent
    if wall is None:
        timing = {"train_seconds": train, "val_seconds": val, "test_seconds": 0.0}  # stopped: never tested
        return {"status": "stopped", "timing": timing if kept is None else {**timing, "wall_seconds": kept}}
    timing = {"train_seconds": train, "val_seconds": val, "test_seconds": 0.0, "wall_seconds": round(wall, 3)}
    return {"status": "stopped", "timing": timing, **({EARLIER_WALL: earlier} if earlier else {})}


def outside_cause(exitcode: int | None) -> str | None:
    """Why a worker that ended without a result was stopped from outside (a signal: the
    out-of-memory killer's SIGKILL, or a full disk); None for an end of the run's own making."""
    from peftlab.study.executors.worker import FULL_DISK

    if exitcode == FULL_DISK:
        return "its file system or quota is full (see its worker.log)"
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else f"signal {-exitcode}"
        return f"its worker was killed by {name}" + (
            " (the out-of-memory killer?)" if -exitcode == signal.SIGKILL else ""
        )
    return None
