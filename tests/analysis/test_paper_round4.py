"""Issue 91, items 2, 3 and 5: a chance test whose unit is the test set's images (each seed tested on its own, the rule
stated), Holm families that are the comparison's (the main table's configurations; the ablations' apart; a repeat of
another configuration untested, and said), and the text and figure defects a reviewer marked. Recomputed with scipy
and statsmodels on hand-made tables, and read from one vision paper with a crossed ablation and a repeat."""

import json
import re

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
from paperkinds import text_kind, vision_kind
from scipy.stats import binomtest, ttest_rel
from statsmodels.stats.multitest import multipletests
from studyfiles import SEEDS, completed_result, config, write_run
from test_paper import macros
from test_paper_trace import expand

from peftlab.analysis.figures import study as figures
from peftlab.analysis.paper import build as paper
from peftlab.analysis.paper.study import Study
from peftlab.analysis.report import tuning
from peftlab.analysis.report.build import write_report
from peftlab.analysis.results.load import load_results
from peftlab.analysis.stats.chance import chance
from peftlab.analysis.stats.comparisons import paired_comparisons
from peftlab.analysis.stats.families import ABLATION, MAIN, comparison_families, repeats

# reads the report's and paper's text and tables, never a figure's pixels or fonts
FIGURES_DRAWN = ()

# --- 2. chance: each seed's run on the shared test images -----------------------------------------------------------


def runs(rows, **columns):
    """A results table of (variant, seed, top-1) rows on a 100-image test set of 2 classes, with ``columns``."""
    table = pd.DataFrame(rows, columns=["variant", "seed", "metrics.test_top1"])
    return table.assign(status="completed", method="lora", **{"data.test_size": 100, "data.num_classes": 2}, **columns)


def test_chance_tests_each_seed_where_pooling_the_seeds_would_call_it_above(tmp_path):
    """Three seeds at 60, 60 and 52 of the same 100 images: pooled as 172 of 300 draws the old test rejected; the
    seed at 52 is not above 50%, so the configuration is at chance, its p that seed's."""
    counts = {"a": (60, 60, 52), "b": (62, 63, 61)}
    df = runs([(v, s, k / 100) for v, ks in counts.items() for s, k in enumerate(ks)])
    assert binomtest(172, 300, 0.5, alternative="greater").pvalue < 0.05  # what pooling the seeds said
    found = chance(tmp_path, df)
    assert (found.rate, found.rule) == (0.5, "classes")
    table = found.table.set_index("variant")
    for variant, ks in counts.items():
        each = [binomtest(k, 100, 0.5, alternative="greater").pvalue for k in ks]
        assert table.loc[variant, "p"] == pytest.approx(max(each))
        assert table.loc[variant, "above"] == sum(p < 0.05 for p in each)
    assert found.at_chance() == ["a"] and table.loc["a", "p"] == pytest.approx(0.382, abs=5e-4)
    assert found.line() == 0.5  # the accuracy figure draws the rate a configuration did not beat


# --- 3. the test family is the comparison's --------------------------------------------------------------------------

# variant, spec groups, LoRA rank, log_every, test top-1 over five seeds
FAMILIES = [
    ("full", "main", None, 10, (0.700, 0.712, 0.695, 0.705, 0.709)),
    ("linear", "main", None, 10, (0.640, 0.655, 0.652, 0.640, 0.661)),
    ("lora", "main", 8, 10, (0.702, 0.720, 0.699, 0.716, 0.713)),
    ("lora log_every=5", "main", 8, 5, (0.702, 0.720, 0.699, 0.716, 0.713)),  # the same training, logged more often
    ("lora r=4", "rank", 4, 10, (0.696, 0.716, 0.689, 0.709, 0.706)),
    ("lora r=16", "main,rank", 16, 10, (0.690, 0.721, 0.703, 0.698, 0.719)),
    ("lora r=32", "rank", 32, 10, (0.661, 0.673, 0.668, 0.690, 0.671)),
]


