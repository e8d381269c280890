"""The report's check of the trainable shares a study file claims (``report.trainable_share_at_most``).

A configuration named there (or else a method: all its configurations) claims that at most that
share of the model's parameters trains (the LoRA fine-tuning document's "at most 0.3%"). Every
completed run of it is checked against its own count (result.json ``params``: trainable, the head
included, over total); a run over the limit is named, never averaged away, and a claim that names
nothing is said.
"""

from __future__ import annotations

import pandas as pd

from peftlab.analysis.stats.intervals import completed_runs


def share(value: float) -> str:
    """A share of parameters as the papers write it: 0.00123 -> 0.123%."""
    return f"{100 * value:.3g}%"


def report_section(df: pd.DataFrame, limits: dict[str, float], labels: dict[str, str]) -> list[str]:
    """The "Trainable-share claims" section: one row per configuration a claim covers; [] without claims."""
    if not limits:
        return []
    done = completed_runs(df)
    lines = ["## Trainable-share claims", ""]
    rows, unmatched = [], []
    for key, limit in limits.items():
        named = "variant" if key in set(df["variant"]) else "method"  # a configuration first, else a method's all
        covered = done[done[named] == key]
        if covered.empty:
            unmatched.append(key)
            continue
        for variant, runs in covered.groupby("variant", sort=False):
            ratios = runs["params.trainable"] / runs["params.total"]
            over = runs[ratios > limit]
            rows.append(
                f"| {labels.get(variant, variant)} | {int(runs['params.trainable'].max()):,} | "
                f"{int(runs['params.total'].max()):,} | {share(ratios.max())} | {share(limit)} | "
                f"{'yes' if over.empty else f'**no** ({len(over)} of {len(runs)} runs)'} |"
            )
    if rows:
        lines += [
            "Trainable parameters (the head's included) over all the model's parameters, the largest share "
            "among each configuration's completed runs, against the share the study file claims for it.",
            "",
            "| configuration | trainable | total | share | claimed at most | met |",
            "|---|---:|---:|---:|---:|---|",
            *rows,
            "",
        ]
    if unmatched:
        lines += [f"Claims that name no configuration or method with completed runs: {', '.join(unmatched)}.", ""]
    return lines
