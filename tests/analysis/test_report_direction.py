"""What the report judges a study by: test top-1 (higher is better), or for a study of causal LMs test
perplexity (lower is better) in the significance table, the bold best, the Pareto front, the figures and the
adaptive-ranks table; image and text-classification reports read as they did before (golden files)."""

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from test_report import TEXT_RUNS, text_study, write_study_dir
from testkit import figures_drawn_only

from peftlab.analysis.report.build import write_report
from peftlab.analysis.report.literature import literature_section
from peftlab.analysis.report.primary import PERPLEXITY, TOP1, primary_score
from peftlab.analysis.results.load import load_results
from peftlab.analysis.stats.comparisons import paired_comparisons
from peftlab.analysis.stats.intervals import pareto_front

# reads the reports' text; a causal LM study's figures are drawn in its own test, the others written empty
FIGURES_DRAWN = ()

GOLDEN = Path(__file__).parent / "golden"

# variant, method, r, {seed: per-token top-1}; perplexities below: LoRA r=8 is the lowest although its
# per-token top-1 is below full fine-tuning's, so the two metrics crown different configurations
LM_RUNS = [
    ("full", "full", 8, {s: 0.40 + 0.002 * s for s in range(5)}),
    ("lora r=4", "lora", 4, {s: 0.30 + 0.002 * s for s in range(5)}),
    ("lora r=8", "lora", 8, {s: 0.35 + 0.002 * s for s in range(5)}),
]
PERPLEXITIES = {"full": 40.0, "lora r=4": 50.0, "lora r=8": 30.0}
SPREAD = {"full": 0.1, "lora r=4": 0.3, "lora r=8": 0.2}  # seed s adds SPREAD x s: paired differences vary


def without_literature(report: str) -> str:
    """report.md without the published numbers (configs/literature.yaml grows on its own), where it has them."""
    if "## Published numbers beside this study" not in report:  # none measured on the study's data
        return report
    start = report.index("## Published numbers beside this study")
    return report[:start] + report[report.index("## Figures", start) :]


@pytest.mark.parametrize(
    "name, build",
    [
        ("image_report.md", lambda tmp: write_study_dir(tmp / "image")),
        ("text_classification_report.md", lambda tmp: text_study(tmp / "mrpc", "classification")),
    ],
)
def test_image_and_text_classification_reports_read_as_they_did(tmp_path, name, build):
    """To accept an intended change: run with PEFTLAB_WRITE_GOLDEN=1, read the diff, commit it."""
    # the results' SHA-256 covers result.json, which holds the run's temporary paths
    report = re.sub(
        r"SHA-256 `[0-9a-f]{64}`", "SHA-256 `(hash)`", without_literature(write_report(build(tmp_path)).read_text())
    )
    if os.environ.get("PEFTLAB_WRITE_GOLDEN"):
        (GOLDEN / name).write_text(report)
    assert report == (GOLDEN / name).read_text()


