"""The report and the paper of a rank study tuned per configuration (a search per rank, as
configs/studies/lora_ranks.yaml runs): its searches in natural order (r=2 before r=16), named by the study's
labels, said to be of each configuration, each drawn in its configuration's shade; and how long its runs
trained as their protocol record says (optimizer steps where train.max_steps stopped them)."""

import json
import re

import pandas as pd
import pytest
from studyfiles import write_study_dir

from peftlab.analysis.figures.style import study_palette
from peftlab.analysis.paper import build as paper
from peftlab.analysis.paper.macros import Numbers
from peftlab.analysis.paper.tuning_table import latex_table
from peftlab.analysis.paper.tuning_words import seed_words
from peftlab.analysis.report import tuning

FIGURES_DRAWN = ()  # reads the reports' and papers' text and the figures' objects: their files written empty (conftest)

LRS = [1e-2, 3e-2]


def search(configuration: str, method: str, scores=(0.6, 0.5)) -> dict:
    """A finished grid search of train.lr on one configuration, as selection.json holds it."""
    trials = [
        {"number": i, "state": "COMPLETE", "value": v, "params": {"train.lr": lr}, "run_ids": [], "reported": {}}
        for i, (lr, v) in enumerate(zip(LRS, scores))
    ]
    best = max(trials, key=lambda t: t["value"])
    return {
        "fingerprint": "0",
        "done": True,
        "configurations": {"searched": configuration},
        "chosen": {"trial": best["number"], "value": best["value"], "metric": "val_top1", "params": best["params"]},
        "search": {
            "method": method,
            "axes": [{"key": "train.lr", "values": LRS}],
            "search": "grid",
            "trials": len(trials),
            "metric": "val_top1",
            "seeds": [1000],
        },
        "trials": trials,
    }


def write_searches(study_dir, configurations) -> None:
    for configuration in configurations:
        record = search(configuration, configuration.split(" ")[0])
        directory = study_dir / "tune" / configuration.replace(" ", "_")
        directory.mkdir(parents=True)
        (directory / "selection.json").write_text(json.dumps(record))


RANKS = ["full", "lora r=2", "lora r=16", "lora r=4"]
LABELS = {"full": "Full FT", "lora": "LoRA", "lora r=2": "LoRA ($r{=}2$) 50%"}


@pytest.fixture
def ranks(tmp_path):
    write_searches(tmp_path, RANKS)
    runs = pd.DataFrame(
        [
            {"status": "completed", "groups": "main", "variant": v, "method": v.split(" ")[0], "seed": s}
            | {"metrics.val_top1": 0.5, "metrics.test_top1": 0.5}
            for v in RANKS
            for s in (0, 1)
        ]
    )
    return tmp_path, runs


def test_natural_key_compares_numbers_as_numbers():
    from peftlab.analysis.results.units import natural_key

    assert sorted(["lora r=16", "lora r=2", "lora r=4", "full"], key=natural_key) == [
        "full",
        "lora r=2",
        "lora r=4",
        "lora r=16",
    ]


def test_a_rank_study_s_searches_are_in_natural_order_in_the_report_and_the_paper(ranks):
    """As strings "lora r=16" sorts before "lora r=2"; the figures order ranks by number, and so do the tables."""
    study_dir, runs = ranks
    searches = tuning.load_searches(study_dir, ["full", "lora"])
    assert [s["configurations"]["searched"] for s in searches] == ["full", "lora r=2", "lora r=4", "lora r=16"]
    table = latex_table(searches, runs)
    rows = [line.split(" & ")[0] for line in table.splitlines() if "$\\in$" in line]
    assert rows == ["full", "lora r=2", "lora r=4", "lora r=16"]
    section = tuning.report_section(study_dir, runs, study_dir / "figures")
    rows = [line.split(" | ")[0] for line in section if line.startswith("| ") and "train.lr in" in line]
    assert rows == ["| full", "| lora r=2", "| lora r=4", "| lora r=16"]


def test_the_budget_line_and_the_table_name_searches_by_the_study_s_labels(ranks):
    study_dir, runs = ranks
    searches = tuning.load_searches(study_dir, ["full", "lora"])
    section = "\n".join(tuning.report_section(study_dir, runs, study_dir / "figures", LABELS))
    assert "Budgets (trials per search): Full FT 2, LoRA ($r{=}2$) 50% 2, LoRA r=4 2, LoRA r=16 2." in section
    table = latex_table(searches, runs, LABELS)
    rows = [line.split(" & ")[0] for line in table.splitlines() if "$\\in$" in line]
    assert rows == ["Full FT", r"LoRA ($r{=}2$) 50\%", "LoRA r=4", "LoRA r=16"]


