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

from pathlib import Path

import pandas as pd

from peftlab.analysis.figures.style import in_study_order, study_palette
from peftlab.analysis.report import (
    across_datasets,
    adaptive,
    equal_bits,
    health,
    per_class,
    protocol_card,
    significance,
    tuning,
    vtab,
)
from peftlab.analysis.report.figures import chance_line, figure_lines
from peftlab.analysis.report.literature import literature_section
from peftlab.analysis.report.primary import (
    chance_lines,
    few_seeds_lines,
    judgement_lines,
    order_lines,
    pareto_lines,
    primary_score,
    statistics_section,
)
from peftlab.analysis.report.protocol_card import phase_lines
from peftlab.analysis.report.tables import latex_document, latex_table, markdown_table
from peftlab.analysis.results import generations
from peftlab.analysis.results.escape import markdown_code, markdown_text
from peftlab.analysis.results.load import (
    environment,
    load_curves,
    load_results,
    results_sha256,
    study_axes,
    superseded_runs,
)
from peftlab.analysis.results.record import run_data_names
from peftlab.analysis.results.tuning_choices import borrowed_configurations
from peftlab.analysis.results.units import METRIC_LABELS, metric_words
from peftlab.analysis.stats.chance import chance
from peftlab.analysis.stats.comparisons import paired_comparisons_within
from peftlab.analysis.stats.families import comparison_families
from peftlab.analysis.stats.intervals import completed_runs, describe_interval, incomplete_runs, pareto_front, summarize
from peftlab.analysis.stats.power import ALPHA
from peftlab.analysis.stats.ties import resolution
from peftlab.study.report_options import read_report_options, read_study_name
from peftlab.utils.errors import UserError
from peftlab.utils.files import refuse_links_below, refuse_links_in, write_atomic, write_text_atomic
from peftlab.utils.typed_json import DamagedFile

METRICS = ("metrics.test_top1", "metrics.test_top5")
# a text study's main table shows those its runs report too: F1 of a two-class task (GLUE MRPC's), the
# Matthews correlation (CoLA's), a causal LM's perplexity
TEXT_METRICS = ("metrics.test_f1", "metrics.test_matthews", "metrics.test_perplexity")
# a causal LM's top-1 and top-5 are its next-token predictions' accuracy, per token
TOKEN_LABELS = {"metrics.test_top1": "Test top-1 per token (%)", "metrics.test_top5": "Test top-5 per token (%)"}
TASK = "config.data.name"


def choose_baseline(df: pd.DataFrame) -> str | None:
    """The full fine-tuning variant if there is one, else the first variant."""
    done = completed_runs(df)
    if done.empty:
        return None
    full = done.loc[done["method"] == "full", "variant"]
    return str(full.iloc[0]) if len(full) else str(done["variant"].iloc[0])


def report_folder(study_dir: Path) -> Path:
    """STUDY_DIR/report with its figures/ and tables/, made where no link leads them out of the study (a received
    report/ could point anywhere): a link in it is one UserError line."""
    out = study_dir / "report"
    refuse_links_below(study_dir, out, "report entry")
    refuse_links_in(out, "report entry")
    from peftlab.study.preflight import check_report_files  # what `study --report` checks before its runs

    check_report_files(out)  # an entry of another kind: one line before anything is drawn, not a traceback after
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    return out


