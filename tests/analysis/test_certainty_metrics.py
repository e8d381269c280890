"""How sure a search's choice is when it chose by validation perplexity, F1 or the Matthews correlation: the
resampled scores against independent loops (perplexity: a ratio over resampled sequences, the lowest winning; F1 and
Matthews: ``training.metrics``' own functions on each resample's confusion counts), the kept losses file read as data
and refused in one line when it is not what a trial writes, "n/a" with the reason where the files give no share, and
the report's and paper's words following the metric."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from peftlab.analysis.paper.tuning_table import stability_words
from peftlab.analysis.report.tuning_lines import certainty_lines
from peftlab.analysis.stats.choice_stability import (
    SEED,
    confusion_scorer,
    perplexity_scorer,
    resampled_wins,
    seed_deviations,
)
from peftlab.analysis.stats.trial_predictions import Unreadable, choice_certainty, read_losses
from peftlab.analysis.stats.tuning_finals import search_certainty
from peftlab.training import metrics
from peftlab.training.outcome import write_losses
from peftlab.training.run_result import LOSS_FIELDS, PREDICTION_FIELDS


def test_the_perplexity_share_is_a_brute_force_loops_over_the_same_resamples():
    """Three trials on 12 sequences and two tuning seeds, seed deviations in log-perplexity: per resample each
    trial's perplexity is exp(sum(count * nll) / sum(count * tokens) + deviation), summed over the seeds; the
    lowest wins."""
    rng = np.random.default_rng(3)
    seeds = [(rng.uniform(1.5, 3.0, (3, 12)) * (t := rng.integers(1, 9, 12)), t) for _ in range(2)]
    spread = seed_deviations(np.log([9.0, 10.5, 8.2]))
    resamples = 50
    draws, pick = np.random.default_rng(SEED), np.random.default_rng([SEED, 1])  # the function's streams, one chunk
    counts, moved = [], []
    for _, tokens in seeds:
        counts.append(draws.multinomial(len(tokens), np.full(len(tokens), 1 / len(tokens)), size=resamples))
        moved.append(pick.integers(len(spread), size=(resamples, 3)))
    wins = np.zeros(3)
    for r in range(resamples):
        total = []
        for trial in range(3):
            value = 0.0
            for k, (nll, tokens) in enumerate(seeds):
                loss = sum(c * x for c, x in zip(counts[k][r], nll[trial]))
                scored = sum(c * x for c, x in zip(counts[k][r], tokens))
                value += math.exp(loss / scored + spread[moved[k][r, trial]])
            total.append(value)
        best = [trial for trial in range(3) if total[trial] == min(total)]
        for trial in best:
            wins[trial] += 1 / len(best)
    scorers = [perplexity_scorer(nll, tokens) for nll, tokens in seeds]
    shares = resampled_wins([12, 12], 3, scorers, resamples, SEED, spread, lower=True, log=True)
    assert shares == pytest.approx(wins / resamples, abs=1e-12)


def test_a_trial_identical_to_another_splits_and_the_lower_perplexity_wins():
    tokens = np.arange(1, 21)
    nll = 2.0 * tokens * np.linspace(0.8, 1.2, 20)
    same = [perplexity_scorer(np.stack([nll, nll]), tokens)]
    assert resampled_wins([20], 2, same, 400, lower=True, log=True).tolist() == [0.5, 0.5]
    lower = [perplexity_scorer(np.stack([nll * 1.01, nll, nll * 1.02]), tokens)]  # trial 1 lower on every sequence
    assert resampled_wins([20], 3, lower, 400, lower=True, log=True).tolist() == [0.0, 1.0, 0.0]
    tie = [confusion_scorer("matthews", tokens % 3, np.stack([tokens % 2, tokens % 2]))]
    assert resampled_wins([20], 2, tie, 400).tolist() == [0.5, 0.5]


@pytest.mark.parametrize("score", ["f1", "matthews"])
def test_f1_and_matthews_of_each_resample_are_those_of_the_metrics_module(score):
    """Each resample's confusion counts, scored by ``training.metrics.class_count_scores`` on the resampled examples
    themselves; degenerate trials included (every prediction one class: Matthews 0; no class 1 anywhere: F1 0)."""
    rng = np.random.default_rng(7)
    classes = 2 if score == "f1" else 4
    labels = rng.integers(0, classes, 30)
    predicted = np.stack(
        [labels, rng.integers(0, classes, 30), np.zeros(30, int), np.where(rng.random(30) < 0.7, labels, 0)]
    )
    resamples = rng.multinomial(30, np.full(30, 1 / 30), size=6)
    resamples[0] = np.bincount(np.flatnonzero(labels != 1), minlength=30) if score == "f1" else resamples[0]
    got = confusion_scorer(score, labels, predicted)(resamples)
    for r, counts in enumerate(resamples):
        drawn = np.repeat(np.arange(30), counts)
        for trial in range(len(predicted)):
            y, p = torch.as_tensor(labels[drawn]), torch.as_tensor(predicted[trial][drawn])
            labelled, guessed = torch.bincount(y, minlength=classes), torch.bincount(p, minlength=classes)
            hits = torch.bincount(y[y == p], minlength=classes)
            assert got[r, trial] == pytest.approx(metrics.class_count_scores(labelled, guessed, hits)[score], abs=1e-12)
    assert (got[:, 2] == 0).all() if score == "matthews" else got[0, 2] == 0  # one class predicted; no class 1


def keep_losses(run_dir, nll, tokens):
    run_dir.mkdir(parents=True, exist_ok=True)
    write_losses(run_dir / "val_losses.npy", torch.as_tensor(nll, dtype=torch.float64), torch.as_tensor(tokens))


def perplexity_search(tmp_path, scales=(2.0, 2.4, 2.1), metric="val_perplexity") -> dict:
    """A selection.json record of a search on 30 sequences whose trial i's NLL is scales[i] nats a token, trial 0
    chosen; each trial's losses kept under tmp_path as a causal LM trial writes them."""
    tokens = np.arange(30) % 7 + 1
    trials = []
    for number, scale in enumerate(scales):
        nll = scale * tokens * (1 + 0.3 * np.sin(np.arange(30) + number))
        keep_losses(tmp_path / "runs" / f"t{number}", nll, tokens)
        value = math.exp(nll.sum() / tokens.sum())
        trials.append({"number": number, "state": "COMPLETE", "value": value, "run_ids": [f"t{number}"]})
    chosen = {"trial": 0, "value": trials[0]["value"], "params": {}}
    return {"search": {"metric": metric, "seeds": [1000], "method": "lora"}, "trials": trials, "chosen": chosen}


