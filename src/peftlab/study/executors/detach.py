"""``peftlab study --executor submitit --detach``: the study submitted as Slurm jobs that outlive the command.

The study's flow is the runner's (its pretraining, each search's trials, the final runs at the chosen values),
run by ``advance`` with ``ExecutorOptions.detach``: where the runner would wait for a batch of jobs, the batch is
raised (``executors.Needed``) and submitted here as one job array, followed by a small continuation job
(``--dependency=afterany:<array>``: it starts when every task has ended, however) that runs the flow again on a
compute node. The continuation finds the batch's results in the run directories, as any rerun of the study does,
and submits the next batch and the next continuation, until every run is finished; the last one ends the study
as the command would (``continue_with``, the command's: its summary and ``--report``'s report, in its job log).
Trials, then final runs, then the report, each waiting in Slurm's queue for the one before, with no driver alive.

``detached.json`` in the executor's folder names the chain's jobs. The same command given again says where the
study stands while a job of the chain is still in Slurm's queue (``squeue``), and otherwise advances the study
itself: a chain that was cancelled or lost (its continuation killed, the node lost) resumes from what is finished,
and a job lost without its result is submitted again, up to ``MAX_SUBMISSIONS`` times a run.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
from collections.abc import Callable
from pathlib import Path

from peftlab.study.executors.executors import ExecutorOptions, Needed, with_folder
from peftlab.study.executors.slurm_request import job_name
from peftlab.utils.errors import UserError
from peftlab.utils.files import read_json, write_json_atomic

RECORD = "detached.json"  # in the executor's folder (<study dir>/slurm/): the chain's jobs
MAX_SUBMISSIONS = 3  # a run submitted this often without ending with a result stops the chain (it would loop)
CONTINUE_MINUTES = 30  # the continuation job's time limit: it checks the study and submits, in about a minute


def detach_study(
    study,
    study_dir: Path,
    options: ExecutorOptions,
    continue_with: Callable,
    report: bool = False,
    retry_failed: bool = False,
    continuing: bool = False,
):
    """Where the study stands, while a job of its chain is in Slurm's queue; else its next batch submitted with a
    continuation after it, ``continue_with(study path, study dir, options, report)`` (a function of the command,
    which ends the study as it does: its summary and report), printing the job ids; both return None. Every
    run finished: the study's summary. ``continuing``: called by the chain's continuation job, itself queued."""
    if options.name != "submitit" or options.slurm_cluster != "slurm":
        raise UserError("--detach goes with --executor submitit on Slurm: jobs that outlive the command")
    options = with_folder(options, study_dir, study.name)
    record = read_json(Path(options.folder) / RECORD) or {}
    if not continuing:
        queued = queued_jobs(record)
        if queued:
            print(standing(study, record, queued), flush=True)
            return None
    outcome = advance(study, study_dir, options, report, retry_failed, wait=continuing)
    if isinstance(outcome, Needed):
        record = submit_stage(outcome, study, study_dir, options, (continue_with, report), record)
        print(submitted_line(study, record), flush=True)
        return None
    write_json_atomic(Path(options.folder) / RECORD, {**record, "stage": "done", "jobs": [], "continuation": None})
    return outcome


def advance(study, study_dir: Path, options: ExecutorOptions, report: bool, retry_failed: bool, wait: bool):
    """The runner's flow up to the first batch of jobs it would wait for (``Needed``), or its summary when every
    run is finished."""
    from peftlab.study.runner import run_study

    detached = dataclasses.replace(options, detach=True)
    try:
        return run_study(
            study, study_dir, retry_failed=retry_failed, progress=False, wait=wait, executor=detached, report=report
        )
    except Needed as needed:
        return needed


def submit_stage(needed: Needed, study, study_dir: Path, options: ExecutorOptions, then: tuple, record: dict) -> dict:
    """Submit the batch as one job array (each task named for its run), then the continuation after it (``then``:
    its function and the report option); the chain's record, written before this returns."""
    from peftlab.study.executors import slurm
    from peftlab.study.executors.slurm_requeue import Requeueable

    counts = dict(record.get("submissions", {}))
    for args in needed.arglists:  # (config, run or pretraining directory, cwd, executor)
        counts[args[1]] = counts.get(args[1], 0) + 1
        if counts[args[1]] > MAX_SUBMISSIONS:
            raise UserError(
                f"{args[1]}: submitted {MAX_SUBMISSIONS} times without ending with a result (see its jobs' logs "
                f"in {options.folder}): the detached study stops there"
            )
    executor = slurm.make_executor(needed.options, needed.names)
    jobs = slurm.map_array(executor, Requeueable(needed.fn, slurm.REQUEUE_MARK), needed.arglists, needed.options)
    if len(jobs) > 1:
        slurm.name_tasks(dict(enumerate(jobs)), needed.names)
    array = jobs[0].job_id.split("_")[0]
    follow = dataclasses.replace(
        options, slurm_cpus=1, slurm_gpus=0, slurm_mem=None, slurm_constraint=None, slurm_time=CONTINUE_MINUTES
    )
    continuation = slurm.make_executor(follow, [job_name(study.name, "continue")])
    continuation.update_parameters(dependency=f"afterany:{array}")
    continue_with, report = then
    job = continuation.submit(continue_with, str(Path(study.path).resolve()), str(study_dir.resolve()), options, report)
    kind = "trials" if any(f"{os.sep}tune{os.sep}" in str(args[1]) for args in needed.arglists) else "final runs"
    record = {
        "stage": "pretraining" if needed.names[0].endswith(":pretrain") else kind,
        "array": array,
        "jobs": [j.job_id for j in jobs],
        "continuation": job.job_id,
        "submissions": counts,
    }
    write_json_atomic(Path(options.folder) / RECORD, record)
    return record


