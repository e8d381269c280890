"""Readers of datasets given as lists of files: a generic file list (``data.name: filelist``),
VTAB-1k's image-folder release (``vtab1k/<task>``) and FGVC (``fgvc/<name>``: VPT's json split
files, or CUB-200-2011's own split files where a user has no json).

A list names image files relative to a base folder with an integer label each. Every entry is
checked before anything trains, and a bad one is one DataError line naming the list file and its
line: a missing file, a label outside the dataset's classes, an image listed twice (as the same
text, through ``..`` or through a symlink: real paths are compared), a path that leaves the base
folder, a list with Windows line endings. Lists are read a line at a time and json splits an entry
at a time, each entry checked as it is read, so what a list costs in memory grows with its valid
entries, not with its size. A list reader returns the files as ``Samples`` (paths, decoded later);
``ListedSplits`` holds the splits a dataset's lists define.
"""

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peftlab.config.suites import FGVC_LISTS, FGVC_TASKS, VTAB1K_LISTS, VTAB1K_TASKS
from peftlab.data.opening import check_data_file, open_data_file, read_data_file
from peftlab.data.readers.records import Samples
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line

MAX_LIST_BYTES = 256 << 20  # ImageNet's 1.28 M training lines take about 60 MB
MAX_LINE_BYTES = 8192  # a path within Linux's PATH_MAX (4096) and a label
# VPT's largest json (NABirds' train.json) is about 2 MB; a json split is parsed from memory, so it is held
# to less than a list, which is streamed
MAX_JSON_SPLIT_BYTES = 64 << 20
MAX_ID_FILE_BYTES = 16 << 20  # CUB-200-2011's images.txt is about 0.6 MB
MAX_LABEL = 1_000_000
MAX_PATH_CHARS = 4096  # Linux's PATH_MAX
# where FGVC's image paths start, inside the dataset folder (VPT's json_dataset.py)
FGVC_IMAGE_DIRS = {"cub": "images", "nabirds": "images", "dogs": "Images", "cars": ".", "flowers": "."}
CUB_OFFICIAL = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
JSON_SPACE = re.compile(r"[ \t\n\r]*")
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


@dataclass
class ListedSplits:
    """A dataset's splits as its lists give them; ``lists`` names the file each split came from."""

    train: Samples
    val: Samples | None  # None: no validation list (val is carved from train)
    test: Samples
    trainval: Samples | None  # train and val together as the dataset lists them (None: train + val)
    num_classes: int
    source: str
    lists: dict[str, str] = field(default_factory=dict)  # split -> list file (or what it was carved from)
    class_names: list[str] | None = None


