"""The Ray executor: every run a Ray task, on a cluster (``--ray-address`` or ``$RAY_ADDRESS``)
or on a local Ray started for the study (with all this machine's CPUs).

Ray is imported here, so peftlab works without it (``pip install -e .[ray]``). A Ray this
process finds already initialized (a notebook, a test) is used as it is and left running;
one it started or connected to is shut down when the calls end.

A task whose worker died (SIGKILL, an out-of-memory kill, its node lost) is run again by Ray,
``WORKER_DEATH_RETRIES`` times: the run resumes from its checkpoint, so a retry repeats at most
the steps since it, and the study completes in the same call. A task that raised is not retried
(``retry_exceptions=False``): the run records its own failures, and it would raise again.
A retry is announced in one warning line when the task ends: each attempt appends a line to a
file of its own in the executor's folder (``<study dir>/ray``, on the shared file system), as
Ray tells the driver nothing of its retries.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path

from peftlab.utils.errors import UserError
from peftlab.utils.libraries import to_library_log

WORKER_DEATH_RETRIES = 1  # Ray's max_retries for a task whose worker died: its run resumes from its checkpoint
log = logging.getLogger(__name__)  # peftlab's own warnings: one "peftlab: warning:" line on stderr


def counted(fn: Callable, attempts: str | None, *args):
    """``fn(*args)`` as a Ray task, after appending a line to the file ``attempts``: one per attempt."""
    if attempts is not None:
        with open(attempts, "a", encoding="utf-8") as out:
            out.write(f"{socket.gethostname()} {os.getpid()}\n")
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


def submit(fn: Callable, arglists: list[tuple], options) -> Iterator[tuple[int, str | None]]:
    """Run ``fn(*args)`` for each of ``arglists`` as a Ray task; yield ``(index, None)`` as each
    returns, ``(index, why)`` when it raised or its worker died ``WORKER_DEATH_RETRIES + 1`` times
    (such a run is lost: the next study call submits it again). Leaving early (Ctrl-C, SIGTERM,
    an error) kills the tasks still running, and Ray retries no cancelled task."""
    check_available(options)
    import ray

    to_library_log("ray")  # its import gave its logger a stderr handler (the token and start-up lines)
    started = not ray.is_initialized()
    if started:  # never a Ray found by scanning this machine's processes: the one named, or a new local one
        address = options.ray_address or os.environ.get("RAY_ADDRESS") or "local"
        try:
            extra = {"include_dashboard": False} if address == "local" else {}  # not allowed with a cluster's
            ray.init(address=address, log_to_driver=False, configure_logging=False, **extra)
        except (ConnectionError, ValueError) as err:
            raise UserError(f"--ray-address={address}: {str(err).splitlines()[0]}") from None
    try:
        task = ray.remote(
            num_cpus=options.ray_cpus,
            num_gpus=options.ray_gpus or 0,
            max_retries=WORKER_DEATH_RETRIES,
            retry_exceptions=False,
        )(counted)
        folder = attempts_folder(options.folder)
        attempts = [str(Path(folder) / f"{index}.attempts") if folder else None for index in range(len(arglists))]
        index_of = {task.remote(fn, attempts[index], *args): index for index, args in enumerate(arglists)}
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
        if started:
            ray.shutdown()


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
