"""What a worker process does with one run: a run is a function of its spec and its directory.

Executors (local processes, Slurm jobs through submitit, Ray tasks) only decide where
``execute_run`` is called. It never raises: the outcome is the run directory's result.json.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from peftlab.config.schema import RunConfig, from_dict
from peftlab.study.executors.gpus import use_gpu
from peftlab.training.run_result import Execution, RunResult, execution_here, failure, read_result, write_result
from peftlab.utils.errors import EpochStop, ignore_further_stops, stops_unwrapped, take_stops, trained_to
from peftlab.utils.files import printable, write_json_atomic
from peftlab.utils.libraries import quiet_libraries, without_bitsandbytes
from peftlab.utils.locks import DirectoryInUse, wait_until_free

PR_SET_PDEATHSIG = 1
STUDY_PID = "PEFTLAB_STUDY_PID"  # set while a study starts its forkserver or a spawned worker: the pid they die with
INTERRUPTED = 130  # exit code of a worker stopped by Ctrl-C or SIGTERM: no result, its run stays resumable
IN_USE = 75  # exit code of a worker whose run directory another process is training: it writes nothing
FULL_DISK = 74  # exit code of a worker stopped by a full file system or quota: no result, its run stays pending
AT_LAST_EPOCH = 76  # exit code of a worker whose run stopped at its job's last epoch (a rung's): no result, resumable
DISK_FULL_ERRORS = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded"}
WORKER_LOG = "worker.log"  # a local worker's stderr, in its run directory (the study's terminal shows one line)


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent ends (PR_SET_PDEATHSIG; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass


def die_with_starting_study() -> None:
    """In the study's forkserver (this module is its first preload) or a spawned worker (whose target is here),
    as this module is imported: die with the study from now on, not once the imports of torch, timm and PEFT
    that follow are done. The forkserver reads its parent's end only after them, so a study killed while they
    ran (seconds; 23 on a loaded machine) left it importing on. ``$PEFTLAB_STUDY_PID`` names the study while it
    starts them (``local.study_children``); it is removed here, so that no process started later inherits it."""
    study = os.environ.pop(STUDY_PID, "")
    if not study.isdigit():
        return
    die_with_parent()
    if os.getppid() != int(study):  # the study died before the signal was set: this process was reparented
        os.kill(os.getpid(), signal.SIGKILL)


die_with_starting_study()

# The forkserver imports this module first (the runner's preload), then peft; bitsandbytes, which a
# quantized run imports, would log on stderr: every process that runs runs is quieted before that.
quiet_libraries()


def die_with_study(study_pid: int) -> None:
    """SIGKILL this process as soon as the study process is gone, whatever killed it.

    A worker's parent is the forkserver, which can outlive a killed study, so Linux's
    PR_SET_PDEATHSIG (kept for the parent) is not enough: a daemon thread also watches the
    study's pid. A killed study thus leaves no worker that trains on and writes its result
    while a rerun trains the same run.
    """
    die_with_parent()

    def watch() -> None:
        while True:
            try:
                os.kill(study_pid, 0)
                if ended(study_pid):  # a zombie its parent has yet to reap: gone all the same
                    os.kill(os.getpid(), signal.SIGKILL)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGKILL)
            except PermissionError:
                pass  # alive, owned by another user
            if os.getppid() == 1:  # reparented: the forkserver and the study are gone
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.1)

    threading.Thread(target=watch, name="peftlab-die-with-study", daemon=True).start()


def disk_full(err: BaseException) -> str | None:
    """The full file system or quota (ENOSPC, EDQUOT) behind ``err`` in one line, None when there is none.

    Libraries wrap it: torch.save raises a RuntimeError whose context is the OSError, and
    safetensors only says it in its message ("os error 28"). A full disk is not the run's
    failure: the run stays pending and the same command resumes it once there is space.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRORS:
            where = f"{err.filename}: " if err.filename else ""
            return f"{where}{DISK_FULL_ERRORS[err.errno]} ({errno.errorcode[err.errno]})"
        for code, text in DISK_FULL_ERRORS.items():
            if text in str(err) or f"os error {code})" in str(err):
                return f"{text} ({errno.errorcode[code]})"
        err = err.__cause__ or err.__context__
    return None


def stop_for_full_disk(run_dir: Path, why: str) -> None:
    """Exit with ``FULL_DISK``, leaving the run as it was before this attempt: pending, its checkpoint
    kept. A failed result this attempt managed to write is removed (the run was pending when it
    started: the runner starts no finished run)."""
    try:
        if (read_result(run_dir) or {}).get("status") == "failed":
            (run_dir / "result.json").unlink()
    except OSError:
        pass
    print(f"peftlab: {printable(why)}; the run stays pending", file=sys.stderr, flush=True)
    raise SystemExit(FULL_DISK)


