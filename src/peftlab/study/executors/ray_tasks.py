"""The Ray executor: every run a Ray task, on a cluster (``--ray-address`` or ``$RAY_ADDRESS``)
or on a local Ray started for the study (with all this machine's CPUs).

Ray is imported here, so peftlab works without it (``pip install -e .[ray]``). A Ray this
process finds already initialized (a notebook, a test) is used as it is and left running;
one it started or connected to is shut down when the calls end, or, inside ``kept`` (a study), when the
study ends: its pretraining, every batch of its searches' trials and its final runs share one start of Ray
and its warm workers (each start of a local Ray costs about 4 s, and each fresh worker its imports again).

A task whose worker died (SIGKILL, an out-of-memory kill, its node lost) is run again by Ray,
``WORKER_DEATH_RETRIES`` times: the run resumes from its checkpoint, so a retry repeats at most
the steps since it, and the study completes in the same call. A task that raised is not retried
(``retry_exceptions=False``): the run records its own failures, and it would raise again.
A retry is announced in one warning line when the task ends: each attempt appends a line to a
file of its own in the executor's folder (``<study dir>/ray``, on the shared file system), as
Ray tells the driver nothing of its retries; the task reads its attempt from there too (``ATTEMPT_ENV``),
for its run's record. Each task is named for its run (``peftlab:<study>:<run id>``, as ``ray list tasks``
shows it). Whether a named cluster answers and lets the driver in is asked before (``ray_address``), and
what Ray's core prints on stderr while it connects goes to the library log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path

from peftlab.study.executors.section import option_name
from peftlab.utils.errors import UserError
from peftlab.utils.libraries import stderr_to_library_log, to_library_log

WORKER_DEATH_RETRIES = 1  # Ray's max_retries for a task whose worker died: its run resumes from its checkpoint
ATTEMPT_ENV = "PEFTLAB_RAY_ATTEMPT"  # in a task's process: its attempt (1, 2 after a retry), "" where uncounted
log = logging.getLogger(__name__)  # peftlab's own warnings: one "peftlab: warning:" line on stderr
KEEPING: list[bool] = []  # one entry per ``kept`` open: a Ray that ``submit`` starts stays up until the last closes
OWNED: dict[str, bool] = {"ray": False}  # whether the Ray now initialized is one this process started or connected to


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Within it, a Ray that ``submit`` starts (or connects to) stays up between calls; it is shut down when the
    outermost ``kept`` ends, however it ends. A Ray found already initialized is left running, as always."""
    KEEPING.append(True)
    try:
        yield
    finally:
        KEEPING.pop()
        if not KEEPING:
            shut_down_own()


def shut_down_own() -> None:
    """Shut down the Ray this process started or connected to, if any."""
    if OWNED["ray"]:
        OWNED["ray"] = False
        import ray

        ray.shutdown()


def counted(fn: Callable, attempts: str | None, *args):
    """``fn(*args)`` as a Ray task, after appending a line to the file ``attempts``: one per attempt, whose
    number the task finds in ``$PEFTLAB_RAY_ATTEMPT`` (``worker.job_execution``)."""
    number = ""
    if attempts is not None:
        with open(attempts, "a+", encoding="utf-8") as out:
            out.write(f"{socket.gethostname()} {os.getpid()}\n")
            out.seek(0)
            number = str(len(out.read().splitlines()))
    os.environ[ATTEMPT_ENV] = number  # a worker process runs one task after another: each sets its own
    return fn(*args)


def announce_retries(attempts: str | None, args: tuple) -> None:
    """One warning line when a task that returned ran more than once (its worker died, Ray ran it again)."""
    try:
        count = len(Path(attempts).read_text(encoding="utf-8").splitlines()) if attempts else 0
    except OSError:
        return
    if count > 1:
        what = Path(args[1]).name if len(args) > 1 else "a task"  # run_job and pretrain_job: (config, directory, cwd)
        log.warning(
            f"Ray ran {what} again after its worker died ({count} attempts); it went on from its last checkpoint"
        )


