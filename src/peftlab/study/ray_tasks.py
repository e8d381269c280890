"""The Ray executor: every run a Ray task, on a cluster (``--ray-address`` or ``$RAY_ADDRESS``)
or on a local Ray started for the study (with all this machine's CPUs).

Ray is imported here, so peftlab works without it (``pip install -e .[ray]``). A Ray this
process finds already initialized (a notebook, a test) is used as it is and left running;
one it started or connected to is shut down when the calls end.

A task whose worker died (SIGKILL, an out-of-memory kill, its node lost) is run again by Ray,
``WORKER_DEATH_RETRIES`` times: the run resumes from its checkpoint, so a retry repeats at most
the steps since it, and the study completes in the same call. A task that raised is not retried
(``retry_exceptions=False``): the run records its own failures, and it would raise again.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

from peftlab.errors import UserError

WORKER_DEATH_RETRIES = 1  # Ray's max_retries for a task whose worker died: its run resumes from its checkpoint


def submit(fn: Callable, arglists: list[tuple], options) -> Iterator[tuple[int, str | None]]:
    """Run ``fn(*args)`` for each of ``arglists`` as a Ray task; yield ``(index, None)`` as each
    returns, ``(index, why)`` when it raised or its worker died ``WORKER_DEATH_RETRIES + 1`` times
    (such a run is lost: the next study call submits it again). Leaving early (Ctrl-C, SIGTERM,
    an error) kills the tasks still running, and Ray retries no cancelled task."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs the ray package: pip install -e .[ray]") from None
    started = not ray.is_initialized()
    if started:  # never a Ray found by scanning this machine's processes: the one named, or a new local one
        address = options.ray_address or os.environ.get("RAY_ADDRESS") or "local"
        try:
            extra = {"include_dashboard": False} if address == "local" else {}  # not allowed with a cluster's
            ray.init(address=address, log_to_driver=False, **extra)
        except (ConnectionError, ValueError) as err:
            raise UserError(f"--ray-address={address}: {str(err).splitlines()[0]}") from None
    try:
        task = ray.remote(num_cpus=options.ray_cpus, num_gpus=options.ray_gpus, max_retries=WORKER_DEATH_RETRIES,
                          retry_exceptions=False)(fn)
        index_of = {task.remote(*args): index for index, args in enumerate(arglists)}
        pending = list(index_of)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        ray.get(ref)
                        why = None
                    except Exception as err:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, ...
                        lines = [line for line in str(err).splitlines() if line.strip()]
                        why = f"{type(err).__name__}: {lines[-1].strip() if lines else ''}"
                    yield index_of[ref], why
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()