def list_lines(path: Path, limit: int = MAX_LIST_BYTES) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a list file, read a line at a time: UTF-8, Unix line endings,
    lines of at most MAX_LINE_BYTES and at most ``limit`` bytes in all."""
    with open_data_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise DataError(f"{path}: {size:,} bytes, more than a list file may hold ({limit:,})")
        total, number = 0, 0
        while True:
            try:
                raw = f.readline(MAX_LINE_BYTES + 1)
            except OSError as err:
                raise DataError(f"cannot read {path}: {one_line(err)}") from None
            if not raw:
                return
            number += 1
            total += len(raw)
            if total > limit:
                raise DataError(f"{path}: more than {limit:,} bytes, more than a list file may hold")
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(
                    f"{path} line {number}: more than {MAX_LINE_BYTES:,} bytes: expected 'relative/path label'"
                )
            if b"\r" in raw:
                raise DataError(
                    f"{path} line {number}: a carriage return (Windows line endings): expected Unix line "
                    "endings (convert with dos2unix or `sed -i 's/\\r$//'`)"
                )
            try:
                line = raw.decode("utf-8").removesuffix("\n")
            except UnicodeDecodeError as err:
                raise DataError(f"{path} line {number} is not UTF-8 text (byte {err.start} of the line)") from None
            yield number, line


def checked_image(list_path: Path, where: str, base: Path, relative: str) -> tuple[Path, str]:
    """(``base / relative``, its real path) once checked: inside ``base`` (symlinks followed) and a regular
    file. A symlink loop or a name the system refuses (too long) is one line, as a missing file is."""
    if not relative or "\0" in relative or os.path.isabs(relative) or len(relative) > MAX_PATH_CHARS:
        raise DataError(f"{list_path} {where}: {relative[:200]!r} is not a path relative to {base}")
    path = base / relative
    real = os.path.realpath(path)  # a loop or a long name is left as it is here, and refused by stat below
    if not Path(real).is_relative_to(os.path.realpath(base)):
        raise DataError(f"{list_path} {where}: {relative[:200]!r} leaves {base}: expected a path inside it")
    try:
        os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{list_path} {where}: missing file {str(path)[:300]}") from None
    except OSError as err:  # a symlink loop, a name longer than the system allows
        raise DataError(f"{list_path} {where}: {relative[:200]!r}: {err.strerror or one_line(err)[:200]}") from None
    check_data_file(path)
    return path, real


def parse_label(list_path: Path, where: str, text: str, num_classes: int | None) -> int:
    """A label written in ASCII digits: not '٣' (which int() reads as 3), nor thousands of digits (which it refuses)."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_LABEL)) or int(text) > MAX_LABEL:
        raise DataError(f"{list_path} {where}: label {text[:40]!r} is not an integer in 0..{MAX_LABEL:,}")
    label = int(text)
    if num_classes is not None and label >= num_classes:
        raise DataError(
            f"{list_path} {where}: label {label} is out of range: expected 0..{num_classes - 1} ({num_classes} classes)"
        )
    return label


def to_samples(paths: list[Path], labels: list[int]) -> Samples:
    return Samples(np.array([str(p) for p in paths], dtype=str), np.array(labels, dtype=np.int64))


class ListedFiles:
    """The entries of one list as they are read: each image once, by its real path."""

    def __init__(self, list_path: Path, base: Path):
        self.list_path, self.base = list_path, base
        self.paths: list[Path] = []
        self.labels: list[int] = []
        self.first: dict[str, tuple[str, str]] = {}  # real path -> (where, as listed)
        self.label_at: dict[int, str] = {}  # label -> where it is first listed

    def add(self, where: str, relative: str, label: int) -> None:
        path, real = checked_image(self.list_path, where, self.base, relative)
        if real in self.first:
            first_where, first_relative = self.first[real]
            as_listed = "" if first_relative == relative else f" as {first_relative[:200]!r}"
            raise DataError(
                f"{self.list_path} {where}: {relative[:200]!r} is listed twice (first on {first_where}{as_listed}): "
                "expected each image once"
            )
        self.first[real] = (where, relative)
        self.label_at.setdefault(label, where)
        self.paths.append(path)
        self.labels.append(label)

    def samples(self) -> Samples:
        return to_samples(self.paths, self.labels)


def read_list_entries(list_path: Path, base: Path, num_classes: int | None = None) -> ListedFiles:
    """The ``relative/path label`` lines of a list (split on the last space, as PETL_Vision reads
    VTAB-1k's); blank lines are skipped. Paths are relative to ``base``."""
    listed = ListedFiles(list_path, base)
    for number, line in list_lines(list_path):
        if not line.strip():
            continue
        where = f"line {number}"
        relative, space, label = line.rpartition(" ")
        if not space:
            raise DataError(f"{list_path} {where}: expected 'relative/path label', found {line[:200]!r}")
        listed.add(where, relative, parse_label(list_path, where, label, num_classes))
    if not listed.paths:
        raise DataError(f"{list_path}: expected one 'relative/path label' line per image, found none")
    return listed


