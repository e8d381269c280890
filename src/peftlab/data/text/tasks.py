"""Text data: ``data.name: text`` (a folder of files), ``instructions`` (Alpaca's rows, a causal LM's) and
``glue/<task>`` (peftlab.data.text.glue), as `TextSamples` splits and a `DataInfo`. A causal LM's data
(``language_model``) has no labels: every label 0, no classes.

``data.name: text``: ``data.root`` holds ``train.<ext>`` and ``test.<ext>``, and optionally
``validation.<ext>`` or ``val.<ext>``, ext one of jsonl, csv, tsv (one format per folder). A JSONL
line is one object; a CSV or TSV file has a header row. The text is in ``data.text_column``, a
pair's second text in ``data.text_pair_column``, the label in ``data.label_column``: all integers
(classes "0".."k-1", k one more than train's largest) or all strings (classes: train's distinct
labels, sorted). Without a validation file, val is carved from train (none with data.trainval,
which trains on train + the validation file).

Then, as `build.load_splits` does for images: data.classes, and the class-stratified subsets.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from peftlab.config.checks import TEXT_DATASET_NAMES
from peftlab.data.readers.records import DataInfo
from peftlab.data.splits import select_and_subset
from peftlab.data.text.files import (
    TextSamples,
    TextSplits,
    carve_val,
    check_fields,
    jsonl_rows,
    read_text,
    table_rows,
)
from peftlab.data.text.fortunes import task_record
from peftlab.data.text.glue import read_glue
from peftlab.utils.errors import DataError

__all__ = ["TextSamples", "is_text_dataset", "load_text_splits"]

EXTENSIONS = ("jsonl", "csv", "tsv")
INSTRUCTION_COLUMNS = ("instruction", "input", "output")  # Alpaca's rows (data.name: instructions)
SPLIT_FILES = {"train": ("train",), "val": ("validation", "val"), "test": ("test",)}
MAX_CLASSES = 100_000
DIGITS = re.compile("[0-9]+")
LONG_NUMBER = re.compile("[0-9]{10,}")


def is_text_dataset(name: str) -> bool:
    return name in TEXT_DATASET_NAMES


def load_text_splits(cfg, language_model: bool = False) -> tuple[dict[str, TextSamples], DataInfo]:
    """Read and check the files of `cfg.name` (text, instructions or glue/<task>); the train/val/test samples
    and their info. ``language_model`` (a causal LM's data; always for instructions): no labels (all 0, no
    classes); a text item is (text,), an instruction item (instruction, input, output)."""
    language_model = language_model or cfg.name == "instructions"
    if cfg.name.startswith("glue/"):
        if language_model:
            raise DataError(f"data.name={cfg.name!r} is a classification task: expected text or instructions")
        read = read_glue(cfg.name.removeprefix("glue/"), cfg.root, cfg.val_fraction, cfg.split_seed, cfg.trainval)
    else:
        read = read_text_folder(cfg, language_model)
    splits, class_names, notes = read.splits, read.class_names, list(read.notes)

    if cfg.classes is not None and language_model:
        raise DataError(f"data.classes={list(cfg.classes)}: a language model's data has no classes: expected null")
    class_names = select_and_subset(splits, class_names, cfg, notes)

    for split in ("train", "test"):
        if len(splits[split]) == 0:
            raise DataError(f"{cfg.name} from {read.source}: the {split} split is empty after data.classes / subsets")
    info = DataInfo(
        name=cfg.name,
        source=read.source,
        num_classes=len(class_names),
        class_names=list(class_names),
        split_sizes={split: len(samples) for split, samples in splits.items()},
        sha256=dict(read.sha256),
        notes=notes,
        split_sources=dict(read.split_sources),
        task=dict(read.task),
    )
    return splits, info


def find_text_files(root: Path) -> dict[str, Path]:
    """split -> its file in ``root``: train and test, and val where a validation file is there."""
    if not root.is_dir():
        raise DataError(f"data.root={root} does not exist or is not a folder: expected a folder of text files")
    found = {}
    for split, stems in SPLIT_FILES.items():
        candidates = [
            root / f"{stem}.{ext}"
            for stem in stems
            for ext in EXTENSIONS
            if (root / f"{stem}.{ext}").exists() or (root / f"{stem}.{ext}").is_symlink()
        ]
        if len(candidates) > 1:
            raise DataError(f"{root}: {' and '.join(p.name for p in candidates)} are both {split} files: expected one")
        if candidates:
            found[split] = candidates[0]
        elif split != "val":
            raise DataError(f"{root}: no {split} file: expected {' or '.join(f'{split}.{e}' for e in EXTENSIONS)}")
    formats = sorted({path.suffix for path in found.values()})
    if len(formats) > 1:
        raise DataError(f"{root}: files of formats {', '.join(formats)}: expected one format (jsonl, csv or tsv)")
    return found


def read_text_folder(cfg, language_model: bool = False) -> TextSplits:
    root = Path(cfg.root).expanduser()
    files = find_text_files(root)
    columns = [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    if cfg.name == "instructions":
        columns = list(INSTRUCTION_COLUMNS)
    label_column = None if language_model else cfg.label_column
    sha256, texts, raw_labels = {}, {}, {}
    for split, path in files.items():
        texts[split], raw_labels[split], sha256[path.name] = read_text_file(path, columns, label_column)
    if language_model:
        labels, class_names = {split: np.zeros(len(texts[split]), dtype=np.int64) for split in files}, []
    else:
        labels, class_names = encode_labels(files, raw_labels)
    read = {split: TextSamples(texts[split], labels[split]) for split in files}

    train, test = read["train"], read["test"]
    sources = {"train": str(files["train"]), "test": str(files["test"])}
    if "val" in files and cfg.trainval:
        train = TextSamples(train.texts + read["val"].texts, np.concatenate([train.labels, read["val"].labels]))
        val = TextSamples([], np.array([], dtype=np.int64))
        sources["train"] += f" + {files['val']}"
    elif "val" in files:
        val, sources["val"] = read["val"], str(files["val"])
    else:
        train, val = carve_val(train, 0.0 if cfg.trainval else cfg.val_fraction, cfg.split_seed)
        if not cfg.trainval:
            sources["train"] += " minus val"
            sources["val"] = f"{100 * cfg.val_fraction:.3g}% of {files['train']} (seed {cfg.split_seed})"
    if cfg.trainval:
        sources["val"] = "none: data.trainval trains on train + val"
    splits = {"train": train, "val": val, "test": test}
    split_sources = {s: sources[s] for s in ("train", "val", "test")}
    return TextSplits(splits, class_names, str(root), sha256, [], split_sources, task_record(root))


def read_text_file(path: Path, columns: list[str], label_column: str | None) -> tuple[list, list, str]:
    """(texts, labels as written, sha256) of a JSONL, CSV or TSV file; labels are (line, value) pairs, none
    without a ``label_column``. An instruction's ``input`` may be missing (Alpaca's rows without one)."""
    text, sha256 = read_text(path)
    wanted = [*columns, *([label_column] if label_column else [])]
    optional = {"input"} if columns == list(INSTRUCTION_COLUMNS) else set()
    rows = jsonl_rows(path, text) if path.suffix == ".jsonl" else table_dicts(path, text, wanted, optional)
    texts, labels = [], []
    for number, row in rows:
        for column in [c for c in wanted if c not in optional]:
            if column not in row:
                raise DataError(f"{path} line {number}: no key {column!r}: the object has {', '.join(row)[:200]}")
        item = tuple(row.get(c, "") for c in columns)
        if not all(isinstance(t, str) for t in item):
            bad = next(c for c in columns if not isinstance(row[c], str))
            raise DataError(f"{path} line {number}: {bad!r} is a {type(row[bad]).__name__}: expected a string")
        if label_column is None:
            texts.append(item)
            continue
        label = row[label_column]
        if type(label) is not int and not isinstance(label, str):  # no bool, no float
            raise DataError(f"{path} line {number}: label {type(label).__name__}: expected an integer or a string")
        texts.append(item)
        labels.append((number, label))
    return texts, labels, sha256


def table_dicts(path: Path, text: str, wanted: list[str], optional: set[str]) -> Iterator[tuple[int, dict]]:
    """(line number, {column: field}) of each row after a CSV or TSV file's header, checked as it is reached."""
    rows = table_rows(path, text, "\t" if path.suffix == ".tsv" else ",")
    number, header = next(rows)
    for column in [c for c in wanted if c not in optional]:
        if column not in header:
            raise DataError(f"{path} line {number}: no column {column!r}: the header has {', '.join(header)[:200]}")
    empty = True
    for number, fields in rows:
        check_fields(path, number, fields, header)
        empty = False
        yield number, dict(zip(header, fields, strict=True))
    if empty:
        raise DataError(f"{path} line {number + 1}: no rows after the header")


