"""``peftlab report STUDY_DIR``: statistics, figures, LaTeX tables and report.md from run files.

Writes ``STUDY_DIR/report/``: ``report.md``, ``results.csv``, ``tables/*.tex`` (booktabs,
plus a compilable ``*_document.tex``), ``figures/*.{png,pdf}``. A figure whose data is
absent is skipped with a line in the report's "Skipped figures" section.

How the report shows the study comes from the ``report:`` section of the study file (the
copy the runner keeps as ``STUDY_DIR/study.yaml``): the interval (``t`` by default) and
display names (``labels``). The bootstrap's seed and number of resamples are fixed
(bootstrap.BOOTSTRAP_SEED, bootstrap.BOOTSTRAP_RESAMPLES) and printed in the report.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from peftlab.analysis import across_datasets, adaptive, figures, health, protocol_card, tuning, vtab
from peftlab.analysis.bootstrap import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from peftlab.analysis.comparisons import MAX_PAIRS, POWER, below_detection, paired_comparisons_within
from peftlab.analysis.figure_style import study_palette
from peftlab.analysis.intervals import (
    MIN_SEEDS,
    completed_runs,
    describe_interval,
    incomplete_runs,
    pareto_front,
    summarize,
)
from peftlab.analysis.literature import literature_section
from peftlab.analysis.load import environment, load_curves, load_results, study_axes
from peftlab.analysis.tables import display_name, latex_document, latex_table, markdown_table
from peftlab.errors import UserError
from peftlab.study.report_options import read_report_options

METRICS = ("metrics.test_top1", "metrics.test_top5")
ABLATION_AXES = {
    "config.method.r": "rank",
    "config.method.lora_alpha": "alpha",
    "config.method.target_modules": "target modules",
    "config.train.lr": "learning rate",
}
TASK = "config.data.name"
ALPHA = 0.05  # significance level of the paired comparisons, and the level their MDE is stated at


def choose_baseline(df: pd.DataFrame) -> str | None:
    """The full fine-tuning variant if there is one, else the first variant."""
    done = completed_runs(df)
    if done.empty:
        return None
    full = done.loc[done["method"] == "full", "variant"]
    return str(full.iloc[0]) if len(full) else str(done["variant"].iloc[0])


def write_report(
    study_dir: str | Path,
    baseline: str | None = None,
    interval: str | None = None,
    labels: dict[str, str] | None = None,
) -> Path:
    """Write STUDY_DIR/report/ and return the path of report.md.

    interval and labels override the study file's report section. A baseline that is not a
    configuration with completed runs is a UserError naming the configurations there are.
    """
    study_dir = Path(study_dir)
    options = read_report_options(study_dir / "study.yaml")
    interval = interval or options.interval
    labels = options.labels if labels is None else labels
    df = load_results(study_dir)
    if df.empty:
        raise UserError(f"{study_dir} holds no study runs (no runs/*/spec.json)")
    done = completed_runs(df)
    if baseline is not None and baseline not in set(done["variant"]):
        shown = ", ".join(f"'{v}'" for v in dict.fromkeys(done["variant"])) or "none"
        raise UserError(f"baseline '{baseline}' is not a configuration with completed runs; configurations: {shown}")
    baseline = baseline or choose_baseline(df)

    out = study_dir / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    lines = [f"# Study report: {study_dir.name}", ""]
    lines += _what_was_run(df, done)
    lines += tuning.report_section(study_dir, df, out / "figures", labels, study_palette(df))  # or: untuned
    unused = [key for key in labels if key not in set(df["variant"]) | set(df["method"])]
    if unused:
        lines += [
            f"Labels in the study file's report section that name no configuration or method: {', '.join(unused)}.",
            "",
        ]
    lines += _statistics(interval)
    lines += protocol_card.report_section(study_dir, done, labels)

    if not done.empty:
        summary = pd.concat([summarize(df, metric=m, interval=interval) for m in METRICS if m in df], ignore_index=True)
        comparisons = None
        if baseline is not None and done["variant"].nunique() > 1:
            comparisons = paired_comparisons_within(df, baseline, TASK, metric=METRICS[0], alpha=ALPHA)
        interval_text = describe_interval(interval)
        tex = latex_table(
            summary,
            comparisons,
            columns=[m for m in METRICS if m in df],
            labels=labels,
            interval_text=interval_text,
            caption=f"{study_dir.name}: test accuracy (mean and {interval_text}) and trainable parameters.",
        )
        (out / "tables" / "main_table.tex").write_text(tex)
        (out / "tables" / "main_table_document.tex").write_text(latex_document(tex))
        lines += [
            "## Main table",
            "",
            markdown_table(
                summary,
                comparisons,
                columns=[m for m in METRICS if m in df],
                labels=labels,
                interval_text=interval_text,
            ),
        ]
        lines += _few_seeds(summary[summary["metric"] == METRICS[0]], labels)
        lines += ["LaTeX: `tables/main_table.tex` (booktabs; `tables/main_table_document.tex` compiles alone).", ""]
        lines += _pareto_lines(df, labels)
        lines += _significance_lines(comparisons, df, labels)
        lines += across_datasets.report_section(df, baseline, labels, out, METRICS[0], TASK)
        lines += _qalora_lines(df, interval, labels)
        lines += vtab.report_section(df, baseline, interval, labels, out, study_dir.name)  # [] without VTAB-1k runs
    else:
        lines += ["## Main table", "", "No run completed: there is nothing to summarise.", ""]

    figure_lines, skipped = _figures(
        df,
        load_curves(study_dir),
        study_axes(study_dir),
        out / "figures",
        interval,
        labels,
        health.convergence_caption(study_dir),
    )
    lines += literature_section(df)
    lines += ["## Figures", ""] + figure_lines
    lines += adaptive.report_section(study_dir, df, out / "figures", labels)  # rank allocation, equal budget
    lines += health.report_section(
        study_dir,
        out / "figures",
        labels,  # monitors: gradients, convergence, rank use
        study_palette(df),
    )
    lines += ["## Skipped figures", ""] + ([f"- skipped: {line}" for line in skipped] or ["None."]) + [""]
    lines += _failures(df)
    lines += _environment(environment(study_dir))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def _what_was_run(df: pd.DataFrame, done: pd.DataFrame) -> list[str]:
    counts = df["status"].value_counts().to_dict()
    wall = done.get("timing.wall_seconds", pd.Series(dtype=float)).sum()
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [
        "## What was run",
        "",
        f"- {len(df)} runs ({parts}); {df['variant'].nunique()} configurations x "
        f"{df['seed'].nunique()} seeds ({', '.join(map(str, sorted(df['seed'].unique())))})",
        f"- methods: {', '.join(sorted(df['method'].unique()))}",
    ]
    for column, name in (("config.model.name", "models"), (TASK, "datasets"), ("config.quant.mode", "quantization")):
        if column in df:
            lines.append(f"- {name}: {', '.join(map(str, sorted(df[column].dropna().unique())))}")
    if "config.data.train_subset" in df:
        subsets = sorted(df["config.data.train_subset"].dropna().unique())
        images = ", ".join(map(str, subsets)) if subsets else "all of each dataset's training split"
        lines.append(
            f"- training images per run: {images}"
            f"; epochs: {', '.join(map(str, sorted(df['config.train.epochs'].dropna().unique())))}"
        )
    lines.append(f"- summed wall time of the completed runs: {wall / 60:.1f} min")
    return lines + [""]


def _statistics(interval: str) -> list[str]:
    return [
        "## How the numbers were computed",
        "",
        f"- Intervals in tables and figures: the {describe_interval(interval)} "
        "(`report.interval` in the study file: t, bca or percentile).",
        f"- Every bootstrap draws {BOOTSTRAP_RESAMPLES} resamples with numpy's default_rng seeded "
        f"{BOOTSTRAP_SEED}: the same results give the same bounds in every report.",
        "- Comparisons with the baseline: paired t-test and Wilcoxon signed-rank test on matched seeds, "
        "Holm-corrected across comparisons; Cohen's d_z of the paired differences.",
        f"- Minimum detectable difference (MDE): the smallest true mean difference the two-sided paired t-test "
        f"at α = {ALPHA:g}, not Holm-corrected, finds with {100 * POWER:.0f}% power, taking the observed sd of "
        "the paired differences as the true one (normal differences assumed); with few seeds that sd is itself "
        "rough. Holm's correction raises the bar further.",
        "- Probability of improvement P(X > Y) is rliable's: over all pairs (a run of the configuration, a run "
        "of the baseline), ties counted half, averaged over datasets, with a 95% stratified bootstrap percentile "
        "interval. The win rate is a different number: the share of matched seeds where the configuration "
        "scores higher (ties half).",
        "",
    ]


def _few_seeds(summary: pd.DataFrame, labels: dict) -> list[str]:
    few = summary[summary["n"] < MIN_SEEDS]
    if few.empty:
        return []
    if len(few) == len(summary) and few["n"].nunique() == 1:
        names = f"every configuration (n = {few['n'].iloc[0]})"
    else:
        names = ", ".join(f"{_name(row, labels)} (n = {row['n']})" for _, row in few.iterrows())
    text = (
        f"**Warning: fewer than {MIN_SEEDS} seeds** for {names}. With so few seeds the intervals are rough, "
        "and the Wilcoxon test cannot reach p < 0.05."
    )
    if (few["n"] == 2).any():
        text += (
            " At n = 2 no interval is meaningful: a bootstrap interval is just the two values, and the "
            "t-interval spans 12.7 standard errors on either side."
        )
    if (few["n"] == 1).any():
        text += " At n = 1 there is no interval."
    return [text, ""]


def _name(row, labels: dict) -> str:
    return display_name(row["variant"], row.get("method"), labels)


def _pareto_lines(df: pd.DataFrame, labels: dict) -> list[str]:
    front = pareto_front(df)
    names = [_name(row, labels) for _, row in front[front["on_front"]].iterrows()]
    return ["Pareto front of test top-1 against trainable parameters: " + ", ".join(names) + ".", ""]


def _significance_lines(comparisons: pd.DataFrame | None, df: pd.DataFrame, labels: dict) -> list[str]:
    if comparisons is None or comparisons.empty:
        return ["## Significance", "", "No paired comparison: fewer than two configurations completed.", ""]
    methods = completed_runs(df).groupby("variant")["method"].first()
    baselines = ", ".join(display_name(b, methods.get(b), labels) for b in dict.fromkeys(comparisons["baseline"]))
    power = f"{100 * POWER:.0f}%"
    lines = [
        "## Significance",
        "",
        f"Each configuration against **{baselines}** (test top-1), on matched seeds for the tests and the "
        "win rate, over all pairs of runs for P(X > Y).",
        "",
        f"| configuration | pairs | mean diff (pts) | p (t, Holm) | MDE ({power}, pts) | pairs for 1 pt | "
        "p (Wilcoxon, Holm) | d_z | win rate (matched seeds) | P(X > Y) [95% CI] | significant |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def p(value):
        return "n/a" if pd.isna(value) else f"{value:.3g}"

    for row in comparisons.itertuples():
        name = display_name(row.variant, methods.get(row.variant), labels)
        mde = "n/a" if pd.isna(row.mde_80) else f"{100 * row.mde_80:.2f}"
        lines.append(
            f"| {name} | {row.n_pairs} | {100 * row.mean_diff:+.2f} | {p(row.p_ttest_holm)} | {mde} | "
            f"{_pairs(row.pairs_for_1pt)} | {p(row.p_wilcoxon_holm)} | {p(row.cohens_dz)} | "
            f"{row.win_rate:.2f} | {row.prob_improvement:.2f} [{row.prob_improvement_low:.2f}, "
            f"{row.prob_improvement_high:.2f}] | {'yes' if row.significant else 'no'} |"
        )
    lines += [
        "",
        "Wilcoxon needs at least 5 pairs; with 5 its smallest two-sided p is 0.0625, so "
        "significance is judged by the Holm-corrected t-test. "
        f"MDE ({power}): the smallest true mean difference the paired t-test at α = {ALPHA:g} (before "
        f"Holm's correction) finds with {power} power, given the sd of the paired differences and the "
        "number of pairs; pairs for 1 pt: the matched seeds that test needs to find a 1-point difference "
        "at that sd.",
        "",
    ]
    return lines + _not_shown(comparisons, methods, labels) + _spread_lines(comparisons, df, methods, labels)


def _pairs(count: float) -> str:
    if pd.isna(count):
        return "n/a"
    return f"> {MAX_PAIRS:,}" if count == float("inf") else f"{int(count):,}"


def _not_shown(comparisons: pd.DataFrame, methods: pd.Series, labels: dict) -> list[str]:
    """The sentence on differences that are not significant and smaller than their MDE: the seeds could not
    have shown them, so "not significant" says nothing about whether they are equal."""
    small = comparisons[below_detection(comparisons)]
    if small.empty:
        return []
    items = [
        f"{display_name(row.variant, methods.get(row.variant), labels)} ({100 * row.mean_diff:+.2f} points; "
        f"MDE {100 * row.mde_80:.2f} points; 1 point needs {_pairs(row.pairs_for_1pt)} seeds)"
        for row in small.itertuples()
    ]
    return [
        f"**Not significant, and smaller than these seeds could detect:** {', '.join(items)}. The test would "
        f"miss a true difference of that size more than {100 * (1 - POWER):.0f}% of the time, so read these as "
        "'no difference shown', not as 'equal to the baseline'.",
        "",
    ]


def _spread_lines(comparisons: pd.DataFrame, df: pd.DataFrame, methods: pd.Series, labels: dict) -> list[str]:
    """The configurations whose seed-to-seed spread (sd of test top-1 over their seeds) exceeds their mean
    paired difference from the baseline: one seed of them would not say which is better."""
    sd = completed_runs(df).groupby("variant")[METRICS[0]].std()
    spread = comparisons.assign(sd=comparisons["variant"].map(sd)).dropna(subset=["sd"])  # one seed: no spread
    wide = spread[spread["sd"] > spread["mean_diff"].abs()]
    if wide.empty:
        return []
    items = [
        f"{display_name(row.variant, methods.get(row.variant), labels)} (sd over seeds {100 * row.sd:.2f} "
        f"points, mean difference {100 * row.mean_diff:+.2f})"
        for row in wide.itertuples()
    ]
    return [
        f"**Seeds spread more than the difference from the baseline:** {', '.join(items)}. Changing the seed "
        "moves these configurations' test top-1 more than changing the configuration does, so a comparison of "
        "single runs could come out either way; the figure 'Test top-1 across seeds' shows every seed.",
        "",
    ]


class _SkipReasons(logging.Handler):
    """Collects the figures module's "skipped <name>: <reason>" records."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.reasons: dict[str, str] = {}

    def emit(self, record):
        if record.msg == "skipped %s: %s":
            self.reasons[record.args[0]] = record.args[1]


