"""The study runner: every run of a study in its own directory, idempotent and kill-safe.

``runs/<study>/runs/<run_id>/`` holds each run (spec.json plus what ``train`` writes).
Rerunning skips completed runs, resumes interrupted ones from their checkpoint and retries
failed ones only when asked. A failing or diverging run never stops the study.

Runs execute in worker processes (``local_executor``) that import torch, timm and PEFT once:
forked per run from a forkserver, or long-lived spawned workers (``--start-method spawn``,
``spawn_workers``), so a run pays no import cost and a crash cannot take the study down.
Workers die with the study
(``worker.die_with_study``), so after a ``kill -9`` the same command finds only complete
results and resumable checkpoints. Ctrl-C or SIGTERM stops the workers cleanly
(``INTERRUPTED``): no result is recorded and the same command resumes each run from its
checkpoint.
``--executor submitit`` or ``ray`` runs each run as a Slurm job or a Ray task instead (see
``executors``); results come back through the run directories either way.
A study with ``tune:`` first runs each configuration's search (``search``: trials in
``tune/<search>/runs/``, with the same executor; with several local workers the searches run side by
side, ``side_by_side``), then its final runs at the chosen values.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from peftlab.config.schema import load_config, to_dict
from peftlab.study.executors import ray_tasks
from peftlab.study.executors.executors import ExecutorOptions, pretrain_remote, run_remote, with_folder
from peftlab.study.executors.gpus import worker_gpus
from peftlab.study.executors.local import (
    environment_since_start,
    outside_cause,
    pretraining_context,
    run_local,
    serving,
    start_held,
    stop_processes,
    stopped_outcome,
)
from peftlab.study.executors.spawn import run_spawned, stop_idle_workers
from peftlab.study.phases import Phase, timed_phase
from peftlab.study.preflight import check_study
from peftlab.study.records import RUNS_FILE, StudyRuns
from peftlab.study.search import tune_study
from peftlab.study.spec import RunSpec, Study
from peftlab.study.stale import refuse_stale_runs
from peftlab.training.run_result import metric_damage, read_result, run_status, set_aside_damaged_result, status_of
from peftlab.utils import locks
from peftlab.utils.cpu import runs_at_once
from peftlab.utils.errors import UserError
from peftlab.utils.files import printable, read_json, write_atomic, write_json_atomic
from peftlab.utils.libraries import LIBRARY_LOG, logged_to
from peftlab.utils.progress import TextProgress, counting_bar, in_notebook

FINISHED = ("completed", "failed", "diverged")
MAX_REMOTE_TRIALS = 16  # trials of one search submitted at once to Slurm or Ray


@dataclass
class StudySummary:
    total: int
    completed: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label, error)
    pending: list[tuple[str, str]] = field(default_factory=list)  # (label, why): stopped by an outside cause
    skipped: int = 0  # finished before this call

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending


def run_dir_of(study_dir: Path, spec: RunSpec) -> Path:
    return study_dir / "runs" / spec.run_id


def describe(spec: RunSpec) -> str:
    return f"{spec.variant} seed={spec.seed} [{spec.run_id}]"


def run_statuses(study_dir: Path, specs: list[RunSpec]) -> dict[str, str]:
    """Each run's status (``run_status``), by run id. A run without a directory is pending: the
    directory is listed once instead of looking for each run's files (10,000 runs, none started)."""
    try:
        present = set(os.listdir(study_dir / "runs"))
    except OSError:  # no study directory yet
        present = set()
    return {
        spec.run_id: run_status(run_dir_of(study_dir, spec)) if spec.run_id in present else "pending" for spec in specs
    }


def pretrain_dir(study: Study) -> Path | None:
    """Where the study's pretraining writes: the directory of the weights file its runs name
    (``model.pretrained``, one for every run), or the HF model directory of its text runs
    (``model.path``), whatever the current directory; None when the runs name none or several (then
    ``cache/pretrained/<name>``)."""
    weights = {spec.config.model.pretrained for spec in study.runs} - {"none", "hub"}
    if weights:
        return Path(weights.pop()).parent if len(weights) == 1 else None
    texts = {spec.config.model.path for spec in study.runs if spec.config.model.source == "hf-text"} - {None}
    return Path(texts.pop()) if len(texts) == 1 else None


