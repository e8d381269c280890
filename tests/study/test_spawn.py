"""The local runner with the start method ``spawn`` (macOS's default), run here with real processes:
long-lived workers take several runs each, a worker killed by SIGKILL loses its run to pending and
nothing else, a new worker resumes it, and the study gives what an uninterrupted study gives under
``forkserver``."""

import argparse
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from test_runner import study_here
from test_tuning_study import SIDE_BY_SIDE, write_study
from testkit import REPO, needs_fashion_mnist

from peftlab.study.executors import local as local_executor
from peftlab.study.executors.executors import ExecutorOptions
from peftlab.utils.errors import ConfigError, UserError


def test_the_start_method_defaults_per_platform_and_a_bad_one_is_one_line(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert ExecutorOptions().start_method == "spawn"
    monkeypatch.setattr(sys, "platform", "linux")
    assert ExecutorOptions().start_method == "forkserver"
    assert ExecutorOptions(start_method="spawn").start_method == "spawn"  # selectable everywhere
    with pytest.raises(ConfigError) as err:
        ExecutorOptions(start_method="fork")
    assert str(err.value) == "--start-method='fork' is invalid: expected spawn or forkserver"


def test_the_start_method_goes_with_the_local_executor_only():
    from peftlab.cli.study import EXECUTOR_FLAGS, executor_options

    flags = {flag: None for flags in EXECUTOR_FLAGS.values() for flag in flags}
    args = argparse.Namespace(workers=1, executor="local", **{**flags, "start_method": "spawn"})
    assert executor_options(args).start_method == "spawn"
    with pytest.raises(UserError, match="--start-method goes with --executor local, not ray"):
        executor_options(argparse.Namespace(**{**vars(args), "executor": "ray"}))
    assert local_executor.START_METHODS == ("spawn", "forkserver")


def lock_pid(run_dir: Path) -> int:
    """The pid of the last process that trained ``run_dir`` (its ``.lock`` keeps the holder's)."""
    return json.loads((run_dir / ".lock").read_text())["pid"]


def trained(out: Path) -> dict[str, Path]:
    """Every trial and final run directory with a result, by run id."""
    return {p.parent.name: p.parent for p in [*out.glob("tune/*/runs/*/result.json"), *out.glob("runs/*/result.json")]}


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_spawn_worker_killed_mid_run_resumes_to_the_uninterrupted_forkserver_study(tmp_path):
    """Two 3-trial grids (full and LoRA, each search's third trial added beside its better edge), side by side
    on two spawned workers, and their final runs. The worker of the first trial to reach step 7 (after the
    checkpoint of step 6) SIGKILLs itself: its run stays pending, the slot gets a new worker that resumes it
    from its checkpoint, and the study goes on (docs/studies.md) to its final runs, trained in the search's
    workers, which outlive the search. Every run, and each search's trials, their added points and its choice,
    equal the uninterrupted study's on two forkserver workers (which equal one worker's: test_tuning_study.py):
    the long-lived spawned workers take the trials a search adds while they run."""
    ref_out = tmp_path / "forkserver" / "out"
    study_here(write_study(tmp_path / "forkserver", SIDE_BY_SIDE), ref_out, workers=2)  # forkserver: this process's

    path = write_study(tmp_path / "spawn", SIDE_BY_SIDE)
    out = tmp_path / "spawn" / "out"
    env = {"PEFTLAB_KILL_AT": "step:7", "PEFTLAB_KILL_ONCE": str(tmp_path / "killed")}
    killed = study_cli(path, out, tmp_path, **env)
    assert killed.returncode == 0 and (tmp_path / "killed").exists(), killed.stderr
    (line,) = killed.stderr.splitlines()
    assert "was stopped by an outside cause (its worker was killed by SIGKILL" in line and "resuming it" in line
    assert "2 completed, 0 failed, 0 diverged of 2 runs (0 were already finished)" in killed.stdout
    workers = {lock_pid(d) for d in out.glob("tune/*/runs/*")}  # the resumed run's: a new or an idle worker
    assert os.getpid() not in workers
    finals = [p.parent for p in out.glob("runs/*/result.json")]
    assert len(finals) == 2 and all(lock_pid(final) in workers for final in finals), "a final run took a new worker"

    ours, theirs = trained(out), trained(ref_out)
    assert ours.keys() == theirs.keys() and len(ours) == 8
    for run_id, run_dir in ours.items():
        a, b = (json.loads((d / "result.json").read_text()) for d in (run_dir, theirs[run_id]))
        assert a["status"] == b["status"] == "completed" and a["metrics"] == b["metrics"], run_id
        steps = [(r["kind"], r["step"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]
        assert len(steps) == len(set(steps)), f"a step of {run_id} was trained twice"
    for final in finals:
        assert (final / "adapter.safetensors").read_bytes() == (theirs[final.name] / "adapter.safetensors").read_bytes()
    studies = (out, ref_out)
    for method in ("full", "lora"):  # each search's trials, scores, added point and choice
        ours_chose, theirs_chose = (json.loads((o / "tune" / method / "selection.json").read_text()) for o in studies)
        assert ours_chose == theirs_chose, method
        assert len(ours_chose["trials"]) == 3 and ours_chose["trials"][2]["added"]


def study_cli(path: Path, out: Path, cwd: Path, **env: str):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "peftlab.cli", "study", str(path), "--study-dir", str(out), "--quiet"]
        + ["--start-method", "spawn", "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO / "src"), **env),
        timeout=900,
    )


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_run_stopped_by_stop_when_is_stopped_and_its_worker_not_reused(tmp_path, monkeypatch):
    """What a halving search's pruner does to a spawned worker: SIGTERM stops its run cleanly (no
    result, the checkpoint kept), the worker is not reused, and the next call resumes the run.
    The first worker waits after its first checkpoint (``PEFTLAB_HOLD_AT``), so the run cannot end
    before the stop reaches it however fast it trains. A job that ends at its first epoch (a rung's) stops
    there exactly and its worker is kept; each process's outcome brings the earlier ones' wall time, the
    checkpoint's as it started."""
    import dataclasses

    from peftlab.study.executors.spawn import IDLE, run_spawned, stop_idle_workers
    from peftlab.study.phases import EARLIER_WALL
    from peftlab.study.spec import load_study

    (spec,) = load_study(write_study(tmp_path, {"seeds": 1, "methods": {"lora": {}}})).runs
    run_dir = tmp_path / "run"
    outcomes = []
    checkpointed = lambda spec, run_dir: (run_dir / "checkpoint" / "last.pt").exists()
    stop_idle_workers()  # a worker another test left would not have the hold in its environment
    monkeypatch.setenv("PEFTLAB_HOLD_AT", "checkpoint:3")
    run_spawned([(spec, run_dir)], 1, False, lambda spec, result: outcomes.append(result), checkpointed)
    assert [outcome["status"] for outcome in outcomes] == ["stopped"] and not IDLE
    assert outcomes[0]["timing"]["wall_seconds"] > 0 and EARLIER_WALL not in outcomes[0]  # its first process
    monkeypatch.delenv("PEFTLAB_HOLD_AT")  # the next call's new worker trains on
    assert (run_dir / "checkpoint" / "last.pt").exists() and not (run_dir / "result.json").exists()
    walls = [torch.load(run_dir / "checkpoint" / "last.pt")["wall_seconds"]]
    run_spawned([(dataclasses.replace(spec, last_epoch=1), run_dir)], 1, False, lambda s, r: outcomes.append(r))
    kept = torch.load(run_dir / "checkpoint" / "last.pt")
    assert outcomes[1]["status"] == "stopped" and (kept["epoch"], kept["step"], kept["next_batch"]) == (1, 10, 0)
    assert outcomes[1][EARLIER_WALL] == walls[0] and len(IDLE) == 1  # stopped by itself: its worker kept
    walls.append(kept["wall_seconds"])
    run_spawned([(spec, run_dir)], 1, False, lambda spec, result: outcomes.append(result))
    assert outcomes[2]["status"] == "completed" and outcomes[2][EARLIER_WALL] == walls[1] > walls[0] > 0
    assert len(IDLE) == 1
    stop_idle_workers()
    assert not IDLE
    steps = [(r["kind"], r["step"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]
    assert len(steps) == len(set(steps)), "the stopped run did not resume from its checkpoint"
