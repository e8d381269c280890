"""How sure each tuning choice is (issue 82 item 9): the bootstrap win share on hand-made prediction vectors, the
trials' kept predictions read as data, and what the report and the paper say, "n/a" for trials that kept none."""

import json

import numpy as np
import pytest
from paperkinds import default_kind

from peftlab.analysis.paper.tuning_table import stability_words
from peftlab.analysis.report import tuning
from peftlab.analysis.report.tuning_lines import certainty_lines
from peftlab.analysis.stats import choice_stability
from peftlab.analysis.stats.choice_stability import SURE_SHARE, win_shares
from peftlab.analysis.stats.trial_predictions import Unreadable, choice_certainty, read_predictions
from peftlab.training.run_result import PREDICTION_FIELDS

# reads the report's and paper's text and tables, never a figure's pixels or fonts
FIGURES_DRAWN = ()

ALL, NONE = np.ones(50, bool), np.zeros(50, bool)


def test_two_identical_trials_win_half_each_and_a_dominant_one_wins_every_resample():
    same = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1], bool)
    assert win_shares([np.stack([same, same])]).tolist() == [0.5, 0.5]
    assert win_shares([np.stack([NONE, ALL])]).tolist() == [0.0, 1.0]
    assert win_shares([np.stack([ALL, ALL, NONE])]).tolist() == [0.5, 0.5, 0.0]  # ties split among the best


def test_a_one_example_lead_wins_the_resamples_that_draw_that_example_and_half_the_rest():
    rng = np.random.default_rng(1)
    a = rng.random(200) < 0.7
    b = a.copy()
    b[np.flatnonzero(a)[0]] = False  # b: one fewer correct example than a, otherwise the same
    shares = win_shares([np.stack([a, b])])
    assert shares.sum() == pytest.approx(1.0)
    drawn = 1 - (1 - 1 / 200) ** 200  # a resample holds that example at least once; else a tie, split
    assert shares[0] == pytest.approx(drawn + (1 - drawn) / 2, abs=0.03)  # 0.816; 2,000 resamples: sd 0.009
    assert np.array_equal(shares, win_shares([np.stack([a, b])]))  # a fixed seed: the same share every time


def test_resamples_drawn_in_chunks_give_the_same_shares(monkeypatch):
    rng = np.random.default_rng(2)
    correct = [rng.random((3, 40)) < [[0.6], [0.62], [0.5]]]
    whole = win_shares(correct, resamples=300)
    monkeypatch.setattr(choice_stability, "CHUNK_ELEMENTS", 40 * 7)  # 7 resamples at a time
    assert np.array_equal(win_shares(correct, resamples=300), whole)


def test_with_several_seeds_a_trial_scores_its_mean_over_them():
    # trial 0 is perfect on seed 1 and useless on seed 2; trial 1 is at 0.6 on both: mean 0.5 against 0.6
    seed1 = np.stack([np.ones(30, bool), np.arange(30) < 18])
    seed2 = np.stack([np.zeros(20, bool), np.arange(20) < 12])
    shares = win_shares([seed1, seed2])
    assert shares[1] > 0.9


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="one .trials x examples. matrix per seed"):
        win_shares([np.ones((2, 5), bool), np.ones((3, 5), bool)])


def keep(run_dir, labels, predicted):
    run_dir.mkdir(parents=True, exist_ok=True)
    record = np.empty(len(labels), dtype=PREDICTION_FIELDS)
    record["label"], record["predicted"] = labels, predicted
    np.save(run_dir / "val_predictions.npy", record, allow_pickle=False)


@pytest.fixture
def study(tmp_path):
    """The default kind of study (three searches of four rates each; the chosen trial of each is its best)."""
    return default_kind(tmp_path)


def keep_all(study, sure: bool):
    """Predictions on 100 validation examples for every trial: the chosen trial leads by 40 examples (sure) or by
    one (not sure)."""
    labels = np.arange(100) % 10
    for path in study.glob("tune/*/selection.json"):
        record = json.loads(path.read_text())
        for trial in record["trials"]:
            right = 40 if trial["number"] != record["chosen"]["trial"] else (80 if sure else 41)
            predicted = np.where(np.arange(100) < right, labels, (labels + 1) % 10)
            for run_id in trial["run_ids"]:
                keep(path.parent / "runs" / run_id, labels, predicted)