def run_pretraining(
    config_path: Path, progress: bool, executor: ExecutorOptions = ExecutorOptions(), out_dir: Path | None = None
) -> tuple[Path, bool]:
    """Train (or reuse) the study's base model in a worker process, or as one job of a remote
    executor; returns its directory and whether this call trained it (its run's result.json is
    ``run/result.json`` there). A cached base starts neither."""
    from peftlab.study.executors.worker import INTERRUPTED, pretrain_main
    from peftlab.training.bases.pretrain import cached_manifest, default_out_dir

    cfg = load_config(config_path)
    out_dir = out_dir or default_out_dir(cfg)
    if cached_manifest(cfg, out_dir) is not None:
        return out_dir, False
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pretrain-error.json").unlink(missing_ok=True)
    if executor.name != "local":
        why = pretrain_remote(to_dict(cfg), out_dir, executor)
        if why is not None or (out_dir / "pretrain-error.json").exists():
            raise UserError(pretraining_stopped(config_path, out_dir, why, lost=True))
        return out_dir, True
    ctx = pretraining_context(executor.start_method)
    changes = environment_since_start()  # a forked worker's from the study (a spawned one has them already)
    proc = ctx.Process(target=pretrain_main, args=(to_dict(cfg), str(out_dir), progress, os.getpid(), changes))
    start_held(proc)
    try:
        proc.join()
    except KeyboardInterrupt:
        stop_processes([proc])
        raise
    if proc.exitcode == INTERRUPTED:
        raise KeyboardInterrupt("pretraining was interrupted")
    if proc.exitcode != 0:
        why = outside_cause(proc.exitcode)
        raise UserError(
            pretraining_stopped(config_path, out_dir, why or f"exit code {proc.exitcode}", lost=why is not None)
        )
    return out_dir, True


def pretraining_stopped(config_path: Path, out_dir: Path, why: str | None, lost: bool) -> str:
    """The one line for a pretraining that ended without its base model: it failed when it
    recorded an error (``pretrain-error.json``, which the next call would meet again), else it
    was ``lost`` (its job or worker killed, out of memory or time, its node lost: ``why``), and
    the next call resumes it from its checkpoint."""
    error = read_json(out_dir / "pretrain-error.json")
    if error is not None:
        return f"pretraining with {config_path} failed: {error.get('error', 'see pretrain-error.json')}"
    if lost:
        return (
            f"pretraining with {config_path} was lost ({why}): it stays pending; run the same command again "
            "to resume it from its checkpoint"
        )
    return f"pretraining with {config_path} failed: {why}"


def run_study(
    study: Study,
    study_dir: Path,
    *,
    workers: int = 1,
    retry_failed: bool = False,
    progress: bool = True,
    wait: bool = False,
    executor: ExecutorOptions = ExecutorOptions(),
    report: bool = False,
    wait_flag: str | None = None,
) -> StudySummary:
    """Train every pending run of ``study`` in ``study_dir``, which this process locks meanwhile:
    a second study process on the same directory is refused with its holder named (and ``wait_flag``, the
    caller's option that waits: ``peftlab study --wait``; reproduce has none), or with
    ``wait`` starts when the first ends (and then finds its runs done). ``workers`` local
    processes, or ``executor``'s Slurm jobs or Ray tasks (its pretraining too). ``report``: the
    caller writes the report afterwards (its files are checked with the study's, before any run)."""
    check_study(study, study_dir, executor, report)  # what --dry-run checks too
    if executor.name == "local":
        worker_gpus(workers, executor.runs_per_gpu)  # refuses more workers than --runs-per-gpu allows
    study_dir.mkdir(parents=True, exist_ok=True)
    with (
        locks.hold(
            study_dir,
            "study directory",
            "peftlab study",
            wait=wait,
            on_wait=lambda text: print(f"peftlab: {printable(text)}", file=sys.stderr, flush=True),
            wait_flag=wait_flag,
        ),
        logged_to(study_dir / LIBRARY_LOG),
    ):  # what submitit, Ray and Slurm's commands say to the driver
        try:
            with (
                ray_tasks.kept() if executor.name == "ray" else contextlib.nullcontext(),  # one Ray for the study
                serving([(spec, run_dir_of(study_dir, spec)) for spec in study.runs]),  # its final runs, from the start
            ):
                return _run_study(study, study_dir, workers, retry_failed, progress, executor)
        finally:
            stop_idle_workers()  # spawned workers wait between a tuned study's searches and its final runs


