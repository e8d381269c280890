"""What a text dataset reader returns (``TextSamples``, ``TextSplits``) and the readers of its files:
JSON Lines, and CSV / TSV with a header row (or GLUE's unquoted TSVs).

A file is opened through `opening.open_data_file` (regular files only), read whole up to
MAX_TEXT_BYTES, hashed (SHA-256 of the bytes read) and decoded as UTF-8 (a leading byte order mark
is dropped: MRPC's files and spreadsheets' CSVs carry one). A bad line is one DataError line naming
the file and the line. JSON is parsed with `json.loads` and tables with the csv module: nothing in a
file can run code.
"""

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peftlab.data.opening import check_size_held, open_data_file
from peftlab.data.splits import split_train_val
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line

CSV_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")  # a line as csv reads it, with its ending
MAX_TEXT_BYTES = 512 << 20  # GLUE's largest train.tsv (MNLI) is about 80 MB


@dataclass
class TextSamples:
    """One split: each item a 1-tuple (a sentence) or a 2-tuple (a sentence pair), and its label."""

    texts: list[tuple[str, ...]]
    labels: np.ndarray  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> "TextSamples":
        return TextSamples([self.texts[i] for i in index], self.labels[index])


@dataclass
class TextSplits:
    """A text dataset's train / val / test before data.classes and the subsets."""

    splits: dict[str, TextSamples]
    class_names: list[str]
    source: str
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> hex digest of the bytes read
    notes: list[str] = field(default_factory=list)
    split_sources: dict[str, str] = field(default_factory=dict)
    task: dict = field(default_factory=dict)  # what the folder's manifest.json says it holds (fortunes.task_record)


def carve_val(samples: TextSamples, fraction: float, seed: int) -> tuple[TextSamples, TextSamples]:
    """(train, val): a seeded ``fraction`` of ``samples`` is val (`splits.split_train_val`)."""
    train_index, val_index = split_train_val(len(samples), fraction, seed)
    return samples.take(train_index), samples.take(val_index)


def read_text(path: Path) -> tuple[str, str]:
    """(text, sha256) of a UTF-8 file of the dataset, at most MAX_TEXT_BYTES."""
    with open_data_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_TEXT_BYTES:
            raise DataError(f"{path}: {size:,} bytes, more than a text file may hold ({MAX_TEXT_BYTES:,})")
        try:
            raw = f.read(size + 1)  # not MAX_TEXT_BYTES + 1: read(n) allocates n bytes first
        except OSError as err:
            raise DataError(f"cannot read {path}: {one_line(err)}") from None
    check_size_held(path, size, len(raw))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start})") from None
    return text, hashlib.sha256(raw).hexdigest()


def text_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of ``text`` split on "\n" only (JSON strings may hold U+2028), one at a time:
    a list of every line of a 512 MB file of short lines would hold gigabytes."""
    start, number = 0, 1
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield number, text[start:end]
        start, number = end + 1, number + 1


def jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line, parsed as it is reached; every line must be one JSON object."""
    found = False
    for number, line in text_lines(text):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as err:
            raise DataError(f"{path} line {number}: not a JSON line ({one_line(err)[:120]})") from None
        if not isinstance(value, dict):
            raise DataError(f"{path} line {number}: a JSON {type(value).__name__}: expected one object per line")
        found = True
        yield number, value
    if not found:
        raise DataError(f"{path} line 1: no JSON lines: expected one object per line")


def table_rows(path: Path, text: str, delimiter: str, quoting: bool = True) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank row of a CSV / TSV file, the header row included, parsed as it
    is reached. ``quoting=False`` reads as GLUE's TSVs are read: a quote character is text like any other."""
    options = {} if quoting else {"quoting": csv.QUOTE_NONE, "quotechar": None}
    lines = (match.group() for match in CSV_LINE.finditer(text))  # one at a time: io.StringIO holds 4 bytes a character
    reader = csv.reader(lines, delimiter=delimiter, strict=True, **options)
    number, found = 1, False
    try:
        for fields in reader:
            if fields:
                found = True
                yield number, fields
            number = reader.line_num + 1  # a quoted field may span lines: a row starts after the last one
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: not a {delimiter_name(delimiter)} row ({err})") from None
    if not found:
        raise DataError(f"{path} line 1: no rows: expected a {delimiter_name(delimiter)} table")


def delimiter_name(delimiter: str) -> str:
    return "TSV" if delimiter == "\t" else "CSV"


def check_fields(path: Path, number: int, fields: list[str], header: list[str]) -> None:
    if len(fields) != len(header):
        raise DataError(
            f"{path} line {number}: {len(fields)} fields: expected {len(header)} as the header "
            f"({', '.join(header)[:200]}) has"
        )
