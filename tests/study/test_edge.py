"""An edge-following grid: the grid first, then points past the best's edge or between it and its
better neighbour, each a function of the finished trials' scores, so a killed search adds the same
points; diverged trials (non-finite, or at chance) are marked and never chosen. The trials here are
scored by a stand-in executor that writes each run's result.json: no training, so it runs in seconds."""

import json
import logging
import math

import pytest
import yaml
from testkit import TINY_MODEL

from peftlab.study.search import run_search
from peftlab.study.spec import load_study
from peftlab.study.trials import divergence
from peftlab.study.tuning.edge import best_trial, next_point, spacing
from peftlab.utils.errors import UserError

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 64},
    "method": {"name": "lora", "r": 4},
    "train": {"lr": 1.0e-3},
}
DATA = {"num_classes": 10, "split_sizes": {"val": 500}}


def search_of(tmp_path, axes, trials, method="lora", base=BASE, metric="val_top1"):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    tune = {"axes": axes, "search": "grid", "trials": trials, "follow_edge": True, "metric": metric}
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": 1, "methods": {method: {}}, "tune": tune})
    )
    return load_study(tmp_path / "study.yaml").tune[method]


def peak_at(best_lr):
    """val_top1 of a run by its learning rate: a parabola in log10(lr), highest at ``best_lr``."""
    return lambda cfg: 0.9 - 0.1 * (math.log10(cfg.train.lr) - math.log10(best_lr)) ** 2


class Executor:
    """Stands in for the study's executor: writes each run's result.json, scored by ``score(config)``
    (a dict is the whole result), and records the learning rates it trained."""

    def __init__(self, score, die_after=None):
        self.score, self.die_after, self.trained = score, die_after, []

    def __call__(self, jobs, on_done, stop_when):
        for spec, run_dir in jobs:
            if self.die_after is not None and len(self.trained) == self.die_after:
                raise Killed
            self.trained.append(spec.config.train.lr)
            value = self.score(spec.config)
            result = (
                value
                if isinstance(value, dict)
                else {"status": "completed", "metrics": {"val_top1": value}, "provenance": {"data": DATA}}
            )
            (run_dir / "result.json").write_text(json.dumps(result))
            on_done(spec, result)


class Killed(BaseException):
    """The study's process dying while a trial trains (what SIGKILL leaves: the trial running in the journal)."""


def selection(directory):
    """selection.json as its one reader reads it: what the search writes is of the schema it is read with."""
    from peftlab.study.records import read_selection

    record = read_selection(directory / "selection.json")
    assert record == json.loads((directory / "selection.json").read_text())
    return record


def trial(number, params, value, state="COMPLETE", **extra):
    return {"number": number, "state": state, "value": value, "params": params, **extra}


def test_the_grid_runs_first_then_points_past_the_edge_and_between(tmp_path):
    search = search_of(tmp_path, {"train.lr": [1e-3, 1e-2, 1e-1]}, 6)
    out = tmp_path / "tune"
    chosen = run_search(search, out, Executor(peak_at(0.3)), slots=2)
    trials = selection(out)["trials"]
    assert [t["params"]["train.lr"] for t in trials] == [1e-3, 1e-2, 1e-1, 1.0, 0.316227766017, 0.177827941004]
    assert [t.get("added") for t in trials] == [
        None,
        None,
        None,
        "beyond the top of train.lr (best at 0.1)",
        "between 0.1 and 1 of train.lr (best at 0.1)",
        "between 0.1 and 0.316228 of train.lr (best at 0.316228)",
    ]
    assert chosen["trial"] == 4 and chosen["params"] == {"train.lr": 0.316227766017}
    assert selection(out)["follow_edge"] == {
        "grid": 3,
        "added": 3,
        "unspent": 0,
        "refused": [],
        "at_edge": None,
        "stopped": None,
    }


