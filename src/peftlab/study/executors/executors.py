"""Where a study's runs execute: local worker processes, Slurm jobs (submitit) or Ray tasks.

Every executor calls the same ``worker.execute_run(config, run_dir)`` and the outcome comes
back through the run directory (result.json), so the remote executors need a file system
shared by the driver and the jobs (the study directory, the data, the pretrained base and
the Python environment at the same paths). ``SUBMIT`` maps a remote executor to a function
``submit(fn, arglists, options)`` that runs ``fn(*args)`` per arglist there and yields
``(index, why)`` as each call ends (``why`` is None for a normal end, else one line).
The local executor is ``local_executor.run_local``.

Where runs execute is an option of the command, not of the study file: the same study is
run on a laptop and on a cluster, and its runs' results do not depend on where.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.config.schema import to_dict
from peftlab.study.executors import ray_tasks, slurm
from peftlab.study.executors.gpus import with_gpu_requests
from peftlab.study.executors.local import START_METHODS, default_start_method
from peftlab.study.spec import RunSpec
from peftlab.training.run_result import read_result
from peftlab.utils.errors import ConfigError, UserError

SUBMIT = {"submitit": slurm.submit, "ray": ray_tasks.submit}
# check(options): a UserError line when the executor cannot run here (its package, Slurm's commands);
# its submit calls it first, and a study's pre-flight (``preflight.check_study``) before any run
AVAILABLE = {"submitit": slurm.check_available, "ray": ray_tasks.check_available}
EXECUTORS = ("local", *SUBMIT)
SLURM_CLUSTERS = ("slurm", "local")


def parse_minutes(text: str) -> int:
    """Slurm's --time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in minutes, seconds rounded up."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", text.strip())
    parts = [int(p) for p in match.group(2).split(":")] if match else []
    if not match or len(parts) > 3:
        raise UserError(f"--slurm-time={text!r} is invalid: expected minutes, MM:SS, HH:MM:SS or D-HH[:MM[:SS]]")
    if match.group(1) is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
        hours += 24 * int(match.group(1))
    else:
        hours, minutes, seconds = ([0, 0] + parts)[-3:] if len(parts) == 3 else (0, *(parts + [0])[:2])
    total = hours * 60 + minutes + (1 if seconds else 0)
    if total < 1:
        raise UserError(f"--slurm-time={text!r} is invalid: expected at least one minute")
    return total


@dataclass(frozen=True)
class ExecutorOptions:
    """``peftlab study --executor`` and its options (``folder``: submitit's job files)."""

    name: str = "local"
    start_method: str = field(default_factory=default_start_method)  # local workers: spawn or forkserver
    runs_per_gpu: int | None = None  # local workers: at most this many on one visible GPU (gpus.worker_gpus)
    folder: str | None = None
    slurm_cluster: str = "slurm"
    slurm_partition: str | None = None
    slurm_time: int = 240  # minutes
    slurm_cpus: int = 4
    slurm_gpus: int | None = None  # None: 1 where a run's train.device is cuda, else 0 (gpus.with_gpu_requests)
    slurm_mem: int | None = None  # GB
    slurm_array_parallelism: int | None = None
    slurm_lost_after: float = 15.0  # seconds out of Slurm's queue without a result file: lost
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float | None = None  # as slurm_gpus

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


def check_available(options: ExecutorOptions) -> None:
    """A UserError line when the remote executor cannot run on this machine (nothing for local)."""
    if options.name in AVAILABLE:
        AVAILABLE[options.name](options)


def with_folder(options: ExecutorOptions, study_dir: Path) -> ExecutorOptions:
    """``options`` with a remote executor's folder (submitit's job files, Ray's attempt counts) in the
    study directory, ``slurm/`` or ``ray/``, unless one is given."""
    if options.name == "local" or options.folder is not None:
        return options
    return dataclasses.replace(
        options, folder=str((study_dir / {"submitit": "slurm"}.get(options.name, options.name)).resolve())
    )


def run_remote(
    jobs: list[tuple[RunSpec, Path]], options: ExecutorOptions, on_done: Callable[[RunSpec, dict], None]
) -> None:
    """Run each job as a job or task of ``options.name``; ``on_done`` as each ends, with its result.json.

    A job that ended without a result (killed, out of memory or time, its node lost) is lost, not
    failed: nothing is written, ``on_done`` gets a pending result that says so, and the next study
    call submits the run again, which resumes from its checkpoint.
    """
    from peftlab.study.executors.worker import run_job

    options = with_gpu_requests(options, [spec.config.train.device for spec, _ in jobs])
    cwd = os.getcwd()
    arglists = [(to_dict(spec.config), str(run_dir.resolve()), cwd) for spec, run_dir in jobs]
    with contextlib.closing(SUBMIT[options.name](run_job, arglists, options)) as finished:  # closed: cancels the rest
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
    with contextlib.closing(
        SUBMIT[options.name](pretrain_job, [(config, str(out_dir.resolve()), os.getcwd())], options)
    ) as finished:
        _, why = next(finished)
    return why
