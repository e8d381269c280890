"""Tuned studies of real runs (the tiny ViT on Fashion-MNIST subsets) in real processes: a search
killed with SIGKILL resumes without training a finished trial again, selects on validation, and
the final runs and the report say what it chose. The study killed is a `peftlab study` process of its
own; every other study call runs in this process (``cli_study_here``), whose forkserver serves them all."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_runner import cli_study_here
from testkit import REPO, TINY_MODEL, group_alive, needs_fashion_mnist, wait_until

from peftlab.analysis.report.protocol_card import phase_lines
from peftlab.study.spec import load_study

# the reports here are read as text, and tuning.png as a file: figures built, written empty (conftest.py)
pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]
FIGURES_DRAWN = ()  # the reports are read as text (conftest.py)

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 320, "val_subset": 64, "test_subset": 128},
    "method": {"name": "lora", "r": 2},
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "eval_batch_size": 128,
        "lr": 3e-3,
        "head_lr": 3e-3,
        "log_every": 2,
        "ckpt_every": 3,
        "eval_every": 4,
        "threads": 1,
    },
}


def write_study(directory: Path, study: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **study}))
    return path


def trial_results(out: Path, method: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob(f"tune/{method}/runs/*/result.json")}


def test_a_killed_search_resumes_without_training_a_finished_trial_again(tmp_path):
    path = write_study(
        tmp_path,
        {
            "seeds": 1,
            "methods": {
                "lora": {},
                "linear": {"tune": {"axes": {"train.head_lr": {"low": 1e-3, "high": 1e-1, "log": True}}}},
            },
            "tune": {"axes": {"train.lr": {"low": 1e-4, "high": 3e-2, "log": True}}, "search": "random", "trials": 3},
        },
    )
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftlab.cli", "study", str(path), "--study-dir", str(out), "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 1200
    while time.time() < deadline and proc.poll() is None:  # one trial done, the next one part-way
        done = list(out.glob("tune/lora/runs/*/result.json"))
        partial = [
            p for p in out.glob("tune/lora/runs/*/checkpoint/last.pt") if not (p.parent.parent / "result.json").exists()
        ]
        if done and partial:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_until(lambda: not group_alive(proc.pid)), "a process of the study outlived its SIGKILL"
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("tune/*/runs/*/result.json")}
    assert finished and not list(out.glob("runs/*/result.json"))

    status, _, stderr = cli_study_here(path, out, "--quiet", "--report")  # the same command, in this process
    assert status == 0, stderr
    for run_id, mtime in finished.items():  # no finished trial was trained again
        assert next(out.glob(f"tune/*/runs/{run_id}/result.json")).stat().st_mtime_ns == mtime

    study = load_study(path)
    finals = {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in out.glob("runs/*/spec.json")}
    for method, search in study.tune.items():
        selection = json.loads((out / "tune" / method / "selection.json").read_text())
        trials = selection["trials"]
        # the same budget, the same proposals an uninterrupted search makes, one run each
        assert [t["number"] for t in trials] == [0, 1, 2] and all(t["state"] == "COMPLETE" for t in trials)
        assert [t["params"] for t in trials] == search.proposals()
        results = trial_results(out, method)
        assert sorted(results) == sorted(r for t in trials for r in t["run_ids"])
        for trial in trials:
            result = results[trial["run_ids"][0]]
            assert result["status"] == "completed" and trial["value"] == result["metrics"]["val_top1"]
            assert result["metrics"]["test_top1"] is None and result["config"]["train"]["test"] is False  # unseen
            lines = [
                json.loads(x)
                for x in (out / "tune" / method / "runs" / trial["run_ids"][0] / "metrics.jsonl")
                .read_text()
                .splitlines()
            ]
            steps = [(x["kind"], x["step"]) for x in lines]
            assert len(steps) == len(set(steps)), "a resumed trial repeated records"
        # selection by validation: the trial whose run has the best val_top1 (the lower number on a tie)
        best = max(trials, key=lambda t: (results[t["run_ids"][0]]["metrics"]["val_top1"], -t["number"]))
        assert selection["chosen"]["trial"] == best["number"]
        # the final run: the chosen values on the study's seed, another run id, tuned_by naming the trial
        final = finals[method]
        assert final["tuned_by"] == selection["chosen"] and final["seed"] == 0
        assert final["run_id"] not in results
        final_result = json.loads((out / "runs" / final["run_id"] / "result.json").read_text())
        config = final_result["config"]
        assert config["train"]["test"] is True and final_result["metrics"]["test_top1"] is not None
        for key, value in best["params"].items():
            section, name = key.split(".")
            assert config[section][name] == value

    report = (out / "report" / "report.md").read_text()
    assert "## Tuning" in report and "3 of 3 (3 complete)" in report and "train.head_lr in [0.001, 0.1] (log)" in report
    assert (out / "report" / "figures" / "tuning.png").is_file()
    # how sure the choice is, from the trials' kept validation predictions (issue 82 item 9)
    found = r"^- (\S+): trial (\d+) wins ([01]\.\d\d) ± [01]\.\d\d of the [^\n]*?\), (sure|uncertain|borderline)"
    shares = re.findall(found, report, re.MULTILINE)
    assert len(shares) == 2, report  # lora's search and linear's
    for name, trial, share, verdict in shares:
        chosen = json.loads((out / "tune" / name / "selection.json").read_text())["chosen"]["trial"]
        assert int(trial) == chosen and verdict in (
            {"uncertain", "borderline"} if float(share) < 0.8 else {"sure", "borderline"}
        )


def test_halving_stops_pruned_trials_and_keeps_their_runs_unfinished(tmp_path):
    path = write_study(
        tmp_path,
        {
            "seeds": 1,
            "methods": {"lora": {}},
            "tune": {"axes": {"train.lr": {"low": 1e-5, "high": 3e-1, "log": True}}, "search": "halving", "trials": 6},
        },
    )
    out = tmp_path / "out"
    status, _, stderr = cli_study_here(path, out, "--quiet")
    assert status == 0, stderr
    selection = json.loads((out / "tune" / "lora" / "selection.json").read_text())
    states = [t["state"] for t in selection["trials"]]
    assert len(states) == 6 and "PRUNED" in states and "COMPLETE" in states, states
    for trial in selection["trials"]:
        run_dir = out / "tune" / "lora" / "runs" / trial["run_ids"][0]
        if trial["state"] == "COMPLETE":  # a pruned one may have finished before the watch looked: judged the same
            assert (run_dir / "result.json").is_file()
        assert trial["reported"], "every trial reports its validation scores"
        if trial["state"] == "PRUNED":  # stopped at a rung, before the last evaluation
            assert max(map(int, trial["reported"])) < 20
    assert selection["chosen"]["trial"] in [t["number"] for t in selection["trials"] if t["state"] == "COMPLETE"]


def test_halving_through_submitit_is_refused_in_one_line_before_any_trial(tmp_path):
    """Halving must stop a running trial, which a Slurm job cannot be asked to do: refused in one line, no trial
    started. (Searches through submitit and Ray giving the local trials: test_executors.py.)"""
    pytest.importorskip("submitit")
    executor = ["--executor", "submitit", "--slurm-cluster", "local"]
    halving = write_study(
        tmp_path / "halving",
        {
            "seeds": 1,
            "methods": {"lora": {}},
            "tune": {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "halving", "trials": 2},
        },
    )
    status, _, stderr = cli_study_here(halving, tmp_path / "halving" / "out", "--quiet", *executor)
    assert status != 0 and stderr.count("\n") == 1, stderr
    assert "tune.search: halving (method 'lora') stops pruned trials while they run" in stderr
    assert not list((tmp_path / "halving" / "out").glob("tune/*/runs/*"))


def test_a_diverging_trial_is_marked_and_never_chosen_and_the_edge_is_followed(tmp_path):
    """A planted divergence (lr 1e6 without clipping: a non-finite loss) in an edge-following grid: the
    trial is marked diverged in selection.json and the report, is not chosen, and the budget's last
    trial is added from the usable trials (between or past them, never next to the diverged one)."""
    path = write_study(
        tmp_path,
        {
            "seeds": 1,
            "methods": {"lora": {}},
            "set": {"train.clip_grad": None, "train.epochs": 1},
            "tune": {"axes": {"train.lr": [1e-3, 3e-3, 1e6]}, "search": "grid", "trials": 4, "follow_edge": True},
        },
    )
    out = tmp_path / "out"
    status, _, stderr = cli_study_here(path, out, "--quiet", "--report", "--workers", "2")
    assert status == 0, stderr
    selection = json.loads((out / "tune" / "lora" / "selection.json").read_text())
    trials = selection["trials"]
    assert [t["params"]["train.lr"] for t in trials[:3]] == [1e-3, 3e-3, 1e6]
    assert trials[2]["state"] == "FAIL" and trials[2]["diverged"].startswith("diverged: non-finite")
    assert not any(t.get("diverged") for t in trials[:2] + trials[3:])
    assert trials[3]["added"] in (
        "between 0.001 and 0.003 of train.lr (best at 0.003)",
        "between 0.001 and 0.003 of train.lr (best at 0.001)",
        "beyond the bottom of train.lr (best at 0.001)",
    )
    assert selection["chosen"]["trial"] != 2 and selection["follow_edge"]["added"] == 1
    report = (out / "report" / "report.md").read_text()
    assert "4 of 4 (3 complete, 1 diverged)" in report
    assert "- lora trial 2 (train.lr=1e+06): diverged: non-finite" in report
    assert "black triangles on the x-axis trials whose loss or gradients went non-finite" in report
    assert (out / "report" / "figures" / "tuning.png").is_file()


# two searches of three trials, the third added beside the better edge: on two workers they run side by side
SIDE_BY_SIDE = {
    "seeds": 1,
    "methods": {"full": {}, "lora": {}},
    "set": {"train.epochs": 1},
    "tune": {"axes": {"train.lr": [1e-3, 3e-3]}, "search": "grid", "trials": 3, "follow_edge": True},
}


def test_searches_side_by_side_on_two_workers_give_the_trials_of_one_worker(tmp_path):
    """With two workers the searches of full and LoRA share them (``side_by_side``: the real forkserver
    executor takes the trials a search adds while they run); each search's trials, their run ids, scores and
    added points, and its choice are those that one worker, one search after another, gives. (The same study
    on two long-lived spawned workers, one of them killed mid-run, giving the two forkserver workers' trials
    and runs: test_spawn.py.)"""
    selections = []
    for workers in ("1", "2"):
        path = write_study(tmp_path / "forkserver" / workers, SIDE_BY_SIDE)
        out = path.parent / "out"
        status, _, stderr = cli_study_here(path, out, "--quiet", "--workers", workers, "--start-method", "forkserver")
        assert status == 0, stderr
        selections.append({m: json.loads((out / "tune" / m / "selection.json").read_text()) for m in ("full", "lora")})
        assert len(list(out.glob("runs/*/result.json"))) == 2
    one, two = selections
    assert one == two
    assert all(len(s["trials"]) == 3 and s["trials"][2]["added"] for s in two.values())
    # the phases the call measured, read back by the report's header
    out = tmp_path / "forkserver" / "2" / "out"
    phases = [json.loads(line) for line in (out / "phases.jsonl").read_text().splitlines()]
    assert [(p["phase"], p["workers"], p["runs"], p["complete"]) for p in phases] == [
        ("trials", 2, 6, True),
        ("final runs", 2, 2, True),
    ]
    header = phase_lines(out)
    assert header[1].startswith("  - trials: ") and "; 6 runs, " in header[1] and "; 2 workers; ratio " in header[1]