def test_a_perplexity_grid_follows_the_lowest_value_past_the_edge_and_chooses_it(tmp_path):
    """val_perplexity is lower-better: the valley at lr 0.3 is followed as the peak above is, and chosen,
    though the runs' val_top1 is highest at the other end."""
    lm = {
        "model": {"source": "hf-text", "path": "lm", "task": "causal-lm"},
        "data": {"name": "instructions", "root": "data"},
        "method": {"name": "lora", "r": 4},
        "train": {"lr": 1.0e-3},
    }
    search = search_of(tmp_path, {"train.lr": [1e-3, 1e-2, 1e-1]}, 6, base=lm, metric="val_perplexity")
    assert search.direction == "minimize"

    def valley(cfg):
        perplexity = 5 + (math.log10(cfg.train.lr) - math.log10(0.3)) ** 2
        top1 = 0.8 - 0.05 * math.log10(cfg.train.lr / 1e-3)  # highest at the smallest rate
        return {"status": "completed", "metrics": {"val_top1": top1, "val_perplexity": perplexity}}

    out = tmp_path / "tune"
    chosen = run_search(search, out, Executor(valley), slots=2)
    trials = selection(out)["trials"]
    assert [t["params"]["train.lr"] for t in trials] == [1e-3, 1e-2, 1e-1, 1.0, 0.316227766017, 0.177827941004]
    assert chosen["trial"] == 4 and chosen["metric"] == "val_perplexity"
    assert chosen["value"] == min(t["value"] for t in trials) and chosen["value"] > 1


def test_a_budget_that_runs_out_at_the_edge_says_so(tmp_path):
    search = search_of(tmp_path, {"train.lr": [1e-3, 1e-2, 1e-1]}, 4)
    run_search(search, tmp_path / "tune", Executor(peak_at(30.0)), slots=1)
    record = selection(tmp_path / "tune")
    assert record["chosen"]["params"] == {"train.lr": 1.0}  # trial 3, past the grid, still the top
    assert record["follow_edge"]["at_edge"] == (
        "the budget ran out with the best still at an edge: next would be beyond the top of train.lr (best at 1)"
    )


def test_a_killed_search_adds_the_same_points_and_trains_nothing_twice(tmp_path):
    search = search_of(tmp_path, {"train.lr": [1e-3, 1e-2, 1e-1]}, 6)
    reference = tmp_path / "reference"
    run_search(search, reference, Executor(peak_at(0.3)), slots=2)
    for die_after in (2, 4):  # killed in the grid, and while an added point trains
        out = tmp_path / f"killed-{die_after}"
        with pytest.raises(Killed):
            run_search(search, out, Executor(peak_at(0.3), die_after=die_after), slots=2)
        resumed = Executor(peak_at(0.3))
        run_search(search, out, resumed, slots=2)
        assert len(resumed.trained) == 6 - die_after  # nothing finished before the kill was trained again
        assert selection(out) == selection(reference)
    again = Executor(peak_at(0.3))
    run_search(search, reference, again, slots=2)  # a finished search: nothing to train
    assert again.trained == [] and selection(reference)["chosen"]["trial"] == 4