def test_a_search_per_configuration_is_said_to_be_of_each_configuration(ranks, tmp_path):
    study_dir, runs = ranks
    table = latex_table(tuning.load_searches(study_dir), runs)
    assert r"\caption{Hyper-parameter search of each configuration on the validation split" in table
    assert "\nConfiguration & Search space & Trials" in table
    per_method = [search("full", "full"), search("lora", "lora")]  # one search per method: a method's
    table = latex_table(per_method, runs)
    assert r"\caption{Hyper-parameter search of each method on" in table and "\nMethod & Search space" in table


def test_each_configuration_s_search_is_drawn_in_its_shade(ranks, monkeypatch):
    """A rank study has one method: its configurations' panels take their shades of its hue, as the other
    figures draw them, not one colour for all."""
    study_dir, runs = ranks
    palette = study_palette(runs)
    drawn = {}
    monkeypatch.setattr(
        tuning, "draw_panel", lambda ax, record, color: drawn.update({tuning.search_name(record): color})
    )
    tuning.plot_tuning(tuning.load_searches(study_dir, palette["methods"]), study_dir / "figures", None, palette)
    assert drawn == {name: palette["variant"][name] for name in RANKS}
    assert len({drawn["lora r=2"], drawn["lora r=4"], drawn["lora r=16"]}) == 3


def test_run_lengths_are_what_the_protocol_record_says():
    from peftlab.analysis.results.record import run_lengths

    runs = pd.DataFrame(
        {
            "protocol.steps": [8.0, 8.0, 6.0, None],
            "protocol.epochs": [1.0, 1.0, None, None],
            "protocol.max_steps": [None, None, 6.0, None],
            "config.train.epochs": [1, 1, 1, 2],  # the last run has no protocol record
        }
    )
    assert run_lengths(runs) == ([1, 2], [6])
    assert run_lengths(runs.iloc[2:3]) == ([], [6])


@pytest.mark.parametrize(
    "epochs,steps,text",
    [
        ([1], [], r"\cfgEpochs{} \cfgEpochsNoun{}"),
        ([], [6], r"\cfgSteps{} optimizer \cfgStepsNoun{}, where \texttt{train.max\_steps} stopped them short of "),
        ([2], [6], r"\cfgEpochs{} \cfgEpochsNoun{}, or \cfgSteps{} optimizer \cfgStepsNoun{} where "),
        ([], [], ""),
    ],
)
def test_the_run_length_sentence_says_epochs_or_steps(epochs, steps, text):
    numbers = Numbers()
    if epochs:
        numbers.add("cfgEpochs", "1", "")
        numbers.add("cfgEpochsNoun", "epoch", "")
    if steps:
        numbers.add("cfgSteps", "6", "")
        numbers.add("cfgStepsNoun", "steps", "")
    assert paper.run_length(numbers).startswith(text) and (text or not paper.run_length(numbers))