def read_file_list(list_path: Path, base: Path, num_classes: int | None = None) -> Samples:
    """The samples of a ``relative/path label`` list (`read_list_entries`)."""
    return read_list_entries(list_path, base, num_classes).samples()


def check_disjoint(named: dict[str, Samples], lists: dict[str, str]) -> None:
    """No image is in two of the named splits, by real path (a test image in train, through ``..`` or a
    symlink, would test on training data)."""
    seen: dict[str, tuple[str, str]] = {}
    for split, samples in named.items():
        reals = {os.path.realpath(path): path for path in map(str, samples.images)}
        for real, path in reals.items():
            if real in seen:
                first_split, first_path = seen[real]
                same = "" if first_path == path else f" (as {first_path})"
                raise DataError(
                    f"{path} is in both {lists[first_split]}{same} and {lists[split]}: expected the "
                    f"{first_split} and {split} splits to share no image"
                )
        seen.update({real: (split, path) for real, path in reals.items()})


def check_trainval(trainval: Samples, train: Samples, val: Samples, lists: dict[str, str]) -> None:
    """The combined list holds exactly the train and val images with their labels."""
    combined = dict(zip(map(str, trainval.images), trainval.labels.tolist()))
    parts = dict(zip(map(str, train.images), train.labels.tolist())) | dict(
        zip(map(str, val.images), val.labels.tolist())
    )
    if combined != parts:
        odd = sorted(set(combined.items()) ^ set(parts.items()))[0]
        raise DataError(
            f"{lists['trainval']}: expected exactly the images and labels of {lists['train']} and "
            f"{lists['val']}; {odd[0]} (label {odd[1]}) differs"
        )


def read_vtab1k(task: str, directory: Path) -> ListedSplits:
    """One VTAB-1k task of the image-folder release: ``directory`` holds train800.txt, val200.txt,
    train800val200.txt and test.txt, their paths relative to ``directory``."""
    num_classes = VTAB1K_TASKS[task].num_classes
    lists = {split: str(directory / name) for split, name in VTAB1K_LISTS.items()}
    read = {split: read_file_list(Path(path), directory, num_classes) for split, path in lists.items()}
    check_disjoint({"train": read["train"], "val": read["val"], "test": read["test"]}, lists)
    check_trainval(read["trainval"], read["train"], read["val"], lists)
    return ListedSplits(read["train"], read["val"], read["test"], read["trainval"], num_classes, str(directory), lists)


def read_filelist(directory: Path, train: str, val: str | None, test: str, trainval: str | None) -> ListedSplits:
    """Lists named by the config (relative to ``directory``, or absolute); image paths relative to
    ``directory``. The classes are 0..(largest label), at least half of them with an image in the lists;
    without a val list val is carved from train."""
    lists = {
        split: str(directory / name)
        for split, name in (("train", train), ("val", val), ("test", test), ("trainval", trainval))
        if name is not None
    }
    entries = {split: read_list_entries(Path(path), directory) for split, path in lists.items()}
    read = {split: listed.samples() for split, listed in entries.items()}
    check_disjoint({split: read[split] for split in ("train", "val", "test") if split in read}, lists)
    if "trainval" in read:
        if "val" not in read:
            raise DataError(
                f"data.trainval_list={trainval}: expected data.val_list as well (the combined list "
                "must hold the train and val lists' images)"
            )
        check_trainval(read["trainval"], read["train"], read["val"], lists)
    num_classes = 1 + max(int(samples.labels.max()) for samples in read.values())
    check_classes_trained(entries, lists, num_classes)
    return ListedSplits(
        read["train"], read.get("val"), read["test"], read.get("trainval"), num_classes, str(directory), lists
    )