def check_available(options) -> None:
    """A UserError line when Ray is not installed (a cluster's address is known to answer only once
    the study connects to it)."""
    if find_spec("ray") is None:
        raise UserError("--executor ray needs the ray package: pip install -e .[ray]")


def named_address(options) -> tuple[str, str | None]:
    """The Ray address the study names and what named it, for its lines: ``--ray-address`` or ``$RAY_ADDRESS``
    (None: a local Ray, started for the study)."""
    if options.ray_address:
        return f"{option_name(options, 'ray_address')}={options.ray_address}", options.ray_address
    if os.environ.get("RAY_ADDRESS"):
        return f"RAY_ADDRESS={os.environ['RAY_ADDRESS']}", os.environ["RAY_ADDRESS"]
    return "--ray-address", None


def submit(
    fn: Callable,
    arglists: list[tuple],
    options,
    names: list[str] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[tuple[int, str | None]]:
    """Run ``fn(*args)`` for each of ``arglists`` as a Ray task named by ``names``; yield ``(index, None)``
    as each returns, ``(index, why)`` when it raised or its worker died ``WORKER_DEATH_RETRIES + 1`` times
    (such a run is lost: the next study call submits it again). Leaving early (Ctrl-C, SIGTERM,
    an error) kills the tasks still running, and Ray retries no cancelled task. ``on_wait``: unused (Ray
    says nothing of why a task waits)."""
    check_available(options)
    import ray

    to_library_log("ray")  # its import gave its logger a stderr handler (the token and start-up lines)
    started = not ray.is_initialized()  # else one found (a notebook's, a test's) or one this process keeps
    if started:  # never a Ray found by scanning this machine's processes: the one named, or a new local one
        flag, address = named_address(options)
        try:
            extra = {"include_dashboard": False} if address in (None, "local") else {}  # not with a cluster's
            with stderr_to_library_log():  # its core's connection lines (C++, on file descriptor 2)
                ray.init(address=address or "local", log_to_driver=False, configure_logging=False, **extra)
        except Exception as err:  # a refusal the check before (ray_address) could not see: a version mismatch, ...
            lines = [line for line in str(err).splitlines() if line.strip()]
            raise UserError(f"{flag}: {type(err).__name__}: {lines[0] if lines else 'Ray did not start'}") from None
        OWNED["ray"] = True
    try:
        task = ray.remote(
            num_cpus=options.ray_cpus,
            num_gpus=options.ray_gpus or 0,
            resources=options.ray_resources or None,
            max_retries=WORKER_DEATH_RETRIES,
            retry_exceptions=False,
        )(counted)
        folder = attempts_folder(options.folder)
        attempts = [str(Path(folder) / f"{index}.attempts") if folder else None for index in range(len(arglists))]
        named = [task.options(name=names[index]) if names else task for index in range(len(arglists))]
        index_of = {named[index].remote(fn, attempts[index], *args): index for index, args in enumerate(arglists)}
        pending = list(index_of)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        ray.get(ref)
                        why = None
                    except Exception as err:
                        lines = [line for line in str(err).splitlines() if line.strip()]
                        why = f"{type(err).__name__}: {lines[-1].strip() if lines else ''}"
                    if why is None:  # an end without a result is said by the caller (lost)
                        announce_retries(attempts[index_of[ref]], arglists[index_of[ref]])
                    yield index_of[ref], why
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not KEEPING:
            shut_down_own()


def attempts_folder(parent: str | None) -> str | None:
    """A new folder under ``parent`` for this call's attempt files (None without a parent, or where
    it cannot be made: the retries then go unannounced, the runs are the same)."""
    if parent is None:
        return None
    try:
        Path(parent).mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix="attempts-", dir=parent)
    except OSError:
        return None