def macros(results_tex: str) -> dict[str, str]:
    return dict(re.findall(r"^\\newcommand\{\\(\w+)\}\{(.*)\}  % ", results_tex, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def rank_paper(tmp_path_factory):
    """The paper of a study whose configurations were each tuned, the LoRA runs stopped by train.max_steps
    after 6 optimizer steps, the others bounded by their 2 epochs."""
    root = tmp_path_factory.mktemp("rank_paper")
    study_dir = write_study_dir(root / "study", with_failure=False)
    write_searches(study_dir, ["full", "linear", "lora r=4", "lora r=8"])
    (study_dir / "study.yaml").write_text('report:\n  labels:\n    lora: LoRA\n    "lora r=4": "LoRA_4 & co"\n')
    for path in (study_dir / "runs").glob("*/result.json"):
        result = json.loads(path.read_text())
        lora = result["config"]["method"]["name"] == "lora"
        result["protocol"] = {
            "epochs": None if lora else 2,
            "max_steps": 6 if lora else None,
            "steps": 6 if lora else 126,
        }
        path.write_text(json.dumps(result))
    out = root / "paper"
    paper.write_paper(study_dir, out, compile=False)
    return (out / "main.tex").read_text(), macros((out / "results.tex").read_text()), out


def test_the_paper_says_how_long_the_runs_trained_from_their_record(rank_paper):
    main, defined, _ = rank_paper
    assert (
        r" for \cfgEpochs{} \cfgEpochsNoun{}, or \cfgSteps{} optimizer \cfgStepsNoun{} where "
        r"\texttt{train.max\_steps} stopped a run first (batch size" in main
    )
    assert defined["cfgEpochs"] == "2" and defined["cfgSteps"] == "6" and defined["cfgStepsNoun"] == "steps"


def test_the_paper_names_each_configuration_s_search_by_its_label(rank_paper):
    main, defined, out = rank_paper
    assert defined["tuneUnit"] == "configuration"
    assert r"of every trial of each \tuneUnit{}'s search, one panel per \tuneUnit{}" in main
    # one clause per key and end, naming every configuration that chose it
    edges = defined["tuneEdges"]
    assert edges.startswith(r"the \texttt{train.lr} is the smallest value searched for ")
    assert edges.count("searched") == 1
    assert r"LoRA\_4 \& co" in edges and "LoRA r=8" in edges
    table = (out / "tables" / "tuning.tex").read_text()
    assert r"search of each configuration on" in table and "\nLoRA\\_4 \\& co & " in table


@pytest.mark.parametrize(
    "seeds,text",
    [([[1000]], "one tuning seed"), ([[1000, 1001]], "mean over the 2 tuning seeds")]
    + [([[1000], [1000, 1001]], "mean over its search's 1 or 2 tuning seeds")],
)
def test_the_tuning_figure_s_caption_says_how_many_seeds_a_trial_scored(seeds, text):
    searches = [{"search": {"seeds": s}} for s in seeds]
    assert seed_words(searches) == text


def test_the_paper_s_tuning_caption_says_one_seed_where_there_was_one(rank_paper):
    main, defined, _ = rank_paper
    assert defined["tuneSeeds"] == "1000"
    assert r"(\tuneMetric{}, \%, one tuning seed) of every trial" in main and "tuning seeds" not in main


def test_the_tuning_legend_is_neutral_not_the_last_panel_s_colour(ranks, monkeypatch):
    """Each panel draws its trials in its configuration's shade; the legend's entries stand for all of them."""
    from peftlab.analysis.figures.style import NEUTRAL

    study_dir, runs = ranks
    palette, figures = study_palette(runs), []
    monkeypatch.setattr(tuning, "save_figure", lambda fig, out_dir, name: figures.append(fig) or [out_dir / name])
    tuning.plot_tuning(tuning.load_searches(study_dir, palette["methods"]), study_dir / "figures", None, palette)
    legend = figures[0].legends[0]
    entries = dict(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles))
    assert set(entries) == {"trial", "chosen"}
    assert entries["trial"].get_color() == NEUTRAL and entries["trial"].get_markerfacecolor() == NEUTRAL
    assert tuple(entries["chosen"].get_facecolor()[0]) == (0, 0, 0, 1)  # the black star, as in every panel


def test_the_edge_and_diverged_lines_name_searches_by_the_study_s_labels(ranks):
    study_dir, runs = ranks
    path = study_dir / "tune" / "lora_r=2" / "selection.json"
    record = json.loads(path.read_text())
    record["trials"][1]["diverged"] = "diverged: non-finite loss at step 3"
    path.write_text(json.dumps(record))
    section = "\n".join(tuning.report_section(study_dir, runs, study_dir / "figures", LABELS))
    edges = next(line for line in section.splitlines() if line.startswith("Chosen at the edge of the search: "))
    assert "Chosen at the edge of the search: Full FT: the chosen train.lr=0.01 is the smallest" in edges
    assert " LoRA ($r{=}2$) 50%: the chosen" in edges and " LoRA r=16: the chosen" in edges
    assert "lora r=" not in edges and "full:" not in edges
    assert "- LoRA ($r{=}2$) 50% trial 1 (train.lr=0.03): diverged: non-finite loss at step 3." in section


def test_equal_budgets_read_as_one_number_and_unequal_ones_name_their_searches(rank_paper):
    from types import SimpleNamespace

    from peftlab.analysis.paper.tuning_table import trial_budgets

    main, defined, _ = rank_paper
    assert defined["tuneTrials"] == "2" and r"search of \tuneTrials{} trials per \tuneUnit{} (Optuna)" in main
    budgets = {"full": 2, "lora": 4, "lora r=4": 4}
    study = SimpleNamespace(
        searches=[
            {"search": {"method": m.split(" ")[0], "trials": t}, "configurations": {"searched": m}}
            for m, t in budgets.items()
        ],
        name={"full": "Full fine-tuning", "lora": "LoRA", "lora r=4": "LoRA\\_4"}.get,
    )
    assert trial_budgets(study) == r"2 trials for Full fine-tuning, and 4 for LoRA and LoRA\_4"
    study.searches.pop()
    assert trial_budgets(study) == "2 trials for Full fine-tuning and 4 for LoRA"
