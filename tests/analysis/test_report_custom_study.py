"""The report fits a custom study (issue 72): a configuration of fixed uniform rank is no adaptive configuration,
whatever its method (DoRA is LoRA with a magnitude; its ranks record says "uniform"), so it never appears in the
"Adaptive vs fixed rank at equal budget" table; a per-layer strategy does."""

import pandas as pd

from peftlab.analysis.report.adaptive import equal_budget_comparisons


def runs(variant: str, method: str, strategy: str, top1: list[float]) -> list[dict]:
    return [
        {
            "variant": variant,
            "method": method,
            "seed": seed,
            "status": "completed",
            "metrics.test_top1": value,
            "ranks.strategy": strategy,
            "ranks.sum": 16,
            "params.trainable": 4096,
            "config.method.target_modules": "standard",
            "config.train.lr": 1e-3,
        }
        for seed, value in enumerate(top1)
    ]


def test_dora_at_a_uniform_rank_is_not_compared_as_an_adaptive_configuration():
    df = pd.DataFrame(
        runs("lora", "lora", "uniform", [0.60, 0.61, 0.62])
        + runs("dora", "dora", "uniform", [0.63, 0.64, 0.65])
        + runs("lora decay", "lora", "linear_decay", [0.59, 0.60, 0.61])
    )
    table = equal_budget_comparisons(df)
    assert list(table["variant"]) == ["lora decay"] and list(table["baseline"]) == ["lora"]


def test_a_coarse_validation_split_is_said_where_tuning_chose_on_it():
    """Issue 72: tuning on a 40-image validation split (2.5 points an example) got no word."""
    from peftlab.analysis.stats.ties import coarse_validation

    small = pd.DataFrame({"status": ["completed"] * 2, "data.val_size": [40, 40]})
    (sentence, _) = coarse_validation(small, "val_top1")
    assert "holds 40 examples" in sentence and "2.5 points" in sentence and "tie-break" in sentence
    assert coarse_validation(pd.DataFrame({"status": ["completed"], "data.val_size": [500]}), "val_top1") == []
    assert coarse_validation(small, "val_perplexity") == []
