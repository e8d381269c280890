"""Real studies of real runs (Fashion-MNIST subsets, the 2-block 32 px ViT) in real processes."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file
from testkit import REPO, TINY_MODEL, group_alive, needs_fashion_mnist, wait_until

pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]
FIGURES_DRAWN = ()  # the report here is read as text: its figures built and written empty (conftest.py)

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 320, "val_subset": 64, "test_subset": 128},
    # one thread: a tiny model's two threads wait on each other whenever the machine is busy (a run 5 to 100
    # times slower beside two busy loops). Said here although conftest sets OMP_NUM_THREADS=1: these studies
    # also run as Slurm jobs and Ray tasks, and what environment reaches a run there is the executor's business
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "eval_batch_size": 128,
        "lr": 3e-3,
        "log_every": 2,
        "ckpt_every": 3,
        "threads": 1,
    },
}


def write_study(directory: Path, study: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **study}))
    return path


def study_here(path: Path, out: Path, workers: int = 1) -> None:
    """``peftlab study PATH --study-dir OUT --quiet --workers N`` run from PATH's folder, as cmd_study
    calls it, in this process: no interpreter to start, and one forkserver (this process's, started once)
    for every such call. For a study a test compares with and does not stop; the CLI runs the study the
    test is about."""
    from peftlab.study.runner import run_study
    from peftlab.study.spec import load_study

    with contextlib.chdir(path.parent):
        summary = run_study(load_study(path), out, workers=workers, progress=False)
    assert summary.ok and not summary.diverged, summary


def cli_study_here(path: Path, out: Path, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `peftlab study PATH --study-dir OUT ARGS` from PATH's folder, run
    in this process (``cli.run_command``, as test_study_preflight.py runs it): for the calls that refuse
    or list before anything trains, the same command run again, and a study whose stdout a test reads,
    without an interpreter to start for each (peftlab's warning lines are in the stderr returned: their handler
    writes to whatever ``sys.stderr`` is when a line is logged, ``libraries.StderrNow``)."""
    return cli_here("study", str(path), "--study-dir", str(out), *args, cwd=path.parent)


def cli_here(*argv: str, cwd: Path = REPO) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `peftlab ARGV` run from ``cwd`` in this process (``cli.run_command``)."""
    import io

    from peftlab import cli

    stdout, stderr, previous = io.StringIO(), io.StringIO(), signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = cli.run_command(list(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return status, stdout.getvalue(), stderr.getvalue()


def results_by_run(study_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((study_dir / "runs").glob("*/result.json")):
        result = json.loads(path.read_text())
        out[path.parent.name] = result
    return out


def test_failing_and_diverging_runs_do_not_stop_the_study(tmp_path):
    path = write_study(
        tmp_path,
        {
            "seeds": 1,
            "methods": {
                "lora": {"axes": {"data.classes": [[0, 1], [0, 99]]}},
                "full": {"set": {"train.lr": 1.0e6, "train.clip_grad": None}},
            },
        },
    )
    # in this process: its forkserver serves the module's studies (the CLI's own process: the Ctrl-C tests below)
    status, stdout, stderr = cli_study_here(path, tmp_path / "out", "--quiet", "--report", "--workers", "2")
    assert status == 1, stderr
    assert "1 completed, 1 failed, 1 diverged of 3 runs" in stdout
    assert "failed: lora classes=0/99 seed=0" in stdout and "99" in stdout
    statuses = sorted(r["status"] for r in results_by_run(tmp_path / "out").values())
    assert statuses == ["completed", "diverged", "failed"]
    listed = json.loads((tmp_path / "out" / "runs.json").read_text())["run_ids"]  # the study's runs, in its order
    assert sorted(listed) == sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "## Failed or diverged runs" in report and "diverged" in report and "lora classes=0/99" in report
    # rerunning skips everything; --retry-failed runs the failed and diverged ones again
    _, stdout, _ = cli_study_here(path, tmp_path / "out", "--quiet")
    assert "(3 were already finished)" in stdout
    status, stdout, _ = cli_study_here(path, tmp_path / "out", "--quiet", "--retry-failed")
    assert "(1 were already finished)" in stdout and status == 1


def test_sigkill_then_rerun_equals_an_uninterrupted_study(tmp_path):
    study = {"seeds": 2, "methods": {"full": {}, "lora": {"axes": {"method.r": [2, 4]}}}}
    path = write_study(tmp_path / "a", study)
    study_here(write_study(tmp_path / "b", study), tmp_path / "b" / "out")  # the uninterrupted study

    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = tmp_path / "a" / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftlab.cli", "study", str(path), "--study-dir", str(out), "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 1200
    # kill while a run is part-way: at least two runs done and another one checkpointed
    while time.time() < deadline:
        done = list(out.glob("runs/*/result.json"))
        partial = [p for p in out.glob("runs/*/checkpoint/last.pt") if not (p.parent.parent / "result.json").exists()]
        if len(done) >= 2 and partial:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    # the worker dies with its parent (PR_SET_PDEATHSIG); a result it wrote meanwhile would count as finished
    assert wait_until(lambda: not group_alive(proc.pid)), "a process of the study outlived its SIGKILL"
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert 2 <= len(finished_before) < 6
    statuses = {json.loads((out / "runs" / run_id / "result.json").read_text())["status"] for run_id in finished_before}
    assert statuses == {"completed"}, statuses  # the killed run is not recorded failed
    for checkpoint in partial:  # nor is its checkpoint gone (unless it finished before the kill)
        assert checkpoint.exists() or (checkpoint.parent.parent / "result.json").exists(), checkpoint

    status, stdout, stderr = cli_study_here(path, out, "--quiet")  # the same command, in this process
    assert status == 0, stderr
    assert f"({len(finished_before)} were already finished)" in stdout
    for run_id, mtime in finished_before.items():  # no completed run was redone
        assert (out / "runs" / run_id / "result.json").stat().st_mtime_ns == mtime

    a, b = results_by_run(out), results_by_run(tmp_path / "b" / "out")
    assert a.keys() == b.keys() and len(a) == 6
    for run_id in a:
        assert a[run_id]["status"] == "completed"
        assert a[run_id]["metrics"] == b[run_id]["metrics"], run_id
        wa = load_file(str(out / "runs" / run_id / "adapter.safetensors"))
        wb = load_file(str(tmp_path / "b" / "out" / "runs" / run_id / "adapter.safetensors"))
        assert all((wa[k] == wb[k]).all() for k in wa)
        lines = (out / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
        steps = [(json.loads(x)["kind"], json.loads(x)["step"]) for x in lines]
        assert len(steps) == len(set(steps)), f"duplicated metrics records in {run_id}"

    # results in every format, one row per run
    status, _, stderr = cli_here("results", str(out), "--format", "csv", "--out", str(tmp_path / "r.csv"))
    assert status == 0, stderr
    table = pd.read_csv(tmp_path / "r.csv")
    assert len(table) == 6 and {"variant", "seed", "status", "config.method.r", "metrics.test_top1"} <= set(table)
    status, _, _ = cli_here("results", str(out), "--format", "parquet", "--out", str(tmp_path / "r.parquet"))
    assert status == 0 and len(pd.read_parquet(tmp_path / "r.parquet")) == 6
    status, stdout, _ = cli_here("results", str(out), "--format", "markdown")
    assert status == 0 and stdout.count("\n") == 6 + 2


@pytest.mark.parametrize(
    "how, start_method", [("ctrl-c", "forkserver"), ("sigterm", "forkserver"), ("ctrl-c", "spawn")]
)
def test_stopping_the_study_leaves_no_worker_and_resumable_runs(tmp_path, how, start_method):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and SIGTERM of the
    study process stop it cleanly: no run is recorded failed, the checkpoints stay and the same
    command finishes the study. After either, no worker lives on. The same stop under the start method
    spawn (long-lived workers), which the study command then finishes under forkserver: this process's
    forkserver serves it, where a spawned worker would import torch, timm and PEFT again (a spawned worker
    resuming a stopped run's checkpoint: test_spawn.py). (SIGKILL of the study process: test_sigkill_then_
    rerun_equals_an_uninterrupted_study checks the same, no worker left, no run recorded failed, the
    checkpoint kept.)"""
    path = write_study(tmp_path, {"seeds": 1, "methods": {"lora": {}}})  # one run, stopped part-way
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftlab.cli", "study", str(path), "--study-dir", str(out), "--quiet"]
        + ["--start-method", start_method],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 1200
    while time.time() < deadline and proc.poll() is None:
        partial = [p for p in out.glob("runs/*/checkpoint/last.pt") if not (p.parent.parent / "result.json").exists()]
        if partial:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    sig = {"ctrl-c": signal.SIGINT, "sigterm": signal.SIGTERM}[how]
    if how == "ctrl-c":
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=480)
    # forkserver and workers go with the study (the limit is for a loaded machine: they end in a second)
    assert wait_until(lambda: not group_alive(proc.pid), 60), "a worker outlived the study"
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in out.glob("runs/*/result.json")}
    assert set(statuses.values()) <= {"completed"}, statuses
    assert list(out.glob("runs/*/checkpoint/last.pt")), "the interrupted run's checkpoint is gone"
    assert proc.returncode == 128 + sig, stderr
    assert stderr.count("\n") == 1 and f"interrupted ({sig.name})" in stderr and "Traceback" not in stderr, stderr
    status, stdout, stderr = cli_study_here(path, out, "--quiet", "--start-method", "forkserver")
    assert status == 0, stderr
    assert "1 completed, 0 failed, 0 diverged of 1 runs (0 were already finished)" in stdout


