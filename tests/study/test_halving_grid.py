"""A grid with rungs (``tune.rungs``): every trial trains to a rung's epoch, the worse are pruned there by the same
rule for every configuration, the survivors resume from the rung's checkpoint; a search killed after a rung's
training decides what an uninterrupted one decides, with the same scores (real runs of the tiny ViT)."""

import json

import pytest
import torch
import yaml
from test_runner import cli_study_here
from testkit import TINY_MODEL, needs_fashion_mnist

from peftlab.study.estimate import dry_run_plan
from peftlab.study.executors.executors import ExecutorOptions
from peftlab.study.phases import Phase, read_phases
from peftlab.study.runner import TrialEnds, jobs_runner
from peftlab.study.search import search_steps, tune_dir
from peftlab.study.side_by_side import drive
from peftlab.study.spec import load_study
from peftlab.study.tuning.replay import replay
from peftlab.study.tuning.rungs import kept, most_epochs
from peftlab.utils.errors import ConfigError

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 192, "val_subset": 64, "test_subset": 64},
    "method": {"name": "lora", "r": 2},
    "train": {"epochs": 3, "batch_size": 32, "eval_batch_size": 64, "lr": 3e-3, "head_lr": 3e-3, "threads": 1},
}
TUNE = {"axes": {"train.lr": [1e-4, 3e-3, 1e-1]}, "search": "grid", "follow_edge": True, "trials": 4}
RUNGS = {**TUNE, "rungs": [1, 2], "reduction_factor": 2}  # 2 of the grid's 3 go on to epoch 2, 1 to the end


