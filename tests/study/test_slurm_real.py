"""`peftlab study --executor submitit` against a real Slurm: a single-node cluster (munged,
slurmctld and slurmd on this machine, scripts/install-slurm.sh) that the module starts and stops.

Skipped, with the reason, where Slurm is not installed (`.ci/run` installs it when apt may be
used) or the cluster cannot start. The cluster has no accounting database, so submitit learns
that a job ended from its result file (sacct answers nothing); the tests ask Slurm itself
(squeue, scontrol) what happened to the jobs.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from test_executors import (
    ONE_RUN,
    STUDY,
    assert_progress_lines,
    assert_same_results,
    execution,
    still_trained,
    study_cli,
)
from test_runner import BASE, cli_study_here, results_by_run, study_here, write_study
from testkit import REPO, cpu_seconds, needs_fashion_mnist

from peftlab.study.phases import read_phases

pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]

INSTALL = REPO / "scripts" / "install-slurm.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict:
    """A running single-node cluster for this module's tests; the environment its commands need
    (SLURM_CONF). Stopped afterwards, its jobs cancelled first."""
    pytest.importorskip("submitit")
    missing = [tool for tool in ("sbatch", "slurmctld", "slurmd", "munged") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} not on PATH; scripts/install-slurm.sh installs it)")
    directory = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PEFTLAB_SLURMCTLD_PORT": str(free_port()), "PEFTLAB_SLURMD_PORT": str(free_port())}
    configure = subprocess.run(
        ["bash", str(INSTALL), str(directory)], capture_output=True, text=True, env=env, timeout=1200
    )
    if configure.returncode != 0:
        pytest.skip(f"the Slurm cluster cannot be configured: {configure.stderr.strip()}")
    try:
        start = subprocess.run(
            ["bash", str(INSTALL), "start", str(directory)], capture_output=True, text=True, env=env, timeout=480
        )
        if start.returncode != 0:
            pytest.skip(f"the Slurm cluster cannot start: {start.stderr.strip()}")
        yield {"SLURM_CONF": str(directory / "slurm.conf")}
    finally:
        subprocess.run(
            ["bash", str(INSTALL), "stop", str(directory)], capture_output=True, text=True, env=env, timeout=480
        )


LONGER_RUN = {**ONE_RUN, "set": {**ONE_RUN["set"], "train.epochs": 8}}  # still training when the USR2 lands


def local_results(tmp_path_factory, study: dict) -> dict[str, dict]:
    """The study's results with the local executor, trained in this process (test_executors.py checks
    what `peftlab study` prints with it)."""
    path = write_study(tmp_path_factory.mktemp("local"), study)
    study_here(path, path.parent / "out")
    return results_by_run(path.parent / "out")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict]:
    """STUDY's two runs with the local executor: what its job array must end with."""
    return local_results(tmp_path_factory, STUDY)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict]:
    """LONGER_RUN's results with the local executor: what a preempted or timed-out job must end with."""
    return local_results(tmp_path_factory, LONGER_RUN)


def slurm_cmd(slurm: dict, *args: str) -> str:
    return subprocess.run(
        args, capture_output=True, text=True, check=True, timeout=120, env={**os.environ, **slurm}
    ).stdout


def queue(slurm: dict) -> list[str]:
    """The jobs Slurm still has pending or running."""
    return slurm_cmd(slurm, "squeue", "-h", "-o", "%i %T").split()[::2]


def job_field(slurm: dict, job_id: str, field: str) -> str:
    """A field of `scontrol show job` (finished jobs stay MinJobAge = 60 s)."""
    match = re.search(rf"\b{field}=(\S+)", slurm_cmd(slurm, "scontrol", "show", "job", job_id))
    assert match, (job_id, field)
    return match.group(1)


def final_state(slurm: dict, job_id: str, seconds: float = 60) -> str:
    """The job's state once it has left RUNNING and COMPLETING (Slurm's teardown of a job that has
    written its result can outlast the driver's wait on a loaded machine)."""
    deadline = time.time() + seconds
    state = job_field(slurm, job_id, "JobState")
    while state in ("RUNNING", "COMPLETING") and time.time() < deadline:
        time.sleep(0.5)
        state = job_field(slurm, job_id, "JobState")
    return state


