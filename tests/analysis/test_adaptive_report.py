"""The report's adaptive-ranks section from a real tiny study (AdaLoRA, a controller, a static
strategy and uniform LoRA at the same total rank, 2 seeds)."""

import pytest
import yaml
from testkit import TINY_MODEL, needs_fashion_mnist

from peftlab.analysis.report.adaptive import equal_budget_comparisons, load_importance, seed_agreement
from peftlab.analysis.report.build import write_report
from peftlab.analysis.results.load import load_results
from peftlab.study.runner import run_study
from peftlab.study.spec import load_study

pytestmark = [
    pytest.mark.e2e,
    needs_fashion_mnist(),
]
FIGURES_DRAWN = ("importance_heatmap",)  # the one figure the tests read; the others written empty (conftest.py)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive-study")
    (root / "base.yaml").write_text(
        yaml.safe_dump(
            {
                "model": TINY_MODEL,
                "data": {"name": "fashion_mnist", "train_subset": 256, "val_subset": 64, "test_subset": 128},
                "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 128, "lr": 3e-3, "log_every": 4},
            }
        )
    )
    (root / "study.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "adaptive-mini",
                "base": "base.yaml",
                "seeds": 2,
                "methods": {
                    "lora": {"set": {"method.r": 4}, "axes": {"method.rank_strategy": ["uniform", "linear_decay"]}},
                    "adalora": {"set": {"method.init_r": 6, "method.target_r": 4}},
                    "adaptive": {"set": {"method.r": 4, "method.importance": "fisher", "method.interval": 2}},
                },
            }
        )
    )
    out = root / "out"
    summary = run_study(load_study(root / "study.yaml"), out, workers=1, progress=False)
    assert summary.ok and not summary.diverged, summary.failed
    return out


def test_importance_files_feed_the_heatmap_and_the_agreement(study_dir):
    importance = load_importance(study_dir)
    assert set(importance["method"]) == {"adalora", "adaptive"}
    assert importance.groupby("run_id")["module"].count().eq(4).all()  # q and v of 2 blocks
    for _, run in importance.groupby("run_id"):
        assert run["share"].sum() == pytest.approx(1.0)
    agreement = seed_agreement(importance)
    assert set(agreement["seeds"]) == {2} and agreement["tau_mean"].between(-1, 1).all()


def test_equal_budget_table_pairs_each_adaptive_configuration_with_uniform_lora(study_dir):
    table = equal_budget_comparisons(load_results(study_dir))
    assert set(table["baseline"]) == {"lora rank_strategy=uniform"}
    assert len(table) == 3 and set(table["budget"]) == {16}
    assert (table["n_pairs"] == 2).all()
    static = table[table["variant"] == "lora rank_strategy=linear_decay"].iloc[0]
    assert static["params_variant"] == static["params_baseline"]  # equal budget, equal parameters (q, v: d x d)


def test_report_shows_the_section_and_the_figure(study_dir):
    report = write_report(study_dir).read_text()
    assert "## Adaptive ranks" in report and "### Adaptive vs fixed rank at equal budget" in report
    assert "Kendall's tau" in report and "figures/importance_heatmap.png" in report
    assert (study_dir / "report" / "figures" / "importance_heatmap.png").stat().st_size > 10_000
