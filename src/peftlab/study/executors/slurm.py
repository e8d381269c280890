"""The submitit executor: every run a Slurm job (one job array per study call).

With ``cluster="local"`` submitit's LocalExecutor runs the same jobs as local processes, with
the same files (pickled call, logs, result) under the study's ``slurm/`` folder: how the tests
run it, and a way to try a study's Slurm setup without a cluster. submitit is imported here,
so peftlab works without it (``pip install -e .[slurm]``).

On Slurm, peftlab asks Slurm itself what became of its jobs (``squeue``, which every cluster
answers) instead of submitit's ``sacct`` calls, which a cluster without accounting answers with
an error and nothing else: a job that died without writing its result would be waited for
forever. The same ``squeue`` says why a job waits (its state and reason), which the study's
progress line shows (``on_wait``). Slurm's commands run with a time limit, and what they print goes
to the library log (``peftlab.utils.libraries``), never the user's terminal; so does what submitit
prints when sbatch refuses a submission, which ends the study in one line (``slurm_request.refusal``).

A job array carries the study's name (``peftlab:<study>``); each of its tasks is renamed for its run
(``peftlab:<study>:<run id>``, one ``scontrol update`` each), so that ``squeue`` names the run each job trains.
What a cluster can never run is refused before the first submission (``slurm_request.check_request``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path

from peftlab.study.executors.slurm_request import check_request, refusal, slurm_parameters
from peftlab.utils.errors import UserError, deferred_stops
from peftlab.utils.libraries import to_library_log
from peftlab.utils.programs import ProgramTimeout, run_program

POLL_SECONDS = 1.0  # how often finished jobs are looked for (their result files)
QUEUE_SECONDS = 5.0  # how often squeue is asked what Slurm still holds of the study's jobs
REQUEUE_SECONDS = 300.0  # a job that marked itself requeued is not lost while Slurm takes this long to queue it again
UNREACHABLE_SECONDS = 600.0  # squeue failing this long (a controller down): the jobs still out are given up as lost
COMMAND_SECONDS = 10  # squeue and scancel: Slurm's default MessageTimeout; longer is a controller that does not answer
ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}  # Slurm's final job states (a requeued job is PENDING again)

REQUEUE_MARK = "requeued"  # a file in a job's folder: the job's own Slurm signal requeued it

log = logging.getLogger(__name__)  # peftlab's own warnings: one "peftlab: warning:" line on stderr
slurm_log = logging.getLogger("slurm")  # what Slurm's commands print: the library log


def check_available(options) -> None:
    """A UserError line when submitit, or with ``--slurm-cluster slurm`` Slurm's commands, are not here."""
    if find_spec("submitit") is None:
        raise UserError("--executor submitit needs the submitit package: pip install -e .[slurm]")
    if options.slurm_cluster != "local" and (shutil.which("sbatch") is None or shutil.which("srun") is None):
        raise UserError(
            "--executor submitit: no Slurm here (sbatch or srun is not on PATH); --slurm-cluster local "
            "runs the jobs as local processes"
        )


def check_ready(options) -> None:
    """``check_available``'s line; then, on Slurm, what it could never run or refuses of the jobs asked for
    (``slurm_request.check_request``), in one line naming the flag."""
    check_available(options)
    if options.slurm_cluster != "local":
        check_request(options, slurm_command)


def make_executor(options, names: list[str] | None = None):
    check_available(options)
    import submitit

    to_library_log("submitit")  # its import gave its logger handlers of its own on stdout and stderr
    # SlurmExecutor and LocalExecutor by name: submitit's AutoExecutor would pick one itself
    folder = Path(options.folder) / "%j"  # one folder per job: pickled call, logs, result
    if options.slurm_cluster == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=options.slurm_time, gpus_per_node=options.slurm_gpus or 0)
        return executor
    executor = submitit.SlurmExecutor(folder=folder)
    params = slurm_parameters(options)
    if names is not None and len(names) == 1:  # one call is one plain job (no array): its run's name at once
        params["job_name"] = names[0]
    executor.update_parameters(**params)
    return executor


