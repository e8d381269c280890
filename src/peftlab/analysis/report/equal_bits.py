"""The report's "QA-LoRA at equal bits" section: the model each of QA-LoRA, QLoRA nf4 and fp32 LoRA deploys
(merged), its test top-1 and the bytes of its frozen base weights, and QA-LoRA against QLoRA. An exact merge (fp32
LoRA's, QA-LoRA's) is tested on the test split only under ``train.merged_test: always``; elsewhere its merge check
passed on a test batch and its row reads the unmerged test top-1 (``deployed_top1``)."""

from __future__ import annotations

import pandas as pd

from peftlab.analysis.results.units import markdown_name
from peftlab.analysis.stats.intervals import completed_runs, describe_interval, summarize

DEPLOYED = "deployed_top1"  # a column of this section's own: ``deployed_top1``
MERGED = "metrics.merged_test_top1"


def report_section(df: pd.DataFrame, interval: str, labels: dict[str, str]) -> list[str]:
    """QA-LoRA at equal bits: the deployable merged model of QA-LoRA, QLoRA nf4 (re-quantized) and fp32 LoRA.

    LoRA rows are those with the QA-LoRA runs' rank and targets. Bytes are the frozen base weights as
    stored (``memory.base_weights_bytes``: the adapters fold into them; the trained head, the same in
    every row, is not counted).
    """
    done = completed_runs(df)
    if done.empty or "qalora" not in set(done["method"]) or MERGED not in done:
        return []
    done = done.assign(**{DEPLOYED: deployed_top1(done)})
    qa = done[done["method"] == "qalora"]
    lora = done[
        (done["method"] == "lora")
        & done["config.quant.mode"].isin(["nf4", "none"])
        & done["config.method.r"].isin(set(qa["config.method.r"]))
        & done["config.method.target_modules"].isin(set(qa["config.method.target_modules"]))
    ]
    rows = pd.concat([qa, lora])
    summary = summarize(rows, metric=DEPLOYED, interval=interval)
    lines = _table(rows, summary, interval, labels)
    by_variant = summary.set_index("variant")
    qlora = [
        v
        for v in by_variant.index
        if (rows.loc[rows["variant"] == v, "config.quant.mode"] == "nf4").all()
        and (rows.loc[rows["variant"] == v, "method"] == "lora").all()
    ]
    lines += _against_qlora(qa, qlora, by_variant, labels)
    lines += _requantization_costs(rows, qlora, labels)
    if "quantization.mean_relative_error" in qa:
        for variant, errors in qa.groupby("variant", sort=False)["quantization.mean_relative_error"]:
            lines.append(
                f"- {markdown_name(variant, 'qalora', labels)}: mean relative quantization error of the "
                f"base's layers {errors.mean():.4f} (||W - Q(W)||_F / ||W||_F)."
            )
    return lines + [""]


def deployed_top1(done: pd.DataFrame) -> pd.Series:
    """Each run's merged test top-1; where it did not test its merged model (an exact merge under
    ``train.merged_test: auto``, its merge check passed) the unmerged test top-1, which the merge keeps up to
    near-ties; null where neither was measured."""
    merged = done[MERGED]
    if "merge.ok" not in done or "metrics.test_top1" not in done:
        return merged
    exact = done["merge.ok"].eq(True) & merged.isna()
    return merged.where(~exact, done["metrics.test_top1"])


def _table(rows: pd.DataFrame, summary: pd.DataFrame, interval: str, labels: dict[str, str]) -> list[str]:
    """The section's heading and table: per configuration, what it deploys as, its merged test top-1 and
    the bytes of its base weights."""
    stored = rows.groupby("variant", sort=False)["memory.base_weights_bytes"].mean()
    fp32_bytes = rows.groupby("variant", sort=False)["memory.base_weights_fp32_bytes"].mean()
    interval_text = describe_interval(interval)
    lines = [
        "## QA-LoRA at equal bits",
        "",
        f"Test top-1 of the model that deploys, merged (mean and {interval_text}), and the bytes "
        "of its frozen base weights as stored (the adapter folds into them; the head is not counted). "
        "QA-LoRA merges into its zeros / offsets with the same codes; QLoRA's merge re-quantizes; fp32 LoRA "
        "merges into fp32 weights. A merge that rounds nothing (QA-LoRA's, fp32 LoRA's) is checked on a test batch "
        "and its row is the unmerged test top-1, which it keeps up to near-ties (train.merged_test: always tests it "
        "merged too); QLoRA's re-quantized merge is tested merged.",
        "",
        "| configuration | deploys as | merged test top-1 | interval | n | base bytes | / fp32 |",
        "|---|---|---|---|---|---|---|",
    ]  # / fp32: stored bytes over the same weights in fp32
    for _, row in summary.iterrows():
        run = rows[rows["variant"] == row["variant"]].iloc[0]
        size = stored[row["variant"]]
        lines.append(
            f"| {markdown_name(row['variant'], run['method'], labels)} | {_deploys_as(run)} | "
            f"{100 * row['mean']:.2f}% | [{100 * row['ci_low']:.2f}, {100 * row['ci_high']:.2f}] | {row['n']} | "
            f"{size / 1024:.0f} KiB | {size / fp32_bytes[row['variant']]:.3f} |"
        )
    return lines + [""]


def _deploys_as(run: pd.Series) -> str:
    """How a configuration's merged model stores its base: QA-LoRA's format and groups, nf4 or fp32."""
    if run["method"] == "qalora":
        return f"{run['config.method.format']}, groups of {int(run['config.method.group_size'])}, merged into the zeros"
    return "nf4, merged and re-quantized" if run["config.quant.mode"] == "nf4" else "fp32, merged"


def _against_qlora(qa: pd.DataFrame, qlora: list, by_variant: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """Each QA-LoRA configuration against each QLoRA one: the difference of merged test top-1 and whether
    their intervals separate."""
    lines = []
    for variant in qa["variant"].unique():
        for other in qlora:
            a, b = by_variant.loc[variant], by_variant.loc[other]
            if a["ci_low"] > b["ci_high"]:
                verdict = "its interval lies above QLoRA's: this study shows QA-LoRA's claim"
            elif a["ci_high"] < b["ci_low"]:
                verdict = "its interval lies below QLoRA's: this study does not show QA-LoRA's claim"
            else:
                verdict = "the intervals overlap: this study does not separate them"
            lines.append(
                f"- {markdown_name(variant, 'qalora', labels)} vs {markdown_name(other, 'lora', labels)}: "
                f"{100 * (a['mean'] - b['mean']):+.2f} points of merged test top-1; {verdict}."
            )
    return lines


def _requantization_costs(rows: pd.DataFrame, qlora: list, labels: dict[str, str]) -> list[str]:
    """What QA-LoRA avoids: the change re-quantization makes to QLoRA's model, per QLoRA configuration."""
    lines = []
    for other in qlora:
        runs = rows[rows["variant"] == other]
        if "metrics.test_top1" in runs:
            loss = 100 * (runs["metrics.test_top1"] - runs[DEPLOYED]).mean()
            lines.append(
                f"- {markdown_name(other, 'lora', labels)}: merging (re-quantizing) cost {loss:+.2f} points of "
                "test top-1 on average (adapter over the quantized base minus merged)."
            )
    return lines
