"""A study's per-class test counts as tables (result.json's ``per_class``: peftlab.training.run_result.PerClass),
each class named as its run's data named it (``provenance.data.class_names``).

``load_per_class(study_dir)``: the completed runs' counts, one row per run and class, their confusion matrices
where recorded, and the completed runs without a usable record (runs of a version before the record, or a damaged
one: named, never read). A causal LM's record is null (its "classes" are its vocabulary), as is a run's that was
not tested (train.test false): such a run is neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from peftlab.analysis.results.load import read_result, run_dirs
from peftlab.study.records import read_spec
from peftlab.training.run_result import PerClass, status_of

COUNTS = ("labelled", "predicted", "correct")


@dataclass
class ClassCounts:
    """What ``load_per_class`` reads."""

    # one row per run and class: run_id, variant, method, seed, dataset (config.data.name), classes (the run's
    # class names joined by newlines: runs of the same classes share it), index, name, labelled, predicted, correct
    runs: pd.DataFrame
    confusion: dict[str, np.ndarray] = field(default_factory=dict)  # run_id -> true x predicted counts, where recorded
    unrecorded: list[str] = field(default_factory=list)  # completed runs whose result.json has no per_class
    damaged: list[str] = field(default_factory=list)  # completed runs whose per_class is no PerClass


def counts_of(record: object) -> PerClass | None:
    """``record`` (result.json's per_class) when it is a sound PerClass: three lists of one length of non-negative
    integers, and a matrix of that many rows of that many of them or null; else None."""

    def counts(values: object) -> bool:
        return isinstance(values, list) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
        )

    if not isinstance(record, dict) or not all(counts(record.get(key)) for key in COUNTS):
        return None
    classes = len(record["labelled"])
    if classes == 0 or any(len(record[key]) != classes for key in COUNTS):
        return None
    if any(c > n for c, n in zip(record["correct"], record["labelled"])):
        return None
    matrix = record.get("confusion")
    if matrix is not None and not (
        isinstance(matrix, list)
        and len(matrix) == classes
        and all(counts(row) and len(row) == classes for row in matrix)
    ):
        return None
    return PerClass(**{key: record[key] for key in COUNTS}, confusion=matrix)


def causal_lm(result: dict) -> bool:
    """Whether the run trained a causal LM (config model.task), whose "classes" are its vocabulary."""
    model = (result.get("config") or {}).get("model")
    return isinstance(model, dict) and model.get("task") == "causal-lm"


def class_names(provenance: object, classes: int) -> list[str]:
    """The run's names of its ``classes`` classes (provenance.data.class_names); a class it did not name (a head
    wider than the data, a run that recorded none) is shown as its index."""
    data = provenance.get("data") if isinstance(provenance, dict) else None
    named = data.get("class_names") if isinstance(data, dict) else None
    named = named if isinstance(named, list) else []
    return [str(named[i]) if i < len(named) and isinstance(named[i], str) else str(i) for i in range(classes)]


def load_per_class(study_dir: str | Path) -> ClassCounts:
    """The per-class test counts of the study's completed runs (see the module's docstring)."""
    rows, found = [], ClassCounts(pd.DataFrame())
    for run_dir in run_dirs(Path(study_dir)):
        result = read_result(run_dir)
        if status_of(result) != "completed":
            continue
        spec = read_spec(run_dir)
        if result.get("per_class") is None and ("per_class" in result or causal_lm(result)):
            continue  # nothing to count: a causal LM (also one of a version before the record), or a run not tested
        if "per_class" not in result:
            found.unrecorded.append(spec["run_id"])
            continue
        record = counts_of(result["per_class"])
        if record is None:
            found.damaged.append(spec["run_id"])
            continue
        names = class_names(result.get("provenance"), len(record["labelled"]))
        dataset = ((result.get("config") or {}).get("data") or {}).get("name")
        run = {"run_id": spec["run_id"], "variant": spec["variant"], "method": spec["method"], "seed": spec["seed"]}
        run |= {"dataset": dataset if isinstance(dataset, str) else None, "classes": "\n".join(names)}
        for index, name in enumerate(names):
            rows.append({**run, "index": index, "name": name, **{key: record[key][index] for key in COUNTS}})
        if record["confusion"] is not None:
            found.confusion[spec["run_id"]] = np.array(record["confusion"], dtype=np.int64)
    columns = ["run_id", "variant", "method", "seed", "dataset", "classes", "index", "name", *COUNTS]
    found.runs = pd.DataFrame(rows, columns=columns)
    return found
