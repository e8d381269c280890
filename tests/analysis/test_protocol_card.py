"""The report's protocol card and "What was run" say how long the runs trained as they ran: epochs where
they bounded a run, the optimizer steps where train.max_steps stopped it first (result.json's protocol)."""

import pandas as pd

from peftlab.analysis.report.build import run_length
from peftlab.analysis.report.protocol_card import card


def runs(**protocol) -> pd.DataFrame:
    """Two configurations' completed runs under protocol petl_vision, with ``protocol`` columns."""
    rows = {
        "run_id": ["a", "b"],
        "variant": ["lora", "bitfit"],
        "seed": [0, 0],
        "status": "completed",
        "config.protocol": "petl_vision",
        "config.train.epochs": 100,
        "protocol.resolution": 224,
    }
    return pd.DataFrame({**rows, **{f"protocol.{k}": v for k, v in protocol.items()}})


def test_a_run_stopped_by_max_steps_is_not_said_to_have_run_the_presets_epochs(tmp_path):
    done = runs(epochs=[None, None], max_steps=[40, 40], steps=[40, 40])
    rows, notes = card(tmp_path, done, {})
    assert ("epochs", "100") not in rows and not [name for name, _ in rows if name == "epochs"]
    assert ("stopped by train.max_steps at", "40") in rows and ("optimizer steps run", "40") in rows
    assert any(
        "train.max_steps stopped its runs (40 optimizer steps at most) before the preset's 100" in n for n in notes
    )
    assert run_length(done) == "optimizer steps (train.max_steps stopped the runs first): 40"


def test_epochs_that_bounded_the_runs_are_named_and_a_mixed_study_per_configuration(tmp_path):
    done = runs(epochs=[100, 100], max_steps=[None, None], steps=[1600, 1600])
    rows, notes = card(tmp_path, done, {})
    assert ("epochs", "100") in rows and ("optimizer steps run", "1600") in rows
    assert not any("max_steps" in n for n in notes)
    assert run_length(done) == "epochs: 100"
    mixed = runs(epochs=[100, None], max_steps=[None, 40], steps=[1600, 40])
    rows, _ = card(tmp_path, mixed, {})
    assert ("epochs", "lora: 100; bitfit: -") in rows and ("optimizer steps run", "lora: 1600; bitfit: 40") in rows
    assert run_length(mixed) == "epochs: 100; optimizer steps (train.max_steps stopped the runs first): 40"
