"""The report's Tuning section from selection.json files as the search writes them: a choice at
the end of a numeric axis is named, and a one-axis search is drawn against its values."""

import json

import pandas as pd
import pytest

from peftlab.analysis.report.tuning import added_lines, edge_choices, numeric_axis, plot_tuning, report_section

FIGURES_DRAWN = ("tuning",)  # the figure the tests read; the report's others written empty (conftest.py)


def selection(method, axes, trials, chosen, search="grid", done=True):
    return {
        "fingerprint": "0",
        "done": done,
        "chosen": chosen,
        "search": {
            "method": method,
            "axes": axes,
            "search": search,
            "trials": len(trials),
            "metric": "val_top1",
            "seeds": [1000],
            "sampler_seed": 0,
            "reduction_factor": 3,
        },
        "trials": [
            {"number": i, "state": "COMPLETE", "value": v, "params": p, "run_ids": [f"r{method}{i}"], "reported": {}}
            for i, (p, v) in enumerate(trials)
        ],
    }


LRS = [1e-3, 3e-3, 1e-2, 3e-2]


def grid(method, scores):
    trials = [({"train.lr": lr}, v) for lr, v in zip(LRS, scores)]
    best = max(range(len(trials)), key=lambda i: (trials[i][1], -i))
    return selection(
        method,
        [{"key": "train.lr", "values": LRS}],
        trials,
        {"trial": best, "value": trials[best][1], "metric": "val_top1", "params": trials[best][0]},
    )


@pytest.fixture
def study(tmp_path):
    records = [
        grid("full", [0.80, 0.77, 0.52, 0.31]),  # best at the smallest rate
        grid("lora", [0.60, 0.66, 0.70, 0.68]),  # best inside the grid
        grid("adalora", [0.40, 0.50, 0.60, 0.65]),  # best at the largest rate
        selection(
            "ssf",
            [{"key": "train.lr", "low": 1e-4, "high": 1e-1, "log": True}, {"key": "method.r", "values": [4, 8]}],
            [({"train.lr": 1e-4, "method.r": 4}, 0.5), ({"train.lr": 2e-3, "method.r": 8}, 0.6)],
            {"trial": 0, "value": 0.5, "metric": "val_top1", "params": {"train.lr": 1e-4, "method.r": 4}},
            search="random",
        ),
    ]
    for record in records:
        directory = tmp_path / "tune" / record["search"]["method"]
        directory.mkdir(parents=True)
        (directory / "selection.json").write_text(json.dumps(record))
    return tmp_path, records


def test_a_choice_at_either_end_of_a_numeric_axis_is_named(study):
    _, records = study
    notes = edge_choices(records)
    assert [n.split(":")[0] for n in notes] == ["full", "adalora", "ssf", "ssf"]
    assert "train.lr=0.001 is the smallest value searched" in notes[0]
    assert "train.lr=0.03 is the largest value searched" in notes[1]
    assert "train.lr=0.0001 is the smallest" in notes[2]
    assert "method.r=4 is the smallest" in notes[3]  # on a two-point axis every choice is at an edge
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


def edge_following(tmp_path):
    """A follow_edge search as selection.json holds it: a 3-point grid whose top diverged, a point added
    past the bottom, one between, and a budget that ran out with the best still at the bottom."""
    record = selection(
        "lora",
        [{"key": "train.lr", "values": [1e-2, 1e-1, 1.0]}],
        [
            ({"train.lr": 1e-2}, 0.6),
            ({"train.lr": 1e-1}, 0.101),
            ({"train.lr": 1.0}, None),
            ({"train.lr": 1e-3}, 0.7),
            ({"train.lr": 1e-4}, 0.72),
        ],
        {"trial": 4, "value": 0.72, "metric": "val_top1", "params": {"train.lr": 1e-4}},
    )
    record["search"].update(trials=5, follow_edge=True)
    trials = record["trials"]
    trials[1]["diverged"] = "validation top-1 10.1% is at or below chance (10 classes: 10.0%, within 1.3 points)"
    trials[2].update(state="FAIL", diverged="diverged: non-finite loss at step 3")
    trials[3]["added"] = "beyond the bottom of train.lr (best at 0.01)"
    trials[4]["added"] = "beyond the bottom of train.lr (best at 0.001)"
    record["follow_edge"] = {
        "grid": 3,
        "added": 2,
        "unspent": 0,
        "refused": [],
        "stopped": None,
        "at_edge": "the budget ran out with the best still at an edge: next would be beyond "
        "the bottom of train.lr (best at 0.0001)",
    }
    directory = tmp_path / "tune" / "lora"
    directory.mkdir(parents=True)
    (directory / "selection.json").write_text(json.dumps(record))
    return record