def _figures(
    df: pd.DataFrame,
    curves: pd.DataFrame,
    axes: list[str],
    out: Path,
    interval: str,
    labels: dict,
    under_training: str = "",
) -> tuple[list[str], list[str]]:
    """(report.md lines of the drawn figures, one line per skipped figure); ``under_training`` is
    said under the convergence figure."""
    palette = study_palette(df)
    style = {"interval": interval, "labels": labels, "palette": palette}
    bars = f"bars: the {describe_interval(interval)}."
    handler, level = _SkipReasons(), figures.logger.level
    figures.logger.addHandler(handler)
    figures.logger.setLevel(logging.INFO)
    try:
        drawn = [
            (
                "Accuracy vs trainable parameters",
                "accuracy_vs_params",
                f"Mean test top-1 per configuration against trainable parameters (log scale); {bars} Dashed: the "
                "Pareto front (ringed points).",
                figures.plot_accuracy_vs_params(df, out, **style),
            ),
            (
                "Memory reduction vs accuracy loss across quantization settings",
                "quantization_tradeoff",
                "Base weights as stored, as a share of their fp32 size, against test top-1 minus that of the fp32 run "
                f"of the same configuration on matched seeds; bars: the {describe_interval(interval)} of the "
                "difference. Filled: adapter on the quantized base; open: adapter merged into it.",
                figures.plot_quantization_tradeoff(df, out, **style),
            ),
            (
                "Convergence: validation top-1 vs step",
                "convergence",
                f"Mean over seeds; band: the {describe_interval(interval)} at each evaluated step. "
                f"{under_training}".strip(),
                figures.plot_convergence(curves, out, **style),
            ),
            (
                "Time and memory per configuration",
                "cost",
                "Bars: mean over seeds; dots: the individual runs. Peak RSS is the whole process (Python, libraries, "
                "data), so methods differ little there; on a GPU the panel shows CUDA allocated memory instead, and "
                "a quantized base shows its saving in the weights panel.",
                figures.plot_cost(df, out, labels=labels, palette=palette),
            ),
            (
                "Test top-1 across seeds",
                "seed_boxplots",
                "Boxes: quartiles and median over seeds; whiskers: runs within 1.5 IQR; dots: the runs, each seed at "
                "the same place in every box (seeds in order from left to right), so one seed can be followed across "
                "configurations.",
                figures.plot_seed_boxplots(df, out, labels=labels, palette=palette),
            ),
        ]
        for axis, name in ABLATION_AXES.items():
            if axis in axes:
                figure = "ablation_" + axis.removeprefix("config.").replace(".", "_")
                drawn.append(
                    (
                        f"Ablation: {name}",
                        figure,
                        f"Mean test top-1 along the {name}; {bars} Methods without this axis: dashed "
                        "reference lines with their interval shaded.",
                        figures.plot_ablation(df, axis, out, **style),
                    )
                )
    finally:
        figures.logger.removeHandler(handler)
        figures.logger.setLevel(level)
    lines, skipped = [], []
    for title, name, caption, paths in drawn:
        if paths:
            png = next(p for p in paths if str(p).endswith(".png"))
            lines += [f"### {title}", "", f"![{title}](figures/{Path(png).name})", "", caption, ""]
        else:
            reason = handler.reasons.get(name, "no data")
            skipped.append(f"{title.split(':')[0].lower()}: {reason}")
    return lines, skipped