def test_a_journal_whose_added_point_is_not_the_rules_is_set_aside(tmp_path, caplog):
    search = search_of(tmp_path, {"train.lr": [1e-3, 1e-2, 1e-1]}, 5)
    out = tmp_path / "tune"
    run_search(search, out, Executor(peak_at(0.3)), slots=1)
    journal = next(out.glob("search-*.journal"))
    journal.write_bytes(journal.read_bytes().replace(b'"param_value_internal":1.0', b'"param_value_internal":2.0'))
    again = Executor(peak_at(0.3))
    with caplog.at_level(logging.WARNING):
        run_search(search, out, again, slots=1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "trial 3 has values {'train.lr': 2.0}, expected {'train.lr': 1.0}" in warnings[0]
    assert again.trained == [] and selection(out)["trials"][3]["params"] == {"train.lr": 1.0}


def test_diverged_trials_are_marked_never_chosen_and_never_followed(tmp_path):
    """lr 1 diverges (a non-finite loss) and lr 0.1 collapses to chance: both are marked, the search goes
    past the best's other end and then between it and its usable neighbour; a search whose every trial
    diverged chooses nothing, so no final run starts from a trial at chance."""
    scores = {1e-3: 0.5, 3.16227766017e-3: 0.55, 1e-2: 0.6, 1e-1: 0.101}

    def score(cfg):
        if cfg.train.lr >= 1:
            return {"status": "diverged", "error": "non-finite loss at step 3", "metrics": {}}
        return scores[cfg.train.lr]

    search = search_of(tmp_path, {"train.lr": [1e-2, 1e-1, 1.0]}, 5)
    out = tmp_path / "tune"
    chosen = run_search(search, out, Executor(score), slots=2)
    trials = selection(out)["trials"]
    assert trials[2]["diverged"] == "diverged: non-finite loss at step 3" and trials[2]["state"] == "FAIL"
    assert trials[1]["state"] == "COMPLETE" and trials[1]["value"] == 0.101
    assert trials[1]["diverged"].startswith("validation top-1 10.1% is at or below chance (10 classes: 10.0%")
    assert [t.get("added") for t in trials[3:]] == [
        "beyond the bottom of train.lr (best at 0.01)",
        "between 0.001 and 0.01 of train.lr (best at 0.01)",
    ]
    assert chosen["trial"] == 0 and not any(t.get("diverged") for t in (trials[0], *trials[3:]))

    search = search_of(tmp_path, {"train.lr": [1e-1, 1.0]}, 2)
    with pytest.raises(UserError, match="no trial can be chosen: "):
        run_search(search, tmp_path / "all-diverged", Executor(score), slots=2)
    assert selection(tmp_path / "all-diverged")["chosen"] is None


def test_divergence_reads_the_status_and_chance():
    result = {"status": "completed", "metrics": {"val_top1": 0.11}, "provenance": {"data": DATA}}
    assert "at or below chance" in divergence(result)  # 1/10 + one standard error on 500 images (1.3 points)
    assert divergence({**result, "metrics": {"val_top1": 0.12}}) is None
    assert divergence({**result, "metrics": {"val_top1": 0.02}}) is not None  # below chance is no better
    assert divergence({**result, "provenance": {}}) is None  # no class count: nothing to compare with
    assert (
        divergence({"status": "diverged", "error": "non-finite loss at step 3"})
        == "diverged: non-finite loss at step 3"
    )
    assert divergence({"status": "failed", "error": "disk full"}) is None
    trials = [trial(0, {"x": 1}, 0.5), trial(1, {"x": 2}, 0.9, diverged="at chance")]
    assert best_trial(trials)["number"] == 0


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1e-3, 1e-2, 1e-1], "log"),
        ([3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "log"),
        ([4, 8, 16], "log"),
        ([1e-4, 1e-3], "log"),
        ([0.1, 0.2, 0.3], "linear"),
        ([0.0, 0.01, 0.1], "linear"),
        ([2, 4], "linear"),
    ],
)
def test_spacing(values, expected):
    assert spacing(values) == expected