def test_the_section_names_added_points_an_exhausted_budget_and_diverged_trials(tmp_path):
    record = edge_following(tmp_path)
    text = "\n".join(report_section(tmp_path, pd.DataFrame(), tmp_path / "figures"))
    assert (
        "5 of 5 (1 at chance, 3 complete, 1 diverged)" in text
    )  # a trial at chance completed: not diverged and "grid search (Optuna) that follows the edge" in text
    assert (
        "- lora: the grid's 3 trials, then 2 added: trial 3 train.lr=0.001, beyond the bottom of train.lr (best at "
        "0.01); trial 4 train.lr=0.0001, beyond the bottom of train.lr (best at 0.001)."
    ) in text
    assert "  - The budget ran out with the best still at an edge: next would be beyond the bottom" in text
    assert "the chosen train.lr=0.0001 is the smallest value searched; the budget ran out before the search" in text
    assert "- lora trial 2 (train.lr=1): diverged: non-finite loss at step 3." in text
    assert "- lora trial 1 (train.lr=0.1): validation top-1 10.1% is at or below chance" in text
    assert "black crosses are trials that fell to chance" in text and "black triangles on the x-axis" in text

    assert "diamonds are points the edge-following search added after the grid" in text
    # the space column names the added points: the chosen 0.0001 is not one of the grid's values
    assert "| train.lr in {0.01, 0.1, 1.0}, then 2 points added by following the edge | 5 of 5" in text
    assert edge_choices([dict(record, follow_edge=None)])[0].endswith("its best may lie outside the searched range.")


def test_the_added_points_name_each_search_as_the_tables_do(tmp_path):
    """A study's labels name the search in the list of added points as in the tuning table: the methods
    study listed its HRA search as 'peft' and the others as 'peft peft_type=BEFT' before."""
    record = edge_following(tmp_path)
    assert added_lines([record])[0].startswith("- lora: the grid's 3 trials")
    assert added_lines([record], {"lora": "LoRA r=8"})[0].startswith("- LoRA r=8: the grid's 3 trials")


def test_the_paper_table_names_added_points_and_rounds_them(tmp_path):
    """An added point such as 0.0547723 reads 0.0548 in the paper's table, whose space names the added points."""
    from peftlab.analysis.paper.tuning_table import latex_space, latex_table

    record = edge_following(tmp_path)
    record["chosen"]["params"]["train.lr"] = record["trials"][4]["params"]["train.lr"] = 0.0547723
    assert latex_space(record) == r"\texttt{train.lr} $\in$ \{0.01, 0.1, 1\} $+$2"
    table = latex_table([record], pd.DataFrame(columns=["method", "metrics.val_top1", "metrics.test_top1"]))
    assert r"\texttt{train.lr}=\allowbreak\mbox{0.0548" in table and "0.0547723" not in table
    assert r"$+k$: $k$ points added after the grid by following the edge" in table


@pytest.mark.parametrize("one_axis", [True, False])
def test_diverged_and_added_trials_have_their_own_markers(tmp_path, one_axis):
    from matplotlib.figure import Figure

    from peftlab.analysis.report.tuning import draw_panel

    record = edge_following(tmp_path)
    if not one_axis:  # drawn in trial order
        record["search"]["axes"].append({"key": "data.augment", "values": [True, False]})
    ax = Figure().subplots()
    draw_panel(ax, record, "#0072B2")
    labels = ax.get_legend_handles_labels()[1]
    # one cross at its chance score, one on the x-axis (no score)
    assert {"at chance (completed)", "diverged: non-finite (on the x-axis)", "added (edge-following)", "chosen"} <= set(
        labels
    )
    low, high = ax.get_xlim()
    assert low <= (1e-4 if one_axis else 0) and high >= (1.0 if one_axis else 4)  # every trial is in view


