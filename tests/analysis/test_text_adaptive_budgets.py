"""Budgets a reader can trust (issue 89): the equal-budget table gives each adaptive configuration's trainable
parameters during training and after pruning side by side, pairs it with a uniform LoRA at the rank it trained with
where the study has one, and says which budget each row holds equal. No torch: tables from run records."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from studyfiles import write_study_dir

from peftlab.analysis.report.adaptive import _equal_budget_lines, equal_budget_comparisons
from peftlab.analysis.results.load import load_results

PERPLEXITY = "metrics.test_perplexity"
# variant, method, strategy, budget after pruning, total rank trained, trainable as built, after pruning, perplexity
ARMS = (
    ("lora r=8", "lora", "uniform", 192, None, 73_728, 73_728, 263.4),
    ("lora r=12", "lora", "uniform", 288, None, 110_592, 110_592, 263.0),
    ("adalora", "adalora", "adalora", 192, 288, 110_880, 65_702, 263.7),
    ("controller", "adaptive", "adaptive:sensitivity/proportional", 192, 384, 147_456, 73_728, 263.2),
    ("linear_decay", "lora", "linear_decay", 192, None, 73_728, 73_728, 263.3),
)


def arm_runs() -> pd.DataFrame:
    rows = [
        {"variant": v, "method": m, "seed": s, "status": "completed", "config.train.lr": 3e-3, "ranks.strategy": st}
        | {"ranks.budget": budget if m != "lora" else None, "ranks.sum": budget, "ranks.trained_sum": trained}
        | {"params.initial.trainable": built, "params.trainable": kept, PERPLEXITY: x + 0.1 * s}
        for v, m, st, budget, trained, built, kept, x in ARMS
        for s in range(3)
    ]
    return pd.DataFrame(rows)


def test_each_adaptive_arm_meets_lora_at_every_budget_the_study_holds():
    table = equal_budget_comparisons(arm_runs(), PERPLEXITY).set_index(["variant", "held_equal"])
    assert sorted(table.index) == [
        ("adalora", "final"),
        ("adalora", "trained"),  # lora r=12: the rank AdaLoRA trained with
        ("controller", "final"),  # no uniform LoRA at the controller's 384: no trained row
        ("linear_decay", "final"),  # prunes nothing: one budget
    ]
    assert table.loc[
        ("adalora", "final"), ["baseline", "params_trained", "params_variant", "params_baseline"]
    ].tolist() == [
        "lora r=8",
        110_880,
        65_702,
        73_728,
    ]
    trained = table.loc[("adalora", "trained")]
    assert trained["baseline"] == "lora r=12" and trained["budget"] == 288
    assert trained["mean_diff"] == pytest.approx(0.7) and trained["n_pairs"] == 3


def test_the_report_shows_both_counts_and_says_which_budget_is_held_equal():
    table = equal_budget_comparisons(arm_runs(), PERPLEXITY)
    text = "\n".join(_equal_budget_lines(table, None, 0.05, PERPLEXITY))
    assert "| adalora | lora r=8 | rank after pruning | 192 | 110,880 / 65,702 / 73,728 |" in text
    assert "| adalora | lora r=12 | rank trained | 288 | 110,880 / 65,702 / 110,592 |" in text
    # AdaLoRA and the controller trained more than their LoRA r=8; linear_decay as many
    assert "held at the total rank after pruning compare the budget each configuration keeps" in text
    assert "2 of 3 trained more parameters than their uniform LoRA during the run" in text
    assert "the row held at the total rank trained (before pruning) compares a uniform LoRA of the rank the" in text
    only_final = "\n".join(_equal_budget_lines(table[table["held_equal"] == "final"], None, 0.05, PERPLEXITY))
    assert (
        "rank trained (before pruning)" not in only_final and "Rows held at the total rank after pruning" in only_final
    )


def test_the_results_table_reads_the_rank_a_run_trained_with(tmp_path):
    study = write_study_dir(tmp_path / "study", with_failure=False, variants=["lora r=8"])
    path = next(study.glob("runs/*/result.json"))
    result = json.loads(path.read_text())
    result["ranks"] = {"strategy": "adalora", "sum": 16, "budget": 16, "initial": {"q": 12, "v": 12}}
    path.write_text(json.dumps(result))
    loaded = load_results(study)
    assert sorted(loaded["ranks.trained_sum"].dropna().tolist()) == [24]