def test_retry_failed_keeps_a_checkpoint_it_can_resume_from(tmp_path):
    from peftlab.study.runner import forget_result

    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "last.pt").write_bytes(b"state")
    (run_dir / "result.json").write_text(json.dumps({"status": "failed", "error": "OSError: [Errno 28]"}))
    forget_result(run_dir)
    assert not (run_dir / "result.json").exists() and (run_dir / "checkpoint" / "last.pt").exists()
    (run_dir / "result.json").write_text(
        json.dumps({"status": "failed", "checkpoint_unusable": True, "error": "checkpoint is unusable"})
    )
    forget_result(run_dir)
    assert not (run_dir / "result.json").exists() and not (run_dir / "checkpoint").exists()


def test_a_run_gives_the_same_bytes_with_1_and_2_workers(tmp_path, monkeypatch):
    """Threads come from the run's config (train.threads; null here: the machine's physical cores), never from
    how many runs share the machine."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the suite's conftest sets it
    study = {
        "seeds": 2,
        "methods": {"lora": {"set": {"method.r": 4}}},
        "set": {"train.epochs": 1, "train.threads": None},
    }
    outs = {}
    for workers in (1, 2):
        outs[workers] = tmp_path / f"w{workers}" / "out"
        study_here(write_study(tmp_path / f"w{workers}", study), outs[workers], workers)
    a, b = results_by_run(outs[1]), results_by_run(outs[2])
    assert a.keys() == b.keys() and len(a) == 2
    for run_id in a:
        assert a[run_id]["provenance"]["threads"] == b[run_id]["provenance"]["threads"]
        assert a[run_id]["metrics"] == b[run_id]["metrics"], run_id
        assert (outs[1] / "runs" / run_id / "adapter.safetensors").read_bytes() == (
            outs[2] / "runs" / run_id / "adapter.safetensors"
        ).read_bytes()


def test_a_study_directory_in_use_names_a_waiting_flag_only_where_the_caller_has_one(tmp_path):
    """`peftlab study` on a directory in use says "add --wait"; reproduce's reruns (``rerun.run_chosen``, what
    `peftlab reproduce` calls) and ``peftlab.run_study``, which have no such option, say only to wait."""
    import peftlab
    from peftlab.analysis.archive.rerun import run_chosen
    from peftlab.study.spec import load_study
    from peftlab.utils.locks import DirectoryInUse, hold

    path = write_study(tmp_path, {"seeds": 1, "methods": {"lora": {}}})
    out = tmp_path / "out"
    out.mkdir()
    with hold(out, "study directory", "peftlab study"):  # as another study (or reproduce) holds it
        status, _, stderr = cli_study_here(path, out)
        assert status == 2 and stderr.count("\n") == 1, stderr
        assert stderr.endswith("; wait for it to finish, or add --wait to start when it does\n"), stderr
        with contextlib.chdir(tmp_path), pytest.raises(DirectoryInUse, match="; wait for it to finish$"):
            run_chosen(load_study(path), out, progress=False)
        with pytest.raises(DirectoryInUse, match="; wait for it to finish$"):
            peftlab.run_study(path, out)
    assert not (out / "runs").exists()


def test_two_study_processes_on_one_directory_never_train_a_run_twice(tmp_path):
    """A second `peftlab study` on a directory in use exits with one line naming the holder; with --wait it
    starts when the first ends and finds every run done (both called in this process, the first study's
    holder a process of its own). Every run is trained once: one result, no step twice. A `peftlab train` on
    a run directory another trainer holds is refused the same way and changes nothing."""
    # long enough that the first study still trains when the other two start, on any machine (6 epochs were not,
    # on a quiet machine, when --wait was a process of its own; in this process it starts sooner, but no faster
    # machine may end the first study before it)
    path = write_study(tmp_path, {"seeds": 2, "set": {"train.epochs": 24}, "methods": {"lora": {}}})
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    first = subprocess.Popen(
        [sys.executable, "-m", "peftlab.cli", "study", str(path), "--study-dir", str(out), "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 1200
    while time.time() < deadline and not list(out.glob("runs/*/checkpoint/last.pt")):
        time.sleep(0.05)
    assert first.poll() is None, first.stderr.read()

    status, _, stderr = cli_study_here(path, out, "--quiet")  # the refusal, in this process: another one than first
    assert status == 2 and stderr.count("\n") == 1, stderr
    assert f"study directory {out} is in use by pid {first.pid} on " in stderr and "--wait" in stderr
    assert first.poll() is None, "the first study ended before --wait started: it waited for nothing"
    status, stdout, stderr = cli_study_here(path, out, "--quiet", "--wait")  # returns once first has let go
    assert status == 0, stderr
    assert f"study directory {out} is in use by pid {first.pid} on " in stderr and "; waiting for it" in stderr
    assert "(2 were already finished)" in stdout

    assert first.wait(timeout=1200) == 0, first.stderr.read()
    for run_id, result in results_by_run(out).items():
        assert result["status"] == "completed"
        records = [json.loads(x) for x in (out / "runs" / run_id / "metrics.jsonl").read_text().splitlines()]
        steps = [(r["kind"], r["step"]) for r in records]
        assert len(steps) == len(set(steps)), f"a step of {run_id} was trained twice"

    from peftlab.utils.locks import hold

    run_dir = next(iter((out / "runs").glob("*/result.json"))).parent
    before = (run_dir / "result.json").read_bytes()
    with hold(run_dir, "run directory", "peftlab train"):  # as a trainer holds it while it trains
        status, _, stderr = cli_here(
            "train", str(run_dir / "config.yaml"), "--run-dir", str(run_dir), "--quiet", cwd=tmp_path
        )
    assert status == 2 and stderr.count("\n") == 1, stderr
    assert f"run directory {run_dir} is in use by pid {os.getpid()} on " in stderr
    assert "--wait" not in stderr  # train has no such option
    assert (run_dir / "result.json").read_bytes() == before


def test_a_run_whose_result_json_was_damaged_is_trained_again_from_its_checkpoint(tmp_path, caplog):
    """A completed run whose result.json metric was edited out of range is no result (``run_result.status_of``):
    the next call moves the record aside and finishes the run again from its last checkpoint, to the same numbers."""
    path = write_study(tmp_path, {"seeds": 1, "methods": {"lora": {}}})
    study_here(path, tmp_path / "out")
    (result_path,) = (tmp_path / "out" / "runs").glob("*/result.json")
    sound = json.loads(result_path.read_text())
    result_path.write_text(json.dumps({**sound, "metrics": {**sound["metrics"], "test_top1": 12345.0}}))
    status, stdout, stderr = cli_study_here(path, tmp_path / "out", "--quiet")
    assert status == 0 and "1 completed, 0 failed, 0 diverged of 1 runs (0 were already finished)" in stdout
    assert "result.json is damaged (metrics.test_top1 is 12345.0" in caplog.text  # one warning line
    again = json.loads(result_path.read_text())
    assert again["metrics"] == sound["metrics"] and again["step"] == sound["step"]
    aside = json.loads((result_path.parent / "result.json.damaged-1").read_text())
    assert aside["metrics"]["test_top1"] == 12345.0


def test_labels_from_the_study_file_reach_the_progress_lines_escaped(tmp_path, monkeypatch, capsys):
    """A study name, a configuration's label and a run's error, as a received study file may give them (an ANSI
    escape, a newline, a right-to-left override), are shown as codes in the progress lines, never sent raw."""
    from types import SimpleNamespace

    from peftlab.study import runner
    from peftlab.study.spec import RunSpec
    from peftlab.utils.files import BIDI_CONTROLS

    hostile = "lora\x1b[2J\n\u202eevil"
    specs = [RunSpec(f"run{i}", hostile, "lora", i, ("main",), {}, None) for i in range(2)]
    results = [{"status": "completed"}, {"status": "pending", "error": "stopped \x1b]0;title\x07"}]

    def run_locally(jobs, workers, progress, on_done, executor=None):
        for (spec, _), result in zip(jobs, results):
            on_done(spec, result)

    monkeypatch.setattr(runner, "run_locally", run_locally)
    study = SimpleNamespace(name="study\x1b[31m", runs=specs)
    phase = SimpleNamespace(count=lambda result: None)
    runner.run_final(study, tmp_path, 1, False, True, runner.ExecutorOptions(), phase)
    err = capsys.readouterr().err
    assert "lora\\x1b[2J\\n\\u202eevil" in err and "study\\x1b[31m" in err and "stopped \\x1b]0;title\\x07" in err
    assert not any(c in err for c in "\x1b\x07" + BIDI_CONTROLS), err
    assert err.count("\n") == 3  # two progress lines and the pending run's line, each one line