def test_a_perplexity_search_is_reported_lower_better_and_unscaled(tmp_path):
    """val_perplexity: the section says the lowest wins and prints perplexities as they are (not x100), the
    final runs' columns are their val and test perplexity, the best-so-far line falls, the paper's caption
    says lower is better."""
    from matplotlib.figure import Figure

    from peftlab.analysis.paper.tuning_table import latex_table
    from peftlab.analysis.report.tuning import draw_panel

    record = selection(
        "lora",
        [{"key": "train.lr", "low": 1e-4, "high": 1e-1, "log": True}, {"key": "method.r", "values": [4, 8]}],
        [({"train.lr": 1e-3, "method.r": 4}, 14.2), ({"train.lr": 1e-2, "method.r": 8}, 9.87)],
        {"trial": 1, "value": 9.87, "metric": "val_perplexity", "params": {"train.lr": 1e-2, "method.r": 8}},
        search="random",
    )
    record["search"]["metric"] = "val_perplexity"
    (tmp_path / "tune" / "lora").mkdir(parents=True)
    (tmp_path / "tune" / "lora" / "selection.json").write_text(json.dumps(record))
    finals = pd.DataFrame(
        {
            "method": ["lora", "lora"],
            "seed": [0, 1],
            "status": ["completed", "completed"],
            "groups": ["main", "main"],
            "metrics.val_top1": [0.41, 0.43],
            "metrics.test_top1": [0.40, 0.42],
            "metrics.val_perplexity": [10.25, 10.75],
            "metrics.test_perplexity": [11.0, 12.0],
        }
    )
    lines = report_section(tmp_path, finals, tmp_path / "figures")
    text = "\n".join(lines)
    assert "trials selected by val_perplexity, the lowest winning (one trial per point" in text
    row = next(line for line in lines if line.startswith("| lora |"))
    assert row.endswith("| train.lr=0.01, method.r=8 (trial 1) | 9.87 | 10.50 | 11.50 (2 seeds) |"), row
    assert "Scores in the val and test columns: perplexity as it is." in text
    assert "`figures/tuning.png`: the val_perplexity (validation) of every trial" in text
    ax = Figure().subplots()
    draw_panel(ax, record, "#0072B2")
    best_so_far = next(line for line in ax.lines if line.get_label() == "best so far")
    assert list(best_so_far.get_ydata()) == [14.2, 9.87]
    assert ax.collections[-1].get_offsets()[0][1] == 9.87  # the chosen trial's star, unscaled
    table = latex_table([record], finals)
    assert r"the \texttt{val\_perplexity} (lower is better) of the chosen trial" in table
    assert "validation and test perplexity of the final runs at the chosen values over $n$ seeds, perplexity" in table
    assert r"& 1 & 9.9 & 10.5 & 11.5 & 2 \\" in table


def test_a_range_searchs_choice_at_the_extreme_of_its_trials_is_named():
    """A random search whose best is the largest rate it tried, well inside its range, is at the edge of what
    was searched: the report says so, and that the range beyond it was not reached."""
    trials = [({"train.lr": lr}, v) for lr, v in [(2e-4, 0.4), (1e-3, 0.5), (4e-3, 0.6), (8e-3, 0.7)]]
    record = selection(
        "lora",
        [{"key": "train.lr", "low": 1e-4, "high": 1e-1, "log": True}],
        trials,
        {"trial": 3, "value": 0.7, "metric": "val_top1", "params": {"train.lr": 8e-3}},
        search="random",
    )
    assert edge_choices([record]) == [
        "lora: the chosen train.lr=0.008 is the largest value searched; its best may lie beyond it, in the range "
        "no trial reached (to 0.1)."
    ]


