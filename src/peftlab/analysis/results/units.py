"""How the report's tables and figures print a metric of result.json: accuracies in %, F1 and the Matthews
correlation times 100 (as GLUE papers print them: 88.9, 60.5), a perplexity as it is; and which way each
is better (``peftlab.training.run_result.lower_is_better``: the lowest perplexity is the best).

A metric is named as result.json or a results table names it (``val_f1``, ``metrics.test_perplexity``).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from peftlab.training.run_result import lower_is_better

if TYPE_CHECKING:
    import pandas as pd

TEXT_SCORES = ("f1", "matthews", "perplexity")  # GLUE's other two scores and a causal LM's
UNSCALED = ("perplexity", "loss")
TIMES_100 = {"f1": "F1", "matthews": "Matthews correlation"}


# the range of a bounded score as result.json stores it (a fraction); intervals and axes are cut to it
BOUNDS = {"top1": (0.0, 1.0), "top5": (0.0, 1.0), "f1": (0.0, 1.0), "matthews": (-1.0, 1.0)}


def bounds(metric) -> tuple[float, float] | None:
    """The range a metric's values lie in, as stored (top-1: 0 to 1); None for an unbounded one (a perplexity)."""
    return BOUNDS.get(score_name(str(metric)))


def range_words(metrics) -> str:
    """The printed ends of the bounded metrics' ranges, for a note on cut intervals: "0 and 100" (accuracies),
    "-100 and 100" (Matthews), or both."""
    ends = dict.fromkeys(
        f"{scale(m) * BOUNDS[score_name(m)][0]:g} and {scale(m) * BOUNDS[score_name(m)][1]:g}"
        for m in metrics
        if score_name(str(m)) in BOUNDS
    )
    return " or ".join(ends) or "the ends of the metric's range"


def signed(value: float, digits: int = 1) -> str:
    """A difference with its sign as printed to ``digits`` decimals: "+1.2", "-0.4"; one that prints as zero
    is "0.0", never "-0.0"."""
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def decimal(value: float, digits: int = 1) -> str:
    """A value to ``digits`` decimals as a table prints it; one that prints as zero is "0.0", never "-0.0"."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def score_name(metric: str) -> str:
    """The score a metric is of: metrics.test_f1 -> f1, best_val_top1 -> top1, val_perplexity -> perplexity."""
    return metric.removeprefix("metrics.").rsplit("_", 1)[-1]


def scale(metric: str) -> float:
    """What a value is multiplied by when printed: 100 for a fraction (top-1, F1, Matthews), 1 for a
    perplexity or a loss."""
    return 1.0 if score_name(metric) in UNSCALED else 100.0


def unit(metric: str) -> str:
    """A printed value's unit: "%" for an accuracy, "×100" for F1 and Matthews, "" for a perplexity."""
    name = score_name(metric)
    return "" if name in UNSCALED else "×100" if name in TIMES_100 else "%"


def units(metrics) -> str:
    """What a table's cells are in: "in %" where every metric is an accuracy, else each kind named
    ("accuracies in %, F1 and Matthews correlation ×100, perplexity as it is")."""
    names = [score_name(m) for m in metrics]
    if not any(name in TEXT_SCORES for name in names):
        return "in %"
    parts = ["accuracies in %"] if any(name not in TEXT_SCORES for name in names) else []
    scaled = [words for name, words in TIMES_100.items() if name in names]
    if scaled:
        parts.append(" and ".join(scaled) + " ×100")
    if "perplexity" in names:
        parts.append("perplexity as it is")
    return ", ".join(parts)


def best_words(metrics) -> str:
    """What "best" means in a table: " (the lowest perplexity)" where a metric is lower-better, else ""."""
    lower = list(dict.fromkeys(score_name(m) for m in metrics if lower_is_better(m)))
    return f" (the lowest {' and '.join(lower)})" if lower else ""


def metric_words(metrics) -> str:
    """A caption's name of a table's metrics: "test accuracy", "test accuracy, F1 and Matthews correlation"."""
    names = ["accuracy"] + [
        {"perplexity": "perplexity", **TIMES_100}[name] for name in TEXT_SCORES if name in map(score_name, metrics)
    ]
    return "test " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])


METRIC_LABELS = {
    "metrics.test_top1": "Test top-1 (%)",
    "metrics.test_top5": "Test top-5 (%)",
    "metrics.val_top1": "Val top-1 (%)",
    "metrics.best_val_top1": "Best val top-1 (%)",
    "metrics.test_f1": "Test F1 (×100)",
    "metrics.test_matthews": "Test Matthews corr. (×100)",
    "metrics.test_perplexity": "Test perplexity (lower is better)",
    "metrics.val_perplexity": "Val perplexity (lower is better)",
}


def words(items: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def natural_key(text) -> tuple:
    """A sort key in which numbers compare as numbers: "lora r=16" after "lora r=4" (as strings it comes first).
    The report's and the paper's tables, figures and searches list configurations in this order."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:e-?\d+)?)", str(text))
    return tuple(float(part) if i % 2 else part for i, part in enumerate(parts))


def display_name(name, method=None, labels=None):
    """The name a table or figure shows for a configuration (variant) or method.

    labels (a study's report.labels) may name the configuration itself, or its method:
    {"lora": "LoRA"} shows "lora r=8" as "LoRA r=8". Without a label the name is unchanged.
    """
    name = str(name)
    labels = labels or {}
    if name in labels:
        return labels[name]
    method = name.split(" ", 1)[0] if method is None else str(method)
    if method in labels and (name == method or name.startswith(method + " ")):
        return labels[method] + name[len(method) :]
    return name


def markdown_name(name, method=None, labels=None) -> str:
    """``display_name`` as Markdown text (``escape.markdown_text``): a configuration's name or label printed in
    report.md's prose and tables as itself, a received study's "<img>" or "|" included."""
    from peftlab.analysis.results.escape import markdown_text

    return markdown_text(display_name(name, method, labels))


def bridge_names(done: pd.DataFrame, labels: dict | None = None) -> list[str]:
    """The PEFT types the completed runs ran through the bridge (``method.name: peft``), one per configuration
    in the order of the runs: the configuration's label (report.labels) where the study gives one, else its
    ``method.peft_type``."""
    if "method" not in done or "config.method.peft_type" not in done:
        return []
    runs = done[done["method"] == "peft"]
    names = {}
    for variant, peft_type in zip(runs["variant"], runs["config.method.peft_type"]):
        names.setdefault(variant, (labels or {}).get(variant) or str(peft_type))
    return list(names.values())


def tied(a: float, b: float, step: float = 0.0) -> bool:
    """Whether two means are a tie: they differ by less than ``step`` (one test example, ``resolution``) or
    only by float rounding."""
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return True
    return abs(a - b) < step * (1 - 1e-9)