def families_table() -> pd.DataFrame:
    rows = []
    for variant, groups, r, log_every, scores in FAMILIES:
        method = variant.split()[0]
        for seed, top1 in enumerate(scores):
            rows.append(
                {"variant": variant, "method": method, "seed": seed, "groups": groups, "status": "completed"}
                | {"config.method.name": method, "config.method.r": r, "config.train.log_every": log_every}
                | {"config.seed": seed, "config.name": variant, "metrics.test_top1": top1}
            )
    return pd.DataFrame(rows)


def test_holm_runs_over_the_main_table_s_configurations_and_the_ablations_apart():
    df = families_table()
    families = comparison_families(df, "full")
    assert families == {
        "linear": MAIN,
        "lora": MAIN,
        "lora log_every=5": None,  # not tested: it repeats lora
        "lora r=4": ABLATION,
        "lora r=16": MAIN,  # shared with the rank ablation, run in the main table
        "lora r=32": ABLATION,
    }
    assert repeats(df, "full") == {"lora log_every=5": ("lora", ["train.log_every"])}
    table = paired_comparisons(df, "full", families=families).set_index("variant")
    assert "lora log_every=5" not in table.index
    top1 = df.pivot(index="seed", columns="variant", values="metrics.test_top1")
    p = {v: ttest_rel(top1[v], top1["full"]).pvalue for v in families if families[v] is not None}
    for family in (MAIN, ABLATION):
        members = [v for v in p if families[v] == family]
        assert list(table.loc[members, "p_ttest_holm"]) == pytest.approx(
            list(multipletests([p[v] for v in members], method="holm")[1])
        )
        assert (table.loc[members, "family"] == family).all()
    # one family of every comparison would have changed the main table's corrected p-values
    padded = dict(zip(p, multipletests(list(p.values()), method="holm")[1]))
    assert padded["linear"] != pytest.approx(table.loc["linear", "p_ttest_holm"])


def test_a_setting_that_changes_training_is_no_repeat():
    df = families_table()
    df.loc[df["variant"] == "lora log_every=5", "config.method.r"] = 9
    assert repeats(df, "full") == {} and comparison_families(df, "full")["lora log_every=5"] == MAIN


def with_repeat(root):
    """The vision kind (an ablation crossing r with the targets, full at chance) and a main configuration that repeats
    lora r=8 but logs every 5 steps: the same training, the same scores."""
    study = vision_kind(root)
    base = study / "base" / "model.safetensors"
    for seed, top1 in zip(SEEDS, (0.68, 0.66, 0.70)):
        cfg = config({"method.name": "lora", "method.r": 8, "model.pretrained": base, "train.log_every": 5}, seed)
        result = completed_result(cfg, top1, 17_674, 31.0)
        result["provenance"]["data"].update(num_classes=10, split_sizes={"train": 4000, "val": 500, "test": 100})
        run_id = f"lorar8log5-s{seed}"
        write_run(study / "runs" / run_id, cfg, run_id, "lora r=8 log_every=5", "lora", seed, {}, 300 + seed, result)
        spec = study / "runs" / run_id / "spec.json"
        spec.write_text(json.dumps({**json.loads(spec.read_text()), "groups": ["main"]}))
    return study


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    root = tmp_path_factory.mktemp("repeated")
    study = with_repeat(root)
    out = root / "paper"
    main = paper.write_paper(study, out, compile=False).read_text()
    report = write_report(study).read_text()
    return study, out, main, macros((out / "results.tex").read_text()), report