def study_at(directory, tune, base=BASE):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "base.yaml").write_text(yaml.safe_dump(base))
    body = {"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"lora": {}}, "tune": tune}
    (directory / "study.yaml").write_text(yaml.safe_dump(body))
    return load_study(directory / "study.yaml")


def test_the_rule_keeps_the_best_share_of_a_cohort():
    scores = {0: 0.5, 1: 0.7, 2: 0.6, 3: 0.2, 4: 0.65}  # 0-3 the grid, 4 added after it
    assert [n for n in range(4) if kept(n, scores, 4, 2, False)] == [1, 2]  # the best 2 of the grid's 4
    assert kept(4, scores, 4, 2, False)  # second of 5: among the best ceil(5 / 2) = 3
    assert not kept(4, {**scores, 4: 0.45}, 4, 2, False)  # fourth of 5
    assert [n for n in range(4) if kept(n, scores, 4, 2, True)] == [0, 3]  # lower-better: a perplexity
    assert [n for n in range(3) if kept(n, {0: 0.5, 1: 0.5, 2: 0.4}, 3, 3, False)] == [0]  # a tie: the lower number


@pytest.mark.parametrize(
    "tune, message",
    [
        ({**RUNGS, "rungs": [3]}, "tune.rungs=[3] is invalid: its runs train train.epochs=3: expected epochs below 3"),
        ({**RUNGS, "rungs": [1, 1]}, "tune.rungs=[1, 1] is invalid: expected ascending distinct epochs"),
        ({**RUNGS, "search": "random", "follow_edge": False}, "is invalid with search: random: expected search: grid"),
        ({**RUNGS, "seeds": [1000, 1001]}, "expected one seed (a rung compares one run per trial)"),
    ],
)
def test_rungs_a_search_cannot_use_are_refused_in_one_line(tmp_path, tune, message):
    with pytest.raises(ConfigError) as err:
        study_at(tmp_path, tune)
    assert message in str(err.value)


def test_rungs_change_the_search_record_and_leave_a_plain_grid_as_it_was(tmp_path):
    plain = study_at(tmp_path / "plain", TUNE).tune["lora"]
    rungs = study_at(tmp_path / "rungs", RUNGS).tune["lora"]
    assert "rungs" not in plain.record() and not plain.stops_trials
    assert rungs.record()["rungs"] == [1, 2] and rungs.stops_trials
    assert plain.fingerprint() != rungs.fingerprint()


def selection(study, out):
    return json.loads((tune_dir(out, "lora") / "selection.json").read_text())


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_search_killed_after_a_rung_decides_as_an_uninterrupted_one(tmp_path):
    study = study_at(tmp_path, RUNGS)
    search, run_jobs = study.tune["lora"], jobs_runner(ExecutorOptions(start_method="forkserver"), 2)
    whole = drive(search_steps(search, tune_dir(tmp_path / "whole", "lora"), 2, print), run_jobs)

    killed = search_steps(search, tune_dir(tmp_path / "killed", "lora"), 2, print)
    run_jobs(*next(killed))  # the grid's trials trained to the rung, stopped there; then the search dies
    killed.close()
    runs = list((tune_dir(tmp_path / "killed", "lora") / "runs").iterdir())
    assert len(runs) == 3 and not any((r / "result.json").exists() for r in runs)
    for run in runs:  # each stopped at the rung's end exactly: 6 steps an epoch, not one step more
        kept = torch.load(run / "checkpoint" / "last.pt", weights_only=True)
        assert (kept["epoch"], kept["step"], kept["next_batch"]) == (1, 6, 0)
        assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())][-1] == 6
    phase = Phase()  # the restarted call's trials phase: its pruned trials stopped before the restart counted too
    ends = TrialEnds(phase, lambda line: None)
    resumed = drive(
        search_steps(search, tune_dir(tmp_path / "killed", "lora"), 2, print, ends.pruned), ends.runs(run_jobs)
    )
    assert phase.runs == 4 and phase.run_seconds > 0

    assert resumed == whole
    a, b = selection(study, tmp_path / "whole"), selection(study, tmp_path / "killed")
    spent = []  # each trial's training and validation: a pruned one's from its checkpoint, the others' results
    for trial in b["trials"]:
        run = tune_dir(tmp_path / "killed", "lora") / "runs" / trial["run_ids"][0]
        if trial["state"] == "PRUNED":
            spent.append(torch.load(run / "checkpoint" / "last.pt", weights_only=True))
        else:
            spent.append(json.loads((run / "result.json").read_text())["timing"])
    assert phase.train_eval_seconds == pytest.approx(sum(t["train_seconds"] + t["val_seconds"] for t in spent))
    assert [(t["state"], t["value"], t["params"], t["reported"]) for t in a["trials"]] == [
        (t["state"], t["value"], t["params"], t["reported"]) for t in b["trials"]
    ]
    plain = study_at(tmp_path / "plain", TUNE).tune["lora"]
    drive(search_steps(plain, tune_dir(tmp_path / "plain", "lora"), 2, print), run_jobs)
    full = {t["run_ids"][0]: t["value"] for t in selection(study, tmp_path / "plain")["trials"]}
    for trial in a["trials"]:  # a survivor resumed from its rung ends as the run trained at once
        assert trial["state"] != "COMPLETE" or trial["value"] == full[trial["run_ids"][0]]
    replayed = replay(search, tune_dir(tmp_path / "plain", "lora"), 3)  # the rule read off the full grid's runs
    pruned = [(t["number"], len(t["reported"])) for t in a["trials"] if t["state"] == "PRUNED"]
    if replayed["parted"] is None:
        assert replayed["replayed"]["number"] == whole["trial"] and replayed["pruned"] == pruned
    else:  # the rule added a point the full grid did not train: the one the rung search trained
        parted = replayed["parted"]["trial"]
        assert a["trials"][parted]["params"] == replayed["parted"]["adds"]
        assert replayed["pruned"] == [p for p in pruned if p[0] < parted] and replayed["replayed"] is None
    states = [t["state"] for t in a["trials"]]
    assert states.count("PRUNED") >= 2 and len(states) == 4, states  # two of the grid's 3 at least
    for trial in a["trials"]:  # every trial reached a rung, scored at each it reached; a survivor's run ended
        assert list(trial["reported"]) == ["1", "2"][: len(trial["reported"])] and trial["reported"]
        assert trial["state"] == "PRUNED" or list(trial["reported"]) == ["1", "2"]
        finished = (tune_dir(tmp_path / "whole", "lora") / "runs" / trial["run_ids"][0] / "result.json").is_file()
        assert finished or trial["state"] == "PRUNED"  # a pruned run may end before the watch looks: judged the same


