"""Readers of datasets given as lists of files: a generic file list (``data.name: filelist``),
VTAB-1k's image-folder release (``vtab1k/<task>``) and FGVC (``fgvc/<name>``: VPT's json split
files, or CUB-200-2011's own split files where a user has no json).

A list names image files relative to a base folder with an integer label each. Every entry is
checked before anything trains, and a bad one is one DataError line naming the list file and its
line: a missing file, a label outside the dataset's classes, a path listed twice, a path that
leaves the base folder, a list with Windows line endings. A list reader returns the files as
``Samples`` (paths, decoded later); ``ListedSplits`` holds the splits a dataset's lists define.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peftlab.data.opening import check_data_file, open_data_file
from peftlab.data.records import Samples
from peftlab.errors import DataError
from peftlab.files import one_line
from peftlab.suites import FGVC_LISTS, FGVC_TASKS, VTAB1K_LISTS, VTAB1K_TASKS

MAX_LIST_BYTES = 256 << 20  # ImageNet's 1.28 M training lines take about 60 MB
MAX_LABEL = 1_000_000
# where FGVC's image paths start, inside the dataset folder (VPT's json_dataset.py)
FGVC_IMAGE_DIRS = {"cub": "images", "nabirds": "images", "dogs": "Images", "cars": ".", "flowers": "."}
CUB_OFFICIAL = ("images.txt", "image_class_labels.txt", "train_test_split.txt")


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


def read_list_bytes(path: Path) -> str:
    """The text of a list file: UTF-8, Unix line endings, at most MAX_LIST_BYTES."""
    with open_data_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_LIST_BYTES:
            raise DataError(f"{path}: {size:,} bytes, more than a list file may hold ({MAX_LIST_BYTES:,})")
        try:
            raw = f.read(MAX_LIST_BYTES + 1)
        except OSError as err:
            raise DataError(f"cannot read {path}: {one_line(err)}") from None
    if b"\r" in raw:
        line = raw[: raw.index(b"\r")].count(b"\n") + 1
        raise DataError(
            f"{path} line {line}: a carriage return (Windows line endings): expected Unix line "
            "endings (convert with dos2unix or `sed -i 's/\\r$//'`)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start})") from None


def checked_image(list_path: Path, where: str, base: Path, relative: str) -> Path:
    """``base / relative`` once checked: inside ``base`` (symlinks followed) and a regular file."""
    if not relative or "\0" in relative or os.path.isabs(relative):
        raise DataError(f"{list_path} {where}: {relative[:200]!r} is not a path relative to {base}")
    path = base / relative
    if not path.resolve().is_relative_to(base.resolve()):
        raise DataError(f"{list_path} {where}: {relative[:200]!r} leaves {base}: expected a path inside it")
    if not path.exists():
        raise DataError(f"{list_path} {where}: missing file {path}")
    check_data_file(path)
    return path


def parse_label(list_path: Path, where: str, text: str, num_classes: int | None) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_LABEL:
        raise DataError(f"{list_path} {where}: label {text[:40]!r} is not an integer in 0..{MAX_LABEL:,}")
    label = int(text)
    if num_classes is not None and label >= num_classes:
        raise DataError(
            f"{list_path} {where}: label {label} is out of range: expected 0..{num_classes - 1} ({num_classes} classes)"
        )
    return label


def to_samples(paths: list[Path], labels: list[int]) -> Samples:
    return Samples(np.array([str(p) for p in paths], dtype=str), np.array(labels, dtype=np.int64))


def read_file_list(list_path: Path, base: Path, num_classes: int | None = None) -> Samples:
    """A list of ``relative/path label`` lines (split on the last space, as PETL_Vision reads VTAB-1k's);
    blank lines are skipped. Paths are relative to ``base``."""
    paths, labels, first_line = [], [], {}
    for number, line in enumerate(read_list_bytes(list_path).split("\n"), 1):
        if not line.strip():
            continue
        where = f"line {number}"
        relative, space, label = line.rpartition(" ")
        if not space:
            raise DataError(f"{list_path} {where}: expected 'relative/path label', found {line[:200]!r}")
        if relative in first_line:
            raise DataError(
                f"{list_path} {where}: {relative[:200]!r} is listed twice (first on line "
                f"{first_line[relative]}): expected each image once"
            )
        first_line[relative] = number
        labels.append(parse_label(list_path, where, label, num_classes))
        paths.append(checked_image(list_path, where, base, relative))
    if not paths:
        raise DataError(f"{list_path}: expected one 'relative/path label' line per image, found none")
    return to_samples(paths, labels)


def check_disjoint(named: dict[str, Samples], lists: dict[str, str]) -> None:
    """No image is in two of the named splits (a test image in train would test on training data)."""
    seen: dict[str, str] = {}
    for split, samples in named.items():
        for path in map(str, samples.images):
            if path in seen:
                raise DataError(
                    f"{path} is in both {lists[seen[path]]} and {lists[split]}: expected the "
                    f"{seen[path]} and {split} splits to share no image"
                )
        seen.update(dict.fromkeys(map(str, samples.images), split))


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
    ``directory``. The classes are 0..(largest label); without a val list val is carved from train."""
    lists = {
        split: str(directory / name)
        for split, name in (("train", train), ("val", val), ("test", test), ("trainval", trainval))
        if name is not None
    }
    read = {split: read_file_list(Path(path), directory) for split, path in lists.items()}
    check_disjoint({split: read[split] for split in ("train", "val", "test") if split in read}, lists)
    if "trainval" in read:
        if "val" not in read:
            raise DataError(
                f"data.trainval_list={trainval}: expected data.val_list as well (the combined list "
                "must hold the train and val lists' images)"
            )
        check_trainval(read["trainval"], read["train"], read["val"], lists)
    num_classes = 1 + max(int(samples.labels.max()) for samples in read.values())
    return ListedSplits(
        read["train"], read.get("val"), read["test"], read.get("trainval"), num_classes, str(directory), lists
    )


def read_json_split(path: Path, base: Path) -> tuple[list[Path], list[int]]:
    """VPT's ``{image path: class id}`` json, its paths relative to ``base``; ids stay as written."""
    try:
        entries = json.loads(read_list_bytes(path))
    except (ValueError, RecursionError) as err:
        raise DataError(f"{path} is not valid JSON: {one_line(err)[:200]}") from None
    if not isinstance(entries, dict) or not entries:
        raise DataError(f"{path}: expected a JSON object {{image path: class id}} with at least one entry")
    paths, labels = [], []
    for relative, class_id in entries.items():
        where = f"entry {relative[:200]!r}"
        if type(class_id) is not int or not 0 <= class_id <= MAX_LABEL:
            raise DataError(f"{path} {where}: class id {str(class_id)[:40]!r} is not an integer in 0..{MAX_LABEL:,}")
        paths.append(checked_image(path, where, base, relative))
        labels.append(class_id)
    return paths, labels


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
    if not (directory / FGVC_LISTS["train"]).is_file() and name == "cub":
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
    for number, line in enumerate(read_list_bytes(path).split("\n"), 1):
        if not line.strip():
            continue
        image_id, space, value = line.partition(" ")
        if not space or not image_id.isdigit() or (kind is int and not value.isdigit()):
            raise DataError(
                f"{path} line {number}: expected '<image id> <{'integer' if kind is int else 'path'}>', "
                f"found {line[:200]!r}"
            )
        if int(image_id) in values:
            raise DataError(f"{path} line {number}: image id {image_id} is listed twice")
        values[int(image_id)] = kind(value)
    return values


def read_cub_official(directory: Path) -> ListedSplits:
    """CUB-200-2011 as released: images.txt, image_class_labels.txt (ids 1..200), train_test_split.txt."""
    missing = [name for name in CUB_OFFICIAL if not (directory / name).is_file()]
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
    listed = {
        split: [
            checked_image(directory / "images.txt", f"image id {i}", directory / "images", images[i])
            for i in sorted(images)
            if is_train[i] == flag
        ]
        for split, flag in (("train", 1), ("test", 0))
    }
    train, test = to_samples(listed["train"], labels["train"]), to_samples(listed["test"], labels["test"])
    check_disjoint({"train": train, "test": test}, lists)
    return ListedSplits(train, None, test, None, FGVC_TASKS["cub"].num_classes, str(directory), lists)
