"""`peftlab study --executor submitit | ray`: the same runs as the local executor, through
submitit's LocalExecutor (real job processes, submitit's own files) and a real local Ray of 2 CPUs."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_runner import BASE, cli_study_here, results_by_run, study_here, write_study
from testkit import REPO, assert_searches_overlapped, needs_fashion_mnist, run_cli, wait_until

# two short runs: 128 training images, one epoch (4 steps); ONE_RUN is the first of them (test_slurm_real.py's too)
STUDY = {
    "seeds": 1,
    "methods": {"lora": {"axes": {"method.r": [2, 4]}}},
    "set": {"train.epochs": 1, "data.train_subset": 128},
}
ONE_RUN = {**STUDY, "methods": {"lora": {"set": {"method.r": 2}}}}
# the same with BitFit, for the tests here whose runs train in processes of their own (jobs, Ray tasks): such a
# process imports no PEFT for them (peft and transformers are 3 of the 8 CPU seconds of a LoRA run there); the
# searches below train LoRA through both executors
BITFIT_STUDY = {**STUDY, "methods": {"bitfit": {"axes": {"train.lr": [3e-3, 1e-2]}}}}
BITFIT_RUN = {**STUDY, "methods": {"bitfit": {}}}  # its first run: the base's train.lr, 3e-3


def executor_args(executor: str, request) -> list[str]:
    """The executor's options for a test: submitit's LocalExecutor, or the module's local Ray;
    a test skips where the extra is not installed (`make test` installs both)."""
    if executor == "submitit":
        pytest.importorskip("submitit")
        return ["--executor", "submitit", "--slurm-cluster", "local"]
    return ["--executor", "ray", "--ray-address", request.getfixturevalue("ray_cluster")]


# a guard against a hang, not a time limit: beside two busy loops a Ray task's interpreter takes about two
# minutes to start and train a tiny run, and a study of a few runs about ten (issue 50's loaded suite)
STUDY_TIMEOUT = 1800


def study_cli(path: Path, out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    if env is None:
        return run_cli("study", str(path), "--study-dir", str(out), *args, cwd=path.parent, timeout=STUDY_TIMEOUT)
    return subprocess.run(
        [sys.executable, "-m", "peftlab.cli", "study", str(path), "--study-dir", str(out), *args],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=STUDY_TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **env},
    )


def dry_run(path: Path, out: Path) -> str:
    """What `peftlab study PATH --study-dir OUT --dry-run` prints: the runs and their states."""
    status, stdout, stderr = cli_study_here(path, out, "--dry-run")
    assert status == 0, stderr
    return stdout


def mtimes(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict]:
    """The study's results with the local executor (each run's record names it, and this machine), and the
    progress lines `peftlab study` prints with it; run in this process (``cli_study_here``), whose forkserver
    serves the local studies of the module's other tests too."""
    path = write_study(tmp_path_factory.mktemp("local"), BITFIT_STUDY)
    status, _, stderr = cli_study_here(path, path.parent / "out")
    assert status == 0, stderr
    assert_progress_lines(stderr)
    results = results_by_run(path.parent / "out")
    assert len(results) == 2 and all(r["status"] == "completed" for r in results.values())
    for result in results.values():
        assert result["execution"] == execution("local", attempt=None)
    return results


def execution(executor: str, job_id=None, task_id=None, attempt=1) -> dict:
    """A run's ``execution`` record as a job of ``executor`` on this machine writes it."""
    node = socket.gethostname()
    return {"executor": executor, "job_id": job_id, "task_id": task_id, "node": node, "attempt": attempt}


def assert_progress_lines(stderr: str) -> None:
    """Off a terminal the driver prints one line per finished run, counting up (and, on Slurm, one per change of
    what its jobs wait for: "Slurm: ...")."""
    lines = [line for line in stderr.splitlines() if line.startswith("study s: run ") and ", Slurm: " not in line]
    assert [line.split(",")[0] for line in lines] == ["study s: run 1/2 (50%)", "study s: run 2/2 (100%)"], stderr
    assert all(" completed" in line for line in lines), stderr


def assert_same_results(out: Path, reference: dict[str, dict]) -> None:
    results = results_by_run(out)
    assert results and results.keys() <= reference.keys()
    for run_id, result in results.items():
        assert result["status"] == "completed", result.get("error")
        assert result["metrics"] == reference[run_id]["metrics"], run_id  # same config and seed: same numbers