def test_borrowed_configurations_are_marked_wherever_they_are_compared(tmp_path):
    """tune.share: lora r=8 ran at the values tuned for lora r=4. The Tuning section names it, and the main
    table, the significance table and the paper's tables mark it with the note, so a significance mark never
    stands on it without saying that it was not tuned itself."""
    from studyfiles import write_study_dir

    from peftlab.analysis.paper import build as paper
    from peftlab.analysis.paper.tables import write_tables
    from peftlab.analysis.report.build import write_report
    from peftlab.analysis.results.load import load_results

    study_dir = write_study_dir(tmp_path / "study", with_failure=False)
    choice = {"trial": 2, "value": 0.66, "metric": "val_top1", "params": {"train.lr": 1e-2}}
    for spec_path in (study_dir / "runs").glob("*/spec.json"):
        spec = json.loads(spec_path.read_text())
        if spec["method"] != "lora":
            continue
        borrowed = {"borrowed_from": "lora r=4"} if spec["variant"] == "lora r=8" else {}
        spec_path.write_text(json.dumps({**spec, "tuned_by": {**choice, **borrowed}}))
    record = grid("lora", [0.60, 0.62, 0.66, 0.64])
    record["configurations"] = {"searched": "lora r=4", "borrowed_by": ["lora r=8"]}
    (study_dir / "tune" / "lora_r=4").mkdir(parents=True)
    (study_dir / "tune" / "lora_r=4" / "selection.json").write_text(json.dumps(record))

    text = write_report(study_dir, baseline="linear").read_text()
    note = "‡: not tuned itself; ran at the hyper-parameters tuned for another configuration (tune.share): lora r=8"
    assert "| lora r=4 | train.lr in {0.001, 0.003, 0.01, 0.03} | 4 of 4" in text  # the searched configuration
    assert "- lora r=8: at the values chosen for lora r=4 (train.lr=0.01)." in text
    main = text.split("## Main table")[1].split("\n## ")[0]
    row = next(line for line in main.splitlines() if line.startswith("| lora r=8"))
    assert row.startswith("| lora r=8 ‡ |") and "] * |" in row and note in main  # significant, and marked
    significance = text.split("## Significance")[1].split("\n## ")[0]
    assert "| lora r=8 ‡ |" in significance and note in significance
    assert "| lora r=4 |" in significance  # tuned itself: no mark

    study = paper.Study(study_dir, load_results(study_dir), "linear")
    write_tables(study, [], tmp_path / "tables")
    for name in ("main_table.tex", "significance.tex"):
        table = (tmp_path / "tables" / name).read_text()
        assert r"lora r=8$^{\ddagger}$" in table and r"$^{\ddagger}$: not tuned itself" in table, name
    tuning = (tmp_path / "tables" / "tuning.tex").read_text()
    assert r"$^{\ddagger}$ (in the other tables): not tuned itself" in tuning
    assert "lora r=8 at those of lora r=4" in tuning


@pytest.mark.parametrize("val_column", ["absent", "null"])
def test_final_runs_on_train_and_val_fill_the_test_column(study, val_column):
    """Final runs on train800val200 (data.trainval) have no validation score; their test score is there."""
    from peftlab.analysis.paper.tuning_table import latex_table

    directory, records = study
    runs = pd.DataFrame(
        {"status": "completed", "groups": "main", "method": "lora", "seed": [0, 1], "metrics.test_top1": [0.7, 0.8]}
    )
    if val_column == "null":
        runs["metrics.val_top1"] = None
    row = next(line for line in report_section(directory, runs, directory / "figures") if line.startswith("| lora"))
    assert row.endswith("| - | 75.00 (2 seeds) |"), row
    assert "-- & 75.0 & 2" in latex_table(records, runs)


