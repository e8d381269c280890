"""The report's check of the trainable shares a study file claims (``report.trainable_share_at_most``)."""

import pandas as pd

from peftlab.analysis.report.protocol_card import claims_section as report_section


def runs(*rows):
    return pd.DataFrame(
        [
            {"variant": v, "method": m, "seed": s, "status": st, "params.trainable": t, "params.total": 100_000}
            for v, m, s, st, t in rows
        ]
    )


def test_a_claim_on_a_configuration_checks_each_of_its_completed_runs_and_names_a_breach():
    df = runs(
        ("lora", "lora", 0, "completed", 250),
        ("lora", "lora", 1, "completed", 350),  # over 0.3%
        ("lora", "lora", 2, "failed", 999),  # not completed: not checked
        ("lora r=16", "lora", 0, "completed", 900),  # not the configuration claimed
    )
    lines = report_section(df, {"lora": 0.003}, {"lora": "LoRA"})
    assert lines[0] == "## Trainable-share claims"
    (row,) = [line for line in lines if line.startswith("| LoRA")]
    assert row == "| LoRA | 350 | 100,000 | 0.35% | 0.3% | **no** (1 of 2 runs) |"
    assert not any("r=16" in line for line in lines)


def test_a_claim_on_a_method_covers_its_configurations_and_one_naming_nothing_completed_is_said():
    df = runs(
        ("lora r=4", "lora", 0, "completed", 120),
        ("lora r=8", "lora", 0, "completed", 240),
        ("full", "full", 0, "failed", 1),
    )
    lines = report_section(df, {"lora": 0.003, "full": 0.5}, {})
    assert "| lora r=4 | 120 | 100,000 | 0.12% | 0.3% | yes |" in lines
    assert "| lora r=8 | 240 | 100,000 | 0.24% | 0.3% | yes |" in lines
    assert "Claims that name no configuration or method with completed runs: full." in lines
    assert report_section(df, {}, {}) == []
