"""How sure a tuning choice is, with the seed in it (issue 91 item 1): the share of resamples of the validation
examples and of the final runs' seed-to-seed deviations that the chosen trial wins, every completed trial counted
(one at chance included), its Monte-Carlo error and "borderline" where that error reaches the threshold, and the
winner's optimism. A real tiny tuned study (the tiny ViT on a three-class image folder, LoRA and a linear probe each
tuned on a 3-point learning-rate grid, 3 final seeds) is recomputed here by an independent implementation: numpy
index resampling of the trials' kept predictions and of the final runs' result.json, read with json."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from testkit import TINY_MODEL

import peftlab
from peftlab.analysis.report import tuning
from peftlab.analysis.results.load import load_results
from peftlab.analysis.stats.choice_stability import (
    MC_ERRORS,
    RESAMPLES,
    SURE_SHARE,
    mc_error,
    seed_deviations,
    verdict,
    win_shares,
)
from peftlab.analysis.stats.trial_predictions import choice_certainty
from peftlab.training.run_result import PREDICTION_FIELDS

# reads the report's and paper's text and tables, never a figure's pixels or fonts
FIGURES_DRAWN = ()


def test_a_lead_the_examples_call_sure_is_uncertain_once_the_seed_spread_is_in_it():
    """The reviewer's case: a 2.5-point lead on 400 examples wins most example resamples; final runs whose
    validation top-1 spreads by about 4 points between seeds make it a coin toss between the two trials."""
    a = np.arange(400) < 300  # 75.0%
    b = np.arange(400) < 290  # 72.5%, every example b gets right a gets right too
    alone = win_shares([np.stack([a, b])])[0]
    spread = seed_deviations([0.70, 0.75, 0.78])
    moved = win_shares([np.stack([a, b])], spread=spread)[0]
    assert alone == 1.0 and verdict(alone) == "sure"
    assert moved < SURE_SHARE and verdict(moved) == "uncertain"


def test_seed_deviations_have_the_runs_unbiased_variance_and_need_two_runs():
    values = np.array([0.61, 0.66, 0.70, 0.64])
    deviations = seed_deviations(values)
    assert np.mean(deviations**2) == pytest.approx(np.var(values, ddof=1)) and deviations.sum() == pytest.approx(0)
    assert seed_deviations([0.7]) is None and seed_deviations([0.7, np.nan]) is None


@pytest.mark.parametrize(
    "share, said", [(0.804, "borderline"), (0.79, "borderline"), (0.85, "sure"), (0.70, "uncertain"), (1.0, "sure")]
)
def test_a_share_within_two_monte_carlo_errors_of_the_threshold_is_borderline(share, said):
    """0.804 over 2,000 resamples has an error of 0.009: the reviewer's 0.798-0.812 over resampling seeds."""
    assert verdict(share) == said
    assert mc_error(0.804) == pytest.approx(np.sqrt(0.804 * 0.196 / RESAMPLES))


def keep(run_dir: Path, labels, predicted):
    run_dir.mkdir(parents=True, exist_ok=True)
    record = np.empty(len(labels), dtype=PREDICTION_FIELDS)
    record["label"], record["predicted"] = labels, predicted
    np.save(run_dir / "val_predictions.npy", record, allow_pickle=False)


def search(tmp_path, rights: list[int | None], diverged: dict[int, str]) -> dict:
    """A selection.json record of one search on 20 examples, trial i right on its first rights[i] (None: no
    predictions, a loss that went non-finite), trial 0 chosen; the trials' predictions kept under tmp_path."""
    labels = np.arange(20) % 4
    trials = []
    for number, right in enumerate(rights):
        if right is not None:
            keep(tmp_path / "runs" / f"t{number}", labels, np.where(np.arange(20) < right, labels, (labels + 1) % 4))
        trial = {"number": number, "state": "COMPLETE", "value": (right or 0) / 20, "run_ids": [f"t{number}"]}
        trials.append({**trial, **({"diverged": diverged[number]} if number in diverged else {})})
    chosen = {"trial": 0, "value": rights[0] / 20, "params": {}}
    return {"search": {"metric": "val_top1", "seeds": [1000]}, "trials": trials, "chosen": chosen}


def test_a_trial_at_chance_counts_and_a_lone_trial_is_said_to_be_the_only_one(tmp_path):
    """A two-trial search whose other trial fell to chance: that trial is counted (it was dropped, and the choice
    won 1.00 by construction); with the other trial's loss non-finite, the choice had nothing to lose to."""
    at_chance = search(tmp_path, [12, 11], {1: "validation top-1 55.0% is at or below chance"})
    certainty = choice_certainty(at_chance, tmp_path, finals=[0.5, 0.6, 0.55])
    assert certainty["trials"] == 2 and certainty["at_chance"] == 1
    assert 0.3 < certainty["share"] < 0.95 and certainty["seeds"]
    assert certainty["optimism"] == pytest.approx(0.6 - 0.55) and certainty["sd"] == pytest.approx(0.05)
    lone = search(tmp_path, [12, None], {1: "diverged: loss is NaN"})
    lone["trials"][1]["state"] = "FAIL"
    assert choice_certainty(lone, tmp_path)["why"] == "trial 0 was its only trial that completed without diverging"