def write_pretraining(tmp_path: Path, study: dict) -> Path:
    """The study file of ``study`` with a pretraining (pre.yaml: full fine-tuning on 64 images) beside it."""
    path = write_study(tmp_path, {**study, "pretrain": "pre.yaml"})
    (tmp_path / "pre.yaml").write_text(
        yaml.safe_dump(
            {**BASE, "name": "pre", "method": {"name": "full"}, "data": {**BASE["data"], "train_subset": 64}}
        )
    )
    return path


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_study_through_submitit_loses_no_job_and_equals_the_local_one(tmp_path, reference, request, monkeypatch):
    """Jobs SIGKILLed after their checkpoint of step 3 (a node lost, an OOM kill) end without a result: each was
    lost, not failed, and the same command goes on from where it stopped. One study, four calls of one command:

    1. its pretraining job dies: the study stops with one line saying the pretraining was lost (exit 2), its
       checkpoint kept, no base written, no run trained;
    2. again, the kill still set: the pretraining's new job resumes after step 3 (not killed again) and writes the
       base; each run's job dies: one line a run saying its job was lost and it stays pending (exit 1), nothing
       recorded, each run started;
    3. again, without the kill: each run's new job resumes from the checkpoint to the local executor's numbers, the
       driver prints a line per finished run, each run's record names its job;
    4. again: the base and every run reused, nothing submitted.

    Every job a process of its own with submitit's own files, which gets the kill hook from the driver's
    environment; each call a command of its own, run in this process (what the driver does, not its process:
    test_ctrl_c_of_the_driver_stops_its_jobs). Ray's counterpart:
    test_a_study_through_ray_equals_the_local_one_though_its_workers_die."""
    path = write_pretraining(tmp_path, BITFIT_STUDY)
    out, pretrained = tmp_path / "out", tmp_path / "cache" / "pretrained" / "pre"
    args = ["--quiet", *executor_args("submitit", request), "--slurm-time", "0:10:00"]
    with monkeypatch.context() as kill:
        kill.setenv("PEFTLAB_KILL_AT", "checkpoint:3")
        status, _, stderr = cli_study_here(path, out, *args)
        assert status == 2, stderr
        (line,) = stderr.splitlines()
        assert line.startswith(f"peftlab: error: pretraining with {tmp_path / 'pre.yaml'} was lost (job "), line
        assert line.endswith("): it stays pending; run the same command again to resume it from its checkpoint"), line
        assert (pretrained / "run" / "checkpoint" / "last.pt").is_file()
        assert not (pretrained / "manifest.json").exists() and not list(out.glob("runs/*/metrics.jsonl"))

        status, stdout, stderr = cli_study_here(path, out, *args)
        assert status == 1, stderr
    manifest = json.loads((pretrained / "manifest.json").read_text())
    assert (pretrained / manifest["weights"]).is_file()
    assert "0 completed, 0 failed, 0 diverged of 2 runs" in stdout and "stay pending" in stdout
    lines = stderr.splitlines()
    assert len(lines) == 2, stderr  # one a run
    for line in lines:
        assert "stopped: its submitit job was lost: it ended without a result (job " in line, line
        assert "it stays pending: run the same command again to resume it" in line, line
    assert not list(out.glob("runs/*/result.json"))
    assert len(list(out.glob("runs/*/checkpoint/last.pt"))) == 2  # each had started

    status, stdout, stderr = cli_study_here(path, out, *args[1:])  # the same command, its progress lines printed
    assert status == 0, stderr
    assert "2 completed, 0 failed, 0 diverged of 2 runs (0 were already finished)" in stdout
    assert_progress_lines(stderr)
    assert_same_results(out, reference)
    for result in results_by_run(out).values():  # each run names the job that trained it
        job_id = result["execution"]["job_id"]
        assert job_id and result["execution"] == execution("submitit", job_id)
    # jobs of their own: the pretraining's two, and each run's two
    assert len(list((out / "slurm").glob("*/*_0_log.out"))) == 6

    before, jobs = mtimes(out), sorted((out / "slurm").glob("*"))
    status, stdout, stderr = cli_study_here(path, out, *args)
    assert status == 0, stderr
    assert "2 completed, 0 failed, 0 diverged of 2 runs (2 were already finished)" in stdout
    assert mtimes(out) == before
    assert sorted((out / "slurm").glob("*")) == jobs, "a finished study submitted jobs"


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_study_through_ray_equals_the_local_one_though_its_workers_die(tmp_path, reference, request, monkeypatch):
    """The study's pretraining runs first as a Ray task, then its two runs, each a task whose worker is SIGKILLed
    part-way (after its checkpoint of step 3); Ray runs each again, which resumes from the checkpoint: the same call
    writes the base and completes every run with the local executor's numbers, prints a line per finished run, and
    says of each task in one line that Ray ran it again (a task run again starts after step 3 and is not killed a
    second time). A second call reuses the base and every run. The first call runs in this process while it holds
    no Ray (the module's starts after it), as a notebook's would: peftlab starts its own local Ray, whose workers
    get the kill hook from the environment of the process that started it (the module's Ray, started without it,
    has none). It starts that Ray once, for the pretraining and the runs."""
    ray = pytest.importorskip("ray")
    path = write_pretraining(tmp_path, BITFIT_STUDY)
    out = tmp_path / "out"
    ray.shutdown()  # the module's Ray, where a test before started it: the next that asks for it starts it again
    with monkeypatch.context() as env:
        env.setenv("PEFTLAB_KILL_AT", "checkpoint:3")
        env.delenv("RAY_ADDRESS", raising=False)
        status, stdout, stderr = cli_study_here(path, out, "--executor", "ray")
    assert status == 0, stderr
    assert not ray.is_initialized(), "peftlab left the Ray it started running"
    assert "2 completed, 0 failed, 0 diverged of 2 runs (0 were already finished)" in stdout
    assert_progress_lines(stderr)
    assert "lost" not in stderr, stderr
    said = [line for line in stderr.splitlines() if not line.startswith("study s: run ")]
    assert said[0] == f"peftlab: warning: Ray ran pre again after its worker died (2 attempts); {WENT_ON}"
    assert sorted(said[1:]) == sorted(  # the two runs' tasks run side by side: either may be first
        f"peftlab: warning: Ray ran {run_id} again after its worker died (2 attempts); {WENT_ON}"
        for run_id in reference
    ), stderr  # Ray's own lines: library.log
    # one Ray for the pretraining and the runs (``ray_tasks.kept``), shut down at the study's end (above)
    assert (out / "library.log").read_text().count("Started a local Ray instance") == 1
    manifest = json.loads((tmp_path / "cache" / "pretrained" / "pre" / "manifest.json").read_text())
    assert (tmp_path / "cache" / "pretrained" / "pre" / manifest["weights"]).is_file()
    assert_same_results(out, reference)
    for result in results_by_run(out).values():  # each run names the task that trained it, on its second attempt
        task_id = result["execution"]["task_id"]
        assert task_id and result["execution"] == execution("ray", task_id=task_id, attempt=2)

    before = mtimes(out)
    status, stdout, stderr = cli_study_here(path, out, "--quiet", *executor_args("ray", request))  # the module's Ray
    assert status == 0, stderr
    assert "2 completed, 0 failed, 0 diverged of 2 runs (2 were already finished)" in stdout
    assert mtimes(out) == before