def test_the_paper_says_which_family_each_comparison_is_in(repeated):
    study, out, main, defined, _ = repeated
    assert (defined["comparisonCount"], defined["ablationComparisonCount"]) == ("3", "2")
    assert (
        "Holm's correction runs over the comparisons of the main table's configurations with the baseline; the "
        "configurations only an ablation runs are compared with it in a Holm family of their own" in main
    )
    assert r"In their own Holm family, \ablationSignificantCount{} of the \ablationComparisonCount{}" in main
    assert r"Not tested: \repeatWords{}." in main
    assert defined["repeatWords"] == (
        r"lora r=8 log\_every=5 repeats lora r=8 in every setting that changes training (it differs only in "
        r"\texttt{train.log\_every})"
    )
    table = (out / "tables" / "significance.tex").read_text()
    assert "log\\_every=5 &" not in table and table.count("Ablations: a Holm family of their own") == 2
    assert "each Holm-corrected within its family" in table
    # the corrected p-values of the main family, recomputed from the runs
    comparisons = Study(study, load_results(study), "full").comparisons
    top1 = load_results(study).pivot(index="seed", columns="variant", values="metrics.test_top1")
    main_family = ["linear", "lora r=4", "lora r=8"]
    p = [ttest_rel(top1[v], top1["full"]).pvalue for v in main_family]
    assert list(comparisons.loc[main_family, "p_ttest_holm"]) == pytest.approx(list(multipletests(p, method="holm")[1]))


def test_the_report_says_which_family_each_comparison_is_in(repeated):
    report = repeated[4]
    assert "| configuration | family | pairs |" in report and "| lora r=4 targets=all-linear | ablation | 3 |" in report
    assert (
        "Holm's correction runs within each family: the main table's 3 configurations against the baseline, and "
        "apart from them the 2 configurations only an ablation runs" in report
    )
    assert (
        "Not tested: lora r=8 log_every=5 repeats lora r=8 in every setting that changes training (it differs only "
        "in train.log_every)" in report
    )
    assert "Holm-corrected within its family: the main configurations, or apart those only an ablation runs" in report


def test_the_chance_rule_is_stated_where_chance_is_said(repeated):
    _, out, main, _, report = repeated
    assert "so the seeds' counts are not pooled; each seed's run has its own one-sided exact binomial test" in main
    assert "A configuration is above chance where every seed's test rejects at" in main
    assert "its own one-sided exact binomial test at the 0.05 level" in (out / "tables" / "main_table.tex").read_text()
    assert "A configuration is above chance where every seed's test rejects at α = 0.05" in report
    assert "full (0 of 3 seeds above it; 37 of 300 correct over the seeds; largest p = 0.549)" in report


# --- 5. the text and figure defects ---------------------------------------------------------------------------------


def test_no_sentence_runs_into_the_next(repeated):
    """ "[19.1, 31.6].The highest": a template line's closing block swallowed the line's end."""
    main, defined = repeated[2], repeated[3]
    text = expand(main, defined)  # as it prints: "result.json).\\noindent\\texttt{peftlab paper}" ran together too
    assert re.findall(r".{30}(?:[\]})a-z0-9%]\.[A-Z]|[\]})]\.(?:[A-Za-z]|\\noindent))", text) == []
    assert re.search(r"\\topOneHigh\w+\{\}\]\.\n", main)  # the means' sentence ends its line


