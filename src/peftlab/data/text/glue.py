"""GLUE's classification tasks (``data.name: glue/<task>``) as GLUE's download script writes them:
``data.root/<SST-2|MRPC|RTE|CoLA|QNLI>/{train,dev,test}.tsv``, read as GLUE reads them (tab-separated,
no quoting: ``csv.reader(f, delimiter="\\t", quotechar=None)``).

GLUE's test labels are hidden, so dev.tsv is the test split, validation is carved from train.tsv
(data.val_fraction, data.split_seed) and test.tsv is never read. Class names and their order are
those of HF's ``glue`` dataset (RTE and QNLI: entailment = 0, not_entailment = 1).

Without data.root and with ``data.download: true`` the task comes from the HF hub's GLUE dataset
(``nyu-mll/glue``: ``<task>/{train,validation,test}-*.parquet``), downloaded into the hub cache or,
with ``HF_HUB_OFFLINE=1``, read from it: its validation split is the test split, as dev.tsv is.
Parquet files hold data, never code (pyarrow reads them).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftlab.data.opening import read_data_file
from peftlab.data.text.files import TextSamples, TextSplits, carve_val, check_fields, read_text, table_rows
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line


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
MAX_PARQUET_BYTES = 1 << 30  # GLUE's largest split file (QQP's train) is some 40 MB
HUB_REPO = "nyu-mll/glue"  # HF's GLUE dataset repository: <task>/<split>-NNNNN-of-NNNNN.parquet
# the text columns of each task in the hub's files (its label column is "label", 0/1 in class order)
HUB_TEXT = {
    "sst2": ("sentence",),
    "cola": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
}
# the metric each task is reported by on GLUE's leaderboard (MRPC: F1 of the positive class, and accuracy)
GLUE_METRIC = {"sst2": "accuracy", "mrpc": "f1", "rte": "accuracy", "cola": "matthews", "qnli": "accuracy"}


def read_glue(task_name: str, root: str | None, val_fraction: float, split_seed: int, trainval: bool) -> TextSplits:
    """A GLUE task's train.tsv (minus val) and dev.tsv (as the test split); without ``root``, the hub's
    train and validation parquet files (``read_hub_glue``)."""
    task = GLUE[task_name]
    sha256 = {}
    if root is None:
        directory, (train, test), names = read_hub_glue(task_name, sha256)
    else:
        directory = glue_folder(task, Path(root).expanduser())
        train, sha256[f"{task.folder}/train.tsv"] = read_glue_tsv(task, directory / "train.tsv")
        test, sha256[f"{task.folder}/dev.tsv"] = read_glue_tsv(task, directory / "dev.tsv")
        names = ("train.tsv", "dev.tsv", "test.tsv")
    train, val = carve_val(train, 0.0 if trainval else val_fraction, split_seed)
    name = f"GLUE {task.folder}"
    sources = {
        "train": f"{name} {names[0]} minus val",
        "val": f"{100 * val_fraction:.3g}% of {name} {names[0]} (seed {split_seed})",
        "test": f"{name} {names[1]} (the test labels are hidden)",
    }
    if trainval:
        sources["train"], sources["val"] = f"{name} {names[0]}", "none: data.trainval trains on train + val"
    note = (
        f"GLUE's test labels are hidden: {names[1]} is the test split, val is carved from {names[0]}, "
        f"{names[2]} is unread"
    )
    return TextSplits(
        {"train": train, "val": val, "test": test}, list(task.class_names), str(directory), sha256, [note], sources
    )


def read_hub_glue(task_name: str, sha256: dict) -> tuple[Path, tuple[TextSamples, TextSamples], tuple[str, ...]]:
    """(snapshot folder, (train, validation) samples, their names) of a task of the hub's GLUE dataset;
    each file's SHA-256 goes into ``sha256``."""
    from peftlab.utils.hub_cache import hub_dataset_dir

    where = f"data.name='glue/{task_name}' (data.download: true, no data.root)"
    folder = hub_dataset_dir(HUB_REPO, [f"{task_name}/*.parquet"], where)
    commit = folder.name
    samples = []
    for split in ("train", "validation"):
        files = sorted((folder / task_name).glob(f"{split}-*.parquet"))
        if not files:
            raise DataError(
                f"{where}: the hub snapshot {folder} of {HUB_REPO} holds no {task_name}/{split}-*.parquet: "
                f"expected the layout of {HUB_REPO}"
            )
        samples.append(read_glue_parquet(task_name, files, sha256))
    names = tuple(f"{task_name}/{split} of {HUB_REPO}@{commit[:12]}" for split in ("train", "validation", "test"))
    return folder, (samples[0], samples[1]), names


def read_glue_parquet(task_name: str, files: list[Path], sha256: dict) -> TextSamples:
    """The samples of one split's parquet files; a missing column or a label other than 0 or 1 is one DataError."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [*HUB_TEXT[task_name], "label"]
    texts, labels = [], []
    for path in files:
        data = read_data_file(path, MAX_PARQUET_BYTES, "a GLUE parquet file")
        sha256[f"{task_name}/{path.name}"] = hashlib.sha256(data).hexdigest()
        try:
            table = pq.read_table(pa.BufferReader(data), columns=columns).to_pydict()
        except Exception as err:  # a missing column, a file that is not parquet
            raise DataError(
                f"{path}: not {HUB_REPO}'s {task_name} parquet with columns {columns} ({one_line(err)[:200]})"
            ) from None
        for i, label in enumerate(table["label"]):
            if label not in (0, 1) or any(not isinstance(table[c][i], str) for c in HUB_TEXT[task_name]):
                raise DataError(f"{path} row {i}: label {label!r} or a text that is not a string: expected 0 or 1")
            texts.append(tuple(table[c][i] for c in HUB_TEXT[task_name]))
            labels.append(label)
    return TextSamples(texts, np.array(labels, dtype=np.int64))


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
        number, header = next(rows)
        if tuple(header) != task.columns:
            raise DataError(
                f"{path} line {number}: header {'|'.join(header)[:200]!r}: expected GLUE's {task.folder} header "
                f"{'|'.join(task.columns)!r}"
            )
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
    if not texts:
        raise DataError(f"{path} line 2: no rows after the header")
    return TextSamples(texts, np.array(labels, dtype=np.int64)), sha256
