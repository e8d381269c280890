"""What a Slurm job of the submitit executor calls: a function that submitit may requeue.

Imported only where submitit is installed (``peftlab.study.slurm`` imports it after checking).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import submitit
from submitit.helpers import Checkpointable


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
        mark = submitit.JobEnvironment().paths.folder / self.mark
        mark.write_text(f"{submitit.JobEnvironment().job_id}\n")
        return super().checkpoint(*args)
