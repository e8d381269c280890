"""The tune: section of a study: its validation, the equal budget, the proposals and the selection rule."""

import dataclasses
import json

import pytest
import yaml
from testkit import REPO, TINY_MODEL

from peftlab.study.search import tune_dir, with_choices
from peftlab.study.spec import load_study
from peftlab.study.trials import trial_value
from peftlab.study.tuning.edge import best_trial
from peftlab.utils.errors import ConfigError

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 64},
    "train": {"lr": 1.0e-3, "head_lr": 1.0e-3},
}
TUNE = {
    "axes": {"train.lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True}, "train.weight_decay": [0.0, 0.1]},
    "search": "random",
    "trials": 5,
}


def write_study(tmp_path, study: dict, base: dict = BASE):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **study}))
    return path


def tuned(tmp_path, tune=TUNE, methods=None, **study):
    methods = methods or {
        "full": {},
        "lora": {"tune": {"axes": {"method.r": [2, 4]}}},
        "linear": {"tune": {"axes": {"train.head_lr": [1.0e-3, 1.0e-2]}}},
    }
    return load_study(write_study(tmp_path, {"seeds": 2, "methods": methods, "tune": tune, **study}))


def test_every_method_gets_the_same_budget_and_its_own_space(tmp_path):
    study = tuned(tmp_path)
    assert {m: s.trials for m, s in study.tune.items()} == {"full": 5, "lora": 5, "linear": 5}
    keys = {m: [a.key for a in s.axes] for m, s in study.tune.items()}
    assert keys["full"] == ["train.lr", "train.weight_decay"]
    assert keys["lora"] == ["train.lr", "train.weight_decay", "method.r"]
    # a probe trains only its head at train.head_lr: the shared train.lr and weight decay do nothing there
    assert keys["linear"] == [
        "train.weight_decay",
        "train.head_lr",
    ]  # weight decay reaches the head (no head_weight_decay)
    for search in study.tune.values():
        assert search.seeds == (1000,)  # one seed that no final run uses
        assert len(search.proposals()) == 5


def test_linear_keeps_the_shared_weight_decay_only_when_its_head_has_none():
    """train.weight_decay reaches the head unless train.head_weight_decay is set (the recipe's fallback)."""
    from peftlab.config.schema import RunConfig
    from peftlab.config.sections import TrainConfig
    from peftlab.study.tuning.tune import unused_by

    assert unused_by("linear", "train.weight_decay", RunConfig()) is None
    cfg = RunConfig(train=TrainConfig(head_weight_decay=0.0, head_lr=1e-3))
    assert "train.head_weight_decay" in unused_by("linear", "train.weight_decay", cfg)
    assert "train.head_lr" in unused_by("linear", "train.lr", cfg)
    assert unused_by("lora", "train.lr", cfg) is None


def test_proposals_are_the_same_on_every_call(tmp_path):
    study = tuned(tmp_path)
    first, again = study.tune["lora"].proposals(), tuned(tmp_path).tune["lora"].proposals()
    assert first == again and len({repr(p) for p in first}) == 5
    assert all(1e-4 <= p["train.lr"] <= 1e-1 and p["method.r"] in (2, 4) for p in first)
    grid = tuned(
        tmp_path, tune={"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"}, methods={"full": {}, "lora": {}}
    )
    assert grid.tune["lora"].proposals() == [{"train.lr": 1e-3}, {"train.lr": 1e-2}]
    assert grid.tune["full"].trials == 2