def encode_labels(files: dict[str, Path], raw: dict[str, list]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Labels as 0..k-1 and the class names: integers as they are, strings by their sorted order in train.
    A JSON label is an integer when it is a JSON number, a CSV or TSV label when it is written in digits."""
    jsonl = files["train"].suffix == ".jsonl"

    def integer(value) -> int | None:
        if jsonl:
            return value if type(value) is int else None
        return int(value) if DIGITS.fullmatch(value) else None

    for split, pairs in raw.items():  # thousands of digits: no class, and more than int() parses
        if line := next((line for line, v in pairs if isinstance(v, str) and LONG_NUMBER.fullmatch(v)), None):
            raise DataError(
                f"{files[split]} line {line}: a label of more than 9 digits: expected one in 0..{MAX_CLASSES - 1}"
            )
    train = [value for _, value in raw["train"]]
    if all(integer(v) is not None for v in train):
        kind, key = "integers", integer
        for line, value in raw["train"]:
            if not 0 <= integer(value) < MAX_CLASSES:
                raise DataError(
                    f"{files['train']} line {line}: label {str(value)[:40]}: expected one in 0..{MAX_CLASSES - 1}"
                )
        class_names = [str(i) for i in range(max(integer(v) for v in train) + 1)]
        index = {i: i for i in range(len(class_names))}
        check_classes_trained(files["train"], raw["train"], integer, len(class_names))
    else:
        kind, key = "strings", lambda value: value if isinstance(value, str) else None
        class_names = sorted({v for v in train if isinstance(v, str)})
        index = {name: i for i, name in enumerate(class_names)}
    shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
    labels = {}
    for split, pairs in raw.items():
        encoded = []
        for line, value in pairs:
            if (class_index := index.get(key(value))) is None:
                raise DataError(
                    f"{files[split]} line {line}: label {str(value)[:80]!r} is not a class of "
                    f"{files['train'].name} ({kind}: {shown})"
                )
            encoded.append(class_index)
        labels[split] = np.array(encoded, dtype=np.int64)
    return labels, class_names


def check_classes_trained(path: Path, pairs: list, integer, num_classes: int) -> None:
    """Integer labels' class count K (one more than train's largest) is no more than twice the labels train
    holds: a label such as 15000 among labels 0..9 would size the head and every per-class count by it, while a
    class or two without an example is a real dataset's."""
    seen = {integer(value) for _, value in pairs}
    if num_classes > 2 * len(seen):
        line = next(line for line, value in pairs if integer(value) == num_classes - 1)
        raise DataError(
            f"{path} line {line}: label {num_classes - 1} makes {num_classes:,} classes, but it holds {len(seen):,} "
            "labels: expected labels 0..K-1, at least half of the classes with a training example"
        )