WENT_ON = "it went on from its last checkpoint"


def selection(study: Path, method: str) -> dict:
    return json.loads((study.parent / "out" / "tune" / method / "selection.json").read_text())


@pytest.mark.e2e
@needs_fashion_mnist()
def test_searches_through_ray_and_submitit_run_side_by_side_with_the_local_trials(tmp_path, request):
    """Trials are ordinary runs: Ray tasks and submitit jobs (its LocalExecutor: processes) train two searches'
    trials in one submission (each starts before the other has ended), and each search gets the trials and the
    choice it gets alone on the local executor. The studies run in this process (what they compute, not what the
    command prints): the Ray one on the module's Ray, as a notebook's. One local search for both executors."""
    pytest.importorskip("submitit")
    methods = {"lora": {}, "bitfit": {}}
    tune = {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"}
    study = {"seeds": 1, "methods": methods, "tune": tune}
    local, ray, slurm = (write_study(tmp_path / name, study) for name in ("local", "ray", "submitit"))
    study_here(local, local.parent / "out")
    for remote, executor in ((ray, executor_args("ray", request)), (slurm, executor_args("submitit", request))):
        status, _, stderr = cli_study_here(remote, remote.parent / "out", "--quiet", *executor)
        assert status == 0, stderr
        for method in methods:
            a, b = (selection(p, method) for p in (local, remote))
            assert a["trials"] == b["trials"] and a["chosen"] == b["chosen"], (executor[1], method)
            assert [t["params"] for t in a["trials"]] == [{"train.lr": 1e-3}, {"train.lr": 1e-2}]
        assert_searches_overlapped(remote.parent / "out" / "tune", methods)


@pytest.mark.e2e
def test_ray_retries_a_task_whose_worker_died_never_one_that_raised(tmp_path, request):
    """Through ``ray_tasks.submit`` on the module's Ray: a task whose worker SIGKILLs itself every
    time runs 1 + WORKER_DEATH_RETRIES times and then ends with why; one that raises runs once."""
    import signal

    from peftlab.study.executors import ray_tasks
    from peftlab.study.executors.executors import ExecutorOptions

    request.getfixturevalue("ray_cluster")

    def attempt(log: str, end: str) -> None:  # a closure: Ray pickles it by value, whatever the test's module path
        with open(log, "a") as f:
            f.write("attempt\n")
        if end == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise ValueError("the run's own error")

    killed, raised = tmp_path / "killed.log", tmp_path / "raised.log"
    arglists = [(str(killed), "kill"), (str(raised), "raise")]
    ends = dict(ray_tasks.submit(attempt, arglists, ExecutorOptions(name="ray")))
    assert killed.read_text().count("attempt") == 1 + ray_tasks.WORKER_DEATH_RETRIES
    assert raised.read_text().count("attempt") == 1
    assert ends[0].startswith("WorkerCrashedError: "), ends
    assert "ValueError: the run's own error" in ends[1], ends


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_job_waits_for_a_run_another_process_trains(tmp_path, reference, request):
    """A run directory held by another trainer (the job of an earlier driver, still running) is
    not trained a second time at once: the new job waits for it, then does what is left."""
    from peftlab.utils.locks import hold

    path = write_study(tmp_path, BITFIT_RUN)
    out = tmp_path / "out"
    run_id = dry_run(path, out).splitlines()[1].split()[0]
    run_dir = out / "runs" / run_id
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    with hold(run_dir, "run directory", "peftlab train"):
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "peftlab.cli",
                "study",
                str(path),
                "--study-dir",
                str(out),
                "--quiet",
                *executor_args("submitit", request),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 480
        while time.time() < deadline and not list((out / "slurm").glob("*/*_0_log.err")):
            time.sleep(0.2)
        log = next((out / "slurm").glob("*/*_0_log.err"))
        while time.time() < deadline and "in use by" not in log.read_text():  # the job found the lock
            time.sleep(0.2)
        assert "in use by" in log.read_text(), log.read_text()
        time.sleep(2.0)
        assert driver.poll() is None and not (run_dir / "metrics.jsonl").exists()
    stdout, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 0, stderr
    assert "1 completed, 0 failed, 0 diverged of 1 runs" in stdout
    assert results_by_run(out)[run_id]["metrics"] == reference[run_id]["metrics"]


def still_trained(run_dir: Path) -> bool:
    """Whether a process still holds the run directory's lock (trains it)."""
    from peftlab.utils.locks import DirectoryInUse, hold

    try:
        with hold(run_dir, "run directory", "test"):
            return False
    except DirectoryInUse:
        return True


@pytest.mark.parametrize("executor", ["submitit", "ray"])
@pytest.mark.e2e
@needs_fashion_mnist()
def test_ctrl_c_of_the_driver_stops_its_jobs(tmp_path, executor, request):
    """SIGINT to the driver alone (not its process group) cancels the jobs or tasks it submitted:
    no process trains on, and nothing is recorded failed: the run is partial (its checkpoint kept),
    which the same command resumes (resuming through each executor: the tests above). The run is
    not trained to its end here: its 1,000 steps took up to 10 minutes on a loaded machine."""
    import signal

    # 1,000 steps: the run is still training when the Ctrl-C lands (it waits for the first epoch's
    # checkpoint), however fast the machine; 100 were not enough for Ray on a quiet machine, whose
    # task finished in the second its cancellation took (1 of 3 tries)
    path = write_study(tmp_path, {**BITFIT_RUN, "set": {**BITFIT_RUN["set"], "train.epochs": 250}})
    out = tmp_path / "out"
    args = ["--quiet", *executor_args(executor, request)]
    driver = subprocess.Popen(
        [sys.executable, "-m", "peftlab.cli", "study", str(path), "--study-dir", str(out), *args],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 1200
    while time.time() < deadline and driver.poll() is None and not list(out.glob("runs/*/checkpoint/last.pt")):
        time.sleep(0.05)
    assert driver.poll() is None, driver.stderr.read()
    run_dir = next(out.glob("runs/*/checkpoint/last.pt")).parent.parent
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=480)
    assert driver.returncode == 130 and "interrupted (SIGINT)" in stderr, stderr
    assert wait_until(lambda: not still_trained(run_dir), 60, 0.2), "a job trains on after the driver's Ctrl-C"
    assert not (run_dir / "result.json").exists()

    listed = dry_run(path, out)
    assert "1 runs: 0 done, 0 failed, 0 diverged, 1 partial, 0 pending" in listed, listed


@pytest.fixture(scope="module")
def module_ray():
    """One local Ray of 2 CPUs for this module's tests (starting one takes seconds, and its workers stay warm),
    started in this process when a test first asks for it (``ray_cluster``) and shut down at the module's end; a
    test that lets peftlab start a Ray of its own here shuts it down first, and the next test's request starts it
    again."""
    ray = pytest.importorskip("ray")

    def address() -> str:
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        return ray.get_runtime_context().gcs_address

    try:
        yield address
    finally:
        ray.shutdown()


@pytest.fixture
def ray_cluster(module_ray) -> str:
    """The address of the module's Ray, running in this process."""
    return module_ray()


# ---------------------------------------------------------------------------------------
# options and errors (fast)


@pytest.mark.parametrize(
    "text,minutes", [("90", 90), ("30:30", 31), ("4:00:00", 240), ("1-0", 1440), ("1-02:30", 1590), ("2-1:0:1", 2941)]
)
def test_slurm_time_formats(text, minutes):
    from peftlab.study.executors.slurm_request import parse_minutes

    assert parse_minutes(text) == minutes


@pytest.mark.parametrize(
    "args,message",
    [
        (["--executor", "submitit", "--slurm-time", "4h"], "--slurm-time='4h' is invalid"),
        (["--executor", "submitit", "--slurm-time", "0"], "--slurm-time='0' is invalid: expected at least one minute"),
        (["--executor", "submitit", "--slurm-cpus", "0"], "--slurm-cpus=0 is invalid: expected a number >= 1"),
        (
            ["--executor", "submitit", "--slurm-lost-after", "0.5"],
            "--slurm-lost-after=0.5 is invalid: expected a number >= 1",
        ),
        (
            ["--executor", "ray", "--slurm-lost-after", "60"],
            "--slurm-lost-after goes with --executor submitit, not ray",
        ),
        (["--executor", "ray", "--slurm-partition", "gpu"], "--slurm-partition goes with --executor submitit, not ray"),
        (["--ray-address", "10.0.0.1:6379"], "--ray-address goes with --executor ray, not local"),
        (["--executor", "ray", "--workers", "2"], "--workers goes with --executor local"),
    ],
)
def test_bad_executor_options_are_one_line_errors(tmp_path, args, message):
    path = write_study(tmp_path, STUDY)
    status, _, stderr = cli_study_here(path, tmp_path / "out", *args)
    assert status == 2 and stderr.count("\n") == 1 and message in stderr, stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module,extra", [("submitit", "slurm"), ("ray", "ray")])
def test_a_missing_extra_names_what_to_install(monkeypatch, module, extra):
    from peftlab.study.executors.executors import SUBMIT, ExecutorOptions
    from peftlab.utils.errors import UserError

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    name = {"slurm": "submitit"}.get(extra, extra)
    with pytest.raises(UserError, match=rf"--executor {name} needs the {module} package: pip install -e \.\[{extra}\]"):
        next(SUBMIT[name](print, [()], ExecutorOptions(name=name, folder="/nonexistent", slurm_cluster="local")))


def test_slurm_options_become_sbatch_lines(tmp_path):
    """The --slurm-* options, through submitit's own sbatch writer."""
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    from peftlab.study.executors.executors import ExecutorOptions
    from peftlab.study.executors.slurm import slurm_parameters

    options = ExecutorOptions(
        name="submitit",
        slurm_partition="gpu",
        slurm_time=90,
        slurm_cpus=8,
        slurm_gpus=1,
        slurm_mem=32,
        slurm_array_parallelism=3,
    )
    text = _make_sbatch_string(command="python -m x", folder=tmp_path, map_count=10, **slurm_parameters(options))
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --mem=32GB",
        "#SBATCH --array=0-9%3",
    ):
        assert line in text, text


