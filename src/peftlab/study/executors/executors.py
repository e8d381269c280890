"""Where a study's runs execute: local worker processes, Slurm jobs (submitit) or Ray tasks.

Every executor calls the same ``worker.execute_run(config, run_dir)`` and the outcome comes
back through the run directory (result.json), so the remote executors need a file system
shared by the driver and the jobs (the study directory, the data, the pretrained base and
the Python environment at the same paths). ``SUBMIT`` maps a remote executor to a function
``submit(fn, arglists, options, names, on_wait)`` that runs ``fn(*args)`` per arglist there, each job or task
named by ``names`` (``peftlab:<study>:<run id>``), and yields ``(index, why)`` as each call ends (``why`` is None
for a normal end, else one line); ``on_wait(text)`` hears what the jobs wait for (Slurm's queue), "" once none
waits.
The local executor is ``local_executor.run_local``.

Which executor runs a study is an option of the command, not of the study file: the same study is
run on a laptop and on a cluster, and its runs' results do not depend on where. What the jobs ask the cluster for
may be in the study file (its ``executor:`` section, ``section``), the command's flags overriding it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.config.schema import to_dict
from peftlab.study.executors import ray_address, ray_tasks, slurm
from peftlab.study.executors.gpus import with_gpu_requests
from peftlab.study.executors.local import START_METHODS, default_start_method
from peftlab.study.executors.slurm_request import job_name
from peftlab.study.spec import RunSpec
from peftlab.training.run_result import read_result
from peftlab.utils.errors import ConfigError, UserError

SUBMIT = {"submitit": slurm.submit, "ray": ray_tasks.submit}
# check(options): a UserError line when the executor cannot run here (its package, Slurm's commands: what its
# submit checks first), then whether the cluster can ever run the jobs asked for (Slurm's partitions and nodes, its
# test submission; the Ray address answers and lets the driver in), each refusal one line naming its flag, in
# seconds: a study's pre-flight (``preflight.check_study``, --dry-run's too) before any run
READY = {"submitit": slurm.check_ready, "ray": ray_address.check_ready}
EXECUTORS = ("local", *SUBMIT)
SLURM_CLUSTERS = ("slurm", "local")


@dataclass(frozen=True)
class ExecutorOptions:
    """``peftlab study --executor`` and its options (``folder``: submitit's job files)."""

    name: str = "local"
    start_method: str = field(default_factory=default_start_method)  # local workers: spawn or forkserver
    runs_per_gpu: int | None = None  # local workers: at most this many on one visible GPU (gpus.worker_gpus)
    folder: str | None = None
    slurm_cluster: str = "slurm"
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_qos: str | None = None
    slurm_time: int = 240  # minutes
    slurm_cpus: int = 4
    slurm_gpus: int | None = None  # None: 1 where a run's train.device is cuda, else 0 (gpus.with_gpu_requests)
    slurm_mem: int | None = None  # GB
    slurm_array_parallelism: int | None = None
    slurm_lost_after: float = 15.0  # seconds out of Slurm's queue without a result file: lost
    slurm_constraint: str | None = None  # sbatch --constraint: the node features a job needs
    slurm_sbatch: tuple[str, ...] = ()  # more sbatch options, each --name or --name=value (section.sbatch_option)
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float | None = None  # as slurm_gpus
    ray_resources: dict | None = None  # Ray's custom resources per task, {name: amount}
    study: str | None = None  # the study's name, which its jobs' names carry (``with_folder``)
    from_study: frozenset = frozenset()  # the fields the study file's executor section gave (section.option_name)
    detach: bool = False  # submit the jobs and return (``Needed``), not wait for them (``detach``)

    def __post_init__(self):
        if self.name not in EXECUTORS:
            raise UserError(f"--executor={self.name!r} is invalid: expected one of {', '.join(EXECUTORS)}")
        if self.slurm_cluster not in SLURM_CLUSTERS:
            raise UserError(f"--slurm-cluster={self.slurm_cluster!r} is invalid: expected slurm or local")
        if self.start_method not in START_METHODS:
            raise ConfigError(f"--start-method={self.start_method!r} is invalid: expected {' or '.join(START_METHODS)}")
        for flag, value, least in (
            ("--runs-per-gpu", self.runs_per_gpu, 1),
            ("--slurm-time", self.slurm_time, 1),
            ("--slurm-cpus", self.slurm_cpus, 1),
            ("--slurm-gpus", self.slurm_gpus, 0),
            ("--slurm-mem", self.slurm_mem, 1),
            ("--slurm-array-parallelism", self.slurm_array_parallelism, 1),
            ("--slurm-lost-after", self.slurm_lost_after, 1),
            ("--ray-cpus", self.ray_cpus, 0),
            ("--ray-gpus", self.ray_gpus, 0),
        ):
            if value is not None and not value >= least:  # NaN too
                raise UserError(f"{flag}={value} is invalid: expected a number >= {least}")


class Needed(BaseException):
    """The jobs a detached study's flow waits for, raised where ``run_remote`` or ``pretrain_remote`` would run
    them (``options.detach``): ``fn(*args)`` for each of ``arglists``, named by ``names``, asking for what
    ``options`` ask (its GPUs resolved); ``detach`` submits them. A BaseException, as a stop is: a search's
    ``except Exception`` (its own failure) lets it through."""

    def __init__(self, fn: Callable, arglists: list[tuple], names: list[str], options: ExecutorOptions) -> None:
        super().__init__(f"{len(arglists)} jobs to submit")
        self.fn, self.arglists, self.names, self.options = fn, arglists, names, options


def check_ready(options: ExecutorOptions) -> None:
    """A UserError line when the remote executor cannot run here, or its cluster can never run the jobs asked
    for (``READY``; nothing for local)."""
    if options.name in READY:
        READY[options.name](options)


def with_folder(options: ExecutorOptions, study_dir: Path, study: str | None = None) -> ExecutorOptions:
    """``options`` with a remote executor's folder (submitit's job files, Ray's attempt counts) in the
    study directory, ``slurm/`` or ``ray/``, unless one is given, and the ``study``'s name for its jobs."""
    if options.name == "local":
        return options
    folder = options.folder or str((study_dir / {"submitit": "slurm"}.get(options.name, options.name)).resolve())
    return dataclasses.replace(options, folder=folder, study=study or options.study)


def run_remote(
    jobs: list[tuple[RunSpec, Path]],
    options: ExecutorOptions,
    on_done: Callable[[RunSpec, dict], None],
    on_wait: Callable[[str], None] | None = None,
) -> None:
    """Run each job as a job or task of ``options.name``, named for the study and the run; ``on_done`` as each
    ends, with its result.json; ``on_wait`` as what the jobs wait for changes (``SUBMIT``).

    A job that ended without a result (killed, out of memory or time, its node lost) is lost, not
    failed: nothing is written, ``on_done`` gets a pending result that says so, and the next study
    call submits the run again, which resumes from its checkpoint.
    """
    from peftlab.study.executors.worker import run_job

    options = with_gpu_requests(options, [spec.config.train.device for spec, _ in jobs])
    cwd = os.getcwd()
    arglists = [(to_dict(spec.config), str(run_dir.resolve()), cwd, options.name) for spec, run_dir in jobs]
    names = [job_name(options.study, run_dir.name) for _, run_dir in jobs]
    if options.detach:
        raise Needed(run_job, arglists, names, options)
    submitted = SUBMIT[options.name](run_job, arglists, options, names, on_wait)
    with contextlib.closing(submitted) as finished:  # closed: cancels the rest
        for index, why in finished:
            spec, run_dir = jobs[index]
            result = read_result(run_dir)
            if result is None:
                result = {
                    "status": "pending",
                    "error": f"its {options.name} job was lost: it ended without a result"
                    + (f" ({why})" if why else ""),
                }
            on_done(spec, result)


def pretrain_remote(config: dict, out_dir: Path, options: ExecutorOptions) -> str | None:
    """Pretrain as one job or task of ``options.name``; returns why the job ended without returning
    (its one line), None if it returned. A pretraining that failed returns: its error is in
    ``out_dir/pretrain-error.json``."""
    from peftlab.study.executors.worker import pretrain_job

    options = with_gpu_requests(options, [config["train"]["device"]])
    arglists = [(config, str(out_dir.resolve()), os.getcwd(), options.name)]
    names = [job_name(options.study, "pretrain")]
    if options.detach:
        raise Needed(pretrain_job, arglists, names, options)
    with contextlib.closing(SUBMIT[options.name](pretrain_job, arglists, options, names)) as finished:
        _, why = next(finished)
    return why