@pytest.mark.parametrize(
    "tune, methods, message",
    [
        (
            {**TUNE, "axes": {"train.lrr": [1e-3]}},
            None,
            "study tune.axes key 'train.lrr' is not a config field (did you mean 'train.lr'?)",
        ),
        (
            {**TUNE, "metric": "test_top1"},
            None,
            "tune.metric='test_top1' is invalid (tuning selects on validation only",
        ),
        ({**TUNE, "trials": 0}, None, "study tune.trials=0 is invalid: expected an integer in [1, 10000]"),
        ({**TUNE, "search": "bayes"}, None, "tune.search='bayes' is invalid: expected one of grid, random, halving"),
        ({**TUNE, "search": "grid", "trials": None}, None, "tune axis 'train.lr' is a range: search grid needs a list"),
        ({**TUNE, "seeds": [1, 1000]}, None, "seed 1 is also a seed of the final runs"),
        ({**TUNE, "search": "halving", "seeds": [5, 6]}, None, "expected one seed"),
        ({**TUNE, "axes": {"train.lr": {"low": 0.0, "high": 1.0, "log": True}}}, None, "low > 0 when log: true"),
        ({**TUNE, "axes": {"seed": [1, 2]}}, None, "seeds and names are not hyper-parameters"),
        (
            {**TUNE, "axes": {"train.lr": [0.01, -1.0]}, "search": "grid", "trials": None},
            {"full": {}},
            "train.lr=-1.0 is invalid",
        ),
        (
            {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"},
            {"full": {}, "lora": {"tune": {"axes": {"method.r": [2, 4]}}}},
            "the methods get different budgets (full 2, lora 4 trials)",
        ),
        (
            TUNE,
            {"linear": {"tune": {"axes": {"train.lr": [1e-3]}}}},
            "study method 'linear' tune.axes train.lr: a linear probe trains only its head",
        ),
        ({**TUNE, "axes": {"train.lr": [1e-3, 1e-2]}}, {"linear": {}}, "study method 'linear' has no axis to tune"),
        (
            {**TUNE, "share": {"from": ["lora r=3"]}},
            {"lora": {"axes": {"method.r": [2, 4]}}},
            "study tune.share.from value 'lora r=3' names no configuration of the study: expected one of lora r=2, "
            "lora r=4",
        ),
        (
            {**TUNE, "share": {"from": ["lora r=2", "lora r=4"]}},
            {"lora": {"axes": {"method.r": [2, 4]}}},
            "study tune.share.from names both 'lora r=2' and 'lora r=4', configurations of 'lora' on fashion_mnist",
        ),
        ({**TUNE, "share": {"to": "lora"}}, None, "study tune.share={'to': 'lora'} is invalid: expected {from: "),
        ({**TUNE, "share": {"from": []}}, None, "study tune.share={'from': []} is invalid"),
        ({**TUNE, "window": 3}, None, "study tune: unknown key 'window'"),
        (
            {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid", "trials": 3},
            {"full": {}},
            "tune.trials=3 is invalid with search: grid: expected its number of grid points, 2 (or follow_edge: true",
        ),
        (
            {**TUNE, "follow_edge": True},
            None,
            "study tune.follow_edge=True is invalid with search: random and trials: 5: "
            "expected true only with search: grid and trials",
        ),
        (
            {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid", "follow_edge": True},
            {"full": {}},
            "study tune.follow_edge=True is invalid with search: grid: expected true only with search: grid and trials",
        ),
        (
            {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid", "follow_edge": "yes", "trials": 4},
            {"full": {}},
            "study tune.follow_edge='yes' is invalid",
        ),
        (
            {"axes": {"train.lr": [1e-3, 1e-2, 1e-1]}, "search": "grid", "follow_edge": True, "trials": 2},
            {"full": {}},
            "study method 'full' tune.trials=2 is invalid with follow_edge: its grid has 3 points: expected at least 3",
        ),
        (
            {"axes": {"data.augment": [True, False]}, "search": "grid", "follow_edge": True, "trials": 4},
            {"full": {}},
            "study method 'full' tune.follow_edge=True is invalid: its grid has no numeric axis",
        ),
    ],
)
def test_invalid_tune_sections_fail_with_one_line(tmp_path, tune, methods, message):
    with pytest.raises(ConfigError) as err:
        tuned(tmp_path, tune=tune, methods=methods)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_methods_own_budget_may_differ_on_purpose(tmp_path):
    study = tuned(
        tmp_path,
        tune={"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"},
        methods={"full": {}, "lora": {"tune": {"axes": {"method.r": [2, 4]}, "trials": 4}}},
    )
    assert study.tune["full"].trials == 2 and study.tune["lora"].trials == 4


def test_a_validation_split_is_required(tmp_path):
    base = {**BASE, "data": {**BASE["data"], "val_fraction": 0.0}}
    with pytest.raises(ConfigError, match="leaves no validation split to tune on"):
        load_study(write_study(tmp_path, {"seeds": 1, "methods": {"full": {}}, "tune": TUNE}, base))


def test_a_no_op_learning_rate_of_a_linear_probe_is_an_error(tmp_path):
    """A probe trains only its head: its own train.lr is refused when train.head_lr is set."""
    path = write_study(tmp_path, {"seeds": 1, "methods": {"linear": {"set": {"train.lr": 1e-2}}}})
    with pytest.raises(
        ConfigError,
        match=r"^study method 'linear' set/axes key train.lr: a linear probe trains only "
        r"its head, whose rate is train.head_lr=0.001: set train.head_lr instead$",
    ):
        load_study(path)
    path = write_study(tmp_path, {"seeds": 1, "methods": {"linear": {"set": {"train.head_lr": 1e-2}}}})
    assert load_study(path).runs[0].config.train.head_lr == 1e-2
    no_head_lr = {**BASE, "train": {"lr": 1e-3}}  # then train.lr is the head's rate: allowed
    path = write_study(tmp_path, {"seeds": 1, "methods": {"linear": {"set": {"train.lr": 1e-2}}}}, no_head_lr)
    assert load_study(path).runs[0].config.train.lr == 1e-2


def test_the_default_study_tunes_the_one_rate_every_method_uses():
    """The head trains at train.lr (head_lr null), so the tuned train.lr is the probe's rate too,
    and every method gets the same grid."""
    study = load_study(REPO / "configs" / "studies" / "default.yaml")
    assert all(s.config.train.head_lr is None for s in study.runs)
    assert set(study.tune) == {s.method for s in study.runs}
    assert {tuple(a.key for a in search.axes) for search in study.tune.values()} == {("train.lr",)}
    assert len({search.trials for search in study.tune.values()}) == 1
    # its quant ablation runs at LoRA's chosen rate, as its header says: explicitly, and so marked in the report
    assert study.tune["lora"].configurations == ("lora", "lora quant=int8", "lora quant=nf4")


def test_selection_json_says_which_configurations_take_the_choice(tmp_path):
    """Each configuration's search writes its own selection.json, in a folder named for its label, with the
    configuration searched and those that borrow its choice."""
    import optuna

    from peftlab.study.records import read_selection
    from peftlab.study.search import write_selection

    study = tuned(tmp_path, tune={**TUNE, "share": {"from": "lora r=2"}}, methods=RANKS, ablations=ABLATION)
    search = study.tune["lora r=2"]
    directory = tune_dir(tmp_path / "out", "lora r=2")
    assert directory.name == "lora_r=2" and tune_dir(tmp_path, "lora@vtab1k/dtd").name == "lora@vtab1k-dtd"
    directory.mkdir(parents=True)
    write_selection(search, directory, optuna.create_study(), done=False)
    record = json.loads((directory / "selection.json").read_text())
    assert read_selection(directory / "selection.json") == record  # of the schema its reader checks
    assert record["configurations"] == {"searched": "lora r=2", "borrowed_by": ["lora r=4", "lora alpha=1 r=2"]}
    assert record["search"] == search.record() and "configurations" not in search.record()  # the journal's name


def test_the_rank_study_tunes_every_rank_and_its_dry_run_counts_them(tmp_path):
    """configs/studies/lora_ranks.yaml: five LoRA ranks beside full fine-tuning, each searched on its own."""
    from peftlab.study.estimate import dry_run_table

    study = load_study(REPO / "configs" / "studies" / "lora_ranks.yaml")
    assert list(study.tune) == ["full", "lora r=2", "lora r=4", "lora r=8", "lora r=16", "lora r=32"]
    assert {s.trials for s in study.tune.values()} == {4} and not any(s.borrowers for s in study.tune.values())
    table = dry_run_table(study, tmp_path)
    assert "6 searches, 24 trials (24 trial runs) before the final runs" in table
    assert "18 runs: 0 done" in table and "18 wait for their search to choose" in table


def test_trial_value_reads_validation_only():
    result = {"status": "completed", "metrics": {"val_top1": 0.4, "best_val_top1": 0.5, "test_top1": 0.9}}
    assert trial_value(result, "val_top1") == 0.4 and trial_value(result, "best_val_top1") == 0.5
    with pytest.raises(ValueError, match="not a validation metric"):
        trial_value(result, "test_top1")
    assert trial_value({**result, "status": "diverged"}, "val_top1") is None
    for damaged in (float("inf"), 1e308, True, "0.9", [0.9], -0.1):  # never a score, never the best
        assert trial_value({**result, "metrics": {"val_top1": damaged}}, "val_top1") is None


def test_selection_follows_validation_where_test_disagrees():
    """Trial 1 has the best test score and trial 2 the best validation score: trial 2 is chosen."""
    results = [
        {"val_top1": 0.60, "test_top1": 0.70},
        {"val_top1": 0.55, "test_top1": 0.80},
        {"val_top1": 0.65, "test_top1": 0.60},
        {"val_top1": 0.65, "test_top1": 0.90},
    ]
    trials = [
        {
            "number": n,
            "state": "COMPLETE",
            "params": {"train.lr": n},
            "value": trial_value({"status": "completed", "metrics": r}, "val_top1"),
        }
        for n, r in enumerate(results)
    ]
    trials.append({"number": 4, "state": "PRUNED", "params": {}, "value": 0.99})  # a pruned trial never wins
    trials.append({"number": 5, "state": "FAIL", "params": {}, "value": None})
    assert best_trial(trials)["number"] == 2  # the tie with trial 3 goes to the lower number
    assert best_trial([t for t in trials if t["state"] != "COMPLETE"]) is None


def test_final_runs_carry_the_choice_and_new_ids(tmp_path):
    from peftlab.study.search import trial_spec

    study = tuned(tmp_path)
    choice = {"trial": 3, "value": 0.5, "metric": "val_top1", "params": {"train.lr": 0.02, "method.r": 4}}
    final = with_choices(study, {"lora": choice})
    before = {s.run_id for s in study.runs if s.method == "lora"}
    after = [s for s in final.runs if s.method == "lora"]
    assert len(after) == 2 and not before & {s.run_id for s in after}
    assert all(s.config.train.lr == 0.02 and s.config.method.r == 4 and s.record()["tuned_by"] == choice for s in after)
    assert [s.run_id for s in final.runs if s.method != "lora"] == [s.run_id for s in study.runs if s.method != "lora"]
    trial = trial_spec(study.tune["lora"], 3, choice["params"], 1000)
    assert trial.run_id not in {s.run_id for s in final.runs} and trial.config.seed == 1000


RANKS = {
    "full": {},
    "lora": {"axes": {"method.r": [2, 4]}},
}
# alpha 16 is lora r=2 itself (one configuration, in both groups)
ABLATION = {"alpha": {"methods": ["lora"], "axes": {"method.r": [2], "method.lora_alpha": [1, 16]}}}


def test_every_configuration_gets_its_own_search_under_the_same_budget(tmp_path):
    """Two ranks of LoRA (and an ablation's alphas) are each searched; a method with one configuration keeps
    its name, so the searches and run ids of such a study are what they were."""
    study = tuned(tmp_path, methods=RANKS, ablations=ABLATION)
    assert {k: s.configurations for k, s in study.tune.items()} == {
        "full": ("full",),
        "lora r=2": ("lora r=2",),
        "lora r=4": ("lora r=4",),
        "lora alpha=1 r=2": ("lora alpha=1 r=2",),
    }
    assert {s.trials for s in study.tune.values()} == {5}
    assert study.tune["lora r=4"].template.method.r == 4
    assert study.tune["lora alpha=1 r=2"].template.method.lora_alpha == 1
    choices = {
        key: {"trial": n, "value": 0.5, "metric": "val_top1", "params": {"train.lr": 0.01 * (n + 1)}}
        for n, key in enumerate(study.tune)
    }
    final = with_choices(study, choices)
    for spec in final.runs:  # each configuration's runs at its own configuration's choice
        choice = choices[spec.variant]
        assert spec.tuned_by == choice and spec.config.train.lr == choice["params"]["train.lr"]
        assert "borrowed_from" not in spec.record()["tuned_by"]


def test_sharing_a_choice_is_explicit_and_recorded(tmp_path):
    """tune.share: only lora r=2 is searched; lora's other configurations run at its choice, and their
    spec.json says whose it was."""
    study = tuned(tmp_path, tune={**TUNE, "share": {"from": "lora r=2"}}, methods=RANKS, ablations=ABLATION)
    assert {k: s.configurations for k, s in study.tune.items()} == {
        "full": ("full",),
        "lora r=2": ("lora r=2", "lora r=4", "lora alpha=1 r=2"),
    }
    assert study.tune["lora r=2"].borrowers == ("lora r=4", "lora alpha=1 r=2")
    choice = {"trial": 1, "value": 0.5, "metric": "val_top1", "params": {"train.lr": 0.02}}
    final = with_choices(study, {"lora r=2": choice, "full": choice})
    for spec in final.runs:
        borrowed = spec.method == "lora" and spec.variant != "lora r=2"
        assert spec.config.train.lr == 0.02
        assert spec.record()["tuned_by"] == ({**choice, "borrowed_from": "lora r=2"} if borrowed else choice)


def test_an_edge_following_grid_gives_every_method_the_budget_whatever_its_grid(tmp_path):
    """trials is every method's budget: lora's grid of 4 points and full's of 2 each get 6 trials, the
    rest added past the edge. A plain grid's record (and so its journal's name) is what it was."""
    tune = {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid", "trials": 6, "follow_edge": True}
    study = tuned(tmp_path, tune=tune, methods={"full": {}, "lora": {"tune": {"axes": {"method.r": [2, 4]}}}})
    assert {m: (s.trials, len(s.proposals())) for m, s in study.tune.items()} == {"full": (6, 2), "lora": (6, 4)}
    assert all(s.record()["follow_edge"] is True for s in study.tune.values())
    plain = tuned(tmp_path, tune={"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"}, methods={"full": {}})
    assert "follow_edge" not in plain.tune["full"].record()
    again = tuned(tmp_path, tune={**tune, "follow_edge": False, "trials": 2}, methods={"full": {}})
    assert again.tune["full"].fingerprint() == plain.tune["full"].fingerprint()


LM = {
    "model": {"source": "hf-text", "path": "lm", "task": "causal-lm"},
    "data": {"name": "instructions", "root": "data"},
    "method": {"name": "lora", "r": 4},
}
MRPC = {"model": {"source": "hf-text", "path": "bert"}, "data": {"name": "glue/mrpc", "root": "glue"}}
FOLDER = {"model": {"source": "hf-text", "path": "bert"}, "data": {"name": "text", "root": "task"}}  # classes unknown
TWO_CLASSES = {**BASE, "data": {**BASE["data"], "classes": [0, 6]}}
LR_GRID = {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"}


def search_on(tmp_path, base: dict, metric: str):
    study = {"seeds": 1, "methods": {"lora": {}}, "tune": {**LR_GRID, "metric": metric}}
    return load_study(write_study(tmp_path, study, base)).tune["lora"]


@pytest.mark.parametrize(
    "base, metric, direction",
    [
        (MRPC, "val_f1", "maximize"),
        (MRPC, "val_matthews", "maximize"),
        (FOLDER, "val_f1", "maximize"),  # its classes are known once read: a trial reporting none stops the search
        (TWO_CLASSES, "val_f1", "maximize"),
        (BASE, "val_matthews", "maximize"),
        (LM, "val_perplexity", "minimize"),
        (LM, "val_top1", "maximize"),
        (LM, "best_val_top1", "maximize"),
    ],
)
def test_the_text_metrics_are_tuning_metrics_where_the_runs_report_them(tmp_path, base, metric, direction):
    search = search_on(tmp_path, base, metric)
    assert search.metric == metric and search.direction == direction and search.record()["metric"] == metric


@pytest.mark.parametrize(
    "base, metric, message",
    [
        (
            BASE,
            "val_perplexity",
            "study tune.metric='val_perplexity' is invalid for method 'lora': a classifier "
            "(model.task=classification) reports val_top1, best_val_top1 and val_matthews; "
            "perplexity is a causal LM's",
        ),
        (
            BASE,
            "val_f1",
            "study tune.metric='val_f1' is invalid for method 'lora': a 10-class classifier (fashion_mnist) "
            "reports val_top1, best_val_top1 and val_matthews; F1 is a two-class score",
        ),
        (
            LM,
            "val_f1",
            "study tune.metric='val_f1' is invalid for method 'lora': a causal LM (model.task=causal-lm) "
            "reports val_top1, best_val_top1 and val_perplexity; F1 and Matthews are a classifier's",
        ),
        (LM, "val_matthews", "a causal LM (model.task=causal-lm) reports val_top1, best_val_top1 and val_perplexity"),
        (MRPC, "val_perplexity", "perplexity is a causal LM's"),
        (LM, "test_perplexity", "tune.metric='test_perplexity' is invalid (tuning selects on validation only"),
        (MRPC, "best_val_f1", "tune.metric='best_val_f1' is invalid: expected one of val_top1, best_val_top1, val_f1"),
    ],
)
def test_a_metric_the_runs_do_not_report_is_one_line(tmp_path, base, metric, message):
    with pytest.raises(ConfigError) as err:
        search_on(tmp_path, base, metric)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_selection_takes_the_lowest_perplexity():
    """val_perplexity is lower-better: the lowest value wins, the lower number on a tie; a pruned or failed
    trial never does."""
    values = [12.0, 9.5, 30.0, 9.5]
    trials = [{"number": n, "state": "COMPLETE", "params": {}, "value": v} for n, v in enumerate(values)]
    trials += [
        {"number": 4, "state": "PRUNED", "params": {}, "value": 1.5},
        {"number": 5, "state": "FAIL", "params": {}, "value": None},
        {"number": 6, "state": "COMPLETE", "params": {}, "value": 2.0, "diverged": "at chance"},
    ]
    assert best_trial(trials, minimize=True)["number"] == 1
    assert best_trial(trials)["number"] == 2  # the highest, as for top-1
    result = {"status": "completed", "metrics": {"val_top1": 0.3, "val_perplexity": 9.5, "test_perplexity": 8.0}}
    assert trial_value(result, "val_perplexity") == 9.5
    with pytest.raises(ValueError, match="not a validation metric"):
        trial_value(result, "test_perplexity")


def test_halving_prunes_a_high_perplexity_and_promotes_a_low_one(tmp_path):
    """The Optuna study of a val_perplexity search minimizes: at the first rung the pruner keeps the lowest
    half (of 10, 20, 30 and the new trial's), read from the val_perplexity of the runs' eval records."""
    from types import SimpleNamespace

    from peftlab.study.pruning import PruneWatch
    from peftlab.study.search import load_search

    search = dataclasses.replace(search_on(tmp_path, LM, "val_perplexity"), search="halving", reduction_factor=2)
    study = load_search(search, tmp_path, search.proposals())
    assert study.direction.name == "MINIMIZE"
    for value in (10.0, 20.0, 30.0):  # finished trials that reported at step 1
        trial = study.ask()
        trial.report(value, 1)
        trial.should_prune()  # records its value at the rung
        study.tell(trial, value)
    watched = {"high": study.ask(), "low": study.ask()}
    watch = PruneWatch(search, study, watched)
    for name, value in (("high", 50.0), ("low", 5.0)):
        run_dir = tmp_path / name
        run_dir.mkdir()
        records = [{"kind": "step", "step": 1, "loss": 3.0}, {"kind": "eval", "step": 1, "val_perplexity": value}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert watch(SimpleNamespace(run_id="high"), tmp_path / "high") is True
    assert watch(SimpleNamespace(run_id="low"), tmp_path / "low") is False
    assert study.trials[watched["low"].number].intermediate_values == {1: 5.0}


def test_a_trial_run_that_reports_no_f1_stops_the_search_in_one_line(tmp_path):
    """A folder of text files: its classes are known once read. Three classes give no F1: the search stops
    before any selection, naming the metric, instead of failing every trial."""
    from peftlab.study.search import run_search
    from peftlab.utils.errors import UserError

    search = search_on(tmp_path, FOLDER, "val_f1")
    done = {"status": "completed", "metrics": {"val_top1": 0.5, "val_f1": None, "val_matthews": 0.2}}
    done["provenance"] = {"data": {"num_classes": 3, "split_sizes": {"val": 40}}}

    def executor(jobs, on_done, stop_when):
        for spec, run_dir in jobs:
            (run_dir / "result.json").write_text(json.dumps(done))
            on_done(spec, done)

    with pytest.raises(UserError) as err:
        run_search(search, tmp_path / "tune", executor, slots=2)
    assert str(err.value) == (
        "tuning of method 'lora': tune.metric=val_f1 is null in a completed trial run (its data has 3 classes "
        "and F1 is a two-class score): expected val_top1, best_val_top1 or val_matthews"
    )


def test_the_dry_runs_remaining_time_counts_pending_trials_and_the_runs_waiting_for_them(tmp_path):
    """Issue 72: with 3 trials and 3 final runs pending the dry-run said "about 0.0 min". One trial run took 60 s:
    the 2 trial runs left and the 3 final runs waiting for the search's choice take about 5 minutes."""
    import json

    from peftlab.study.estimate import dry_run_table
    from peftlab.study.search import tune_dir

    study = load_study(
        write_study(
            tmp_path,
            {"seeds": 3, "methods": {"lora": {}}, "tune": {"axes": {"train.lr": [1e-3, 1e-2, 1e-1]}, "search": "grid"}},
        )
    )
    (search,) = study.tune.values()
    assert search.trials * len(search.seeds) == 3
    trial = tune_dir(tmp_path / "out", "lora") / "runs" / "trial0"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text(json.dumps({"status": "completed", "timing": {"wall_seconds": 60.0}}))
    table = dry_run_table(study, tmp_path / "out")
    assert table.splitlines()[-1].endswith("remaining time: about 5.0 min (mean of 1 finished runs)"), table


@pytest.mark.parametrize(
    "tune, evaluates_inside",
    [
        ({"search": "grid", "axes": {"train.lr": [1.0e-3, 1.0e-2]}}, False),
        ({"search": "random", "trials": 2, "axes": {"train.lr": {"low": 1.0e-4, "high": 1.0e-2}}}, False),
        ({"search": "grid", "axes": {"train.lr": [1.0e-3, 1.0e-2]}, "metric": "best_val_top1"}, True),
        ({"search": "halving", "trials": 2, "axes": {"train.lr": {"low": 1.0e-4, "high": 1.0e-2}}}, True),
    ],
)
def test_a_trial_evaluates_inside_an_epoch_only_where_its_search_reads_it(tmp_path, tune, evaluates_inside):
    """A grid or random search reads a trial's epoch-end evaluations (its last, a rung's), so its trials drop
    train.eval_every; halving's pruner and a best_* metric read every evaluation, so theirs keep it. The final
    runs keep it either way (the convergence figure reads their curves)."""
    base = {**BASE, "train": {**BASE["train"], "eval_every": 5}}
    study = load_study(write_study(tmp_path, {"seeds": 1, "methods": {"lora": {}}, "tune": tune}, base))
    search = study.tune["lora"]
    trial = search.trial_config(search.proposals()[0], search.seeds[0])
    assert trial.train.eval_every == (5 if evaluates_inside else None)
    assert all(run.config.train.eval_every == 5 for run in study.runs)