def test_trials_run_before_predictions_were_kept_are_na_in_the_report_and_said_so_in_the_paper(study):
    searches = tuning.load_searches(study)
    assert all(s["certainty"]["share"] is None for s in searches)
    lines = certainty_lines(searches)
    assert lines[0].startswith("How sure each choice is: the share of 2,000 bootstrap resamples")
    assert f"less than {SURE_SHARE:g} of them is called uncertain" in lines[0]
    assert "- lora: n/a (its trials ran before peftlab kept their validation predictions)." in lines
    text = stability_words(Study(searches))
    assert text.startswith("How sure each choice is cannot be said for full, linear and lora: its trials ran before")
    assert "uncertain" not in text


class Study:
    """What stability_words reads of paper.Study: the searches and the names it prints."""

    def __init__(self, searches):
        self.searches = searches

    def name(self, variant):
        return variant


@pytest.mark.parametrize("sure", [True, False])
def test_a_choice_that_wins_fewer_resamples_than_the_stated_share_is_called_uncertain(study, sure):
    keep_all(study, sure)
    searches = tuning.load_searches(study)
    shares = [s["certainty"]["share"] for s in searches]
    assert all(s == 1.0 for s in shares) if sure else all(0.3 < s < SURE_SHARE for s in shares)
    lines = certainty_lines(searches)
    chosen = searches[0]["chosen"]["trial"]
    assert any(line.startswith(f"- full: trial {chosen} wins ") for line in lines)
    assert sum(", uncertain" in line for line in lines) == (0 if sure else 3)
    text = stability_words(Study(searches))
    assert ("and none is." in text) is sure
    assert ("as the choices for full, linear and lora are." in text) is not sure
    report = "\n".join(tuning.report_section(study, _final_runs(study), study / "figures"))
    assert "How sure each choice is" in report and (", uncertain" in report) is not sure


def _final_runs(study):
    from peftlab.analysis.results.load import load_results

    return load_results(study)


def test_a_predictions_file_that_needs_pickle_is_not_loaded(study):
    keep_all(study, True)
    record = json.loads((study / "tune" / "lora" / "selection.json").read_text())
    run_dir = study / "tune" / "lora" / "runs" / record["trials"][0]["run_ids"][0]
    np.save(run_dir / "val_predictions.npy", np.array([{"label": 1}], dtype=object), allow_pickle=True)
    certainty = choice_certainty(record, study / "tune" / "lora")
    assert certainty["share"] is None and "val_predictions.npy: not a numpy array" in certainty["why"]
    with pytest.raises(Exception, match="not a numpy array"):
        read_predictions(run_dir)


def test_a_predictions_header_declaring_more_than_the_file_holds_is_refused_before_numpy_allocates(tmp_path):
    """A header declaring 2**40 examples over 32 bytes: one line naming the file and both sizes, no MemoryError."""
    with open(tmp_path / "val_predictions.npy", "wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": PREDICTION_FIELDS, "fortran_order": False, "shape": (2**40,)}
        )
        file.write(bytes(32))
    with pytest.raises(
        Unreadable,
        match=r"val_predictions.npy: its header declares shape \(1099511627776,\) .*"
        r"\(17,592,186,044,416 bytes\), the file holds 32$",
    ):
        read_predictions(tmp_path)
    np.save(tmp_path / "val_predictions.npy", np.zeros(2, PREDICTION_FIELDS))  # what a trial writes: read
    assert read_predictions(tmp_path).shape == (2,)


def test_trials_scored_on_different_examples_are_not_compared(study):
    keep_all(study, True)
    record = json.loads((study / "tune" / "lora" / "selection.json").read_text())
    keep(study / "tune" / "lora" / "runs" / record["trials"][1]["run_ids"][0], np.zeros(99, int), np.zeros(99, int))
    certainty = choice_certainty(record, study / "tune" / "lora")
    assert certainty == {
        "share": None,
        "uncertain": None,
        "runner_up": None,
        "why": "its trials were scored on different validation examples",
    }


def test_the_paper_says_which_choices_are_uncertain_where_it_reports_the_chosen_values(study, tmp_path):
    from peftlab.analysis.paper.build import write_paper

    keep_all(study, sure=False)
    main = write_paper(study, tmp_path / "paper", compile=False).read_text()
    tuning_paragraph = next(
        line for line in main.splitlines() if line.startswith(r"\paragraph{Hyper-parameter tuning.}")
    )
    assert tuning_paragraph.endswith(r" \tuneStability{}")
    results = (tmp_path / "paper" / "results.tex").read_text()
    line = next(line for line in results.splitlines() if line.startswith(r"\newcommand{\tuneStability}"))
    assert "2{,}000 bootstrap resamples" in line and f"less than {SURE_SHARE:g} of them is called uncertain" in line
    assert "as the choices for" in line and " are." in line