def _run_study(
    study: Study,
    study_dir: Path,
    workers: int,
    retry_failed: bool,
    progress: bool,
    executor: ExecutorOptions = ExecutorOptions(),
) -> StudySummary:
    write_atomic(study_dir / "study.yaml", lambda tmp: shutil.copyfile(study.path, tmp))
    executor = with_folder(executor, study_dir, study.name)  # job files (submitit) or attempt counts (Ray), names
    if study.pretrain is not None:
        with timed_phase(study_dir, "pretrain", 1, executor.name) as phase:
            base_dir, trained = run_pretraining(study.pretrain, progress, executor, pretrain_dir(study))
            phase.count((read_result(base_dir / "run") or {}) if trained else {})
        refuse_stale_runs(study_dir)  # no finished run counts when the base it wrote differs from theirs
    say = (lambda line: print(f"peftlab: {printable(line)}", flush=True)) if progress else (lambda line: None)
    if study.tune:  # every search first; the final runs then replace the untuned ones
        searches = list(study.tune.values())  # their trials counted as trials (trial runs where they have seeds)
        unit = "trial" if all(len(search.seeds) == 1 for search in searches) else "trial run"
        total = sum(search.trials * len(search.seeds) for search in searches)
        shown = counting_bar(f"study {printable(study.name)}", unit, total, progress)
        with timed_phase(study_dir, "trials", workers, executor.name) as phase, shown as done:
            ends = TrialEnds(phase, done)
            study = tune_study(
                study,
                study_dir,
                ends.runs(jobs_runner(executor, workers, say)),
                workers if executor.name == "local" else MAX_REMOTE_TRIALS,
                say=say,
                ended=ends.pruned,
                # a worker one search leaves idle trains another's trial; Slurm and Ray take every search's
                # next batch in one submission
                side_by_side=executor.name != "local" or workers > 1,
            )
    with timed_phase(study_dir, "final runs", workers, executor.name) as phase:
        return run_final(study, study_dir, workers, retry_failed, progress, executor, phase)