def write_report(
    study_dir: str | Path,
    baseline: str | None = None,
    interval: str | None = None,
    labels: dict[str, str] | None = None,
) -> Path:
    """Write STUDY_DIR/report/ and return the path of report.md; interval and labels override the study file's report
    section. A baseline that is not a configuration with completed runs is a UserError naming those there are; a
    damaged study file (``DamagedFile``) leaves its section out, and is raised once report.md is written."""
    study_dir = Path(study_dir)
    options = read_report_options(study_dir / "study.yaml")
    interval = interval or options.interval
    labels = options.labels if labels is None else labels
    built_from = results_sha256(study_dir)  # before the files are read: a run that changes later changes the hash
    df = load_results(study_dir)
    if df.empty:
        raise UserError(f"{study_dir} holds no study runs (no runs/*/spec.json)")
    done = completed_runs(df)
    if baseline is not None and baseline not in set(done["variant"]):
        shown = ", ".join(f"'{v}'" for v in dict.fromkeys(done["variant"])) or "none"
        raise UserError(f"baseline '{baseline}' is not a configuration with completed runs; configurations: {shown}")
    baseline = baseline or choose_baseline(df)

    out = report_folder(study_dir)
    write_atomic(out / "results.csv", lambda tmp: df.to_csv(tmp, index=False))
    lines = [
        f"# Study report: {markdown_text(read_study_name(study_dir))}",
        "",
        f"Built from the results with SHA-256 `{built_from}` (each run's spec.json and result.json).",
        "",
    ]
    damaged: list[DamagedFile] = []  # the study files the report is written without: the first is raised after
    lines += _what_was_run(df, done, study_dir, damaged)
    lines += protocol_card.mixed_arithmetic_warning(done)
    lines += left_out(  # or: untuned
        damaged, "## Tuning", tuning.report_section, study_dir, df, out / "figures", labels, study_palette(df)
    )
    unused = [key for key in labels if key not in set(df["variant"]) | set(df["method"])]
    if unused:
        lines += [
            "Labels in the study file's report section that name no configuration or method: "
            f"{markdown_text(', '.join(unused))}.",
            "",
        ]
    score = primary_score(df)  # test top-1, or for a study of causal LMs test perplexity
    lines += statistics_section(interval, score, judgement_lines(df))
    lines += protocol_card.report_section(study_dir, done, labels)
    lines += protocol_card.claims_section(df, options.share_limits, labels)
    if not done.empty:
        lines += _results(df, baseline, interval, labels, out, study_dir)
    else:
        lines += ["## Main table", "", "No run completed: there is nothing to summarise.", ""]

    drawn, skipped = figure_lines(
        df,
        load_curves(study_dir),
        study_axes(study_dir),
        out / "figures",
        interval,
        labels,
        score,
        health.convergence_caption(study_dir),
        chance_line(study_dir, df, score),  # drawn where a configuration is at chance
    )
    lines += literature_section(df, metric=score.metric, modality=study_modality(df))
    lines += ["## Figures", ""] + drawn
    lines += adaptive.report_section(study_dir, df, out / "figures", labels, metric=score.metric)  # equal budget
    lines += health.report_section(
        study_dir,
        out / "figures",
        labels,  # monitors: gradients, convergence, rank use
        study_palette(df),
    )
    lines += ["## Skipped figures", ""] + ([f"- skipped: {line}" for line in skipped] or ["None."]) + [""]
    lines += _failures(df) + _superseded(study_dir)
    lines += protocol_card.environment_section(environment(study_dir))
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    if damaged:
        raise DamagedFile(f"{damaged[0]} (report.md was written without it: {out / 'report.md'})")
    return out / "report.md"


def left_out(damaged: list[DamagedFile], heading: str, section, *args) -> list[str]:
    """``section(*args)``'s lines; where a study file it reads is damaged (``DamagedFile``), the section's
    ``heading`` and a line that says what it leaves out, the damage kept in ``damaged``."""
    try:
        return section(*args)
    except DamagedFile as err:
        damaged.append(err)
        return [heading, "", f"Left out: {err}.", ""]


def _results(
    df: pd.DataFrame, baseline: str | None, interval: str, labels: dict, out: Path, study_dir: Path
) -> list[str]:
    """The sections on the completed runs: the main table (also as LaTeX under ``out/tables``), the
    Pareto front, the significance of each configuration against ``baseline``, the aggregates over
    datasets, QA-LoRA at equal bits, VTAB-1k, a causal LM's greedy generations and the accuracy per class."""
    columns, score, name = main_columns(df), primary_score(df), read_study_name(study_dir)
    summary = pd.concat([summarize(df, metric=m, interval=interval) for m in columns], ignore_index=True)
    summary = in_study_order(summary, study_palette(df))  # the figures' order (figures/order.py) in every table
    comparisons = None
    if baseline is not None and completed_runs(df)["variant"].nunique() > 1:
        comparisons = in_study_order(
            paired_comparisons_within(
                df,
                baseline,
                TASK,
                metric=score.metric,
                alpha=ALPHA,
                point=score.point,
                families=comparison_families(df, baseline),  # Holm within each (stats.families)
            ),
            study_palette(df),
            within=TASK,
        )
    interval_text, borrowed = describe_interval(interval), borrowed_configurations(df)
    ties = {metric: resolution(completed_runs(df), metric) for metric in columns}  # one test example
    found = chance(study_dir, df) if score.metric == "metrics.test_top1" else None  # the task's chance rate
    tex = latex_table(
        summary,
        comparisons,
        columns=columns,
        labels=labels,
        interval_text=interval_text,
        borrowed=borrowed,
        resolution=ties,
        chance=found,
        caption=f"{name}: {metric_words(columns)} (mean and {interval_text}) and trainable parameters.",
    )
    write_text_atomic(out / "tables" / "main_table.tex", tex)
    write_text_atomic(out / "tables" / "main_table_document.tex", latex_document(tex))
    lines = [
        "## Main table",
        "",
        markdown_table(
            summary,
            comparisons,
            columns=columns,
            labels=labels,
            interval_text=interval_text,
            borrowed=borrowed,
            resolution=ties,
            chance=found,
        ),
    ]
    primary = summary[summary["metric"] == score.metric]
    lines += order_lines(primary, score, labels, ties.get(score.metric, 0.0), borrowed)
    lines += chance_lines(found, labels, primary)
    lines += few_seeds_lines(primary, labels)
    lines += base_lines(df)
    lines += ["LaTeX: `tables/main_table.tex` (booktabs; `tables/main_table_document.tex` compiles alone).", ""]
    front = pareto_front(df, y=score.metric, step=ties.get(score.metric, 0.0))  # ties at one count all on it
    lines += pareto_lines(front, score, labels, borrowed)
    lines += significance.report_section(comparisons, df, labels)
    lines += across_datasets.report_section(df, baseline, labels, out, METRICS[0], TASK)
    lines += equal_bits.report_section(df, interval, labels)
    lines += vtab.report_section(df, baseline, interval, labels, out, name)  # [] without VTAB-1k runs
    lines += generations.report_section(study_dir, labels)  # a causal LM's greedy replies; [] without
    return lines + per_class.report_section(study_dir, out, labels, study_palette(df))  # [] without a classifier


