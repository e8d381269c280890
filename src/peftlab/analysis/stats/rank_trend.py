"""Whether a LoRA study's score changes with r, as a test supports it (the paper's rank-trend sentence).

The LoRA configurations that differ only by r are found from the study's groups (a rank ablation); each
step from one rank to the next is a paired t-test on matched seeds, Holm-corrected across the steps. A
trend is claimed only where every step differs in the same direction; otherwise the sentence says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from peftlab.analysis.stats.comparisons import compare_paired, holm
from peftlab.analysis.stats.power import ALPHA


def rank_variants(done) -> dict:
    """r -> the LoRA configuration (variant) run at that rank, for the LoRA configurations that differ only
    by r: a group of the study whose LoRA runs vary r (a rank ablation), else every LoRA configuration when
    each rank is one configuration; {} where ranks cannot be told apart from other axes."""
    if "config.method.r" not in done:
        return {}
    lora = done[(done["method"] == "lora") & done["config.method.r"].notna()]
    in_group = lora["groups"].fillna("").str.split(",") if "groups" in lora else pd.Series([[]] * len(lora))
    groups = list(dict.fromkeys(g for names in in_group for g in names if g))
    candidates = [lora[in_group.map(lambda names, g=g: g in names)] for g in groups] + [lora]
    for runs in candidates:
        per_rank = runs.groupby("config.method.r")["variant"].unique()
        if len(per_rank) >= 2 and all(len(v) == 1 for v in per_rank):
            return {int(r): str(v[0]) for r, v in per_rank.sort_index().items()}
    return {}


TESTS = "paired t-test between neighbouring ranks on matched seeds, Holm-corrected"


def rank_trend(study) -> tuple[str | None, list[float]] | None:
    """How the mean primary score of LoRA changes with r (test top-1, or a study of causal LMs' test
    perplexity), as far as a test supports it, and the steps' Holm-corrected p-values: "increases" or
    "decreases" only where every step from one rank to the next differs in that direction by a paired t-test
    on matched seeds (``TESTS``, p < ALPHA), else None (the paper then says no trend is supported and gives the
    p-values). None with fewer than two ranks."""
    variants = rank_variants(study.done)
    if len(variants) < 2:
        return None
    metric, done = study.score.metric, study.done
    ranks = list(variants)
    steps = []
    for low, high in zip(ranks, ranks[1:]):
        a = done[done["variant"] == variants[high]].set_index("seed")[metric].dropna()
        b = done[done["variant"] == variants[low]].set_index("seed")[metric].dropna()
        seeds = a.index.intersection(b.index)
        steps.append(compare_paired(a[seeds].to_numpy(), b[seeds].to_numpy()))
    adjusted = holm([step["p_ttest"] for step in steps])
    diffs = np.array([step["mean_diff"] for step in steps])
    if np.all(adjusted < ALPHA) and (np.all(diffs > 0) or np.all(diffs < 0)):
        return ("increases" if np.all(diffs > 0) else "decreases"), list(adjusted)
    return None, list(adjusted)
