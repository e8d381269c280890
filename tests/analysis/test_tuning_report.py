"""The report's Tuning section from selection.json files as the search writes them: a choice at
the end of a numeric axis is named, and a one-axis search is drawn against its values."""

import json

import pandas as pd
import pytest

from peftlab.analysis.tuning import edge_choices, numeric_axis, plot_tuning, report_section


def selection(method, axes, trials, chosen, search="grid", done=True):
    return {"fingerprint": "0", "done": done, "chosen": chosen,
            "search": {"method": method, "axes": axes, "search": search, "trials": len(trials), "metric": "val_top1",
                       "seeds": [1000], "sampler_seed": 0, "reduction_factor": 3},
            "trials": [{"number": i, "state": "COMPLETE", "value": v, "params": p, "run_ids": [f"r{method}{i}"],
                        "reported": {}} for i, (p, v) in enumerate(trials)]}


LRS = [1e-3, 3e-3, 1e-2, 3e-2]


def grid(method, scores):
    trials = [({"train.lr": lr}, v) for lr, v in zip(LRS, scores)]
    best = max(range(len(trials)), key=lambda i: (trials[i][1], -i))
    return selection(method, [{"key": "train.lr", "values": LRS}], trials,
                     {"trial": best, "value": trials[best][1], "metric": "val_top1", "params": trials[best][0]})


@pytest.fixture
def study(tmp_path):
    records = [grid("full", [0.80, 0.77, 0.52, 0.31]),          # best at the smallest rate
               grid("lora", [0.60, 0.66, 0.70, 0.68]),          # best inside the grid
               grid("adalora", [0.40, 0.50, 0.60, 0.65]),       # best at the largest rate
               selection("ssf", [{"key": "train.lr", "low": 1e-4, "high": 1e-1, "log": True},
                                 {"key": "method.r", "values": [4, 8]}],
                         [({"train.lr": 1e-4, "method.r": 4}, 0.5), ({"train.lr": 2e-3, "method.r": 8}, 0.6)],
                         {"trial": 0, "value": 0.5, "metric": "val_top1", "params": {"train.lr": 1e-4, "method.r": 4}},
                         search="random")]
    for record in records:
        directory = tmp_path / "tune" / record["search"]["method"]
        directory.mkdir(parents=True)
        (directory / "selection.json").write_text(json.dumps(record))
    return tmp_path, records


def test_a_choice_at_either_end_of_a_numeric_axis_is_named(study):
    _, records = study
    notes = edge_choices(records)
    assert [n.split(":")[0] for n in notes] == ["full", "adalora", "ssf"]
    assert "train.lr=0.001 is the smallest value searched" in notes[0]
    assert "train.lr=0.03 is the largest value searched" in notes[1]
    assert "train.lr=0.0001 is the smallest" in notes[2] and "method.r" not in notes[2]  # two points: no edge
    unfinished = dict(records[0], done=False)
    assert edge_choices([unfinished]) == []


def test_one_numeric_axis_is_drawn_against_its_values(study, tmp_path):
    _, records = study
    assert numeric_axis(records[0]["search"])["key"] == "train.lr" and numeric_axis(records[3]["search"]) is None
    assert numeric_axis({"axes": [{"key": "method.target_modules", "values": ["standard", "extended"]}]}) is None
    paths = plot_tuning(records[:3], tmp_path / "figures")
    figure = paths[0].parent / "tuning.png"
    assert figure.is_file() and figure.stat().st_size > 5000


def test_the_section_lists_every_search_and_the_edges(study):
    directory, _ = study
    lines = report_section(directory, pd.DataFrame(), directory / "figures")
    text = "\n".join(lines)
    assert text.startswith("## Tuning")
    assert sum(line.startswith("| ") for line in lines) == 1 + 4  # header and one row per method
    edges = next(line for line in lines if line.startswith("Chosen at the edge of the search: "))
    assert "full: the chosen train.lr=0.001 is the smallest" in edges and "adalora: the chosen" in edges
    assert " lora: the chosen" not in edges  # inside the grid
    assert "in the order they ran" in text  # the two-axis search is drawn in trial order