def base_lines(df: pd.DataFrame) -> list[str]:
    """A study of causal LMs' base row: each base's test perplexity alone (``metrics.base_test_perplexity``: its
    float weights, no adapter, on the runs' test tokens), beside which every configuration's perplexity is read."""
    runs = completed_runs(df)
    if "metrics.base_test_perplexity" not in runs or runs["metrics.base_test_perplexity"].isna().all():
        return []
    runs = runs.assign(model=model_names(runs)).dropna(subset=["metrics.base_test_perplexity"])
    said = []
    for model, values in runs.groupby("model", sort=True)["metrics.base_test_perplexity"]:
        low, high = values.min(), values.max()
        value = f"{low:.4g}" if low == high else f"{low:.4g} to {high:.4g} (its runs' test tokens differ)"
        said.append(f"{markdown_text(str(model))} {value} ({len(values)} runs)")
    return [
        f"Base without an adapter (its float weights, no step, on the runs' test tokens): test perplexity "
        f"{'; '.join(said)}. A configuration's gain is its perplexity against this.",
        "",
    ]


def main_metrics(df: pd.DataFrame) -> list[str]:
    """The main table's metrics: test top-1 and top-5 (those some run measured), then in a text study the
    text scores some run reports (``TEXT_METRICS``). An image classifier's runs report the Matthews
    correlation too (and F1 with two classes), which its table leaves out."""
    return [m for m in METRICS + (TEXT_METRICS if is_text(df) else ()) if m in df]


def main_columns(df: pd.DataFrame) -> dict[str, str]:
    """The main table's metrics (``main_metrics``) and their headers: a study of causal LMs says its
    accuracies are per token."""
    tasks = completed_runs(df).get("config.model.task", pd.Series(dtype=object))
    lm = is_text(df) and not tasks.empty and bool((tasks == "causal-lm").all())
    return {m: (TOKEN_LABELS if lm else METRIC_LABELS).get(m, METRIC_LABELS[m]) for m in main_metrics(df)}


def model_names(df: pd.DataFrame) -> pd.Series:
    """Each run's model: timm's model name, or the name of an HF model directory (model.source hf, hf-text),
    whose model.name is left at its default; an HF model from the hub (no model.path): model.name, its repository."""
    source = df.get("config.model.source", pd.Series("timm", index=df.index)).fillna("timm")
    paths = df.get("config.model.path", pd.Series(None, index=df.index, dtype=object))
    folders = paths.map(lambda path: Path(path).name if isinstance(path, str) else None)
    names = df.get("config.model.name", pd.Series(None, index=df.index))
    return names.where((source == "timm") | folders.isna(), folders)


def is_text(df: pd.DataFrame) -> bool:
    return bool((df.get("config.model.source", pd.Series(dtype=object)) == "hf-text").any())


def study_modality(df: pd.DataFrame) -> str:
    """What the study adapts: "vision" (timm or HF image models), "causal-lm" (every completed run a causal LM,
    the study judged by perplexity: primary.py) or "text" (HF text classifiers)."""
    if not is_text(df):
        return "vision"
    return "causal-lm" if primary_score(df).lower else "text"