def queued_jobs(record: dict) -> dict[str, str]:
    """The chain's jobs Slurm still holds (pending, running, requeued), by id, with their state and reason."""
    from peftlab.study.executors.slurm import slurm_command

    ids = [*record.get("jobs", []), *([record["continuation"]] if record.get("continuation") else [])]
    if not ids:
        return {}
    out, why = slurm_command("squeue", "--noheader", "--array", f"--user={getpass.getuser()}", "--format=%i|%T|%r")
    if out is None:
        raise UserError(f"--detach: Slurm does not say where the study's jobs are ({why}): try again later")
    rows = [line.strip().split("|") for line in out.splitlines() if line.count("|") == 2]
    said = {job_id: state + (f" ({reason})" if reason not in ("", "None") else "") for job_id, state, reason in rows}
    return {job_id: said[job_id] for job_id in ids if job_id in said}


def standing(study, record: dict, queued: dict[str, str]) -> str:
    """Where a detached study stands: its stage, and its jobs still in Slurm's queue."""
    continuation = record.get("continuation")
    batch = {job_id: state for job_id, state in queued.items() if job_id != continuation}
    states: dict[str, int] = {}
    for state in batch.values():
        states[state] = states.get(state, 0) + 1
    parts = [f"{n} {state}" for state, n in states.items()]
    line = (
        f"study {study.name}: detached on Slurm, {record.get('stage', '?')}: job array {record.get('array')} "
        f"({len(batch)} of {len(record.get('jobs', []))} jobs in the queue{': ' + ', '.join(parts) if parts else ''})"
    )
    if continuation in queued:
        line += f"; job {continuation} continues the study when they end ({queued[continuation]})"
    return line + "; run the same command again to see where it stands"


def submitted_line(study, record: dict) -> str:
    jobs = record["jobs"]
    shown = ", ".join(jobs[:4]) + (", ..." if len(jobs) > 4 else "")
    return (
        f"study {study.name}: submitted the {record['stage']} as Slurm job array {record['array']} "
        f"({len(jobs)} job{'s' if len(jobs) > 1 else ''}: {shown}), then job {record['continuation']}, which "
        f"continues the study when they end; the jobs go on without this command (the same command says where "
        f"the study stands)"
    )