def test_the_report_states_the_rule_and_its_budget():
    from peftlab.analysis.report.tuning import search_words

    record = {"search": "grid", "follow_edge": True, "rungs": [1], "reduction_factor": 2, "trials": 8}
    words = search_words(record)
    assert "each trial trained to the end of epoch 1" in words and "the best ceil(n/2) of the n trials" in words
    assert "stopped early" not in search_words({**record, "rungs": None})


def test_a_trial_is_counted_once_when_it_ends_for_good(monkeypatch, tmp_path):
    """The study's bar and phases.jsonl count trials where they end: a run stopped at its rung has not ended (its
    survivor resumes, the same trial, and ends with its earlier process's time), a pruned one ends where its search
    prunes it, with its stop's time, or, stopped in an earlier call, with its checkpoint's; a run stopped by an
    outside cause is resumed. No trial is counted twice, and none before it ends."""
    from types import SimpleNamespace

    from peftlab.study import runner
    from peftlab.study.phases import EARLIER_WALL, Phase

    a, b, c, d, e = (SimpleNamespace(run_id=name) for name in "abcde")

    def timing(seconds):
        return {"train_seconds": seconds, "val_seconds": 0.5, "wall_seconds": seconds + 1}

    def rung(jobs, on_done, stop_when=None):  # a and b stopped at the rung, c's worker killed
        on_done(a, {"status": "stopped", "timing": timing(1.0)})
        on_done(b, {"status": "stopped", "timing": timing(1.5)})
        on_done(c, {"status": "pending", "error": "its worker was killed by SIGKILL"})

    def rest(jobs, on_done, stop_when=None):  # a survives the rung, c resumes: both end, a after 2 s before
        on_done(a, {"status": "completed", "timing": timing(3.0), EARLIER_WALL: 2.0})
        on_done(c, {"status": "completed", "timing": timing(2.0)})

    monkeypatch.setattr(runner, "describe", lambda spec: spec.run_id)
    shown, phase, heard = [], Phase(), []
    ends = runner.TrialEnds(phase, shown.append)
    ends.runs(rung)([], lambda spec, result: heard.append(result["status"]))
    assert heard == ["stopped", "stopped", "pending"] and shown == []  # the search hears every run; none ended
    ends.pruned(b, tmp_path / "b", "pruned at epoch 1")
    ends.runs(rest)([], lambda spec, result: None)
    ends.pruned(a, tmp_path / "a", "pruned")  # a late word on a run that ended: counted once
    assert shown == ["b pruned at epoch 1", "a completed", "c completed"]
    assert (phase.runs, phase.train_eval_seconds, phase.run_seconds) == (3, 8.0, 11.5)  # a's two processes once

    (tmp_path / "d" / "checkpoint").mkdir(parents=True)  # stopped at its rung in an earlier call
    kept = {"train_seconds": 1.25, "val_seconds": 0.25, "wall_seconds": 4.0, "trainable": {}}
    torch.save(kept, tmp_path / "d" / "checkpoint" / "last.pt")
    (tmp_path / "e").mkdir()  # ended with a result in an earlier call, which counted it
    (tmp_path / "e" / "result.json").write_text(json.dumps({"status": "completed", "timing": timing(9.0)}))
    ends.pruned(d, tmp_path / "d", "pruned at epoch 1")
    ends.pruned(e, tmp_path / "e", "pruned at epoch 1")
    assert shown[3:] == ["d pruned at epoch 1", "e pruned at epoch 1"]
    assert (phase.runs, phase.train_eval_seconds, phase.run_seconds) == (4, 9.5, 15.5)  # d's checkpoint's time