def test_a_perplexity_search_resamples_its_sequences_with_log_perplexity_seed_deviations(tmp_path):
    record = perplexity_search(tmp_path)
    assert read_losses(tmp_path / "runs" / "t0").dtype == np.dtype(LOSS_FIELDS)
    finals = [8.1, 8.9, 7.6]
    certainty = choice_certainty(record, tmp_path, finals)
    tokens = np.arange(30) % 7 + 1
    nll = np.stack([read_losses(tmp_path / "runs" / f"t{n}")["nll"] for n in range(3)])
    spread = seed_deviations(np.log(finals))
    shares = resampled_wins([30], 3, [perplexity_scorer(nll, tokens)], spread=spread, lower=True, log=True)
    assert certainty["share"] == shares[0] and certainty["seeds"] and certainty["metric"] == "val_perplexity"
    assert certainty["noun"] == "sequences" and certainty["runner_up"][0] == 2
    assert certainty["optimism"] == pytest.approx(record["chosen"]["value"] - np.mean(finals))
    assert certainty["sd"] == pytest.approx(np.std(finals, ddof=1))
    assert 0.5 < certainty["examples_share"] <= 1.0  # trial 0's 2.0 nats a token against trial 2's 2.1


def test_a_perplexity_search_whose_trials_kept_no_losses_or_that_chose_by_a_best_is_na(tmp_path):
    record = perplexity_search(tmp_path)
    (tmp_path / "runs" / "t1" / "val_losses.npy").unlink()
    assert choice_certainty(record, tmp_path)["why"] == (
        "its trials ran before peftlab kept their validation sequences' losses (val_losses.npy)"
    )
    best = {**record, "search": {**record["search"], "metric": "best_val_top1"}}
    assert (
        choice_certainty(best, tmp_path)["why"]
        == "chosen by best_val_top1, not by the last validation top-1 the predictions give"
    )
    top1 = perplexity_search(tmp_path / "lm", metric="val_top1")
    assert choice_certainty(top1, tmp_path / "lm")["why"] == (
        "a causal LM's validation top-1 is per token, and its trials keep each sequence's loss (val_losses.npy)"
    )