# --- a real tuned study, recomputed -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A real tiny tuned study's folder: two searches of three learning rates (one of them at chance), 3 final
    runs each, their trials' validation predictions kept (24 validation images)."""
    from peftlab.data.synthetic import write_jpeg_folder

    root = tmp_path_factory.mktemp("certainty")
    write_jpeg_folder(root / "images", n_train=48, size=32, classes=3, n_test=12, class_colour=0.15)
    run = {
        "name": "tiny",
        "model": TINY_MODEL,
        "method": {"name": "lora", "r": 2},
        "data": {"name": "imagefolder", "root": "images", "val_fraction": 0.5},
        "train": {"max_steps": 3, "batch_size": 8, "lr": 0.01, "threads": 1},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    tune = {"axes": {"train.lr": [1e-4, 1e-2, 1e-1]}, "search": "grid"}
    plan = {"name": "certainty", "base": "run.yaml", "seeds": 3, "methods": {"lora": {}, "linear": {}}, "tune": tune}
    (root / "study.yaml").write_text(yaml.safe_dump(plan))
    summary = peftlab.run_study(root / "study.yaml", root / "out")
    assert summary.ok and len(summary.completed) == 6
    return root / "out"


def recomputed(study: Path, name: str, resamples: int = 4000, seed: int = 12345) -> dict:
    """The chosen trial's share by another implementation: each resample draws the validation examples' indices
    with replacement and adds to each trial's top-1 one of the final runs' deviations from their mean (times
    sqrt(n/(n-1))), drawn with replacement; ties split; every trial that completed counted, at chance or not."""
    record = json.loads((study / "tune" / name / "selection.json").read_text())
    trials = [t for t in record["trials"] if t["state"] == "COMPLETE" and "non-finite" not in t.get("diverged", "")]
    kept = [np.load(study / "tune" / name / "runs" / t["run_ids"][0] / "val_predictions.npy") for t in trials]
    correct = np.stack([k["predicted"] == k["label"] for k in kept]).astype(float)  # (trials, examples)
    finals = []
    for spec in study.glob("runs/*/spec.json"):
        if json.loads(spec.read_text())["variant"] == name:
            finals.append(json.loads((spec.parent / "result.json").read_text())["metrics"]["val_top1"])
    finals = np.array(finals)
    deviations = (finals - finals.mean()) * np.sqrt(len(finals) / (len(finals) - 1))
    rng = np.random.default_rng(seed)
    n, k = correct.shape[1], len(trials)
    index = rng.integers(0, n, size=(resamples, n))
    scores = correct[:, index].mean(axis=2).T + deviations[rng.integers(0, len(finals), size=(resamples, k))]
    best = scores == scores.max(axis=1, keepdims=True)
    shares = (best / best.sum(axis=1, keepdims=True)).mean(axis=0)
    chosen = [t["number"] for t in trials].index(record["chosen"]["trial"])
    optimism = record["chosen"]["value"] - finals.mean()
    return {
        "share": shares[chosen],
        "label": "sure" if shares[chosen] >= SURE_SHARE else "uncertain",
        "optimism": optimism,
        "finals": len(finals),
    }


@pytest.mark.e2e
def test_an_independent_recomputation_agrees_with_the_reports_sure_and_uncertain(study):
    df = load_results(study)
    searches = tuning.load_searches(study, df=df)
    report = "\n".join(tuning.report_section(study, df, study / "figures"))
    assert [s["search"]["method"] for s in searches] == ["linear", "lora"]
    for record in searches:
        name, mine, theirs = (
            record["search"]["method"],
            record["certainty"],
            recomputed(study, record["search"]["method"]),
        )
        assert mine["seeds"] and mine["finals"] == theirs["finals"] == 3 and mine["trials"] == 3
        # two estimates of one share: 2,000 and 4,000 resamples, their errors combined
        error = np.sqrt(mine["error"] ** 2 + mc_error(theirs["share"], 4000) ** 2)
        assert abs(mine["share"] - theirs["share"]) <= 4 * max(error, 1e-3), (name, mine, theirs)
        if mine["verdict"] == "borderline":
            assert abs(theirs["share"] - SURE_SHARE) <= MC_ERRORS * 2 * max(error, 1e-3)
        else:
            assert mine["verdict"] == theirs["label"], (name, mine, theirs)
        assert mine["optimism"] == pytest.approx(theirs["optimism"])
        line = next(line for line in report.splitlines() if line.startswith(f"- {name}: trial "))
        assert f"wins {mine['share']:.2f} ± {mine['error']:.2f} of the resamples of examples and seeds" in line
        assert f", {mine['verdict']}" in line and f"{abs(100 * theirs['optimism']):.1f} points" in line, line


@pytest.mark.e2e
def test_the_paper_gives_each_choice_its_share_error_verdict_and_optimism(study, tmp_path):
    from peftlab.analysis.paper.build import write_paper

    write_paper(study, tmp_path / "paper", compile=False)
    results = (tmp_path / "paper" / "results.tex").read_text()
    text = next(line for line in results.splitlines() if line.startswith(r"\newcommand{\tuneStability}"))
    searches = tuning.load_searches(study, df=load_results(study))
    uncertain = [s["search"]["method"] for s in searches if s["certainty"]["verdict"] == "uncertain"]
    for record in searches:
        name, certainty = record["search"]["method"], record["certainty"]
        assert f"{certainty['share']:.2f}~$\\pm$~{certainty['error']:.2f} for {name}" in text
        assert f"{100 * certainty['optimism']:.1f} points for {name} (3 final runs" in text
    said = f"as the choice for {uncertain[0]} is." if len(uncertain) == 1 else "as the choices for"
    assert (said if uncertain else "and none is.") in text
    assert "among all the trials of its search that completed (those at chance included)" in text
    assert f"sure only when it wins at least {SURE_SHARE:g} of them with its seed spread in it" in text