def submit(
    fn: Callable,
    arglists: list[tuple],
    options,
    names: list[str] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[tuple[int, str | None]]:
    """Run ``fn(*args)`` for each of ``arglists`` as one job of a job array, each task named by ``names``;
    yield ``(index, None)`` as each job ends normally, ``(index, why)`` when it failed or was lost;
    ``on_wait(text)`` when what the jobs wait for changes (``SlurmQueue.waiting``). Leaving early
    (Ctrl-C, SIGTERM, an error) cancels the jobs still queued or running (scancel)."""
    executor = make_executor(options, names)
    on_slurm = options.slurm_cluster != "local"
    if on_slurm:  # a preempted or timed-out job is requeued, and resumes its run
        from peftlab.study.executors.slurm_requeue import Requeueable

        fn = Requeueable(fn, REQUEUE_MARK)
    pending = {}
    queue = SlurmQueue(options.slurm_lost_after) if on_slurm else None
    try:
        with deferred_stops():  # a Ctrl-C during sbatch lands once the job ids are known, and cancels them
            pending = dict(enumerate(map_array(executor, fn, arglists, options)))
        if not on_slurm:  # a local job's result is written before its process ends: submitit's wait for it to
            for job in pending.values():  # appear (15 s, for a shared file system) would only delay a lost one
                job._results_timeout_s = 0
        if queue is not None and names is not None and len(pending) > 1:
            name_tasks(pending, names)
        waiting = ""
        while pending:
            if queue is not None:
                queue.ask([job.job_id for job in pending.values()])
                if on_wait is not None and (now := queue.waiting(list(pending.values()))) != waiting:
                    waiting = now
                    on_wait(waiting)
            for index, job in list(pending.items()):
                ended, why = job_end(job, queue)
                if ended:
                    del pending[index]
                    yield index, why
            if pending:
                time.sleep(POLL_SECONDS)
    except BaseException:
        cancel(list(pending.values()), on_slurm)
        raise


def map_array(executor, fn: Callable, arglists: list[tuple], options) -> list:
    """submitit's ``map_array``: the submitted jobs. sbatch's refusal is one UserError line naming the flag
    (``slurm_request.refusal``); what submitit prints of it goes to the library log."""
    from submitit.core.utils import FailedJobError

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return executor.map_array(fn, *zip(*arglists))
    except FailedJobError as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        raise UserError(refusal(lines[-1] if lines else "sbatch failed", options)) from None
    finally:
        if said.getvalue().strip():
            slurm_log.warning("sbatch: %s", said.getvalue().strip())


def name_tasks(jobs: dict, names: list[str]) -> None:
    """Name each task of a job array for its run (``scontrol update``: Slurm then keeps it as a job of its own
    in the array, under the array's limits). A name Slurm refuses is a line in the library log: the job
    runs all the same; a controller that does not answer ends the renaming."""
    for index, job in jobs.items():
        _, why = slurm_command("scontrol", "update", f"JobId={job.job_id}", f"JobName={names[index]}")
        if why is not None and "did not answer" in why:
            return


def job_end(job, queue: SlurmQueue | None) -> tuple[bool, str | None]:
    """Whether the job has ended, and if so ``failure``'s line or why it was lost (None: it returned)."""
    if queue is None:  # submitit's LocalExecutor: it watches its own processes
        return (True, failure(job, job.state)) if job.done() else (False, None)
    if has_result(job):  # its state when squeue last saw it ended (else a stale RUNNING: left out)
        state = queue.states.get(job.job_id)
        return True, failure(job, state if state in ENDED else None)
    queue.note_requeue(job.job_id, job.paths.folder / REQUEUE_MARK)
    lost = queue.lost(job.job_id)
    return (True, f"{lost}; log {job.paths.stderr}") if lost is not None else (False, None)


def has_result(job) -> bool:
    """Whether a Slurm job wrote its result file (its folder's attributes refreshed first, as submitit
    does: a shared file system may cache that it was missing)."""
    folder = job.paths.folder
    try:
        folder.chmod(folder.stat().st_mode)
    except OSError:
        pass
    return job.paths.result_pickle.exists()


def failure(job, state: str | None) -> str | None:
    """None for a job that returned; else one line: its id, state and log file."""
    try:
        job.result()
        return None
    except Exception as err:
        last = [line for line in str(err).splitlines() if line.strip()]
        why = last[-1].strip() if last else type(err).__name__
        return f"job {job.job_id}{f', {state}' if state else ''}: {why}; log {job.paths.stderr}"


class SlurmQueue:
    """What squeue last said of the study's jobs (asked at most every ``QUEUE_SECONDS``).

    A job that left the queue, or sits in a final state, without its result file for
    ``lost_after`` seconds (``--slurm-lost-after``) is lost (killed, out of memory, its node lost): its
    run stays pending.
    A job that marked itself requeued (Slurm's preemption or pre-timeout signal) gets
    ``REQUEUE_SECONDS`` from when the driver saw the mark: between its two lives Slurm may show it
    FAILED for a while on a busy controller.
    When squeue has not answered for ``UNREACHABLE_SECONDS`` every job still out is given up
    as lost too (they may still run: a later study call's jobs wait for theirs to end).
    """

    def __init__(self, lost_after: float) -> None:
        self.lost_after = lost_after
        self.states: dict[str, str] = {}
        self.reasons: dict[str, str] = {}  # why squeue says a job waits (Resources, Priority, BeginTime, ...)
        self.gone_since: dict[str, float] = {}
        self.requeues: dict[str, tuple[float, float]] = {}  # job id: (its mark's mtime, when the driver saw it)
        self.asked = float("-inf")
        self.answered = time.time()
        self.error: str | None = None

    def ask(self, job_ids: list[str]) -> None:
        now = time.time()
        if now - self.asked < QUEUE_SECONDS:
            return
        self.asked = now
        arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
        out, self.error = slurm_command(
            "squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r", f"--jobs={','.join(arrays)}"
        )
        if out is None:
            return
        self.answered = now
        rows = [[part.strip() for part in line.split("|", 2)] for line in out.splitlines() if line.count("|") >= 1]
        self.states = {row[0]: row[1] for row in rows}
        self.reasons = {row[0]: row[2] for row in rows if len(row) == 3}
        for job_id in job_ids:
            if self.states.get(job_id, "ENDED") in ENDED | {"ENDED"}:
                self.gone_since.setdefault(job_id, now)
            else:  # queued, running, or requeued after a preemption
                self.gone_since.pop(job_id, None)

    def waiting(self, jobs: list) -> str:
        """What the jobs wait for, as squeue last said: ``Slurm: job 12_0 PENDING (Resources)``, ``Slurm: 3
        jobs PENDING (Priority), job 12_4 requeued, PENDING (BeginTime)``; "" when none waits (all running)."""
        groups: Counter = Counter()
        first: dict[tuple, str] = {}
        for job in jobs:
            state = self.states.get(job.job_id)
            reason = self.reasons.get(job.job_id, "None")
            if state is None or state in ENDED or state in ("RUNNING", "COMPLETING"):
                continue
            if state == "PENDING" and reason in ("None", "") and job.job_id not in self.requeues:
                continue  # just submitted: the scheduler has not looked at it yet
            requeued = job.job_id in self.requeues or state.startswith("REQUEUE")  # its mark, or Slurm's state
            key = ("requeued, " if requeued else "", state, "" if reason in ("None", "") else f" ({reason})")
            groups[key] += 1
            first.setdefault(key, job.job_id)
        parts = [f"{f'job {first[key]}' if n == 1 else f'{n} jobs'} {''.join(key)}" for key, n in groups.items()]
        return f"Slurm: {', '.join(parts)}" if parts else ""

    def note_requeue(self, job_id: str, mark: Path) -> None:
        """Remember when the driver first saw the job's requeue mark (each new one): the driver's own
        clock, so a compute node's clock does not matter."""
        try:
            mtime = mark.stat().st_mtime
        except OSError:
            return
        if self.requeues.get(job_id, (None, 0.0))[0] != mtime:
            self.requeues[job_id] = (mtime, time.time())

    def lost(self, job_id: str) -> str | None:
        """Why the job counts as lost (one line naming it), None while it may still end with its result."""
        now = time.time()
        if now - self.answered > UNREACHABLE_SECONDS:
            return (
                f"job {job_id}: Slurm did not answer squeue for {UNREACHABLE_SECONDS / 60:.0f} minutes "
                f"({self.error}); it may still run"
            )
        since = self.gone_since.get(job_id)
        if since is None or now - since < self.lost_after:
            return None
        if job_id in self.requeues and now - self.requeues[job_id][1] < REQUEUE_SECONDS:
            return None
        state = self.states.get(job_id)
        return f"job {job_id}, " + (state if state else "gone from Slurm's queue")


def cancel(jobs: list, on_slurm: bool) -> None:
    """Cancel the jobs still out; on Slurm one scancel with a time limit (a controller that does not
    answer would hold the interrupted driver), and one warning line when it could not be confirmed."""
    if not on_slurm:
        for job in jobs:
            job.cancel(check=False)
        return
    if not jobs:
        return
    job_ids = [job.job_id for job in jobs]
    _, error = slurm_command("scancel", *job_ids)
    if error is not None:
        log.warning(
            f"the cancellation of Slurm jobs {' '.join(job_ids)} could not be confirmed ({error}): "
            "see squeue, and scancel those still there"
        )


def slurm_command(*args: str) -> tuple[str | None, str | None]:
    """Run a Slurm client command for at most ``COMMAND_SECONDS``: ``(stdout, None)``, or ``(None, why)``
    in one line. What it prints on stderr goes to the library log."""
    try:
        proc = run_program(args, seconds=COMMAND_SECONDS, fix="check the Slurm controller (squeue)")
    except ProgramTimeout:
        slurm_log.warning("%s: no answer in %d s", " ".join(args), COMMAND_SECONDS)
        return None, f"{args[0]} did not answer in {COMMAND_SECONDS} s"
    except OSError as err:
        return None, f"{args[0]}: {err.strerror}"
    if proc.stderr.strip():
        slurm_log.warning("%s: %s", " ".join(args), proc.stderr.strip())
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        return None, lines[-1] if lines else f"{args[0]} exited with status {proc.returncode}"
    return proc.stdout, None