def check_classes_trained(entries: dict[str, ListedFiles], lists: dict[str, str], num_classes: int) -> None:
    """A file list's class count K (one more than its largest label) is no more than twice the labels its lists
    hold: a label such as 15000 among labels 0..9 would size the head and every per-class count by it, while a
    class or two without an image (a small list of a task of many classes) is a real dataset's."""
    present = set().union(*(set(listed.labels) for listed in entries.values()))
    if num_classes > 2 * len(present):
        top = num_classes - 1
        split = next(split for split, listed in entries.items() if top in listed.label_at)
        raise DataError(
            f"{lists[split]} {entries[split].label_at[top]}: label {top} makes {num_classes:,} classes, but the lists "
            f"hold {len(present):,} labels: expected labels 0..K-1, at least half of the classes with an image"
        )


def json_entries(path: Path, text: str) -> Iterator[tuple[str, str]]:
    """(key, the value's JSON text) of each entry of a JSON object, in file order, parsed an entry at a
    time with json's own string scanner: a value must be a number (a class id), so nothing nested is
    ever built, and a bad entry is found before the rest of the file costs memory."""

    def fail(at: int, expected: str):
        line = text.count("\n", 0, at) + 1
        raise DataError(f"{path} line {line}: expected {expected}: a json split is one {{image path: class id}} object")

    def skip(at: int) -> int:
        return JSON_SPACE.match(text, at).end()

    at = skip(0)
    if text[at : at + 1] != "{":
        fail(at, "'{'")
    at = skip(at + 1)
    if text[at : at + 1] == "}":
        fail(at, "at least one entry")
    while True:
        if text[at : at + 1] != '"':
            fail(at, "a string (an image path)")
        try:
            key, at = json.decoder.scanstring(text, at + 1)
        except ValueError as err:
            raise DataError(f"{path} is not valid JSON: {one_line(err)[:200]}") from None
        at = skip(at)
        if text[at : at + 1] != ":":
            fail(at, "':'")
        at = skip(at + 1)
        if not (number := JSON_NUMBER.match(text, at)):
            fail(at, f"a class id (a number) for {key[:200]!r}")
        yield key, number.group()
        at = skip(number.end())
        if text[at : at + 1] == "}":
            break
        if text[at : at + 1] != ",":
            fail(at, "',' or '}'")
        at = skip(at + 1)
    if skip(at + 1) != len(text):
        fail(skip(at + 1), "nothing after the object")


def read_json_split(path: Path, base: Path) -> tuple[list[Path], list[int]]:
    """VPT's ``{image path: class id}`` json, its paths relative to ``base``; ids stay as written. A key
    written twice (json would keep the last label) or two keys naming one file are refused."""
    try:
        text = read_data_file(path, MAX_JSON_SPLIT_BYTES, "a json split file").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start})") from None
    listed, keys = ListedFiles(path, base), {}
    for index, (relative, value) in enumerate(json_entries(path, text), 1):
        where = f"entry {index} {relative[:200]!r}"
        if relative in keys:
            raise DataError(
                f"{path} {where} is written twice (first as entry {keys[relative]}): expected each key once"
            )
        keys[relative] = index
        if not value.isdigit() or len(value) > len(str(MAX_LABEL)) or int(value) > MAX_LABEL:
            raise DataError(f"{path} {where}: class id {value[:40]!r} is not an integer in 0..{MAX_LABEL:,}")
        listed.add(where, relative, int(value))
    return listed.paths, listed.labels


def contiguous_labels(ids: dict[str, list[int]], lists: dict[str, str], num_classes: int) -> dict[str, list[int]]:
    """The datasets' own class ids mapped to 0..K-1 in sorted order (VPT's mapping), taken from the train
    split: a val or test class that train lacks, or a count other than the dataset's, is an error."""
    classes = sorted(set(ids["train"]))
    if len(classes) != num_classes:
        raise DataError(f"{lists['train']}: {len(classes)} classes, expected {num_classes}")
    index = {class_id: i for i, class_id in enumerate(classes)}
    for split, values in ids.items():
        if unknown := sorted(set(values) - set(index)):
            raise DataError(f"{lists[split]}: class id {unknown[0]} is not among the training classes")
    return {split: [index[v] for v in values] for split, values in ids.items()}


