"""Adaptive ranks in a study: where the rank went, how much seeds agree, and whether it paid.

From the run files only (pandas, scipy, matplotlib; never torch):
- ``load_importance``: each run's final allocation from its ``importance.jsonl`` (AdaLoRA and
  the ``adaptive`` controllers write one): one row per (run, adapted module) with its block,
  module type, final rank, importance and share of the run's total importance.
- ``seed_agreement``: per configuration, Kendall's tau between the seeds' rankings of the
  modules by importance (mean, min and max over pairs of seeds).
- ``plot_importance_heatmap``: blocks x module types, final rank and importance share,
  averaged over seeds, one row of panels per configuration.
- ``equal_budget_comparisons``: every adaptive configuration (AdaLoRA, a controller, a static
  rank strategy) against uniform LoRA with the same total rank on the same modules and the
  same other settings, paired over seeds, Holm-corrected.
- ``report_section``: the report's "Adaptive ranks" section.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from peftlab.analysis.figures.study import skip_figure
from peftlab.analysis.figures.style import _new_figure, figure_name, save_figure
from peftlab.analysis.results.load import read_spec, run_dirs
from peftlab.analysis.results.units import markdown_name, scale
from peftlab.analysis.stats.comparisons import compare_paired, holm
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.models.blocks import block_indices
from peftlab.training.run_result import lower_is_better, read_result, status_of
from peftlab.tuners.ranks import module_type
from peftlab.utils.files import read_lines

TYPE_ORDER = ("q", "k", "v", "qkv", "proj", "fc1", "fc2")
IMPORTANCE_COLUMNS = [
    "run_id",
    "variant",
    "method",
    "seed",
    "module",
    "block",
    "module_type",
    "step",
    "rank",
    "importance",
    "share",
]


def load_importance(study_dir: str | Path) -> pd.DataFrame:
    """The last allocation of every completed run that wrote importance.jsonl."""
    rows = []
    for run_dir in run_dirs(Path(study_dir)):
        spec, result = read_spec(run_dir), read_result(run_dir)
        if not result or status_of(result) != "completed":
            continue
        records = []
        for line in read_lines(run_dir / "importance.jsonl", "run directory entry") or []:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("kind") == "rank":
                records.append(record)
        if not records:
            continue
        last = max(r["step"] for r in records)
        final = [r for r in records if r["step"] == last]
        scores = [r.get("importance") for r in final]
        total = sum(s for s in scores if isinstance(s, (int, float)) and math.isfinite(s))
        blocks = block_indices([r["module"] for r in final])
        for record, block in zip(final, blocks, strict=True):
            score = record.get("importance")
            finite = isinstance(score, (int, float)) and math.isfinite(score)
            rows.append(
                {
                    "run_id": spec["run_id"],
                    "variant": spec["variant"],
                    "method": spec["method"],
                    "seed": spec["seed"],
                    "module": record["module"],
                    "block": block,
                    "module_type": module_type(record["module"]),
                    "step": last,
                    "rank": record["rank"],
                    "importance": score if finite else np.nan,
                    "share": score / total if finite and total > 0 else np.nan,
                }
            )
    return pd.DataFrame(rows, columns=IMPORTANCE_COLUMNS)


def seed_agreement(importance: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: Kendall's tau between every two seeds' module importances."""
    rows = []
    for variant, group in importance.groupby("variant", sort=False):
        table = group.pivot_table(index="module", columns="seed", values="importance", aggfunc="first").dropna()
        taus = []
        for a, b in itertools.combinations(table.columns, 2):
            tau = scipy.stats.kendalltau(table[a], table[b]).statistic
            if math.isfinite(tau):
                taus.append(tau)
        rows.append(
            {
                "variant": variant,
                "seeds": table.shape[1],
                "modules": table.shape[0],
                "tau_mean": float(np.mean(taus)) if taus else np.nan,
                "tau_min": float(np.min(taus)) if taus else np.nan,
                "tau_max": float(np.max(taus)) if taus else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["variant", "seeds", "modules", "tau_mean", "tau_min", "tau_max"])


def plot_importance_heatmap(
    importance: pd.DataFrame | None, out_dir, name: str = "importance_heatmap", labels: dict | None = None
):
    """Blocks (rows) x module types (columns): mean final rank (left) and mean importance share
    (right) over seeds, one row of panels per configuration. Skipped without importance data."""
    if importance is None or importance.empty:
        return skip_figure(name, "no run wrote importance.jsonl (only adalora and adaptive runs do)")
    variants = list(dict.fromkeys(importance["variant"]))
    types = [t for t in TYPE_ORDER if t in set(importance["module_type"])]
    types += sorted(set(importance["module_type"]) - set(types))
    blocks = sorted(importance["block"].unique())
    fig, _ = _new_figure(2.0 + 1.1 * len(types), 0.9 + (0.55 + 0.22 * len(blocks)) * len(variants))
    fig.clear()
    axes = fig.subplots(len(variants), 2, squeeze=False)
    fig.suptitle("Final allocation per block and module type, mean over seeds", fontsize=8)
    for row, variant in enumerate(variants):
        group = importance[importance["variant"] == variant]
        seeds = group["seed"].nunique()
        for col, (value, title, cmap) in enumerate(
            (("rank", "final rank", "Blues"), ("share", "importance share (%)", "Oranges"))
        ):
            grid = group.pivot_table(index="block", columns="module_type", values=value, aggfunc="mean")
            grid = grid.reindex(index=blocks, columns=types)
            data = grid.to_numpy(dtype=float) * (100 if value == "share" else 1)
            ax = axes[row][col]
            image = ax.imshow(data, aspect="auto", cmap=cmap, interpolation="nearest")
            for (i, j), cell in np.ndenumerate(data):
                if math.isfinite(cell):
                    dark = cell > np.nanmin(data) + 0.6 * (np.nanmax(data) - np.nanmin(data))
                    ax.text(
                        j, i, f"{cell:.1f}", ha="center", va="center", fontsize=6, color="white" if dark else "black"
                    )
            ax.set_xticks(range(len(types)), types, fontsize=7)
            ax.set_yticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
            ax.set_ylabel("block", fontsize=7)
            label = figure_name(variant, group["method"].iloc[0], labels)
            ax.set_title(
                f"{label} ({seeds} seed{'s' if seeds != 1 else ''}): {title}" if col == 0 else title,
                fontsize=7,
                loc="left",
            )
            fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=6)
    return save_figure(fig, out_dir, name)