def slurm_args(minutes: int = 60) -> list[str]:
    """One CPU per run, so that the 2-CPU runners hold both tasks of a job array at once.

    submitit takes a USR2 that reaches a job before min(80 %, limit - 10 min) of its time limit
    for a preemption, a later one for the pre-timeout signal: with 10 minutes every USR2 is a
    timeout, with 60 a preemption."""
    return ["--executor", "submitit", "--slurm-cpus", "1", "--slurm-time", str(minutes)]


# `python -c` in place of `-m peftlab.cli`: the CLI with constants of the Slurm executor (its time limit on
# Slurm's commands, how often it asks squeue) set from the first argument, a JSON object: shorter waits in a test
# that waits them out
SET_SLURM_CLI = (
    "import json, runpy, sys; from peftlab.study.executors import slurm; "
    "[setattr(slurm, name, value) for name, value in json.loads(sys.argv.pop(1)).items()]; "
    "runpy.run_module('peftlab.cli', run_name='__main__')"
)


@contextlib.contextmanager
def driver(path: Path, out: Path, slurm: dict, constants: dict | None = None) -> Iterator[subprocess.Popen]:
    """`peftlab study` on Slurm in the background, where the driver's own process is what a test signals
    (``constants``: of ``peftlab.study.executors.slurm``, set in it); killed if a failed test leaves it running
    (the module's cluster then cancels its jobs)."""
    entry = ["-m", "peftlab.cli"] if constants is None else ["-c", SET_SLURM_CLI, json.dumps(constants)]
    proc = subprocess.Popen(
        [
            sys.executable,
            *entry,
            "study",
            str(path),
            "--study-dir",
            str(out),
            "--quiet",
            *slurm_args(),
        ],
        cwd=path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **slurm},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def driven_here(
    path: Path,
    out: Path,
    slurm: dict,
    monkeypatch,
    actions=None,
    minutes: int = 60,
    args: tuple[str, ...] = (),
    constants: dict | None = None,
    **env: str,
):
    """(exit status, stdout, stderr) of `peftlab study` on Slurm run in this process (no interpreter to start for
    the driver: its jobs are the processes under test; ``driver`` starts one where the driver's own process is what
    a test signals), ``env`` set in this process's environment (which its jobs inherit) and ``constants`` of
    ``peftlab.study.executors.slurm`` set until the test ends, while ``actions(ended)`` runs beside it in a thread:
    what the test does to the jobs (a USR2, a requeued job started); ``ended`` is set once the study returned. An
    error of ``actions`` is raised here."""
    from peftlab.study.executors import slurm as slurm_executor

    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name, value in (constants or {}).items():
        monkeypatch.setattr(slurm_executor, name, value)
    actions = actions or (lambda ended: None)
    ended, failed = threading.Event(), []

    def act():
        try:
            actions(ended)
        except BaseException as error:  # raised in the test's thread below
            failed.append(error)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    try:
        answer = cli_study_here(path, out, "--quiet", *slurm_args(minutes), *args)
    finally:
        ended.set()
        thread.join(timeout=300)
    if failed:
        raise failed[0]
    return answer


def first_checkpoint(
    out: Path, running: Callable[[], bool], pattern: str = "runs/*/checkpoint/last.pt", said=lambda: ""
) -> Path:
    """The run directory once a job has written a first checkpoint (``pattern`` under ``out``), waited for while
    ``running()`` says the study still runs (``said()``: what it printed, shown if it ended first)."""
    deadline = time.time() + 1200
    while time.time() < deadline and running() and not list(out.glob(pattern)):
        time.sleep(0.05)
    assert list(out.glob(pattern)), f"the study ended before {pattern} was written: {said()}"
    return next(out.glob(pattern)).parent.parent


def preempt(slurm: dict, out: Path, jobs: list, pattern: str = "runs/*/checkpoint/last.pt"):
    """``driven_here``'s actions for a preemption: once a checkpoint is written, USR2 to the study's one job (as
    submitit's own job._interrupt() does), then its requeued life started; the job's id appended to ``jobs``."""

    def actions(ended: threading.Event) -> None:
        first_checkpoint(out, lambda: not ended.is_set(), pattern)
        (task,) = queue(slurm)
        jobs.append(task)
        slurm_cmd(slurm, "scancel", "--signal", "USR2", task)
        start_requeued_job(slurm, task)

    return actions


