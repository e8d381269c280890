"""GLUE's classification tasks (``data.name: glue/<task>``) as GLUE's download script writes them:
``data.root/<SST-2|MRPC|RTE|CoLA|QNLI>/{train,dev,test}.tsv``, read as GLUE reads them (tab-separated,
no quoting: ``csv.reader(f, delimiter="\\t", quotechar=None)``).

GLUE's test labels are hidden, so dev.tsv is the test split, validation is carved from train.tsv
(data.val_fraction, data.split_seed) and test.tsv is never read. Class names and their order are
those of HF's ``glue`` dataset (RTE and QNLI: entailment = 0, not_entailment = 1).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftlab.data.text_files import TextSamples, TextSplits, carve_val, check_fields, read_text, table_rows
from peftlab.errors import DataError


@dataclass(frozen=True)
class GlueTask:
    folder: str  # the task's folder in GLUE's layout
    columns: tuple[str, ...]  # the header row (CoLA has none: its columns as GLUE documents them)
    has_header: bool
    text: tuple[str, ...]  # one column, or a sentence pair's two
    label: str
    values: tuple[str, ...]  # the labels as written, in class order
    class_names: tuple[str, ...]


BINARY = ("0", "1")
ENTAILMENT = ("entailment", "not_entailment")
GLUE = {
    "sst2": GlueTask("SST-2", ("sentence", "label"), True, ("sentence",), "label", BINARY, ("negative", "positive")),
    "cola": GlueTask(
        "CoLA",
        ("source", "label", "original_label", "sentence"),
        False,
        ("sentence",),
        "label",
        BINARY,
        ("unacceptable", "acceptable"),
    ),
    "mrpc": GlueTask(
        "MRPC",
        ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        True,
        ("#1 String", "#2 String"),
        "Quality",
        BINARY,
        ("not_equivalent", "equivalent"),
    ),
    "rte": GlueTask(
        "RTE",
        ("index", "sentence1", "sentence2", "label"),
        True,
        ("sentence1", "sentence2"),
        "label",
        ENTAILMENT,
        ENTAILMENT,
    ),
    "qnli": GlueTask(
        "QNLI",
        ("index", "question", "sentence", "label"),
        True,
        ("question", "sentence"),
        "label",
        ENTAILMENT,
        ENTAILMENT,
    ),
}
# the metric each task is reported by on GLUE's leaderboard (MRPC: F1 of the positive class, and accuracy)
GLUE_METRIC = {"sst2": "accuracy", "mrpc": "f1", "rte": "accuracy", "cola": "matthews", "qnli": "accuracy"}


def read_glue(task_name: str, root: str, val_fraction: float, split_seed: int, trainval: bool) -> TextSplits:
    """A GLUE task's train.tsv (minus val) and dev.tsv (as the test split)."""
    task = GLUE[task_name]
    directory = glue_folder(task, Path(root).expanduser())
    sha256 = {}
    train, sha256[f"{task.folder}/train.tsv"] = read_glue_tsv(task, directory / "train.tsv")
    test, sha256[f"{task.folder}/dev.tsv"] = read_glue_tsv(task, directory / "dev.tsv")
    train, val = carve_val(train, 0.0 if trainval else val_fraction, split_seed)
    name = f"GLUE {task.folder}"
    sources = {
        "train": f"{name} train.tsv minus val",
        "val": f"{val_fraction:.0%} of {name} train.tsv (seed {split_seed})",
        "test": f"{name} dev.tsv (the test labels are hidden)",
    }
    if trainval:
        sources["train"], sources["val"] = f"{name} train.tsv", "none: data.trainval trains on train + val"
    note = "GLUE's test labels are hidden: dev.tsv is the test split, val is carved from train.tsv, test.tsv is unread"
    return TextSplits(
        {"train": train, "val": val, "test": test}, list(task.class_names), str(directory), sha256, [note], sources
    )


def glue_folder(task: GlueTask, root: Path) -> Path:
    """``root/<task folder>``, or ``root`` itself when it is the task's folder."""
    if (root / task.folder).is_dir():
        return root / task.folder
    if root.name == task.folder and root.is_dir():
        return root
    raise DataError(
        f"data.root={root} holds no {task.folder} folder: expected GLUE's layout {root}/{task.folder}/"
        "{train,dev}.tsv (as GLUE's download_glue_data.py writes it)"
    )


def read_glue_tsv(task: GlueTask, path: Path) -> tuple[TextSamples, str]:
    """(samples, sha256) of one of the task's TSV files; a row that is not the release's is one DataError."""
    text, sha256 = read_text(path)
    rows = table_rows(path, text, "\t", quoting=False)
    if task.has_header:
        number, header = rows.pop(0)
        if tuple(header) != task.columns:
            raise DataError(
                f"{path} line {number}: header {'|'.join(header)[:200]!r}: expected GLUE's {task.folder} header "
                f"{'|'.join(task.columns)!r}"
            )
        if not rows:
            raise DataError(f"{path} line 2: no rows after the header")
    text_at = [task.columns.index(c) for c in task.text]
    label_at = task.columns.index(task.label)
    texts, labels = [], []
    for number, fields in rows:
        check_fields(path, number, fields, list(task.columns))
        if fields[label_at] not in task.values:
            raise DataError(
                f"{path} line {number}: label {fields[label_at][:80]!r}: expected one of {', '.join(task.values)}"
            )
        texts.append(tuple(fields[i] for i in text_at))
        labels.append(task.values.index(fields[label_at]))
    return TextSamples(texts, np.array(labels, dtype=np.int64)), sha256