@pytest.mark.parametrize(
    "axes, scores, expected",
    [
        # the grid's ratio at its end: 0.1 x (0.1 / 0.03) on a half-decade grid
        (
            {"train.lr": [1e-2, 3e-2, 1e-1]},
            [0.5, 0.6, 0.7],
            ({"train.lr": 0.333333333333}, "beyond the top of train.lr"),
        ),
        ({"train.lr": [1e-3, 1e-2, 1e-1]}, [0.7, 0.6, 0.5], ({"train.lr": 1e-4}, "beyond the bottom of train.lr")),
        # a linear grid: its difference; beyond its bottom lr would be 0, which the config refuses
        ({"train.lr": [0.01, 0.02, 0.03]}, [0.7, 0.6, 0.5], ({"train.lr": 0.015}, "between 0.01 and 0.02 of train.lr")),
        ({"train.lr": [0.01, 0.02, 0.03]}, [0.5, 0.6, 0.7], ({"train.lr": 0.04}, "beyond the top of train.lr")),
        # ints stay ints: r past 16 doubles, r between 4 and 8 is 6 (geometric 5.66, rounded)
        ({"method.r": [4, 8, 16]}, [0.5, 0.6, 0.7], ({"method.r": 32}, "beyond the top of method.r")),
        ({"method.r": [4, 8, 16]}, [0.6, 0.7, 0.5], ({"method.r": 6}, "between 4 and 8 of method.r")),
        # a dropout < 1: past 0.9 is refused, so the point goes between 0.7 and 0.9
        (
            {"method.lora_dropout": [0.5, 0.7, 0.9]},
            [0.5, 0.6, 0.7],
            ({"method.lora_dropout": 0.8}, "between 0.7 and 0.9 of method.lora_dropout"),
        ),
    ],
)
def test_the_next_point(tmp_path, axes, scores, expected):
    search = search_of(tmp_path, axes, 5)
    trials = [trial(i, p, v) for i, (p, v) in enumerate(zip(search.proposals(), scores))]
    point, refused = next_point(search, trials)
    assert (point.params, point.why.split(" (")[0]) == expected
    if "lora_dropout" in axes or axes == {"train.lr": [0.01, 0.02, 0.03]} and scores[0] == 0.7:
        assert len(refused) == 1 and "is refused" in refused[0] and point.refused == tuple(refused)


def test_categorical_axes_are_never_extended(tmp_path):
    """A 2 x 2 grid: the best sits at an end of both train.lr and the boolean data.augment; only lr
    goes past its end. Each added point keeps the best's other values."""
    search = search_of(tmp_path, {"data.augment": [False, True], "train.lr": [1e-3, 1e-2]}, 6)
    scores = {(False, 1e-3): 0.5, (False, 1e-2): 0.6, (True, 1e-3): 0.55, (True, 1e-2): 0.7}
    trials = [trial(i, p, scores[(p["data.augment"], p["train.lr"])]) for i, p in enumerate(search.proposals())]
    point, _ = next_point(search, trials)
    assert point.params == {"data.augment": True, "train.lr": 0.1}


def test_an_axis_with_the_fewest_values_on_the_best_line_goes_first(tmp_path):
    """lr x weight decay, the best at the top of lr and the bottom of weight decay: lr goes first (the grid's
    axis order), then, once lr's best is inside its line, weight decay past its bottom."""
    search = search_of(tmp_path, {"train.lr": [1e-3, 1e-2], "train.weight_decay": [1e-4, 1e-3]}, 8)
    score = {(1e-3, 1e-4): 0.5, (1e-3, 1e-3): 0.4, (1e-2, 1e-4): 0.7, (1e-2, 1e-3): 0.6, (1e-1, 1e-4): 0.65}
    trials = [trial(i, p, score[tuple(p.values())]) for i, p in enumerate(search.proposals())]
    point, _ = next_point(search, trials)
    assert point.params == {"train.lr": 0.1, "train.weight_decay": 1e-4}
    trials.append(trial(4, point.params, score[(0.1, 1e-4)]))
    point, _ = next_point(search, trials)
    assert point.params == {"train.lr": 0.01, "train.weight_decay": 1e-5} and point.kind == "beyond"


def test_a_budget_nothing_is_left_to_spend_on_is_left_unspent_and_says_why(tmp_path):
    """r in {1, 2} with the best at 1: r 0 is refused and no int lies between 1 and 2, so the last two
    trials of the budget are not spent; selection.json says so and names the refused value."""
    search = search_of(tmp_path, {"method.r": [1, 2]}, 4)
    out = tmp_path / "tune"
    executor = Executor(lambda cfg: 0.7 if cfg.method.r == 1 else 0.6)
    chosen = run_search(search, out, executor, slots=2)
    summary = selection(out)["follow_edge"]
    assert chosen["params"] == {"method.r": 1} and len(executor.trained) == 2
    assert summary["unspent"] == 2 and summary["stopped"].startswith("no point is left to add")
    assert len(summary["refused"]) == 1 and summary["refused"][0].startswith(
        "beyond the bottom of method.r: method.r=0 is refused ("
    )