def start_requeued_job(slurm: dict, job_id: str) -> None:
    """Once the job is requeued and its first life has left the node, start it without Slurm's hold.

    Slurm holds a requeued batch job back for about two minutes (its BeginTime), which the test need
    not wait for. That hold also guards a race the test must then avoid itself: slurmd refuses to launch
    a job whose credential is not newer, in whole seconds, than the revocation of the job's previous
    life ("Job N already killed, do not launch batch job"), and the job ends FAILED without running. So
    the job is started only once the node is idle again and a new second has begun since then."""
    deadline = time.time() + 240
    while time.time() < deadline:
        requeued = job_field(slurm, job_id, "Restarts") != "0" and job_field(slurm, job_id, "JobState") == "PENDING"
        if requeued and node_state(slurm) == "idle":
            # into the next whole second: the revocation came before the node was idle again, and both times
            # are this machine's clock (slurmctld's) in whole seconds
            time.sleep(1.05 - time.time() % 1)
            slurm_cmd(slurm, "scontrol", "update", f"JobId={job_id}", "StartTime=now")
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} was not requeued: {slurm_cmd(slurm, 'scontrol', 'show', 'job', job_id)}")


def node_state(slurm: dict) -> str:
    """The single node's state as sinfo names it (idle, mixed, allocated, completing, ...)."""
    return slurm_cmd(slurm, "sinfo", "-h", "-N", "-o", "%T").split()[0]


def daemon_log(slurm: dict, job_id: str) -> str:
    """What slurmctld and slurmd logged about the job: why Slurm ended it when a test fails."""
    folder = Path(slurm["SLURM_CONF"]).parent / "log"
    pattern = re.compile(rf"(JobId={job_id}\b|[Jj]ob {job_id}\b|\[{job_id}\.)")
    lines = []
    for name in ("slurmctld.log", "slurmd.log"):
        path = folder / name
        if path.is_file():
            lines += [
                f"{name}: {line}" for line in path.read_text(errors="replace").splitlines() if pattern.search(line)
            ]
    return "\n".join(lines) + "\n"


def tasks(out: Path) -> list[str]:
    """The array tasks submitit made folders for (ARRAY_INDEX), in order."""
    return sorted(p.name for p in (out / "slurm").iterdir() if re.fullmatch(r"\d+_\d+", p.name))


def wait_for_checkpoint(out: Path, proc: subprocess.Popen) -> Path:
    """``first_checkpoint`` while ``driver``'s process runs, which must still run then."""
    run_dir = first_checkpoint(out, lambda: proc.poll() is None, said=lambda: proc.stderr.read())
    assert proc.poll() is None, proc.stderr.read()
    return run_dir


def test_a_study_through_sbatch_job_arrays_equals_the_local_one(tmp_path, slurm, reference, monkeypatch):
    """Both runs are the two tasks of one real job array, completed, with the local executor's
    numbers; each run's record names its task, each task is named for its study and run, and
    `peftlab results` shows which job trained which run; a second call submits nothing."""
    path = write_study(tmp_path, STUDY)
    out = tmp_path / "out"
    proc = study_cli(path, out, *slurm_args(), env=slurm)
    assert proc.returncode == 0, proc.stderr
    assert "2 completed, 0 failed, 0 diverged of 2 runs (0 were already finished)" in proc.stdout
    assert_progress_lines(proc.stderr)
    # nothing of sacct's or submitit's: only the progress lines
    assert all(line.startswith("study s: run ") for line in proc.stderr.splitlines()), proc.stderr
    assert "sacct" not in proc.stdout and "submitit" not in proc.stdout, proc.stdout
    assert_same_results(out, reference)
    submitted = tasks(out)
    array = submitted[0].split("_")[0]
    assert submitted == [f"{array}_0", f"{array}_1"], submitted  # one array of two tasks
    for task in submitted:  # the driver is done once a job's result file is written, before its process has ended
        assert final_state(slurm, task) == "COMPLETED"
        assert job_field(slurm, task, "ArrayJobId") == array
        assert job_field(slurm, task, "NumCPUs") == "1"
    assert not queue(slurm)
    trained_by = {run_id: result["execution"]["job_id"] for run_id, result in results_by_run(out).items()}
    assert sorted(trained_by.values()) == submitted, trained_by
    for run_id, task in trained_by.items():
        assert results_by_run(out)[run_id]["execution"] == execution("submitit", task)
        assert job_field(slurm, task, "JobName") == f"peftlab:s:{run_id}"
        assert (
            f"peftlab: submitit job {task} on {socket.gethostname()} trains run "
            in (out / "slurm" / task / f"{task}_0_log.out").read_text()
        )
    from peftlab.analysis.results.load import load_results

    shown = load_results(out).set_index("run_id")
    assert {run_id: shown.loc[run_id, "execution.job_id"] for run_id in trained_by} == trained_by

    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])  # the same command in this process: no interpreter to start
    status, stdout, stderr = cli_study_here(path, out, "--quiet", *slurm_args())
    assert status == 0, stderr
    assert "2 completed, 0 failed, 0 diverged of 2 runs (2 were already finished)" in stdout
    assert tasks(out) == submitted, "a finished study submitted jobs"


