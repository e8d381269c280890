"""``peftlab report STUDY_DIR``: statistics, figures, LaTeX tables and report.md from run files.

Writes ``STUDY_DIR/report/``: ``report.md``, ``results.csv``, ``tables/*.tex`` (booktabs,
plus a compilable ``*_document.tex``), ``figures/*.{png,pdf}``. A figure whose data is
absent is skipped with a line in the report.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from peftlab.analysis import figures
from peftlab.analysis.load import environment, load_curves, load_results, study_axes
from peftlab.analysis.literature import literature_section
from peftlab.analysis.stats import completed_runs, incomplete_runs, paired_comparisons, pareto_front, summarize
from peftlab.analysis.tables import latex_document, latex_table, markdown_table

METRICS = ("metrics.test_top1", "metrics.test_top5")
ABLATION_AXES = {"config.method.r": "rank", "config.method.lora_alpha": "alpha",
                 "config.method.target_modules": "target modules", "config.train.lr": "learning rate"}


def choose_baseline(df: pd.DataFrame) -> str | None:
    """The full fine-tuning variant if there is one, else the first variant."""
    done = completed_runs(df)
    if done.empty:
        return None
    full = done.loc[done["method"] == "full", "variant"]
    return str(full.iloc[0]) if len(full) else str(done["variant"].iloc[0])


def write_report(study_dir: str | Path, baseline: str | None = None) -> Path:
    study_dir = Path(study_dir)
    out = study_dir / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    df = load_results(study_dir)
    if df.empty:
        raise FileNotFoundError(f"{study_dir} holds no study runs (no runs/*/spec.json)")
    df.to_csv(out / "results.csv", index=False)
    done = completed_runs(df)
    baseline = baseline or choose_baseline(df)
    lines = [f"# Study report: {study_dir.name}", ""]
    lines += _what_was_run(df, done)

    comparisons = None
    if not done.empty:
        summary = pd.concat([summarize(df, metric=m) for m in METRICS], ignore_index=True)
        if baseline is not None and done["variant"].nunique() > 1:
            comparisons = paired_comparisons(df, baseline=baseline, metric=METRICS[0])
        tex = latex_table(summary, comparisons, columns=list(METRICS),
                          caption=f"{study_dir.name}: test accuracy (mean $\\pm$ 95\\% bootstrap CI half-width over "
                                  "seeds) and trainable parameters.")
        (out / "tables" / "main_table.tex").write_text(tex)
        (out / "tables" / "main_table_document.tex").write_text(latex_document(tex))
        lines += ["## Main table", "", markdown_table(summary, comparisons, columns=list(METRICS)), "",
                  "LaTeX: `tables/main_table.tex` (booktabs; `tables/main_table_document.tex` compiles alone).", ""]
        lines += _pareto_lines(df)
        lines += _significance_lines(comparisons, baseline)
    else:
        lines += ["## Main table", "", "No run completed: there is nothing to summarise.", ""]

    lines += literature_section(df)
    lines += ["## Figures", ""] + _figures(df, load_curves(study_dir), study_axes(study_dir), out / "figures")
    lines += _failures(df)
    lines += _environment(environment(study_dir))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def _what_was_run(df: pd.DataFrame, done: pd.DataFrame) -> list[str]:
    counts = df["status"].value_counts().to_dict()
    wall = done.get("timing.wall_seconds", pd.Series(dtype=float)).sum()
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = ["## What was run", "",
             f"- {len(df)} runs ({parts}); {df['variant'].nunique()} configurations x "
             f"{df['seed'].nunique()} seeds ({', '.join(map(str, sorted(df['seed'].unique())))})",
             f"- methods: {', '.join(sorted(df['method'].unique()))}"]
    for column, name in (("config.model.name", "models"), ("config.data.name", "datasets"),
                         ("config.quant.mode", "quantization")):
        if column in df:
            lines.append(f"- {name}: {', '.join(map(str, sorted(df[column].dropna().unique())))}")
    if "config.data.train_subset" in df:
        lines.append(f"- training images per run: {', '.join(map(str, sorted(df['config.data.train_subset'].dropna().unique())))}"
                     f"; epochs: {', '.join(map(str, sorted(df['config.train.epochs'].dropna().unique())))}")
    lines.append(f"- summed wall time of the completed runs: {wall / 60:.1f} min")
    return lines + [""]


def _pareto_lines(df: pd.DataFrame) -> list[str]:
    front = pareto_front(df)
    names = [str(v) for v in front.loc[front["on_front"], "variant"]]
    return ["Pareto front of test top-1 against trainable parameters: " + ", ".join(names) + ".", ""]


def _significance_lines(comparisons: pd.DataFrame | None, baseline: str | None) -> list[str]:
    if comparisons is None or comparisons.empty:
        return ["## Significance", "", "No paired comparison: fewer than two configurations completed.", ""]
    lines = ["## Significance", "",
             f"Each configuration against **{baseline}** on matched seeds (test top-1): paired t-test and "
             "Wilcoxon signed-rank test, Holm-corrected across comparisons; Cohen's d_z; probability of "
             "improvement over matched pairs.", "",
             "| configuration | pairs | mean diff (pts) | p (t, Holm) | p (Wilcoxon, Holm) | d_z | P(improve) | significant |",
             "|---|---|---|---|---|---|---|---|"]
    for row in comparisons.itertuples():
        def p(value):
            return "n/a" if pd.isna(value) else f"{value:.3g}"

        lines.append(f"| {row.variant} | {row.n_pairs} | {100 * row.mean_diff:+.2f} | {p(row.p_ttest_holm)} | "
                     f"{p(row.p_wilcoxon_holm)} | {p(row.cohens_dz)} | {row.prob_improvement:.2f} | "
                     f"{'yes' if row.significant else 'no'} |")
    return lines + ["", "Wilcoxon needs at least 5 pairs; with 5 its smallest two-sided p is 0.0625, so "
                        "significance is judged by the Holm-corrected t-test.", ""]


def _figures(df: pd.DataFrame, curves: pd.DataFrame, axes: list[str], out: Path) -> list[str]:
    lines = []
    drawn = [
        ("Accuracy vs trainable parameters (log x, 95% CI, Pareto front ringed)",
         figures.plot_accuracy_vs_params(df, out), "no completed runs"),
        ("Memory reduction vs accuracy loss across quantization settings",
         figures.plot_quantization_tradeoff(df, out), "the study has no quantized base (quant.mode is 'none' only)"),
        ("Layer importance (layers x modules)",
         figures.plot_importance_heatmap(None, out), "no run recorded layer importance"),
        ("Convergence: validation top-1 vs step",
         figures.plot_convergence(curves, out), "no validation curves"),
        ("Time and memory per configuration", figures.plot_cost(df, out), "no completed runs"),
        ("Test top-1 across seeds", figures.plot_seed_boxplots(df, out), "no completed runs"),
    ]
    for axis, name in ABLATION_AXES.items():
        if axis in axes:
            drawn.append((f"Ablation: {name}", figures.plot_ablation(df, axis, out),
                          f"{name} takes fewer than two values"))
    for title, paths, reason in drawn:
        if paths:
            png = next(p for p in paths if str(p).endswith(".png"))
            lines += [f"### {title}", "", f"![{title}](figures/{Path(png).name})", ""]
        else:
            lines.append(f"- skipped: {title.split(':')[0].lower()}: {reason}")
    return lines + [""]


def _failures(df: pd.DataFrame) -> list[str]:
    bad = incomplete_runs(df)
    if bad.empty:
        return ["## Failed or diverged runs", "", "None.", ""]
    lines = ["## Failed or diverged runs", "", "| run | configuration | seed | status | error |", "|---|---|---|---|---|"]
    for row in bad.itertuples():
        error = str(row.error).replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {row.run_id} | {row.variant} | {row.seed} | {row.status} | {error} |")
    return lines + [""]


def _environment(provenance: dict) -> list[str]:
    if not provenance:
        return ["## Environment", "", "No completed run recorded its environment.", ""]
    versions = provenance.get("versions") or {}
    hardware = provenance.get("hardware") or {}
    return ["## Environment", "",
            f"- git: {provenance.get('git_sha')} (dirty: {provenance.get('git_dirty')})",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
            f"- hardware: {hardware.get('cpu')}, {hardware.get('cpu_count')} CPUs, device {hardware.get('device')}"
            + (f", GPU {hardware['gpu']}" if hardware.get("gpu") else ""),
            f"- threads per run: {provenance.get('threads')}; precision: {provenance.get('dtype')}", ""]