@pytest.mark.parametrize(
    "error,why,lost,line",
    [
        (
            {"error": "ValueError: no data"},
            "job 7, FAILED: ...; log x",
            True,
            "pretraining with pre.yaml failed: ValueError: no data",
        ),
        (
            None,
            "job 7, OUT_OF_MEMORY; log x",
            True,
            "pretraining with pre.yaml was lost (job 7, OUT_OF_MEMORY; log x): it stays pending; run the same command "
            "again to resume it from its checkpoint",
        ),
        (None, "exit code 1", False, "pretraining with pre.yaml failed: exit code 1"),
    ],
)
def test_a_lost_pretraining_is_told_apart_from_a_failed_one(tmp_path, error, why, lost, line):
    """A pretraining that raised recorded its error (pretrain-error.json): it failed, and would fail
    again. One whose job ended without its base model or an error was lost (killed, out of memory
    or time): the next call resumes it."""
    from peftlab.study.runner import pretraining_stopped

    if error is not None:
        (tmp_path / "pretrain-error.json").write_text(json.dumps(error))
    assert pretraining_stopped(Path("pre.yaml"), tmp_path, why, lost) == line


def test_a_failed_pretraining_job_returns_with_its_error_recorded(tmp_path, monkeypatch):
    """A pretraining that raised ends its job normally, its error in pretrain-error.json: an exit
    status would make Ray retry the task as one whose worker died, to fail again."""
    from peftlab.study.executors.worker import pretrain_job

    monkeypatch.chdir(tmp_path)  # pretrain_job changes to the driver's directory; this one is restored after
    pretrain_job({"method": {"name": "lora"}}, str(tmp_path), str(tmp_path), "local")
    error = json.loads((tmp_path / "pretrain-error.json").read_text())["error"]
    assert error == "ConfigError: method.name='lora' is invalid for pretraining: expected 'full'", error