def test_ctrl_c_of_the_driver_cancels_its_slurm_jobs(tmp_path, slurm):
    """SIGINT to the driver alone scancels its job: squeue is empty, no process trains on,
    nothing is recorded."""
    path = write_study(tmp_path, {**ONE_RUN, "set": {**ONE_RUN["set"], "train.epochs": 250}})
    out = tmp_path / "out"
    with driver(path, out, slurm) as proc:
        run_dir = wait_for_checkpoint(out, proc)
        (task,) = queue(slurm)  # the study's one job (submitit submits a single call as a plain job)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=480)
    assert proc.returncode == 130 and "interrupted (SIGINT)" in stderr, stderr
    deadline = time.time() + 120
    while (queue(slurm) or still_trained(run_dir)) and time.time() < deadline:
        time.sleep(0.2)
    assert not queue(slurm), "the driver's job is still queued or running after its Ctrl-C"
    assert not still_trained(run_dir), "a job trains on after the driver's Ctrl-C"
    assert job_field(slurm, task, "JobState") == "CANCELLED"
    assert not (run_dir / "result.json").exists()


@pytest.mark.parametrize("minutes,case", [(60, "preempted"), (10, "timed-out")])
def test_a_preempted_job_is_requeued_and_resumes_to_the_uninterrupted_result(
    tmp_path, slurm, uninterrupted, minutes, case, monkeypatch
):
    """Slurm's preemption or pre-timeout signal (USR2, which submitit asks sbatch for) reaches a
    training job: submitit requeues it (scontrol requeue), the requeued job resumes the run from
    its checkpoint, and the study ends with the numbers of an uninterrupted run. The driver runs in this process
    (``driven_here``): the jobs are what is preempted."""
    path = write_study(tmp_path / "slurm", LONGER_RUN)
    out, jobs = path.parent / "out", []
    status, stdout, stderr = driven_here(path, out, slurm, monkeypatch, preempt(slurm, out, jobs), minutes)
    (task,) = jobs
    log = "".join(p.read_text() for p in sorted((out / "slurm" / task).glob("*_log.*")))
    assert status == 0, (
        daemon_log(slurm, task) + log + stdout + stderr
    )  # the study's own line last, where a cut report keeps it
    assert f"this job is {case}" in log and f"Requeued job {task}" in log, log
    assert (out / "slurm" / task / "requeued").exists(), "the job did not mark its folder before its requeue"
    assert int(job_field(slurm, task, "Restarts")) == 1
    assert "1 completed, 0 failed, 0 diverged of 1 runs" in stdout, stdout
    assert_same_results(out, uninterrupted)
    (result,) = results_by_run(out).values()
    assert result["execution"] == execution("submitit", task, attempt=2)  # its second life finished the run
    earlier = result["timing"]["earlier_wall_seconds"]  # its first life, up to the checkpoint the second resumed from
    (phase,) = [p for p in read_phases(out) if p["phase"] == "final runs"]
    assert earlier > 0 and phase["run_seconds"] == pytest.approx(result["timing"]["wall_seconds"] + earlier, abs=2e-3)