def read_fgvc(name: str, directory: Path) -> ListedSplits:
    """One FGVC dataset: VPT's train.json / val.json / test.json in ``directory`` when present,
    else (CUB only) CUB-200-2011's official train/test split with val carved from train."""
    num_classes = FGVC_TASKS[name].num_classes
    if not os.path.lexists(directory / FGVC_LISTS["train"]) and name == "cub":
        return read_cub_official(directory)
    base = directory / FGVC_IMAGE_DIRS[name]
    lists = {split: str(directory / file) for split, file in FGVC_LISTS.items()}
    read = {split: read_json_split(Path(path), base) for split, path in lists.items()}
    labels = contiguous_labels({split: ids for split, (_, ids) in read.items()}, lists, num_classes)
    splits = {split: to_samples(read[split][0], labels[split]) for split in read}
    check_disjoint(splits, lists)
    return ListedSplits(splits["train"], splits["val"], splits["test"], None, num_classes, str(directory), lists)


def read_id_file(path: Path, kind: type) -> dict[int, object]:
    """CUB's ``<image_id> <value>`` lines: image id -> value (an int, or a path as text)."""
    values = {}
    for number, line in list_lines(path, MAX_ID_FILE_BYTES):
        if not line.strip():
            continue
        image_id, space, value = line.partition(" ")
        if not space or not is_small_integer(image_id) or (kind is int and not is_small_integer(value)):
            raise DataError(
                f"{path} line {number}: expected '<image id> <{'integer' if kind is int else 'path'}>' "
                f"(ids of at most 9 ASCII digits), found {line[:200]!r}"
            )
        if int(image_id) in values:
            raise DataError(f"{path} line {number}: image id {image_id} is listed twice")
        values[int(image_id)] = kind(value)
    return values


def is_small_integer(text: str) -> bool:
    """ASCII digits, at most 9 of them: no '٣' (which int() reads as 3), no number int() refuses to parse."""
    return text.isascii() and text.isdigit() and len(text) <= 9


def read_cub_official(directory: Path) -> ListedSplits:
    """CUB-200-2011 as released: images.txt, image_class_labels.txt (ids 1..200), train_test_split.txt."""
    missing = [name for name in CUB_OFFICIAL if not os.path.lexists(directory / name)]  # a FIFO is named below
    if missing:
        raise DataError(
            f"{directory}: found neither VPT's train.json / val.json / test.json nor CUB-200-2011's "
            f"{', '.join(missing)}: expected one of the two"
        )
    images, classes, is_train = (
        read_id_file(directory / name, kind) for name, kind in zip(CUB_OFFICIAL, (str, int, int))
    )
    if set(images) != set(classes) or set(images) != set(is_train):
        raise DataError(f"{directory}: {', '.join(CUB_OFFICIAL)} do not name the same image ids")
    lists = {
        "train": f"{directory / 'train_test_split.txt'} (is_training_image 1)",
        "test": f"{directory / 'train_test_split.txt'} (is_training_image 0)",
    }
    ids = {
        split: [classes[i] for i in sorted(images) if is_train[i] == flag]
        for split, flag in (("train", 1), ("test", 0))
    }
    labels = contiguous_labels(ids, lists, FGVC_TASKS["cub"].num_classes)
    samples = {}
    for split, flag in (("train", 1), ("test", 0)):
        listed = ListedFiles(directory / "images.txt", directory / "images")
        for i, label in zip([i for i in sorted(images) if is_train[i] == flag], labels[split], strict=True):
            listed.add(f"image id {i}", images[i], label)
        samples[split] = listed.samples()
    check_disjoint(samples, lists)
    return ListedSplits(
        samples["train"], None, samples["test"], None, FGVC_TASKS["cub"].num_classes, str(directory), lists
    )