def test_a_ctrl_c_while_sbatch_submits_cancels_the_jobs_it_submitted(tmp_path, monkeypatch):
    """A Ctrl-C that lands inside submitit's map_array (sbatch has run, the job ids are not yet
    returned) is held until the ids are known: the jobs just submitted are cancelled, not left."""
    import signal

    submitit = pytest.importorskip("submitit")
    from peftlab.study.executors import slurm
    from peftlab.study.executors.executors import ExecutorOptions

    submitted, cancelled = [], []
    map_array = submitit.LocalExecutor.map_array

    def interrupted_map_array(self, *args, **kwargs):
        jobs = map_array(self, *args, **kwargs)
        submitted.extend(jobs)
        os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C: before map_array returns its jobs
        time.sleep(0.2)
        return jobs

    cancel = slurm.cancel
    monkeypatch.setattr(submitit.LocalExecutor, "map_array", interrupted_map_array)
    monkeypatch.setattr(slurm, "cancel", lambda jobs, on_slurm: (cancelled.extend(jobs), cancel(jobs, on_slurm)))
    options = ExecutorOptions(name="submitit", slurm_cluster="local", folder=str(tmp_path / "slurm"))
    with pytest.raises(KeyboardInterrupt):
        list(slurm.submit(time.sleep, [(60,), (60,)], options))
    assert len(submitted) == 2 and cancelled == submitted
    deadline = time.time() + 120
    while not all(job.done() for job in submitted) and time.time() < deadline:
        time.sleep(0.2)
    assert all(job.done() for job in submitted), "a submitted job still runs"


def test_deferred_stops_deliver_the_first_at_the_end_and_a_second_at_once():
    import signal

    from peftlab.utils.errors import deferred_stops

    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_stops():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            reached.append("end of block")
    assert reached == ["end of block"]
    with pytest.raises(KeyboardInterrupt):
        with deferred_stops():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            reached.append("after the second")
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