def _what_was_run(df: pd.DataFrame, done: pd.DataFrame, study_dir: Path, damaged: list) -> list[str]:
    counts = df["status"].value_counts().to_dict()
    wall = done.get("timing.wall_seconds", pd.Series(dtype=float)).sum()
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [
        "## What was run",
        "",
        f"- {len(df)} runs ({parts}); {df['variant'].nunique()} configurations x "
        f"{df['seed'].nunique()} seeds ({', '.join(map(str, sorted(df['seed'].unique())))})",
        f"- methods: {markdown_text(', '.join(sorted(df['method'].unique())))}",
    ]  # names from run files, in prose: Markdown-escaped
    lines.append(f"- models: {markdown_text(', '.join(sorted(set(model_names(df).dropna()))))}")
    if TASK in df:  # a folder of the user's by its name: "shapes (imagefolder)"
        lines.append(f"- datasets: {markdown_text(', '.join(sorted(set(run_data_names(df).dropna()))))}")
    if "config.quant.mode" in df:
        lines.append(
            f"- quantization: {markdown_text(', '.join(map(str, sorted(df['config.quant.mode'].dropna().unique()))))}"
        )
    if "config.data.train_subset" in df:
        subsets = sorted(df["config.data.train_subset"].dropna().unique())
        images = ", ".join(map(str, subsets)) if subsets else "all of each dataset's training split"
        lines.append(
            f"- training {'examples' if is_text(df) else 'images'} per run: {images}"
            f"; {run_length(done if not done.empty else df)}"
        )
    plugins = df.dropna(subset=["provenance.plugin"]) if "provenance.plugin" in df else df.iloc[:0]
    for method, runs in plugins.groupby("method", sort=True):  # the plugin's code is part of its result
        versions = sorted(runs["provenance.plugin"].unique())
        lines.append(f"- plugin method {markdown_text(method)}: {markdown_text('; '.join(versions))}")
    lines.append(f"- summed wall time of the completed runs: {wall / 60:.1f} min")
    try:
        phases = phase_lines(study_dir)
    except DamagedFile as err:
        damaged.append(err)
        phases = [f"- phases: left out, {err}"]
    return lines + phases + [""]


def run_length(df: pd.DataFrame) -> str:
    """How long the runs trained, as they ran (result.json's protocol record): epochs where they bounded a
    run, the optimizer steps where train.max_steps stopped it first; from the configs for runs without
    the record."""
    if "protocol.steps" in df and df["protocol.steps"].notna().any():
        epochs = df["protocol.epochs"].dropna() if "protocol.epochs" in df else pd.Series(dtype=float)
        cut = df[df["protocol.max_steps"].notna()] if "protocol.max_steps" in df else df.iloc[:0]
        parts = [f"epochs: {', '.join(str(int(e)) for e in sorted(epochs.unique()))}"] if not epochs.empty else []
        if not cut.empty:
            steps = ", ".join(str(int(s)) for s in sorted(cut["protocol.steps"].dropna().unique()))
            parts.append(f"optimizer steps (train.max_steps stopped the runs first): {steps}")
        return "; ".join(parts)
    epochs = sorted(df["config.train.epochs"].dropna().unique()) if "config.train.epochs" in df else []
    max_steps = sorted(df["config.train.max_steps"].dropna().unique()) if "config.train.max_steps" in df else []
    if max_steps:  # which bound stopped a run is in its protocol record only
        return f"epochs: {', '.join(map(str, epochs))}, at most {', '.join(str(int(s)) for s in max_steps)} steps"
    return f"epochs: {', '.join(map(str, epochs))}"


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
    for row in bad.itertuples():  # recorded words as Markdown text: a "|" of an error stays in its cell
        error = markdown_text(str(row.error).replace("\n", " ")[:200])
        cells = (markdown_text(row.run_id), markdown_text(row.variant), row.seed, markdown_text(row.status))
        lines.append("| " + " | ".join(map(str, cells)) + f" | {error} |")
    return lines + [""]


def _superseded(study_dir: Path) -> list[str]:
    """The runs of another version of the study (``superseded_runs``), named: left out of everything above."""
    old = superseded_runs(study_dir)
    if not old:
        return []
    return [
        "## Superseded runs",
        "",
        f"{len(old)} run{'s' if len(old) != 1 else ''} of another version of the study, which its file no longer "
        f"names, {'are' if len(old) != 1 else 'is'} left out of every table, figure and number above: "
        + ", ".join(markdown_code(f"runs/{path.name}") for path in old)
        + ".",
        "",
    ]