def test_a_trial_at_chance_is_counted_at_chance_not_diverged():
    """A trial whose run completed at a chance score is never chosen, but its result.json says completed and not
    diverged: the paper's tuning table and the report count it apart from the runs that diverged."""
    from peftlab.analysis.paper.tuning_table import latex_trials

    trials = [
        {"number": 0, "state": "COMPLETE", "value": 0.8, "params": {"train.lr": 0.01}},
        {
            "number": 1,
            "state": "COMPLETE",
            "value": 0.1,
            "params": {"train.lr": 1.0},
            "diverged": "validation top-1 10.0% is at or below chance (10 classes: 10.0%, within 1.3 points)",
        },
    ]
    assert latex_trials({"trials": trials, "done": True}) == "1/0 +1 at chance"
    trials.append({"number": 2, "state": "FAIL", "value": None, "params": {}, "diverged": "diverged: nan loss"})
    assert latex_trials({"trials": trials, "done": True}) == "1/0 +1 diverged +1 at chance"


def test_a_log_scaled_panel_ticks_the_values_searched():
    """Two learning rates a decade apart in a narrow panel: matplotlib's minor labels (3 x 10^-3, 4 x 10^-3,
    6 x 10^-3, ...) ran into each other in a paper; the panel ticks the searched values alone."""
    from matplotlib.figure import Figure

    from peftlab.analysis.report.tuning import draw_panel

    trials = [({"train.lr": 0.003}, 0.6), ({"train.lr": 0.03}, 0.7)]
    chosen = {"trial": 1, "value": 0.7, "metric": "val_top1", "params": {"train.lr": 0.03}}
    record = selection("lora", [{"key": "train.lr", "values": [0.003, 0.03]}], trials, chosen)
    figure = Figure(figsize=(2, 2))
    ax = figure.subplots()
    draw_panel(ax, record, "#0072B2")
    assert ax.get_xscale() == "log"
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["0.003", "0.03"]
    assert not [tick for tick in ax.get_xticklabels(minor=True) if tick.get_text()]


def test_a_label_with_markdown_link_and_table_syntax_prints_as_itself_in_the_section(study):
    """Issue 82: the search's names went into report.md as written: a label holding a link, an image or a "|" made
    markup (a link, an image fetched when the report is shown, a broken table row)."""
    directory, _ = study
    hostile = "![x](http://example.com/a.png) [y](javascript:alert(1)) | z"
    lines = report_section(directory, pd.DataFrame(), directory / "figures", labels={"lora": hostile})
    text = "\n".join(lines)
    escaped = r"!\[x\](http://example.com/a.png) \[y\](javascript:alert(1)) \| z"
    row = next(line for line in lines if line.startswith("| " + escaped))
    assert row.count(" | ") == 6  # seven cells: the name's "|" is no cell boundary
    assert "Budgets (trials per search): " in text and f"{escaped} 4" in text
    assert hostile not in text and "![x](" not in text


def test_study_file_keys_and_values_are_markdown_escaped_in_the_report():
    """A key or text value of a study file holding Markdown (a table cell's |, emphasis, a link) prints as itself
    in the Tuning table's space and choice cells and in the edge sentences."""
    from peftlab.analysis.report.tuning import _space
    from peftlab.analysis.report.tuning_lines import _values

    axes = [
        {"key": "method.*r*", "values": [4, 8, 16]},
        {"key": "method.target_modules", "values": ["q|v", "[all](x)"]},
    ]
    trials = [({"method.*r*": r, "method.target_modules": t}, 0.5 + r / 100) for r in (4, 8, 16) for t in ("q|v",)]
    record = selection("lora", axes, trials, {"trial": 2, "value": 0.66, "params": trials[2][0], "metric": "val_top1"})
    assert _space(record) == r"method.\*r\* in {4, 8, 16}; method.target_modules in {q\|v, \[all\](x)}"
    assert _values({"method.target_modules": "q|v", "train.lr": 0.01}) == r"method.target_modules=q\|v, train.lr=0.01"
    (sentence,) = edge_choices([record], {"lora": "LoRA | *best*"})
    assert sentence.startswith(r"LoRA \| \*best\*: the chosen method.\*r\*=16 is the largest value searched")
