"""Analysis of a study's results table: statistics, tables and figures (pandas, scipy and
matplotlib only; never torch)."""

from peftlab.analysis.figures import (
    plot_ablation,
    plot_accuracy_vs_params,
    plot_convergence,
    plot_cost,
    plot_importance_heatmap,
    plot_quantization_tradeoff,
    plot_seed_boxplots,
)
from peftlab.analysis.stats import (
    bootstrap_ci,
    completed_runs,
    holm,
    incomplete_runs,
    paired_comparisons,
    pareto_front,
    pareto_mask,
    probability_of_improvement,
    summarize,
    t_interval,
)
from peftlab.analysis.tables import latex_document, latex_escape, latex_table, markdown_table

__all__ = [
    "bootstrap_ci",
    "completed_runs",
    "holm",
    "incomplete_runs",
    "latex_document",
    "latex_escape",
    "latex_table",
    "markdown_table",
    "paired_comparisons",
    "pareto_front",
    "pareto_mask",
    "plot_ablation",
    "plot_accuracy_vs_params",
    "plot_convergence",
    "plot_cost",
    "plot_importance_heatmap",
    "plot_quantization_tradeoff",
    "plot_seed_boxplots",
    "probability_of_improvement",
    "summarize",
    "t_interval",
]