def forge(path, kind):
    """A val_losses.npy that no trial writes."""
    if kind == "pickled":
        np.save(path, np.array([{"nll": 1.0}], dtype=object), allow_pickle=True)
    elif kind == "oversized":  # a header declaring 2**40 sequences over 32 bytes
        with open(path, "wb") as file:
            np.lib.format.write_array_header_1_0(
                file, {"descr": LOSS_FIELDS, "fortran_order": False, "shape": (2**40,)}
            )
            file.write(bytes(32))
    elif kind == "predictions":
        np.save(path, np.zeros(30, PREDICTION_FIELDS))
    else:  # a NaN among the losses
        np.save(path, np.array([(np.nan, 3)] * 30, dtype=LOSS_FIELDS))


@pytest.mark.parametrize(
    "kind, said",
    [
        ("pickled", "val_losses.npy: not a numpy array (Object arrays cannot be loaded when allow_pickle=False)"),
        (
            "oversized",
            r"val_losses.npy: its header declares shape (1099511627776,) of [('nll', '<f8'), ('tokens', '<i8')]",
        ),
        ("predictions", "val_losses.npy: expected a 1-d array of [('nll', '<f8'), ('tokens', '<i8')], found"),
        ("nan", "val_losses.npy: expected each sequence's summed NLL finite and >= 0"),
    ],
)
def test_a_forged_losses_file_is_refused_in_one_line_not_an_exception(tmp_path, kind, said):
    record = perplexity_search(tmp_path)
    forge(tmp_path / "runs" / "t1" / "val_losses.npy", kind)
    certainty = choice_certainty(record, tmp_path)
    assert certainty["share"] is None and said in certainty["why"] and "\n" not in certainty["why"]
    with pytest.raises(Unreadable):
        read_losses(tmp_path / "runs" / "t1")


def test_a_linked_losses_file_is_not_read(tmp_path):
    record = perplexity_search(tmp_path)
    target = tmp_path / "runs" / "t1" / "val_losses.npy"
    target.rename(tmp_path / "elsewhere.npy")
    target.symlink_to(tmp_path / "elsewhere.npy")
    assert read_losses(tmp_path / "runs" / "t1") is None
    assert choice_certainty(record, tmp_path)["share"] is None


def predictions_search(tmp_path, metric, predicted_of) -> dict:
    labels = np.arange(40) % 2
    trials = []
    for number in range(3):
        run_dir = tmp_path / "runs" / f"t{number}"
        run_dir.mkdir(parents=True)
        record = np.empty(40, PREDICTION_FIELDS)
        record["label"], record["predicted"] = labels, predicted_of(number, labels)
        np.save(run_dir / "val_predictions.npy", record)
        trials.append({"number": number, "state": "COMPLETE", "value": 0.5, "run_ids": [f"t{number}"]})
    chosen = {"trial": 0, "value": 0.5, "params": {}}
    return {"search": {"metric": metric, "seeds": [1000], "method": "lora"}, "trials": trials, "chosen": chosen}


