"""The paper's claims recomputed from the reruns (``peftlab reproduce --runs all``) and compared with the archived
paper's under the runs' rule: the main table's means and intervals, the paired tests against the baseline with
Holm's correction, the best configuration (with those that tie it) and each ablation's table.

Both sides are computed by the paper's own code (``paper.study.Study``) from the same packed run records, one with
the archived metrics and one with each run's metrics replaced by its rerun's, so that only the numbers differ.
Where every run was held to the exact rule, every claim must be equal (each ablation's table to the character);
otherwise each mean and interval end must lie within the tolerance of ``rerun.tolerance`` over the archived
seeds, and what the text would say must not flip: a significance, the best configuration, a tie, an ablation's
best. Reads files only (pandas, no torch).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SHOWN = 3


@dataclass
class Claims:
    differ: list[str] = field(default_factory=list)  # a line per claim that does not hold in the reruns
    held: list[str] = field(default_factory=list)  # a phrase per claim compared and found to hold
    rule: str = "exact"


def with_reruns(study_dir: Path, reruns: dict[str, dict]) -> None:
    """Each packed run of ``study_dir`` whose run id ``reruns`` names given its rerun's metrics and status."""
    for run_id, rerun in reruns.items():
        path = study_dir / "runs" / run_id / "result.json"
        result = json.loads(path.read_text())
        result["metrics"], result["status"] = rerun.get("metrics") or {}, rerun.get("status")
        path.write_text(json.dumps(result))


def studies(root: Path, record: dict, reruns: dict[str, dict], into: Path):
    """(the archived study, the rerun study) as the paper computes them, with the archived paper's baseline."""
    from peftlab.analysis.archive.regenerate import archived_baseline, macro_lines, study_folder
    from peftlab.analysis.paper.study import Study
    from peftlab.analysis.report.build import choose_baseline
    from peftlab.analysis.results.load import load_results

    archived_dir = study_folder(root, record, into / "archived")
    rerun_dir = study_folder(root, record, into / "rerun")
    with_reruns(rerun_dir, reruns)
    old_df, new_df = load_results(archived_dir), load_results(rerun_dir)
    baseline = archived_baseline(old_df, macro_lines(root / "paper" / "results.tex"), archived_dir)
    baseline = baseline or choose_baseline(old_df)
    base = root / "base"  # the archive's own (a receiver's folders are no part of it)
    return Study(archived_dir, old_df, baseline, base), Study(rerun_dir, new_df, baseline, base)


def compare_claims(root: Path, record: dict, reruns: dict[str, dict], exact: bool) -> Claims:
    """The claims of the archived paper against those of its reruns (``reruns``: archived run id -> the rerun's
    result record; every completed run's); ``exact``: whether every run was held to the exact rule."""
    out = Claims(rule="exact" if exact else "tolerance")
    with tempfile.TemporaryDirectory(prefix="peftlab-claims-") as tmp:
        old, new = studies(root, record, reruns, Path(tmp))
        compare_means(old, new, exact, out)
        compare_tests(old, new, exact, out)
        compare_best(old, new, out)
        compare_ablations(old, new, exact, out)
    return out


def agree(old: float, new: float, exact: bool, allowed: float) -> bool:
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new):
        return True
    return old == new if exact else abs(new - old) <= allowed


def compare_means(old, new, exact: bool, out: Claims) -> None:
    """The main table: each configuration's mean and interval of the primary score."""
    from peftlab.analysis.archive.rerun import tolerance

    metric = old.score.metric
    wrong = []
    for variant in old.variants:
        if variant not in new.primary.index:
            wrong.append(f"{variant} has no completed rerun")
            continue
        seeds = old.done.loc[old.done["variant"] == variant, metric].dropna().tolist()
        allowed = tolerance(metric, seeds) if seeds else 0.0
        for column in ("mean", "ci_low", "ci_high"):
            a, b = float(old.primary.at[variant, column]), float(new.primary.at[variant, column])
            if not agree(a, b, exact, allowed):
                bound = "" if exact else f", allowed ± {allowed:.3g}"
                wrong.append(f"{variant} {column} {b:.6g} (the paper's {a:.6g}{bound})")
    if wrong:
        out.differ.append(f"main table ({metric}) not reproduced: " + "; ".join(wrong[:SHOWN]) + more(wrong))
    else:
        out.held.append(f"the main table's means and intervals of {len(old.variants)} configurations")


def compare_tests(old, new, exact: bool, out: Claims) -> None:
    """The paired tests against the baseline, Holm-corrected: a significance that flips, or (exact) any p."""
    from peftlab.analysis.paper.macros import ALPHA

    if old.comparisons is None:
        return
    wrong = []
    for variant in old.comparisons.index:
        p_old = float(old.comparisons.at[variant, "p_ttest_holm"])
        p_new = float(new.comparisons.at[variant, "p_ttest_holm"]) if new.comparisons is not None else math.nan
        was, now = p_old < ALPHA, p_new < ALPHA
        if was != now:
            said = "significant" if now else "not significant"
            wrong.append(
                f"{variant} against {old.baseline} is {said} in the reruns (Holm p {p_new:.3g}, the paper's "
                f"{p_old:.3g})"
            )
        elif exact and not agree(p_old, p_new, True, 0.0):
            wrong.append(f"{variant} against {old.baseline}: Holm p {p_new:.6g} (the paper's {p_old:.6g})")
    if wrong:
        out.differ.append("paired tests (Holm) not reproduced: " + "; ".join(wrong[:SHOWN]) + more(wrong))
    else:
        out.held.append(f"{len(old.comparisons)} paired tests against {old.baseline} with Holm")


def compare_best(old, new, out: Claims) -> None:
    """The best configuration and those that tie it (stats.ties)."""
    from peftlab.analysis.paper.names import tied_with

    was, now = tied_with(old, old.best), tied_with(new, new.best)
    if set(was) != set(now):
        out.differ.append(
            f"the best configuration flips: {' = '.join(now)} in the reruns, {' = '.join(was)} in the paper"
            + (" (a tie made or broken)" if len(was) != len(now) else "")
        )
    else:
        out.held.append("the best configuration" + (f" (a tie of {len(was)})" if len(was) > 1 else f" ({was[0]})"))


def compare_ablations(old, new, exact: bool, out: Claims) -> None:
    """Each ablation's table: to the character where exact, else its best configuration (with ties)."""
    from peftlab.analysis.paper.names import tied_with
    from peftlab.analysis.paper.tables import ablation_table, ablations

    for index, (group, (variants, keys)) in enumerate(ablations(old).items()):
        if exact:
            same = ablation_table(old, group, variants, keys, index) == ablation_table(
                new, group, variants, keys, index
            )
            if not same:
                out.differ.append(f"ablation {group}'s table not reproduced: its cells differ in the reruns")
                continue
        else:
            means_old = {v: old.primary.at[v, "mean"] for v in variants}
            means_new = {v: new.primary.at[v, "mean"] for v in variants if v in new.primary.index}
            pick = max if not old.score.lower else min
            best_old, best_new = pick(means_old, key=means_old.get), pick(means_new, key=means_new.get)
            tied_old = [v for v in tied_with(old, best_old) if v in variants]
            tied_new = [v for v in tied_with(new, best_new) if v in variants]
            if set(tied_old) != set(tied_new):
                out.differ.append(
                    f"ablation {group}'s best flips: {' = '.join(tied_new)} in the reruns, {' = '.join(tied_old)} "
                    "in the paper"
                )
                continue
        out.held.append(f"ablation {group}'s table")


def more(items: list) -> str:
    return f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
