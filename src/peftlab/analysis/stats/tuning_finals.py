"""The final runs at a search's choice as its certainty reads them (``trial_predictions.choice_certainty``):
their validation values of the search's metric, one per seed, whose spread is the seed's (``search_certainty``),
and whether their data is text (its examples are then called sequences)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from peftlab.analysis.results.tuning_choices import search_name
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.analysis.stats.trial_predictions import choice_certainty


def search_certainty(record: dict, directory: Path, df: pd.DataFrame | None) -> dict:
    """How sure the choice of the search ``record`` (its selection.json in ``directory``) is, with its final runs'
    seed spread in it where the study's runs (``df``) hold them."""
    if df is None:
        return choice_certainty(record, directory)
    runs = final_runs(df, record)
    source = "config.model.source"
    text = not runs.empty and source in runs and bool((runs[source] == "hf-text").all())
    return choice_certainty(record, directory, final_values(runs, record["search"]["metric"]), text)


def final_runs(df: pd.DataFrame, record: dict) -> pd.DataFrame:
    """The completed final runs at a search's choice, as ``tuning.final_scores`` selects them: its configuration's
    runs, or its method's main-table runs; empty where there are none."""
    done = completed_runs(df)
    if done.empty:
        return done
    name, method = search_name(record), record["search"]["method"]
    if (record.get("configurations") or {}).get("searched") and "variant" in done and (done["variant"] == name).any():
        return done[done["variant"] == name]
    if name == method and {"method", "groups"} <= set(done.columns):
        return done[(done["method"] == method) & done["groups"].str.split(",").apply(lambda g: "main" in g)]
    return done.iloc[:0]


def final_values(runs: pd.DataFrame, metric: str) -> np.ndarray:
    """The validation ``metric`` of ``runs`` as result.json stores it (top-1, F1 and Matthews fractions, a
    perplexity as it is), one per seed (a seed's mean where it ran twice); empty where they have no validation
    score (final runs on train + val)."""
    column = f"metrics.{metric}"
    if runs.empty or column not in runs:
        return np.array([])
    values = pd.to_numeric(runs[column], errors="coerce")
    return values.groupby(runs["seed"]).mean().dropna().to_numpy(dtype=np.float64)