def test_trials_at_chance_are_drawn_in_the_colour_the_caption_names(drawn, tmp_path):
    """Vermillion crosses, named "red", were the second method's own colour: black crosses, named black."""

    def search(method, values, at_chance=None):
        trials = [
            {"number": i, "state": "COMPLETE", "value": v, "params": {"train.lr": lr}, "run_ids": [f"{method}{i}"]}
            for i, (lr, v) in enumerate(zip((1e-3, 1e-2, 1e-1), values))
        ]
        if at_chance is not None:
            trials[at_chance]["diverged"] = "validation top-1 10.1% is at or below chance"
        axes = [{"key": "train.lr", "values": [1e-3, 1e-2, 1e-1]}]
        chosen = {"trial": 0, "value": values[0], "metric": "val_top1", "params": {"train.lr": 1e-3}}
        search = {"method": method, "axes": axes, "search": "grid", "trials": 3, "metric": "val_top1", "seeds": [0]}
        return {"chosen": chosen, "search": search, "trials": trials}

    searches = [search("full", [0.8, 0.7, 0.6]), search("linear", [0.7, 0.6, 0.101], at_chance=2)]
    palette = {"method": {"full": "#0072B2", "linear": "#D55E00"}}
    tuning.plot_tuning(searches, tmp_path, palette=palette)
    crosses = [c for ax in drawn["tuning"].axes for c in ax.collections if c.get_label() == "at chance (completed)"]
    assert len(crosses) == 1
    color = matplotlib.colors.to_hex(crosses[0].get_edgecolor()[0])
    assert color == matplotlib.colors.to_hex(tuning.FELL_WORD) and color not in palette["method"].values()
    assert f"{tuning.FELL_WORD} crosses are trials that fell to chance" in tuning.figure_caption(searches)


def test_the_axis_of_counts_drawn_side_by_side_promises_no_ticks_at_them(drawn, tmp_path):
    rows = [(v, s, 0.7 + 0.01 * s) for v in ("lora a", "lora b") for s in range(3)]
    df = runs(rows, **{"params.trainable": 73_728})
    figures.plot_accuracy_vs_params(df, tmp_path)
    ax = drawn["accuracy_vs_params"].axes[0]
    assert "side by side around their count" in ax.get_xlabel() and "ticks" not in ax.get_xlabel()
    assert 73_728 not in ax.get_xticks()  # the ticks are round: none is the count


def test_a_configuration_evaluated_once_is_drawn_where_the_legend_names_it(drawn, tmp_path):
    curves = pd.DataFrame(
        [
            {"run_id": f"a{s}", "variant": "lora a", "step": step, "val_top1": 0.5 + step / 100}
            for s in range(2)
            for step in (10, 20)
        ]
        + [{"run_id": f"b{s}", "variant": "lora b", "step": 20, "val_top1": 0.6} for s in range(2)]
    )
    figures.plot_convergence(curves, tmp_path)
    fig = drawn["convergence"]
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    once = lines["lora b"]
    assert (
        once.get_marker() == "o"
        and list(once.get_xdata()) == [20]
        and lines["lora a"].get_marker() in ("None", None, "")
    )
    assert "lora b" in [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_a_study_at_chance_draws_the_chance_line(drawn, tmp_path):
    """The text kind: every configuration at chance (4 balanced classes); its rate is drawn, inside the axes, and
    the paper's caption names it."""
    study = text_kind(tmp_path)
    df = load_results(study)
    found = chance(study, df)
    assert len(found.at_chance()) == len(found.table) and found.line() == 0.25
    figures.plot_accuracy_vs_params(df, tmp_path, chance=found.line())
    ax = drawn["accuracy_vs_params"].axes[0]
    (line,) = [line for line in ax.lines if line.get_label() == "chance (25%)"]
    low, high = ax.get_ylim()
    assert list(line.get_ydata()) == [25, 25] and low < 25 < high
    legend = [text.get_text() for legend in drawn["accuracy_vs_params"].legends for text in legend.get_texts()]
    assert legend[-2:] == ["Pareto front", "chance (25%)"]  # after the configurations, as the front is
    from peftlab.analysis.paper.figures import figure_captions

    captions = figure_captions(Study(study, df, "full"))
    assert r"Dotted: the task's chance rate, \chanceRate{}\%" in captions["accuracy_vs_params"]


def test_no_chance_line_where_every_configuration_beats_chance():
    found = chance("/nonexistent", runs([("b", s, 0.9) for s in range(3)]))
    assert found.at_chance() == [] and found.line() is None
    assert np.isclose(found.table["p"].iloc[0], binomtest(90, 100, 0.5, alternative="greater").pvalue)