@pytest.mark.parametrize("metric", ["val_f1", "val_matthews"])
def test_an_f1_or_matthews_search_gives_its_best_trial_the_resamples(tmp_path, metric):
    """Trial 0 right on 36 of 40 examples, trial 1 on 30, trial 2 on 20: trial 0 wins nearly every resample."""
    right = {0: 36, 1: 30, 2: 20}
    record = predictions_search(
        tmp_path, metric, lambda n, labels: np.where(np.arange(40) < right[n], labels, 1 - labels)
    )
    certainty = choice_certainty(record, tmp_path, finals=[0.8, 0.84])
    assert certainty["share"] > 0.9 and certainty["metric"] == metric and certainty["noun"] == "examples"
    assert certainty["optimism"] == pytest.approx(0.5 - 0.82)
    many = predictions_search(tmp_path / "many", "val_f1", lambda n, labels: np.where(labels == 1, 2, labels))
    assert choice_certainty(many, tmp_path / "many")["why"] == (
        "F1 of class 1 is a two-class score, and its trials' predictions hold classes other than 0 and 1"
    )


class Study:
    """What stability_words reads of paper.Study."""

    def __init__(self, searches):
        self.searches = searches

    def name(self, variant):
        return variant


def test_the_report_and_the_paper_speak_of_the_searchs_metric_and_of_sequences(tmp_path):
    record = perplexity_search(tmp_path)
    record["certainty"] = choice_certainty(record, tmp_path, finals=[8.1, 8.9, 7.6])
    optimism = abs(record["certainty"]["optimism"])
    header, _, line, _ = certainty_lines([record])
    assert "resamples of the validation sequences" in header and "the lowest validation perplexity among" in header
    assert "moving every trial's log-perplexity" in header and "the log of their validation perplexity less" in header
    assert "for scoring low by chance" in header and "top-1" not in header
    assert f"its validation perplexity is {optimism:.2f} below its 3 final runs' mean (their sd 0.66)." in line
    assert "of the resamples of sequences and seeds" in line
    text = stability_words(Study([record]))
    assert "the lowest validation perplexity among all the trials" in text and "top-1" not in text
    assert f"is $-${optimism:.2f} for lora (3 final runs, their seed-to-seed standard deviation 0.66)" in text
    f1 = predictions_search(tmp_path / "f1", "val_f1", lambda n, labels: np.where(np.arange(40) < 30 - n, labels, 0))
    f1["certainty"] = choice_certainty(f1, tmp_path / "f1", finals=[0.6, 0.64], text=True)
    header, _, line, _ = certainty_lines([f1])
    assert "the best validation F1 among" in header and "resamples of the validation sequences" in header
    assert "its validation F1 is 12.0 points below its 2 final runs' mean (their sd 2.8 points)." in line


def test_the_final_runs_values_are_the_searchs_metric_and_their_source_says_text(tmp_path):
    record = perplexity_search(tmp_path)
    runs = pd.DataFrame(
        {
            "status": "completed",
            "method": "lora",
            "groups": "main",
            "seed": [0, 1, 2],
            "metrics.val_top1": [0.3, 0.31, 0.32],
            "metrics.val_perplexity": [8.1, 8.9, 7.6],
            "config.model.source": "hf-text",
        }
    )
    certainty = search_certainty(record, tmp_path, runs)
    assert certainty["finals"] == 3 and certainty["sd"] == pytest.approx(np.std([8.1, 8.9, 7.6], ddof=1))
    f1 = predictions_search(tmp_path / "f1", "val_f1", lambda n, labels: labels)
    assert search_certainty(f1, tmp_path / "f1", runs.assign(**{"metrics.val_f1": 0.7}))["noun"] == "sequences"
    image = runs.assign(**{"metrics.val_f1": 0.7, "config.model.source": "timm"})
    assert search_certainty(f1, tmp_path / "f1", image)["noun"] == "examples"
    unknown = runs.assign(**{"metrics.val_f1": 0.7}).drop(columns="config.model.source")
    assert search_certainty(f1, tmp_path / "f1", unknown)["noun"] == "examples"
