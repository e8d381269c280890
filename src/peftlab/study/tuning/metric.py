"""``tune.metric``: the validation metrics a search selects on, which way each is better, and which of them
the runs of a configuration report.

Every classifier reports ``val_top1``, ``best_val_top1`` and ``val_matthews`` (GLUE CoLA's score), a
two-class one ``val_f1`` too (F1 of class 1, MRPC's); a causal LM (``model.task: causal-lm``) reports
``val_top1`` and ``best_val_top1`` per token and ``val_perplexity``, the one where lower is better. A
metric the configuration does not report is refused when the study is read; where the number of classes
is known only once the data is read (a folder of files), a trial run that reports none stops the search
in one line (``missing_metric``), before any selection. A test metric is never a tuning metric.
"""

from __future__ import annotations

from typing import Any

from peftlab.config.checks import DATASET_CLASSES, shown
from peftlab.training.run_result import lower_is_better
from peftlab.utils.errors import ConfigError

# result.json's validation metrics a search may select on -> the metrics.jsonl field each evaluation
# reports (halving compares trials on it at each rung; a best_* metric on its running best)
METRICS = {
    "val_top1": "val_top1",
    "best_val_top1": "val_top1",
    "val_f1": "val_f1",
    "val_matthews": "val_matthews",
    "val_perplexity": "val_perplexity",
}
LM_ONLY = ("val_perplexity",)


def read_metric(value: Any) -> str:
    """``tune.metric``, checked: one of METRICS; a test metric is refused with the reason."""
    if value in METRICS:
        return value
    why = (
        " (tuning selects on validation only: the test set judges the final runs, once)"
        if isinstance(value, str) and "test" in value
        else ""
    )
    raise ConfigError(f"study tune.metric={shown(value)} is invalid{why}: expected one of {', '.join(METRICS)}")


def search_direction(metric: str) -> str:
    """Optuna's direction of a search on ``metric``: lower perplexity is better, higher everything else."""
    return "minimize" if lower_is_better(metric) else "maximize"


def head_classes(cfg) -> int | None:
    """The classes of ``cfg``'s classifier head where they are known before its data is read:
    model.num_classes, else data.classes, else the dataset's own; None for a folder of files."""
    if cfg.model.num_classes is not None:
        return cfg.model.num_classes
    return len(cfg.data.classes) if cfg.data.classes else DATASET_CLASSES.get(cfg.data.name)


def reported(cfg) -> list[str]:
    """The tuning metrics the runs of ``cfg`` report (val_f1 where its classes are two, or not yet known)."""
    if cfg.model.task == "causal-lm":
        return ["val_top1", "best_val_top1", "val_perplexity"]
    classes = head_classes(cfg)
    return ["val_top1", "best_val_top1", "val_matthews"] + (["val_f1"] if classes in (2, None) else [])


def check_reported(metric: str, cfg, method: str) -> None:
    """A ConfigError line when the runs of ``method``'s configuration ``cfg`` do not report ``metric``."""
    found = reported(cfg)
    if metric in found:
        return
    if cfg.model.task == "causal-lm":
        what, why = "a causal LM (model.task=causal-lm)", "F1 and Matthews are a classifier's"
    elif metric in LM_ONLY:
        what, why = f"a classifier (model.task={cfg.model.task})", "perplexity is a causal LM's"
    else:
        what, why = f"a {head_classes(cfg)}-class classifier ({cfg.data.name})", "F1 is a two-class score"
    listed = ", ".join(found[:-1]) + f" and {found[-1]}"
    raise ConfigError(
        f"study tune.metric={shown(metric)} is invalid for method '{method}': {what} reports {listed}; {why}"
    )


def missing_metric(result: dict, metric: str) -> str | None:
    """Why a completed trial run that reports no ``metric`` cannot be selected on (None when it reports
    it, or did not complete): its classes were not known when the study was read."""
    metrics = result.get("metrics") or {}
    if result.get("status") != "completed" or metrics.get(metric) is not None or metrics.get("val_top1") is None:
        return None
    classes = ((result.get("provenance") or {}).get("data") or {}).get("num_classes")
    why = "F1 is a two-class score" if metric == "val_f1" else "the run does not report it"
    if isinstance(classes, int):
        why = f"its data has {classes} classes and {why}"
    others = "val_top1, best_val_top1 or val_matthews" if metric == "val_f1" else "a metric its runs report"
    return f"tune.metric={metric} is null in a completed trial run ({why}): expected {others}"