def assert_resumed(out: Path, pattern: str = "runs/*/metrics.jsonl") -> None:
    """Each run trained every step once: a run that was stopped resumed from its checkpoint."""
    metrics_files = list(out.glob(pattern))
    assert metrics_files, pattern
    for metrics in metrics_files:
        steps = [(r["kind"], r["step"]) for r in map(json.loads, metrics.read_text().splitlines())]
        assert len(steps) == len(set(steps)), f"{metrics}: a step was trained twice"


def test_a_job_that_dies_without_a_result_is_lost_and_the_same_command_resumes_it(tmp_path, slurm, monkeypatch):
    """A job killed part-way (SIGKILL at step 3: the out-of-memory killer, a node lost) on a cluster
    whose sacct answers nothing: the driver does not wait for it forever. Soon after the job left
    Slurm's queue (--slurm-lost-after) it says in one line that the run's job, named, was lost;
    it records nothing, and the same command resumes the run from its checkpoint. The driver (in this process,
    ``driven_here``) asks squeue every second here (QUEUE_SECONDS, 5 s), and gives a job up 1 s after it left
    (--slurm-lost-after 1)."""
    path = write_study(tmp_path, ONE_RUN)
    out = tmp_path / "out"
    fast = {"constants": {"QUEUE_SECONDS": 1.0}, "args": ("--slurm-lost-after", "1")}
    status, stdout, stderr = driven_here(path, out, slurm, monkeypatch, **fast, PEFTLAB_KILL_AT="step:3")
    (task,) = [p.name for p in (out / "slurm").iterdir() if p.name.isdigit()]  # the study's one job (not an array)
    assert status == 1, stdout + stderr
    (line,) = stderr.splitlines()
    assert line.startswith("peftlab: run lora") and "stays pending" in line, line
    assert f"its submitit job was lost: it ended without a result (job {task}, FAILED; log " in line, line
    assert "0 completed, 0 failed, 0 diverged of 1 runs" in stdout and "stay pending" in stdout, stdout
    assert not list(out.glob("runs/*/result.json")), "a lost run was recorded"

    monkeypatch.delenv("PEFTLAB_KILL_AT")  # the same command again, as its job resumes
    status, stdout, stderr = cli_study_here(path, out, "--quiet", *slurm_args())
    assert status == 0, stdout + stderr
    assert "1 completed, 0 failed, 0 diverged of 1 runs (0 were already finished)" in stdout
    assert not stderr, stderr  # peftlab's warning lines included (written to sys.stderr as it is: captured)
    assert_resumed(out)


def test_a_scancel_the_controller_does_not_answer_is_one_line(tmp_path, slurm):
    """Ctrl-C of the driver while slurmctld does not answer (stopped: SIGSTOP): the driver's scancel
    gives up after its time limit, the driver says in one line that the cancellation of its job,
    named, could not be confirmed, and it ends as interrupted; nothing of Slurm's reaches stderr."""
    path = write_study(tmp_path, {**ONE_RUN, "set": {**ONE_RUN["set"], "train.epochs": 250}})
    out = tmp_path / "out"
    controller = int((Path(slurm["SLURM_CONF"]).parent / "run" / "slurmctld.pid").read_text())
    with driver(path, out, slurm, constants={"COMMAND_SECONDS": 2}) as proc:  # 2 s, not 10: the test waits it out
        wait_for_checkpoint(out, proc)
        (task,) = queue(slurm)
        os.kill(controller, signal.SIGSTOP)
        try:
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            os.kill(controller, signal.SIGCONT)
    slurm_cmd(slurm, "scancel", task)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.splitlines() == [
        f"peftlab: warning: the cancellation of Slurm jobs {task} could not be confirmed (scancel did not answer in "
        "2 s): see squeue, and scancel those still there",
        "peftlab: interrupted (SIGINT); run the same command again to resume",
    ], stderr
    deadline = time.time() + 120
    while queue(slurm) and time.time() < deadline:
        time.sleep(0.2)
    assert not queue(slurm)