def run_final(
    study: Study,
    study_dir: Path,
    workers: int,
    retry_failed: bool,
    progress: bool,
    executor: ExecutorOptions,
    phase: Phase,
) -> StudySummary:
    """Train the study's runs that are not finished (the final runs of a tuned study), counting each in ``phase``."""
    summary = StudySummary(total=len(study.runs))
    write_json_atomic(study_dir / RUNS_FILE, StudyRuns(run_ids=[spec.run_id for spec in study.runs]))
    jobs = []
    for index, spec in enumerate(study.runs):
        run_dir = run_dir_of(study_dir, spec)
        record_spec = {**spec.record(), "order": index}
        if run_dir.is_dir() and read_json(run_dir / "spec.json") != record_spec:  # missing or corrupt: rewritten
            write_json_atomic(run_dir / "spec.json", record_spec)
        status = run_status(run_dir)
        if status in ("failed", "diverged") and retry_failed:
            forget_result(run_dir)
            status = run_status(run_dir)
        if status == "damaged":  # its metrics are no result: trained again, with or without --retry-failed
            set_aside_damaged_result(run_dir)
            status = run_status(run_dir)
        if status in FINISHED:
            summary.skipped += 1
            record(summary, spec, read_result(run_dir) or {})
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "spec.json", record_spec)
        jobs.append((spec, run_dir))

    bar = tqdm(
        total=len(study.runs),
        initial=summary.skipped,
        desc=f"study {printable(study.name)}",  # names and labels from the study file: escaped
        unit="run",
        position=0,
        disable=not progress or None,
    )
    show_counts(bar, summary)
    lines = TextProgress(bar, progress, f"study {printable(study.name)}", "run")

    def finished() -> int:  # a disabled bar counts nothing
        return len(summary.completed) + len(summary.failed) + len(summary.diverged)

    waiting = [""]  # what the remote jobs wait for (Slurm's state and reason); "": none waits

    def on_wait(text: str) -> None:
        waiting[0] = printable(text)
        show_counts(bar, summary, waiting[0])
        if text:
            lines.update(finished(), printable(text), force=True)

    def on_done(spec: RunSpec, result: dict) -> None:
        phase.count(result)
        record(summary, spec, result)
        if result.get("status") == "pending":
            tqdm.write(
                f"peftlab: run {printable(describe(spec))} stopped: {printable(result.get('error'))}; it stays "
                "pending: run the same command again to resume it",
                file=sys.stderr,
            )
        bar.update(1)
        show_counts(bar, summary, waiting[0])
        lines.update(finished(), printable(f"{describe(spec)} {result.get('status', 'failed')}"))

    if executor.name == "local":
        # off a terminal: one line per run, not per step; in a notebook, the study's bar alone (no worker draws there)
        run_locally(jobs, workers, progress and not bar.disable and not in_notebook(bar), on_done, executor=executor)
    elif jobs:  # every run done: no Ray is started, no job array submitted
        run_remote(jobs, executor, on_done, on_wait)
    bar.close()
    return summary


def run_locally(jobs, workers, progress, on_done, stop_when=None, executor: ExecutorOptions = ExecutorOptions()):
    """The local executor: a process per run forked from a forkserver (``local_executor.run_local``), or long-lived
    spawned workers (``spawn_workers.run_spawned``), spread over the visible GPUs, each told how many share them."""
    run = run_spawned if executor.start_method == "spawn" else run_local
    with runs_at_once(workers):
        run(jobs, workers, progress, on_done, stop_when, worker_gpus(workers, executor.runs_per_gpu))


class TrialEnds:
    """The trials phase's runs as they end for good, each counted once: its time in ``phase`` and a call of ``done``
    (the study's bar, a line). A run its search stopped (``{"status": "stopped"}``: a rung, halving's pruner) has
    not ended until the search says: a rung's survivor resumes and ends later, the same trial; a pruned one ends
    when its search prunes it (``pruned``), with the time its stop recorded. A run stopped by an outside cause
    ("pending") is resumed by its search and ends later too. A run's time is every process's that trained it
    (``phases``), so one that ends here after a restart brings its earlier calls' time with it, counted once."""

    def __init__(self, phase: Phase, done: Callable[[str], None]):
        self.phase, self.done = phase, done
        self.ended: set[str] = set()
        self.stopped: dict[str, dict] = {}  # each stopped run's outcome (its time), until its search's word

    def runs(self, run_jobs):
        """``run_jobs`` whose ``on_done`` counts each run that ended for good, before the search hears of it (which
        may prune the trials its end decides)."""

        def run_counted(jobs, on_done, stop_when=None) -> None:
            def counted(spec: RunSpec, result: dict) -> None:
                status = result.get("status", "failed")
                if status == "stopped":
                    self.stopped[spec.run_id] = result
                elif status != "pending":
                    self.end(spec, result, status)
                on_done(spec, result)

            run_jobs(jobs, counted, stop_when)

        return run_counted

    def pruned(self, spec: RunSpec, run_dir: Path, status: str) -> None:
        """The search pruned the trial of ``spec``'s run in ``run_dir`` (``status``: where): it ends with the time
        its stop recorded in this call, or, stopped in an earlier call and pruned after a restart without training
        again, with its checkpoint's (``local.stopped_outcome``: each of its processes up to its last checkpoint).
        One that ended with a result before its search pruned it counted then, in whichever call: shown here."""
        if spec.run_id in self.ended:
            return
        outcome = self.stopped.pop(spec.run_id, None)
        if outcome is None and read_result(run_dir) is None:
            outcome = stopped_outcome(run_dir)
        self.end(spec, outcome or {}, status)

    def end(self, spec: RunSpec, result: dict, status: str) -> None:
        self.stopped.pop(spec.run_id, None)  # a rung's survivor: its stop's time is in its end's (EARLIER_WALL)
        if spec.run_id not in self.ended:
            self.ended.add(spec.run_id)
            self.phase.count(result)
            self.done(printable(f"{describe(spec)} {status}"))


