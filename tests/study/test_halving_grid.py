"""A grid with rungs (``tune.rungs``): every trial trains to a rung's epoch, the worse are pruned there by the same
rule for every configuration, the survivors resume from the rung's checkpoint; a search killed after a rung's
training decides what an uninterrupted one decides, with the same scores (real runs of the tiny ViT)."""

import json

import pytest
import yaml
from testkit import TINY_MODEL, needs_fashion_mnist

from peftlab.study.executors.executors import ExecutorOptions
from peftlab.study.runner import jobs_runner
from peftlab.study.search import search_steps, tune_dir
from peftlab.study.side_by_side import drive
from peftlab.study.spec import load_study
from peftlab.study.tuning.replay import replay
from peftlab.study.tuning.rungs import kept
from peftlab.utils.errors import ConfigError

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 192, "val_subset": 64, "test_subset": 64},
    "method": {"name": "lora", "r": 2},
    "train": {"epochs": 3, "batch_size": 32, "eval_batch_size": 64, "lr": 3e-3, "head_lr": 3e-3, "threads": 1},
}
TUNE = {"axes": {"train.lr": [1e-4, 3e-3, 1e-1]}, "search": "grid", "follow_edge": True, "trials": 4}
RUNGS = {**TUNE, "rungs": [1, 2], "reduction_factor": 2}  # 2 of the grid's 3 go on to epoch 2, 1 to the end


def study_at(directory, tune):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "base.yaml").write_text(yaml.safe_dump(BASE))
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
    assert len(runs) == 3 and all((r / "checkpoint" / "last.pt").is_file() for r in runs)  # stopped, or ended first
    print("stopped at the first rung:", sum(not (r / "result.json").is_file() for r in runs))
    resumed = drive(search_steps(search, tune_dir(tmp_path / "killed", "lora"), 2, print), run_jobs)

    assert resumed == whole
    a, b = selection(study, tmp_path / "whole"), selection(study, tmp_path / "killed")
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


def test_a_trial_resumed_from_its_rung_is_counted_once_on_the_bar(monkeypatch):
    """The study's bar counts trials: a survivor's second end (resumed from its rung) is the same trial."""
    from types import SimpleNamespace

    from peftlab.study import runner

    counted, ended = [], []
    spec = SimpleNamespace(run_id="a1")

    def run_jobs(jobs, on_done, stop_when=None):
        for status in ("stopped", "completed"):  # stopped at the rung, then resumed to the end
            on_done(spec, {"status": status})

    monkeypatch.setattr(runner, "describe", lambda spec: spec.run_id)
    runner.showing(run_jobs, counted.append)([], lambda spec, result: ended.append(result["status"]))
    assert ended == ["stopped", "completed"] and counted == ["a1 stopped"]
