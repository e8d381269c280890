"""The study a paper is about, computed once from its results table: its configurations, their summaries
and comparisons, the scores it is judged by, its curves, axes, environment, pretrained base and searches.
The paper's text (build.py), figures (figures.py) and tables (tables.py) read it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from peftlab.analysis.figures.style import in_study_order, study_palette
from peftlab.analysis.paper.macros import (
    ALPHA,
    CONFIDENCE,
)
from peftlab.analysis.report import tuning
from peftlab.analysis.report.build import main_columns, model_names, study_modality
from peftlab.analysis.report.primary import primary_score
from peftlab.analysis.results.escape import latex_text
from peftlab.analysis.results.load import environment, load_curves, study_axes
from peftlab.analysis.results.tuning_choices import borrowed_configurations
from peftlab.analysis.results.units import display_name
from peftlab.analysis.stats.chance import chance
from peftlab.analysis.stats.comparisons import paired_comparisons
from peftlab.analysis.stats.families import comparison_families, repeats
from peftlab.analysis.stats.intervals import completed_runs, incomplete_runs, pareto_front, summarize
from peftlab.analysis.stats.ties import resolution
from peftlab.config.paths import REPO_ROOT
from peftlab.study.report_options import read_report_options
from peftlab.utils.files import read_json


class Study:
    """What the paper needs from the results table, computed once."""

    def __init__(self, study_dir: Path, df: pd.DataFrame, baseline: str, base_folder: Path | None = None):
        """``base_folder``: where the base's manifest is (a received archive's ``base/``); None: found from the
        runs' config, as ``pretraining_manifest`` says."""
        self.dir, self.df, self.baseline = study_dir, df, baseline
        options = read_report_options(study_dir / "study.yaml")
        self.labels = options.labels  # the report's display names
        self.datasets = options.datasets  # how the paper names a dataset (report.datasets)
        self.done = completed_runs(df)
        self.borrowed = borrowed_configurations(df)  # configuration -> whose tuned values it ran at
        self.metrics = main_columns(df)  # the report's metrics and headers (a text study's F1, perplexity, ...)
        self.palette = study_palette(df)
        self.summary = in_study_order(  # the figures' order in every table and sentence too
            pd.concat([summarize(df, metric=m, confidence=CONFIDENCE) for m in self.metrics], ignore_index=True),
            self.palette,
        )
        self.score = primary_score(df)  # test top-1, or for a study of causal LMs test perplexity, as the report
        self.modality = study_modality(df)  # vision, text or causal-lm: what the prose says was adapted
        self.primary = self.summary[self.summary["metric"] == self.score.metric].set_index("variant", drop=False)
        self.variants = [str(v) for v in self.primary["variant"]]
        self.tie = resolution(self.done, self.score.metric)  # one test example: means closer than this tie
        means = self.primary["mean"]
        self.best, self.worst = (
            (means.idxmin(), means.idxmax()) if self.score.lower else (means.idxmax(), means.idxmin())
        )
        # the comparisons' Holm families: the main table's configurations, the ablations' apart, a repeat untested
        self.families, self.repeats = comparison_families(df, baseline), repeats(df, baseline)
        tested = [v for v, family in self.families.items() if family is not None]
        self.comparisons = (
            in_study_order(
                paired_comparisons(
                    df,
                    baseline=baseline,
                    metric=self.score.metric,
                    alpha=ALPHA,
                    point=self.score.point,
                    families=self.families,
                ),
                self.palette,
            ).set_index("variant", drop=False)
            if tested
            else None
        )
        self.front = pareto_front(df, y=self.score.metric, step=self.tie)  # ties on it named with it
        # the task's chance rate and each seed's binomial test against it (None: no rate, or a perplexity)
        self.chance = chance(study_dir, df) if self.score.metric == "metrics.test_top1" else None
        self.curves = load_curves(study_dir)
        self.axes = study_axes(study_dir)
        self.environment = environment(study_dir)
        self.incomplete = incomplete_runs(df)
        self.base = pretraining_manifest(self.done, base_folder)
        self.searches = tuning.load_searches(  # [] when not tuned
            study_dir, self.palette.get("methods"), self.palette.get("variants"), df
        )

    def name(self, variant) -> str:
        """A configuration's display name as LaTeX (``report.labels``; math kept, text escaped)."""
        method = self.done.loc[self.done["variant"] == variant, "method"]
        return latex_text(display_name(variant, method.iloc[0] if len(method) else None, self.labels))

    def marked(self, variant) -> str:
        """A configuration's display name as a sentence names it: ``name``, with $^{\\ddagger}$ where it ran at
        another's tuned values (tune.share), as every table marks it."""
        return self.name(variant) + (r"$^{\ddagger}$" if variant in self.borrowed else "")

    def method_name(self, method: str) -> str:
        """A method's display name as LaTeX (``report.labels``), as the tuning table shows it."""
        return latex_text(display_name(method, method, self.labels))

    def models(self) -> list[str]:
        """The distinct models of the completed runs, sorted: timm's model.name, an HF model's directory name
        (``report.model_names``, as the report lists them)."""
        return sorted(set(model_names(self.done).dropna()))

    def config(self, key: str) -> list:
        """The distinct values of config.<key> among completed runs (sorted)."""
        column = "config." + key
        if column not in self.done:
            return []
        values = self.done[column].dropna().unique().tolist()
        try:
            return sorted(values)
        except TypeError:  # mixed types
            return sorted(values, key=str)


def pretraining_manifest(done: pd.DataFrame, folder: Path | None = None) -> dict | None:
    """The manifest.json next to the runs' pretrained weights (peftlab pretrain), or in a text model's directory
    (model.path), if one is found.

    The path in the config is relative to where the study ran: tried from the current
    directory and from the repository root. A given ``folder`` is the only place looked in (a received archive's
    base: what the receiver's folders hold is no part of it).
    """
    column = "config.model.pretrained"
    weights = done[column].dropna().unique().tolist() if column in done else []
    folders = done["config.model.path"].dropna().unique().tolist() if "config.model.path" in done else []
    if len(weights) == 1 and str(weights[0]).endswith(".safetensors"):
        where = Path(str(weights[0])).parent
    elif not weights and len(folders) == 1:  # a text model: the HF model directory peftlab pretrain wrote
        where = Path(str(folders[0]))
    else:
        return None
    for place in [folder] if folder is not None else [Path.cwd() / where, REPO_ROOT / where]:
        manifest = read_json(place / "manifest.json")
        if manifest:
            run = read_json(place / "run" / "result.json") or {}  # the pretraining run, where it is kept
            steps = run.get("step")
            if isinstance(steps, int) and not isinstance(steps, bool) and "steps" not in manifest:
                manifest = {**manifest, "steps": steps}
            return manifest
    return None


# --- the document -------------------------------------------------------------------------

# what each method family is, said only when the study ran it
