"""Whether a LoRA study's score changes with r, as a test supports it (the paper's rank-trend sentence).

The rank ladder is every LoRA configuration that differs from the others only by r (and the keys a rank
ablation changes with it, alpha = 2r): a group of the study that varies r, with the method's own setting
where it lies on that line (LoRA r = 8 beside an ablation of r = 2 and 16 makes the ladder 2, 8, 16; the rank
figure shows the same points). Each step from one rank to the next is a paired t-test on matched seeds,
Holm-corrected across the steps. A ladder of fewer than three ranks, or a step of fewer than three matched
seeds, gets no sentence; a trend is claimed only where every step differs in the same direction, otherwise the
sentence says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from peftlab.analysis.stats.comparisons import compare_paired, holm
from peftlab.analysis.stats.power import ALPHA

MIN_POINTS = 3  # a trend is a claim about a ladder: two points are one comparison, not a trend
MIN_PAIRS = 3  # matched seeds a step needs for its paired t-test to have more than one degree of freedom


def axis_variants(done: pd.DataFrame, axis: str = "config.method.r", method: str = "lora") -> dict:
    """value -> configuration (variant) of ``method`` along ``axis``: the configurations of a group of the study
    that varies the axis (a rank ablation), with every other configuration of the method that lies on it, the
    method's own setting included: one whose config equals the ladder's but for the axis and the keys the
    ablation changes with it, each of those keys in the same ratio to the axis value (alpha = 2r) as along the
    ladder. {} where the values cannot be told apart from other axes."""
    if axis not in done or "method" not in done:
        return {}
    runs = done[(done["method"] == method) & done[axis].notna()]
    key = axis.removeprefix("config.")
    varies = runs["axes"].fillna("").str.split(",").map(lambda keys: key in keys) if "axes" in runs else None
    in_group = runs["groups"].fillna("").str.split(",") if "groups" in runs else pd.Series([[]] * len(runs))
    groups = list(dict.fromkeys(g for names in in_group for g in names if g))
    ladders = [
        runs[in_group.map(lambda names, g=g: g in names) & (varies if varies is not None else True)] for g in groups
    ]
    ladders += [runs[varies] if varies is not None and varies.any() else runs]
    for ladder in ladders:
        per_value = ladder.groupby(axis)["variant"].unique()
        if len(per_value) >= 2 and all(len(v) == 1 for v in per_value):
            found = {_value(r): str(v[0]) for r, v in per_value.items()}
            found |= _on_the_ladder(runs, ladder, axis, found)
            return dict(sorted(found.items()))
    return {}


def _value(x):
    return int(x) if float(x).is_integer() else float(x)


def _text(value) -> str:
    """A config cell as compared: a missing value ("None" in one file, NaN in a column) is one value."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _configs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (variant): its config columns, the seed aside."""
    columns = [c for c in runs.columns if c.startswith("config.") and c != "config.seed"]
    return runs.drop_duplicates("variant").set_index("variant")[columns]


def _on_the_ladder(runs: pd.DataFrame, ladder: pd.DataFrame, axis: str, found: dict) -> dict:
    """The method's other configurations that lie on the ladder (``axis_variants``), by their axis value."""
    configs = _configs(runs)
    points = configs.loc[list(found.values())]
    same = lambda column: points[column].map(_text).nunique() == 1
    moving = [c for c in points.columns if c != axis and not same(c)]
    ratios = {}
    for column in moving:  # a key the ablation changes with the axis: in a fixed ratio to it, or no point is added
        values = pd.to_numeric(points[column], errors="coerce") / points[axis].astype(float)
        if values.isna().any() or not np.allclose(values, values.iloc[0]):
            return {}
        ratios[column] = values.iloc[0]
    fixed = [c for c in points.columns if c != axis and c not in moving]
    added = {}
    for variant, config in configs.drop(index=list(found.values())).iterrows():
        value = _value(config[axis])
        if value in found or value in added:
            continue
        if all(_text(config[c]) == _text(points[c].iloc[0]) for c in fixed) and all(
            np.isclose(float(config[c]), r * float(config[axis])) for c, r in ratios.items()
        ):
            added[value] = str(variant)
    return added


def rank_variants(done) -> dict:
    """r -> the LoRA configuration run at that rank, every configuration on the rank ladder (``axis_variants``)."""
    return axis_variants(done, "config.method.r", "lora")


TESTS = "paired t-test between neighbouring ranks on matched seeds, Holm-corrected"


def rank_trend(study) -> tuple[str | None, list[float], list] | None:
    """How the mean primary score of LoRA changes with r (test top-1, or a study of causal LMs' test
    perplexity) over every rank on its ladder (``rank_variants``), as far as a test supports it: (direction,
    the steps' Holm-corrected p-values, the ranks). "increases" or "decreases" only where every step from one
    rank to the next differs in that direction by a paired t-test on matched seeds (``TESTS``, p < ALPHA), else
    None (the paper then says no trend is supported and gives the p-values). None, no claim either way, with
    fewer than MIN_POINTS ranks or a step of fewer than MIN_PAIRS matched seeds."""
    variants = rank_variants(study.done)
    if len(variants) < MIN_POINTS:
        return None
    metric, done = study.score.metric, study.done
    ranks = list(variants)
    steps = []
    for low, high in zip(ranks, ranks[1:]):
        a = done[done["variant"] == variants[high]].set_index("seed")[metric].dropna()
        b = done[done["variant"] == variants[low]].set_index("seed")[metric].dropna()
        seeds = a.index.intersection(b.index)
        if len(seeds) < MIN_PAIRS:
            return None
        steps.append(compare_paired(a[seeds].to_numpy(), b[seeds].to_numpy()))
    adjusted = holm([step["p_ttest"] for step in steps])
    diffs = np.array([step["mean_diff"] for step in steps])
    if np.all(adjusted < ALPHA) and (np.all(diffs > 0) or np.all(diffs < 0)):
        return ("increases" if np.all(diffs > 0) else "decreases"), list(adjusted), ranks
    return None, list(adjusted), ranks
