"""The families of the paired comparisons with the baseline: which configurations each Holm correction runs over.

A comparison's family is the question it answers. The main family is the main table's configurations (a spec group
"main": the tuned configurations of a tuned study) against the baseline; Holm's correction runs over them alone, so
an ablation run beside them does not change their corrected p-values. The configurations only an ablation runs (no
run of theirs in "main") are compared with the same baseline in a family of their own, Holm over the ablations'
configurations. A table without spec groups (runs made by hand, an older study) is one main family.

A configuration that repeats another, equal in every setting that changes training (its resolved config, seed by
seed, differs only in ``NEUTRAL_SETTINGS``: logging, checkpointing, tracking), is not tested at all: its runs are the
same training again, and a test of them would only pad a family.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from peftlab.analysis.stats.intervals import completed_runs

MAIN, ABLATION = "main", "ablation"
# config keys that change what a run records, not what it trains: its name, how often it logs and checkpoints, where
# its numbers are sent (track), the names they get there
NEUTRAL_SETTINGS = ("name", "train.log_every", "train.ckpt_every", "track", "track_names")


def comparison_families(df: pd.DataFrame, baseline: str) -> dict[str, str | None]:
    """{configuration: MAIN, ABLATION, or None where it repeats another (``repeats``) and is not tested} of every
    configuration with a completed run but the baseline."""
    runs = completed_runs(df)
    variants = [str(v) for v in dict.fromkeys(runs["variant"]) if str(v) != str(baseline)]
    repeated = repeats(df, baseline)
    in_main = main_configurations(runs)
    return {v: None if v in repeated else MAIN if v in in_main else ABLATION for v in variants}


def main_configurations(runs: pd.DataFrame) -> set[str]:
    """The configurations with a run in the spec group "main"; every configuration where no run records groups."""
    variants = {str(v) for v in runs["variant"]}
    if "groups" not in runs:
        return variants
    main = {str(v) for v, groups in zip(runs["variant"], runs["groups"]) if MAIN in str(groups).split(",")}
    return main or variants  # no run in "main" (hand-made groups): nothing tells the main table apart


def repeats(df: pd.DataFrame, baseline: str | None = None) -> dict[str, tuple[str, list[str]]]:
    """{configuration: (the configuration it repeats, the neutral settings that differ but its name)} of each
    configuration whose runs, on every seed it shares with an earlier one, have that one's resolved config but for
    NEUTRAL_SETTINGS. The one kept is the baseline, else one of the main table, else the first run."""
    runs = completed_runs(df)
    columns = [c for c in runs if c.startswith("config.") and c != "config.seed"]
    if not columns or "seed" not in runs:
        return {}
    in_main = main_configurations(runs)
    order = [str(v) for v in dict.fromkeys(runs["variant"])]
    order.sort(key=lambda v: (v != str(baseline), v not in in_main))  # stable: first appearance within each
    settings = {v: config_by_seed(runs[runs["variant"].astype(str) == v], columns) for v in order}
    found = {}
    for i, variant in enumerate(order):
        for kept in order[:i]:
            if kept in found:
                continue
            differ = neutral_differences(settings[kept], settings[variant])
            if differ is not None:
                found[variant] = (kept, differ)
                break
    return found


def config_by_seed(runs: pd.DataFrame, columns: list[str]) -> dict[object, dict[str, str]]:
    """{seed: {config key: its value as comparable text}} of one configuration's runs."""
    return {
        seed: {c.removeprefix("config."): comparable(row[c]) for c in columns}
        for seed, row in runs.set_index("seed").iterrows()
    }


def comparable(value) -> str:
    """A config value as text two runs compare by (a list of modules is one value; NaN, an absent key, is null)."""
    if isinstance(value, float) and math.isnan(value):
        value = None
    return json.dumps(value, sort_keys=True, default=str)


def neutral_differences(kept: dict, other: dict) -> list[str] | None:
    """The NEUTRAL_SETTINGS in which ``other`` differs from ``kept`` (both ``config_by_seed``) on the seeds they share;
    None where they share no seed or differ in another setting."""
    shared = [seed for seed in other if seed in kept]
    if not shared:
        return None
    differ = set()
    for seed in shared:
        for key in kept[seed].keys() | other[seed].keys():
            if kept[seed].get(key, "null") != other[seed].get(key, "null"):
                if key not in NEUTRAL_SETTINGS:
                    return None
                differ.add(key)
    return sorted(differ - {"name"})  # a run's name differs from every other configuration's: not worth saying