def test_the_most_epochs_of_a_search_with_rungs(tmp_path):
    """Of a grid's n trials all reach the first rung and ceil(n / factor) go on past each; a point added after
    the grid may rank among the best at each rung: it counts whole."""
    search = study_at(tmp_path / "rungs", RUNGS).tune["lora"]  # 3 points, 1 added; rungs at 1 and 2 of 3 epochs
    assert most_epochs(search, 3) == [1, 2, 3, 3]
    assert most_epochs(study_at(tmp_path / "plain", TUNE).tune["lora"], 3) == [3, 3, 3, 3]


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_study_with_rungs_counts_and_times_each_trial_once_within_its_dry_runs_bound(tmp_path):
    """Real runs through `peftlab study`: the bar counts each trial once, where it ends, never past its total;
    phases.jsonl times every trial run, the pruned ones from their checkpoints, a survivor over both its processes;
    a pruned run trains not one step past its rung, and the trials the dry run's bound (which says it is one), and a
    done search leaves no run to train."""
    base = {**BASE, "train": {**BASE["train"], "epochs": 2}}
    tune = {"axes": {"train.lr": [1e-4, 1e-3, 3e-3, 1e-1]}, "search": "grid", "rungs": [1], "reduction_factor": 2}
    study, out = study_at(tmp_path, tune, base), tmp_path / "out"
    status, planned, _ = cli_study_here(tmp_path / "study.yaml", out, "--dry-run")
    assert status == 0 and "grid, 4 trials, compared at the end of epoch 1: at most 6 of their 8 epochs" in planned
    assert "compute: at most " in planned and "lora's trials counted at most 6 of their 8 epochs" in planned

    status, _, stderr = cli_study_here(tmp_path / "study.yaml", out)
    assert status == 0, stderr
    counted = [line.split(", ")[:2] for line in stderr.splitlines() if line.startswith("study s: trial ")]
    assert [n for n, _ in counted] == [f"study s: trial {k}/4 ({25 * k}%)" for k in range(1, 5)], stderr
    trials = selection(study, out)["trials"]
    assert sorted(line.split("[")[1].split("]")[0] for _, line in counted) == sorted(t["run_ids"][0] for t in trials)
    phase = next(p for p in read_phases(out) if p["phase"] == "trials")
    assert phase["runs"] == 4  # every trial run, its time from its result or from its stop
    runs = {t["run_ids"][0]: out / "tune" / "lora" / "runs" / t["run_ids"][0] for t in trials}
    results = [json.loads(p.read_text())["timing"] for p in out.glob("tune/lora/runs/*/result.json")]
    pruned = [torch.load(runs[t["run_ids"][0]] / "checkpoint" / "last.pt") for t in trials if t["state"] == "PRUNED"]
    assert [(k["epoch"], k["step"]) for k in pruned] == [(1, 6), (1, 6)]  # stopped at the rung's end exactly
    spent = sum(r["train_seconds"] + r["val_seconds"] for r in results + pruned)
    assert phase["train_eval_seconds"] == pytest.approx(spent, abs=0.01)  # rounded to the millisecond
    assert phase["test_seconds"] == 0.0  # a trial is never tested, a pruned one neither
    assert phase["run_seconds"] > sum(r["wall_seconds"] for r in results + pruned)  # the survivors' first processes
    trained = sum(len(t["reported"]) if t["state"] == "PRUNED" else 2 for t in trials)  # reported: its rungs
    assert [t["state"] for t in trials].count("PRUNED") == 2 and trained == 6
    assert dry_run_plan(load_study(tmp_path / "study.yaml"), out)["remaining_seconds"] == 0