def test_a_preempted_pretraining_job_is_requeued_and_the_study_goes_on(tmp_path, slurm, monkeypatch):
    """Slurm's preemption signal reaches the study's pretraining job: submitit requeues it, the
    requeued job resumes the pretraining from its checkpoint, and the study ends with its base
    trained and its run completed (not a failed pretraining). The driver runs in this process (``driven_here``)."""
    path = write_study(tmp_path, {**ONE_RUN, "pretrain": "pre.yaml"})
    (tmp_path / "pre.yaml").write_text(
        yaml.safe_dump(
            {
                **BASE,
                "name": "pre",
                "method": {"name": "full"},
                "data": {**BASE["data"], "train_subset": 128},
                "train": {**BASE["train"], "epochs": 12},
            }
        )
    )
    out, jobs = tmp_path / "out", []
    pretrained = tmp_path / "cache" / "pretrained" / "pre"
    status, stdout, stderr = driven_here(
        path, out, slurm, monkeypatch, preempt(slurm, pretrained, jobs, "run/checkpoint/last.pt")
    )
    (task,) = jobs
    log = "".join(p.read_text() for p in sorted((out / "slurm" / task).glob("*_log.*")))
    assert status == 0, (
        daemon_log(slurm, task) + log + stdout + stderr
    )  # the study's own line last, where a cut report keeps it
    assert "this job is preempted" in log and f"Requeued job {task}" in log, log
    assert "1 completed, 0 failed, 0 diverged of 1 runs" in stdout, stdout
    assert (pretrained / "manifest.json").is_file() and not (pretrained / "pretrain-error.json").exists()
    assert_resumed(pretrained, "run/metrics.jsonl")


@pytest.mark.parametrize(
    "args,line",
    [
        (["--slurm-partition", "nosuch"], "--slurm-partition=nosuch: Slurm has no such partition (it has: debug)"),
        (["--slurm-cpus", "64"], "--slurm-cpus=64: no node of partition debug has 64 CPUs (the most: "),
        (
            ["--slurm-cpus", "1", "--slurm-mem", "100000"],
            "--slurm-mem=100000: no node of partition debug has 100000 GB",
        ),
        (
            ["--slurm-cpus", "1", "--slurm-gpus", "1"],
            "--slurm-gpus=1: no node of partition debug has 1 GPU (the most: 0",
        ),
    ],
)
def test_what_slurm_could_never_run_is_one_line_before_any_job(tmp_path, slurm, monkeypatch, args, line):
    """A partition Slurm has not, and CPUs, memory or GPUs no node has (sbatch would take such a job, and Slurm
    hold it PENDING for good): one line naming the flag, exit status 2, in seconds; nothing is submitted. With
    --dry-run the same line."""
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    path = write_study(tmp_path, ONE_RUN)
    before = set(queue(slurm))  # an earlier test's job may still be ending
    for extra in ([], ["--dry-run"]):
        # seconds of CPU, not of the clock (docs/testing.md); the clock only guards against the old endless wait
        start, cpu = time.monotonic(), cpu_seconds()
        status, stdout, stderr = cli_study_here(path, tmp_path / "out", "--executor", "submitit", *args, *extra)
        assert cpu_seconds() - cpu < 10 and time.monotonic() - start < 120
        assert status == 2 and stderr.startswith(f"peftlab: error: {line}") and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "out").exists() and set(queue(slurm)) <= before  # nothing submitted


def test_a_submission_slurm_refuses_is_one_line_naming_the_flag(tmp_path, slurm, monkeypatch):
    """Slurm's own refusal of sbatch (the check before it left out, as for a refusal only Slurm knows: an account
    or a QOS): its message in one line beside the flag, not submitit's traceback around it."""
    from peftlab.study.executors import slurm as slurm_executor

    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    monkeypatch.setattr(slurm_executor, "check_request", lambda options, run: None)
    path = write_study(tmp_path, STUDY)
    status, _, stderr = cli_study_here(
        path, tmp_path / "out", "--executor", "submitit", "--slurm-cpus", "1", "--slurm-partition", "nosuch"
    )
    assert status == 2 and stderr == (
        "peftlab: error: --slurm-partition=nosuch: Slurm refuses it: Invalid partition name specified\n"
    ), stderr
    assert "Invalid partition name specified" in (tmp_path / "out" / "library.log").read_text()