def jobs_runner(executor: ExecutorOptions, workers: int, say=lambda line: None):
    """``run_jobs(jobs, on_done, stop_when)`` of a search: the study's executor, without a progress bar; what its
    remote jobs wait for (Slurm's queue) is a line to ``say``."""

    def on_wait(text: str) -> None:
        if text:
            say(f"trials: {text}")

    def run_jobs(jobs, on_done, stop_when=None) -> None:
        if executor.name == "local":
            run_locally(jobs, workers, False, on_done, stop_when, executor)
        elif jobs:
            run_remote(jobs, executor, on_done, on_wait)

    return run_jobs


def forget_result(run_dir: Path) -> None:
    """Make a failed or diverged run pending again for --retry-failed.

    Its checkpoint stays, so the retry resumes from it (the same run resumed equals the run
    trained at once), unless the failure was that checkpoint itself (``checkpoint_unusable``).
    """
    result = read_result(run_dir) or {}
    if result.get("checkpoint_unusable"):
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    for name in ("result.json", "adapter.safetensors", "adapter_config.json", "adapter_model.safetensors"):
        (run_dir / name).unlink(missing_ok=True)


def record(summary: StudySummary, spec: RunSpec, result: dict) -> None:
    status = status_of(result)
    if status == "damaged":  # a result.json damaged after its run was started: the next call trains it again
        summary.pending.append((describe(spec), f"its result.json is damaged ({metric_damage(result)[0]})"))
    elif status == "completed":
        summary.completed.append(describe(spec))
    elif status == "diverged":
        summary.diverged.append(f"{describe(spec)}: {result.get('error')}")
    elif status == "pending":
        summary.pending.append((describe(spec), str(result.get("error"))))
    else:
        summary.failed.append((describe(spec), str(result.get("error"))))


def show_counts(bar, summary: StudySummary, waiting: str = "") -> None:
    """The bar's counts, and what the remote jobs wait for (``waiting``, Slurm's state and reason) while they do."""
    remaining = summary.total - len(summary.completed) - len(summary.failed) - len(summary.diverged)
    counts = {"done": len(summary.completed), "failed": len(summary.failed) + len(summary.diverged)}
    bar.set_postfix(**counts, remaining=remaining, **({"waiting": waiting} if waiting else {}))


def format_summary(summary: StudySummary, study_dir: Path) -> str:
    lines = [
        f"study {study_dir}: {len(summary.completed)} completed, {len(summary.failed)} failed, "
        f"{len(summary.diverged)} diverged of {summary.total} runs "
        f"({summary.skipped} were already finished)"
    ]
    lines += [f"  failed: {label}: {error}" for label, error in summary.failed]
    lines += [f"  diverged: {line}" for line in summary.diverged]
    if summary.pending:
        lines.append(
            f"  {len(summary.pending)} runs were stopped by an outside cause (a signal, a full disk, a lost "
            "job) and stay pending: run the same command again to resume them"
        )
    if summary.failed:
        lines.append("  rerun with --retry-failed to try the failed runs again")
    return "\n".join(lines)