def _failures(df: pd.DataFrame) -> list[str]:
    bad = incomplete_runs(df)
    if bad.empty:
        return ["## Failed or diverged runs", "", "None.", ""]
    lines = [
        "## Failed or diverged runs",
        "",
        "| run | configuration | seed | status | error |",
        "|---|---|---|---|---|",
    ]
    for row in bad.itertuples():
        error = str(row.error).replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {row.run_id} | {row.variant} | {row.seed} | {row.status} | {error} |")
    return lines + [""]


def _environment(provenance: dict) -> list[str]:
    if not provenance:
        return ["## Environment", "", "No completed run recorded its environment.", ""]
    versions = provenance.get("versions") or {}
    hardware = provenance.get("hardware") or {}
    return [
        "## Environment",
        "",
        f"- git: {provenance.get('git_sha')} (dirty: {provenance.get('git_dirty')})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"- hardware: {hardware.get('cpu')}, {hardware.get('cpu_count')} CPUs, device {hardware.get('device')}"
        + (f", CPU flags {' '.join(hardware['cpu_flags']) or 'none known'}" if "cpu_flags" in hardware else "")
        + (f", GPU {hardware['gpu']}" if hardware.get("gpu") else ""),
        f"- threads per run: {provenance.get('threads')}; precision: {provenance.get('dtype')}",
        *arithmetic_line(provenance.get("arithmetic")),
        "",
    ]