def _budget(row: pd.Series) -> float:
    for column in ("ranks.budget", "ranks.sum"):
        value = row.get(column)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
    return float("nan")


def _trained(row: pd.Series) -> float:
    """The total rank a run trained with before any pruning (``ranks.initial``'s sum), else its budget."""
    value = row.get("ranks.trained_sum")
    return float(value) if value is not None and pd.notna(value) else row["budget"]


# what a row of the equal-budget table holds equal between the adaptive configuration and uniform LoRA
HELD_EQUAL = {"final": "total rank after pruning", "trained": "total rank trained (before pruning)"}
HELD_SHORT = {"final": "rank after pruning", "trained": "rank trained"}  # the table's column


def equal_budget_comparisons(
    df: pd.DataFrame, metric: str = "metrics.test_top1", alpha: float = 0.05, tuned: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Each adaptive configuration against uniform LoRA at the same total rank, paired over seeds.

    The uniform LoRA configuration must adapt the same modules with every other setting equal
    (model, data, training, quantization) but the keys each method's search ``tuned`` (``train.lr``: each
    at its own chosen value). Two budgets can be held equal (``held_equal``): ``final``, the adaptive run's
    budget after pruning against the LoRA run's rank sum (r x modules); ``trained``, the total rank it trained
    with before pruning (AdaLoRA's init_r, a controller's max_rank, per module) against the LoRA run's: a uniform
    LoRA at that rank trains as many parameters as the adaptive run did (AdaLoRA's singular values aside). A row
    for each budget a uniform LoRA of the study matches; a configuration that prunes nothing has one. Holm over all
    rows. ``params_trained`` is the adaptive run's trainable count as built (``params.initial``), ``params_variant``
    after pruning. A metric where lower is better (a perplexity) counts a lower value as the win (win_rate).
    """
    runs = completed_runs(df)
    columns = [
        "variant",
        "baseline",
        "held_equal",
        "budget",
        "params_trained",
        "params_variant",
        "params_baseline",
        "n_pairs",
        "mean_variant",
        "mean_baseline",
        "mean_diff",
        "p_ttest",
        "p_ttest_holm",
        "significant",
        "win_rate",
    ]
    if runs.empty or "ranks.strategy" not in runs:
        return pd.DataFrame(columns=columns)
    runs = runs[runs["ranks.strategy"].notna() & runs[metric].notna()].copy()
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs["budget"] = [_budget(row) for _, row in runs.iterrows()]
    runs["trained"] = [_trained(row) for _, row in runs.iterrows()]
    shared = [
        c
        for c in runs.columns
        if c.startswith("config.")
        and not c.startswith("config.method.")
        and c not in ("config.seed", "config.name", "config.track")
        and c.removeprefix("config.") not in tuned
    ]
    shared += [c for c in ("config.method.target_modules",) if c in runs.columns]
    runs["setting"] = [("|".join(map(str, row))) for row in runs[shared].itertuples(index=False)]
    uniform = runs[(runs["method"] == "lora") & (runs["ranks.strategy"] == "uniform")]
    # a fixed uniform rank is no adaptive configuration, whatever the method (DoRA, a plugin built on LoRA)
    adaptive = runs[runs["ranks.strategy"] != "uniform"]
    rows = []
    for variant, group in adaptive.groupby("variant", sort=False):
        first = group.iloc[0]
        budgets = {"final": first["budget"], "trained": first["trained"]}
        if budgets["trained"] == budgets["final"]:  # nothing pruned: one budget
            del budgets["trained"]
        for held, total in budgets.items():
            match = uniform[(uniform["setting"] == first["setting"]) & (uniform["budget"] == total)]
            if not match.empty:
                rows.append(_paired_row(variant, group, match, metric, held, total))
    table = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_ttest_holm", "significant")])
    table["p_ttest_holm"] = holm(table["p_ttest"].to_numpy(dtype=float)) if len(table) else []
    table["significant"] = table["p_ttest_holm"] < alpha
    return table[columns]


def _paired_row(variant, group: pd.DataFrame, match: pd.DataFrame, metric: str, held: str, total: float) -> dict:
    """One row of the equal-budget table: ``group``'s runs against the first uniform LoRA of ``match``."""
    baseline = match["variant"].iloc[0]
    base = match[match["variant"] == baseline].set_index("seed")
    paired = group[["seed", metric]].merge(base.reset_index()[["seed", metric]], on="seed", suffixes=("", "_base"))
    stats = compare_paired(
        paired[metric].to_numpy(float), paired[metric + "_base"].to_numpy(float), lower=lower_is_better(metric)
    )
    built = group["params.initial.trainable"] if "params.initial.trainable" in group else group["params.trainable"]
    return {
        "variant": variant,
        "baseline": baseline,
        "held_equal": held,
        "budget": total,
        "params_trained": built.fillna(group["params.trainable"]).mean(),
        "params_variant": group["params.trainable"].mean(),
        "params_baseline": base["params.trainable"].mean(),
        "n_pairs": stats["n_pairs"],
        "mean_variant": stats["mean_variant"],
        "mean_baseline": stats["mean_baseline"],
        "mean_diff": stats["mean_diff"],
        "p_ttest": stats["p_ttest"],
        "win_rate": stats["win_rate"],
    }


def report_section(
    study_dir: str | Path,
    df: pd.DataFrame,
    figures_dir: Path,
    labels: dict | None = None,
    alpha: float = 0.05,
    metric: str = "metrics.test_top1",
) -> list[str]:
    """The report's "Adaptive ranks" section (empty when the study has no rank-adaptive run); the equal-budget
    table compares ``metric`` (test top-1, or a study of causal LMs' test perplexity)."""
    importance, tuned = load_importance(study_dir), tuned_keys(study_dir)
    table = equal_budget_comparisons(df, metric=metric, alpha=alpha, tuned=tuned)
    if importance.empty and table.empty:
        return []
    lines = ["## Adaptive ranks", ""]
    if not table.empty:
        lines += _equal_budget_lines(table, labels, alpha, metric, tuned)
    if not importance.empty:
        lines += _importance_lines(importance, figures_dir, labels)
    return lines


def tuned_keys(study_dir: str | Path) -> tuple[str, ...]:
    """The config keys a search chose for some final run of the study (spec.json's ``tuned_by``)."""
    keys = {}
    for run_dir in run_dirs(Path(study_dir)):
        keys.update(dict.fromkeys((read_spec(run_dir).get("tuned_by") or {}).get("params") or {}))
    return tuple(keys)


def _equal_budget_lines(
    table: pd.DataFrame, labels: dict | None, alpha: float, metric: str, tuned: tuple[str, ...] = ()
) -> list[str]:
    """The equal-budget table and its note: test top-1 in %, or a perplexity as it is; each adaptive configuration's
    trainable parameters during training and after pruning side by side, and which budget each row holds equal."""
    lower, times = lower_is_better(metric), scale(metric)
    values = "Test perplexity (lower is better) | LoRA | Diff" if lower else "Test top-1 (%) | LoRA (%) | Diff (pp)"
    wins = "has the lower perplexity" if lower else "scores higher"
    lines = [
        "### Adaptive vs fixed rank at equal budget",
        "",
        "| Configuration | Uniform LoRA | Held equal | Total rank | Trainable params: trained / after pruning / "
        f"LoRA | {values} | p (Holm) | Wins |",
        "|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        p = "n/a" if not math.isfinite(row.p_ttest_holm) else f"{row.p_ttest_holm:.3f}"
        mark = " *" if row.significant else ""
        lines.append(
            f"| {markdown_name(row.variant, None, labels)} | {markdown_name(row.baseline, 'lora', labels)} | "
            f"{HELD_SHORT[row.held_equal]} | {row.budget:.0f} | {row.params_trained:,.0f} / "
            f"{row.params_variant:,.0f} / {row.params_baseline:,.0f} | {times * row.mean_variant:.1f} | "
            f"{times * row.mean_baseline:.1f} | {times * row.mean_diff:+.1f}{mark} | {p} | {row.win_rate:.2f} |"
        )
    return lines + [
        "",
        f"Paired over seeds (n = {int(table['n_pairs'].min())}–{int(table['n_pairs'].max())}); p: paired "
        f"t-test, Holm-corrected over the {len(table)} rows; *: p < {alpha}. {held_equal_text(table)} Trainable "
        "parameters (means over seeds, the head included): during training, as the method was built; after "
        "pruning, at the end (AdaLoRA also keeps one singular value per rank); uniform LoRA's. Wins: share of "
        f"seeds where the adaptive configuration {wins}."
        + (f" Each configuration at its own method's tuned {', '.join(tuned)}." if tuned else ""),
        "",
    ]


def held_equal_text(table: pd.DataFrame) -> str:
    """Which budget the rows hold equal, from the rows themselves: "final" rows the total rank after pruning (the
    adaptive configuration may have trained more parameters than its LoRA during the run), "trained" rows the total
    rank it trained with (as many trained parameters as its LoRA)."""
    said = []
    for held, what in (
        ("final", "the budget each configuration keeps, not the one it trains"),
        ("trained", "a uniform LoRA of the rank the configuration trained with, for about as many trained parameters"),
    ):
        rows = table[table["held_equal"] == held]
        if rows.empty:
            continue
        subject = f"{'rows' if len(rows) > 1 else 'the row'} held at the {HELD_EQUAL[held]}"
        text = f"{subject} compare{'' if len(rows) > 1 else 's'} {what}"
        more = rows[rows["params_trained"] > rows["params_baseline"]]
        if held == "final" and len(more):
            text += f": {len(more)} of {len(rows)} trained more parameters than {'their' if len(rows) > 1 else 'its'} "
            text += "uniform LoRA during the run"
        said.append(text)
    text = "; ".join(said) + "."
    return text[0].upper() + text[1:] if said else ""


def _importance_lines(importance: pd.DataFrame, figures_dir: Path, labels: dict | None) -> list[str]:
    """The layer-importance heatmap and the seeds' agreement on which modules matter."""
    lines = []
    paths = plot_importance_heatmap(importance, figures_dir, labels=labels)
    if paths:
        png = next(p for p in paths if str(p).endswith(".png"))
        lines += [
            "### Layer importance",
            "",
            f"![Layer importance](figures/{Path(png).name})",
            "",
            "Final allocation of each run (blocks x module types), averaged over seeds: rank (left) and "
            "share of the run's total importance (right).",
            "",
        ]
    agreement = seed_agreement(importance)
    lines += [
        "Agreement between seeds on which modules matter (Kendall's tau of the module importances, "
        "over pairs of seeds):",
        "",
    ]
    for row in agreement.itertuples():
        if math.isfinite(row.tau_mean):
            lines.append(
                f"- {markdown_name(row.variant, None, labels)}: tau = {row.tau_mean:.2f} "
                f"(min {row.tau_min:.2f}, max {row.tau_max:.2f}; {row.seeds} seeds, {row.modules} modules)"
            )
        else:
            lines.append(f"- {markdown_name(row.variant, None, labels)}: fewer than two seeds, no agreement to measure")
    return lines + [""]