def ended(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (Linux's /proc; False where it cannot tell)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def execute_run(
    config: dict,
    run_dir: str,
    progress: bool = False,
    position: int = 1,
    execution: Execution | None = None,
    last_epoch: int | None = None,
) -> None:
    """Train (or resume, or skip if done) one run; every failure ends up in result.json, with ``execution`` (the
    executor's job that trains it: ``job_execution``). With ``last_epoch`` (``RunSpec.last_epoch``: a rung's job)
    the run stops at that epoch's end, its checkpoint written, and exits with status ``AT_LAST_EPOCH``.

    The run uses the threads its config says (``train.threads``), never a number that depends
    on how many runs share the machine. An interruption (Ctrl-C, SIGTERM) records nothing: it
    exits with status ``INTERRUPTED`` and the checkpoint stays for the next call; so does a full
    disk, with status ``FULL_DISK``.
    """
    from peftlab.training.run import train

    cfg = from_dict(RunConfig, config)
    try:
        with stops_unwrapped(), trained_to(last_epoch):
            train(cfg, Path(run_dir), progress=progress, position=position, execution=execution)
    except EpochStop:  # where its job ends, resumable: nothing recorded
        raise SystemExit(AT_LAST_EPOCH) from None
    except KeyboardInterrupt:
        ignore_further_stops()
        raise SystemExit(INTERRUPTED) from None
    except DirectoryInUse as err:  # the other trainer writes the result; a second one would be wrong
        print(f"peftlab: {printable(str(err))}", file=sys.stderr, flush=True)
        raise SystemExit(IN_USE) from None
    except SystemExit:  # submitit's exit after requeueing a preempted Slurm job: the run resumes, nothing recorded
        raise
    except BaseException as err:
        why = disk_full(err)
        if why is not None:
            stop_for_full_disk(Path(run_dir), why)
        result = read_result(run_dir)
        if result is None or result.get("status") == "completed":
            record_failure(
                Path(run_dir),
                failure(
                    "failed",
                    f"{type(err).__name__}: {err}",
                    config,
                    execution=execution or execution_here(),
                    traceback=traceback.format_exc(),
                ),
            )


def record_failure(run_dir: Path, result: RunResult) -> None:
    try:
        write_result(run_dir, result)
    except OSError as err:  # the failure's record itself meets a full disk
        why = disk_full(err)
        if why is None:
            raise
        stop_for_full_disk(run_dir, why)


def log_stderr_to(run_dir: str) -> None:
    """Send this worker's stderr (Python's and C libraries') to the run's ``worker.log``: the study's
    terminal shows the runner's one line per run, never a worker's output. Where the log cannot be
    opened, stderr stays as it is."""
    try:
        fd = os.open(Path(run_dir) / WORKER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
    except OSError:
        return
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)


def process_main(
    config: dict,
    run_dir: str,
    progress: bool,
    position: int,
    study_pid: int,
    gpu: str | None = None,
    last_epoch: int | None = None,
    environment: dict[str, str | None] | None = None,
) -> None:
    """Entry point of a local worker process (its progress bars, when shown, on the study's terminal).
    It trains this one run on ``gpu`` (``gpus.use_gpu``), to ``last_epoch`` (``execute_run``): one whose base is
    not quantized never imports bitsandbytes. ``environment``: what the study's environment changed since the
    forkserver started (``take_environment``)."""
    take_environment(environment)
    use_gpu(gpu)
    if config["quant"]["mode"] == "none":
        without_bitsandbytes()
    die_with_study(study_pid)
    try:
        take_interrupts()
        if not progress:
            log_stderr_to(run_dir)
        execute_run(config, run_dir, progress, position, execution_here("local"), last_epoch)
    except KeyboardInterrupt:  # while it started: nothing to record
        ignore_further_stops()
        raise SystemExit(INTERRUPTED) from None


def take_environment(environment: dict[str, str | None] | None) -> None:
    """Set (a value) or unset (None) each variable of ``environment`` in this process: a worker forked from the
    forkserver takes what the study's environment changed since the server started
    (``local_executor.environment_since_start``)."""
    for name, value in (environment or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def serve_runs(conn, study_pid: int, preload: tuple[str, ...], gpu: str | None = None) -> None:
    """Entry point of a long-lived local worker (start method ``spawn``, ``study.spawn_workers``):
    import ``preload`` once, then train each run the study sends, one after another, and answer
    each with the exit code a one-run worker would have had (0: the run's result.json says how it
    ended), every run on ``gpu`` (``gpus.use_gpu``). It returns when the study closes the pipe; a stop
    (Ctrl-C, SIGTERM) ends it after its run."""
    use_gpu(gpu)
    die_with_study(study_pid)
    terminal = os.dup(2)  # stderr between runs, and of a run with progress bars
    try:
        for module in preload:
            importlib.import_module(module)
        take_interrupts()
        while True:
            try:
                config, run_dir, progress, position, last_epoch = conn.recv()
            except EOFError:  # the study has no run left for it
                return
            os.dup2(terminal, 2)
            if not progress:
                log_stderr_to(run_dir)
            try:
                execute_run(config, run_dir, progress, position, execution_here("local"), last_epoch)
                code = 0
            except SystemExit as stop:
                code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
            conn.send(code)
            if code == INTERRUPTED:
                raise SystemExit(INTERRUPTED)
    except KeyboardInterrupt:  # while it started, or waited for a run: nothing to record
        ignore_further_stops()
        raise SystemExit(INTERRUPTED) from None


def take_interrupts() -> None:
    """Stop on SIGTERM, and on Ctrl-C again: the forkserver's children inherit its ignored and
    blocked SIGINT (``local_executor.start_forkserver``), a spawned worker its parent's blocked one
    (``spawn_workers.start_worker``); a Ctrl-C of a worker's start-up reaches the study, which stops it."""
    take_stops()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def job_execution(executor: str) -> Execution:
    """Where this submitit job or Ray task runs, for its run's record: submitit's job id (Slurm's
    ``<array job>_<index>``), its life (Slurm's restart count + 1) and the GPUs Slurm gave it, or the Ray task's id,
    its attempt (which the executor counts: ``ray_tasks.counted``) and its GPUs."""
    if executor == "submitit":
        import submitit

        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        job_id = submitit.JobEnvironment().job_id
        attempt = int(restarts) + 1 if restarts.isdigit() else None
        return execution_here(executor, job_id=job_id, attempt=attempt, gpus=os.environ.get("SLURM_JOB_GPUS"))
    if executor == "ray":
        import ray

        from peftlab.study.executors.ray_tasks import ATTEMPT_ENV

        attempt = os.environ.get(ATTEMPT_ENV, "")
        task_id = ray.get_runtime_context().get_task_id()
        gpus = ",".join(map(str, ray.get_gpu_ids()))
        return execution_here(executor, task_id=task_id, attempt=int(attempt) if attempt.isdigit() else None, gpus=gpus)
    return execution_here(executor)


def run_job(config: dict, run_dir: str, cwd: str, executor: str) -> None:
    """Entry point of a submitit job or Ray task of ``executor``: one run, in the driver's working directory
    (the file system is shared, so the config's relative paths mean the same there). Its log's first line names
    the run; its record names the job (``job_execution``).

    A run directory another trainer holds is, here, most likely the job of an earlier driver
    that still runs (a killed driver cannot cancel its Slurm jobs): this job waits for it to
    end and then finds its result, or resumes from its checkpoint if it died. A run is never
    trained by two processes at once.
    """
    os.chdir(cwd)
    if executor == "submitit" and config["quant"]["mode"] == "none":  # its process trains this run alone (a Ray
        without_bitsandbytes()  # worker takes more tasks): PEFT leaves bitsandbytes out, about 1 CPU s a job less
    execution = job_execution(executor)
    print(f"peftlab: {execution_line(execution)} trains run {run_dir}", flush=True)
    while True:
        try:
            execute_run(config, run_dir, execution=execution)
            return
        except SystemExit as stop:
            if stop.code != IN_USE:
                raise
        wait_until_free(run_dir)


def execution_line(execution: Execution) -> str:
    """``submitit job 12_3 on node1``, ``ray task 0a1b... on node1 (attempt 2)``: how a job's log names it."""
    job = f"job {execution['job_id']}" if execution["job_id"] else f"task {execution['task_id']}"
    attempt = f" (attempt {execution['attempt']})" if (execution["attempt"] or 1) > 1 else ""
    return f"{execution['executor']} {job} on {execution['node']}{attempt}"


def pretrain_job(config: dict, out_dir: str, cwd: str, executor: str) -> None:
    """Entry point of the submitit job or Ray task that trains (or finds cached) the study's base model.

    A failure it recorded (pretrain-error.json) ends it normally, not with an exit status: Ray
    retries a task whose worker exits as one whose worker died, and the pretraining would fail again.
    """
    os.chdir(cwd)
    run_pretrain(config, out_dir, progress=False, execution=job_execution(executor))


def pretrain_main(
    config: dict, out_dir: str, progress: bool, study_pid: int, environment: dict[str, str | None] | None = None
) -> None:
    """Entry point of the local process that trains (or finds cached) the study's base model (``environment``: as
    ``process_main``'s)."""
    take_environment(environment)
    die_with_study(study_pid)
    try:
        take_interrupts()
    except KeyboardInterrupt:
        ignore_further_stops()
        raise SystemExit(INTERRUPTED) from None
    if not run_pretrain(config, out_dir, progress, execution_here("local")):
        raise SystemExit(1)


def run_pretrain(config: dict, out_dir: str, progress: bool, execution: Execution | None = None) -> bool:
    """Pretrain; False when it failed, which is written to ``out_dir/pretrain-error.json``."""
    from peftlab.training.bases.pretrain import pretrain

    (Path(out_dir) / "pretrain-error.json").unlink(missing_ok=True)  # an earlier attempt's: this one decides
    try:
        with stops_unwrapped():
            pretrain(from_dict(RunConfig, config), Path(out_dir), progress=progress, execution=execution)
    except KeyboardInterrupt:
        ignore_further_stops()
        raise SystemExit(INTERRUPTED) from None
    except SystemExit:  # submitit's exit after requeueing a preempted Slurm job: it resumes, nothing recorded
        raise
    except BaseException as err:
        write_json_atomic(Path(out_dir) / "pretrain-error.json", {"error": f"{type(err).__name__}: {err}"})
        return False
    return True