def arithmetic_line(arithmetic: dict | None) -> list[str]:
    """Whether the CPU arithmetic was pinned (train.reproducible): it decides if another CPU gives the same numbers."""
    if not arithmetic:
        return []
    if arithmetic.get("pinned"):
        return ["- CPU arithmetic: pinned to AVX2 code (train.reproducible), the same on AVX2 and AVX-512 CPUs"]
    return [
        "- CPU arithmetic: the CPU's own (train.reproducible off): an AVX2 and an AVX-512 CPU give other numbers "
        "for the same seeds"
    ]


DEPLOYED = "metrics.merged_test_top1"


def _qalora_lines(df: pd.DataFrame, interval: str, labels: dict[str, str]) -> list[str]:
    """QA-LoRA at equal bits: the deployable merged model of QA-LoRA, QLoRA nf4 (re-quantized) and fp32 LoRA.

    LoRA rows are those with the QA-LoRA runs' rank and targets. Bytes are the frozen base weights as
    stored (``memory.base_weights_bytes``: the adapters fold into them; the trained head, the same in
    every row, is not counted).
    """
    done = completed_runs(df)
    if done.empty or "qalora" not in set(done["method"]) or DEPLOYED not in done:
        return []
    qa = done[done["method"] == "qalora"]
    lora = done[
        (done["method"] == "lora")
        & done["config.quant.mode"].isin(["nf4", "none"])
        & done["config.method.r"].isin(set(qa["config.method.r"]))
        & done["config.method.target_modules"].isin(set(qa["config.method.target_modules"]))
    ]
    rows = pd.concat([qa, lora])
    summary = summarize(rows, metric=DEPLOYED, interval=interval)
    stored = rows.groupby("variant", sort=False)["memory.base_weights_bytes"].mean()
    fp32_bytes = rows.groupby("variant", sort=False)["memory.base_weights_fp32_bytes"].mean()
    interval_text = describe_interval(interval)
    lines = [
        "## QA-LoRA at equal bits",
        "",
        f"Test top-1 of the model that deploys, merged (mean and {interval_text}), and the bytes "
        "of its frozen base weights as stored (the adapter folds into them; the head is not counted). "
        "QA-LoRA merges into its zeros / offsets with the same codes; QLoRA's merge re-quantizes; fp32 LoRA "
        "merges into fp32 weights.",
        "",
        "| configuration | deploys as | merged test top-1 | interval | n | base bytes | / fp32 |",
        "|---|---|---|---|---|---|---|",
    ]  # / fp32: stored bytes over the same weights in fp32
    for _, row in summary.iterrows():
        run = rows[rows["variant"] == row["variant"]].iloc[0]
        if run["method"] == "qalora":
            kind = (
                f"{run['config.method.format']}, groups of {int(run['config.method.group_size'])}, "
                "merged into the zeros"
            )
        else:
            kind = "nf4, merged and re-quantized" if run["config.quant.mode"] == "nf4" else "fp32, merged"
        size = stored[row["variant"]]
        lines.append(
            f"| {display_name(row['variant'], run['method'], labels)} | {kind} | {100 * row['mean']:.2f}% | "
            f"[{100 * row['ci_low']:.2f}, {100 * row['ci_high']:.2f}] | {row['n']} | "
            f"{size / 1024:.0f} KiB | {size / fp32_bytes[row['variant']]:.3f} |"
        )
    lines.append("")
    by_variant = summary.set_index("variant")
    qlora = [
        v
        for v in by_variant.index
        if (rows.loc[rows["variant"] == v, "config.quant.mode"] == "nf4").all()
        and (rows.loc[rows["variant"] == v, "method"] == "lora").all()
    ]
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
                f"- {display_name(variant, 'qalora', labels)} vs {display_name(other, 'lora', labels)}: "
                f"{100 * (a['mean'] - b['mean']):+.2f} points of merged test top-1; {verdict}."
            )
    for other in qlora:  # what QA-LoRA avoids: the change re-quantization makes to QLoRA's model
        runs = rows[rows["variant"] == other]
        if "metrics.test_top1" in runs:
            loss = 100 * (runs["metrics.test_top1"] - runs[DEPLOYED]).mean()
            lines.append(
                f"- {display_name(other, 'lora', labels)}: merging (re-quantizing) cost {loss:+.2f} points of "
                "test top-1 on average (adapter over the quantized base minus merged)."
            )
    if "quantization.mean_relative_error" in qa:
        for variant, errors in qa.groupby("variant", sort=False)["quantization.mean_relative_error"]:
            lines.append(
                f"- {display_name(variant, 'qalora', labels)}: mean relative quantization error of the "
                f"base's layers {errors.mean():.4f} (||W - Q(W)||_F / ||W||_F)."
            )
    return lines + [""]