def lm_study(root: Path, runs=LM_RUNS, causal=lambda variant: True) -> Path:
    """A study of causal LMs (every run for which ``causal`` is true) with the perplexities of PERPLEXITIES
    (seed s adds SPREAD x s), their validation perplexity logged at every evaluation, and LoRA's rank strategy."""
    study = write_study_dir(root, runs=runs, data="text")
    for path in study.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        variant = json.loads((path.parent / "spec.json").read_text())["variant"]
        seed = result["config"]["seed"]
        if causal(variant):
            result["config"]["model"] = {"source": "hf-text", "path": "/models/tiny", "task": "causal-lm"}
            result["metrics"]["test_perplexity"] = PERPLEXITIES[variant] + SPREAD[variant] * seed
            result["metrics"]["base_test_perplexity"] = 868.2  # the base alone: the same in every run
        if result["config"]["method"]["name"] == "lora":
            r = result["config"]["method"]["r"]
            strategy = "uniform" if r == 8 else "linear_decay"  # at r = 8's budget: an equal-budget pair
            result["ranks"] = {"strategy": strategy, "sum": 16, "budget": 16}
        path.write_text(json.dumps(result))
        lines = [json.loads(line) for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
        for line in lines:
            line["val_perplexity"] = PERPLEXITIES[variant] * 75 / line["step"]
        (path.parent / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return study


def test_a_causal_lm_study_is_compared_by_perplexity_lower_better(tmp_path):
    study = lm_study(tmp_path / "lm")
    with figures_drawn_only("accuracy_vs_params", "seed_boxplots", "convergence", "ablation_method_r"):
        written = write_report(study)  # the figures of perplexity, read below
    assert primary_score(pd.read_csv(written.parent / "results.csv")).metric == PERPLEXITY
    report = (study / "report" / "report.md").read_text()
    assert "- Judged by test perplexity (lower is better): every completed run is a causal LM" in report
    runs = len(list(study.glob("runs/*/result.json")))
    assert (
        "Base without an adapter (its float weights, no step, on the runs' test tokens): test perplexity "
        f"tiny 868.2 ({runs} runs)." in report
    )
    assert "Each configuration against **full** (test perplexity, lower is better)" in report
    assert "| mean diff (perplexity) |" in report and "| P(X < Y) [95% CI] |" in report
    # lora r=8: about 10 lower on every seed -> wins every seed and every pair; lora r=4 about 10 higher
    assert "| lora r=8 | 5 | -9.80 |" in report and "| 1.00 | 1.00 [1.00, 1.00] | yes |" in report
    assert "| lora r=4 | 5 | +10.40 |" in report and "| 0.00 | 0.00 [0.00, 0.00] | yes |" in report
    assert "a mean difference (the configuration's test perplexity minus the baseline's) below zero" in report
    # the lowest perplexity is bold and starred; full's top-1 stays the bold one of its column
    row = next(line for line in report.splitlines() if line.startswith("| lora r=8 | 16.0K"))
    assert row.endswith("| **30.4** [30.0, 30.8] * |")
    assert next(line for line in report.splitlines() if line.startswith("| full | 800.0K")).count("**") == 4
    # the front holds the fewest parameters and the lowest perplexity: full (more parameters, higher) is off it
    front = "Pareto front of test perplexity against trainable parameters (lower perplexity, fewer parameters): "
    assert front + "lora r=4, lora r=8." in report
    assert "### Perplexity vs trainable parameters" in report and "### Test perplexity across seeds" in report
    assert "### Convergence: validation perplexity vs step" in report
    assert "Mean test perplexity along the rank" in report
    assert "GLUE" not in report and "ViT-B/16" not in report  # the literature of a causal LM study's modality only
    every = "\n".join(literature_section(load_results(study), metric=PERPLEXITY))  # every row, lowest first
    assert "- this study (test perplexity, lower is better): lora r=8 (30.4) < full (40.2)" in every
    # the equal-budget table: a linear decay 20 higher in perplexity than uniform LoRA loses every seed
    assert "| Test perplexity (lower is better) | LoRA | Diff | p (Holm) | Wins |" in report
    assert "| rank after pruning | 16 | 8,000 / 8,000 / 16,000 | 50.6 | 30.4 | +20.2 * | 0.000 | 0.00 |" in report
    assert "share of seeds where the adaptive configuration has the lower perplexity." in report
    figures = study / "report" / "figures"
    for name in ("accuracy_vs_params", "seed_boxplots", "convergence", "ablation_method_r"):
        assert (figures / f"{name}.png").stat().st_size > 10_000


def test_a_study_mixing_causal_lms_and_classifiers_keeps_top1_and_says_so(tmp_path):
    study = lm_study(tmp_path / "mixed", runs=TEXT_RUNS, causal=lambda variant: variant == "full")
    report = write_report(study).read_text()
    assert "- Judged by test top-1: 3 of the 6 completed runs are causal LMs" in report
    assert "Each configuration against **full** (test top-1), on matched seeds" in report
    assert "| P(X > Y) [95% CI] |" in report and "Pareto front of test top-1 against" in report


def perplexity_runs(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"status": "completed", "variant": v, "seed": s, PERPLEXITY: x, TOP1: 1 / x, "params.trainable": p}
            for p, (v, xs) in enumerate(values.items(), start=1)
            for s, x in enumerate(xs)
        ]
    )


def test_paired_comparisons_count_a_lower_perplexity_as_the_win():
    runs = perplexity_runs({"base": [20.0, 21.0, 22.0], "better": [18.0, 22.0, 19.0]})
    row = paired_comparisons(runs, "base", PERPLEXITY, point=1.0).iloc[0]
    assert row["mean_diff"] == pytest.approx(-4 / 3)  # variant minus baseline, as for top-1
    assert row["win_rate"] == pytest.approx(2 / 3)  # lower on seeds 0 and 2
    # pairs where "better" is lower: 18 < 20, 21, 22; 22 < none, ties 22 (half); 19 < 20, 21, 22 -> 6.5 of 9
    assert row["prob_improvement"] == pytest.approx(6.5 / 9)
    top1 = paired_comparisons(runs, "base", TOP1).iloc[0]  # 1 / perplexity: the same order, higher better
    assert top1["win_rate"] == row["win_rate"] and top1["prob_improvement"] == row["prob_improvement"]


def test_the_pareto_front_of_a_perplexity_keeps_the_lowest():
    runs = perplexity_runs({"small": [50.0], "mid": [30.0], "big": [40.0]})  # 1, 2, 3 parameters
    front = pareto_front(runs, y=PERPLEXITY).set_index("variant")["on_front"]
    assert front.to_dict() == {"small": True, "mid": True, "big": False}


def test_the_equal_budget_table_pairs_methods_each_at_its_own_tuned_rate():
    """AdaLoRA tuned to another train.lr than uniform LoRA is still its equal-budget comparison; a lower
    perplexity wins."""
    from peftlab.analysis.report.adaptive import equal_budget_comparisons

    rows = [
        {"variant": v, "method": m, "seed": s, "config.train.lr": lr, "ranks.strategy": strategy}
        | {"ranks.budget": 192, "ranks.sum": 192, "params.trainable": 1000, PERPLEXITY: x + s, "status": "completed"}
        for v, m, lr, strategy, x in (("lora", "lora", 3e-3, "uniform", 20.0), ("adalora", "adalora", 3e-2, None, 19.0))
        for s in range(3)
    ]
    runs = pd.DataFrame(rows)
    runs.loc[runs["variant"] == "adalora", "ranks.strategy"] = "adalora"
    assert equal_budget_comparisons(runs, PERPLEXITY).empty  # another rate: not "every other setting equal"
    table = equal_budget_comparisons(runs, PERPLEXITY, tuned=("train.lr",))
    assert table[["variant", "baseline", "mean_diff", "win_rate"]].values.tolist() == [["adalora", "lora", -1.0, 1.0]]
