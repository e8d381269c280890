"""What a Slurm job of the submitit executor calls: a function that submitit may requeue.

Imported only where submitit is installed (``peftlab.study.executors.slurm`` imports it after checking).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import Any

import submitit
from submitit.helpers import Checkpointable
from submitit.slurm.slurm import SlurmJobEnvironment

from peftlab.utils.programs import run_program


class Requeueable(Checkpointable):
    """``fn`` made checkpointable for submitit, so that Slurm's pre-timeout or preemption signal
    (USR2, which submitit asks sbatch for) requeues the job with the same call instead of ending
    it. The call carries no state: the requeued job resumes the run from the run's own checkpoint."""

    def __init__(self, fn: Callable, mark: str) -> None:
        self.fn = fn
        self.mark = mark  # the file it writes in its job's folder when it is requeued

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def checkpoint(self, *args: Any) -> Any:
        """Mark the job's folder before submitit requeues it: while Slurm moves the job back to its
        queue it may show a final state (FAILED), and the driver must not count it lost then."""
        environment = submitit.JobEnvironment()
        mark = environment.paths.folder / self.mark
        mark.write_text(f"{environment.job_id}\n")
        if isinstance(environment, SlurmJobEnvironment):
            type(environment)._requeue = requeue  # submitit calls it once this returns
        return super().checkpoint(*args)


def requeue(environment: SlurmJobEnvironment, countdown: int) -> None:
    """submitit's ``SlurmJobEnvironment._requeue`` (``scontrol requeue <job>``), except that an scontrol
    stopped by SIGTERM has requeued the job: Slurm ends a requeued job's processes with SIGTERM, and
    the scontrol this job started is one of them whenever it has not exited first. submitit's own
    ``check_call`` raised then, and the run was recorded as failed instead of resuming."""
    from submitit.core import logger

    done = run_program(["scontrol", "requeue", str(environment.job_id)], seconds=60, fix="requeue the job by hand")
    if done.returncode not in (0, -signal.SIGTERM):
        raise subprocess.CalledProcessError(done.returncode, done.args)
    logger.get_logger().info(f"Requeued job {environment.job_id} ({countdown} remaining timeouts)")  # as submitit
