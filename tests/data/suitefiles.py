"""Small datasets in the benchmark suites' release formats, for the data tests.

- `write_vtab1k`: VTAB-1k's image-folder release (NOAH / SSF / PETL_Vision): ``<root>/<task>/`` with
  train800.txt, val200.txt, train800val200.txt and test.txt, lines ``relative/path label``.
- `write_fgvc`: VPT's FGVC release: ``<root>/<dataset>/{train,val,test}.json``, each
  ``{image path: class id}``, the paths relative to the dataset's own image folder.
- `write_cub_official`: CUB-200-2011's own images.txt, image_class_labels.txt, train_test_split.txt
  and classes.txt.

Plain functions that a test calls with its tmp_path (no fixtures here); each returns `SuiteFiles`
per task: where the files are, and every split as (listed path, label) pairs to check a reader
against. Class counts are those of peftlab.config.suites. Images are 8 x 8 RGB, seeded, and no two files
of a task are alike: a file's top two rows hold its index in the task (`index_rows`, read back with
`image_index`), so a test can tell which one went where.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from peftlab.config.suites import FGVC_LISTS, FGVC_TASKS, VTAB1K_LISTS, VTAB1K_TASKS

IMAGE_SIZE = 8
INDEX_BITS = 2 * IMAGE_SIZE  # the top two rows
FORMATS = {"jpg": "JPEG", "png": "PNG"}

# FGVC dataset -> (its image folder, relative to the dataset folder; a listed path, from a class id
# and an image number), as in VPT's release (KMnP/vpt, src/data/datasets/json_dataset.py)
FGVC_IMAGES = {
    "cub": ("images", "{cid:03d}.Bird_{cid:03d}/Bird_{cid:03d}_{n:04d}.{fmt}"),
    "nabirds": ("images", "{cid:04d}/{n:08x}.{fmt}"),
    "dogs": ("Images", "n{cid:08d}-breed_{cid}/n{cid:08d}_{n}.{fmt}"),
    "cars": (".", "car_ims/{n:06d}.{fmt}"),
    "flowers": (".", "jpg/image_{n:05d}.{fmt}"),
}
CUB_OFFICIAL_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


@dataclass
class SuiteFiles:
    """One task as written: ``splits[split]`` holds (path as listed, label 0..K-1) in file order."""

    folder: Path  # where the list, json or text files lie
    image_dir: Path  # what the listed paths are relative to
    num_classes: int
    splits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    class_ids: list[int] = field(default_factory=list)  # the dataset's own ids, sorted: label k is class_ids[k]

    def sizes(self) -> dict[str, int]:
        return {split: len(items) for split, items in self.splits.items()}


def index_rows(index: int) -> np.ndarray:
    """The top two rows of image ``index``: its 16 bits as black or white pixels, which JPEG keeps apart
    (one pixel value off by one it may quantize away; colours it subsamples)."""
    if not 0 <= index < 1 << INDEX_BITS:
        raise ValueError(f"image index {index}: a fixture holds at most {1 << INDEX_BITS} images per task")
    bits = (index >> np.arange(INDEX_BITS)) & 1
    return np.repeat((bits * 255).astype(np.uint8).reshape(2, IMAGE_SIZE, 1), 3, axis=2)


def image_index(pixels: np.ndarray) -> int:
    """The index an image was written with, read back from its decoded H x W x 3 uint8 pixels."""
    bits = pixels[:2, :, 0].reshape(-1) >= 128
    return int((bits.astype(np.int64) << np.arange(INDEX_BITS)).sum())


class ImageWriter:
    """Seeded 8 x 8 images, one colour pattern per class, the image's index in bits in its top rows."""

    def __init__(self, num_classes: int, fmt: str, seed: int):
        if fmt not in FORMATS:
            raise ValueError(f"fmt={fmt!r}: expected one of {sorted(FORMATS)}")
        self.fmt, self.count = fmt, 0
        self.patterns = np.random.default_rng(seed).integers(
            0, 256, (num_classes, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8
        )

    def write(self, path: Path, label: int) -> None:
        pixels = self.patterns[label].copy()
        pixels[:2] = index_rows(self.count)
        self.count += 1
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=FORMATS[self.fmt], quality=95, subsampling=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())


def labels_dealt(num_classes: int, per_class: int, rng: np.random.Generator) -> list[int]:
    """``per_class`` of every label, in a seeded order."""
    return [int(label) for label in rng.permutation(np.repeat(np.arange(num_classes), per_class))]


def val_labels(num_classes: int) -> list[int]:
    """A val split as VTAB's val200 and VPT's val are: every class when there are few, else every other
    one (sun397's 397 classes cannot all be in 200 images)."""
    return list(range(num_classes)) if num_classes <= 10 else list(range(0, num_classes, 2))


# ---------------------------------------------------------------------------- VTAB-1k


def write_vtab1k(
    root: Path,
    tasks: list[str] | None = None,
    fmt: str = "jpg",
    per_class: int = 1,
    seed: int = 0,
    spaced_names: bool = False,
) -> dict[str, SuiteFiles]:
    """The image-folder release of the given VTAB-1k tasks (default: all 19) under ``root``.

    Every class has ``per_class`` images in train800 and in test; val200 has one image of every class
    (every other class beyond 10). train800val200.txt is train800's lines, then val200's. With
    ``spaced_names`` every file name holds a space ("image 00003.jpg"): lines split on the LAST space.
    """
    written = {}
    for number, task in enumerate(tasks if tasks is not None else list(VTAB1K_TASKS)):
        num_classes = VTAB1K_TASKS[task].num_classes
        folder = Path(root) / task
        rng = np.random.default_rng([seed, number])
        images = ImageWriter(num_classes, fmt, seed=int(rng.integers(2**32)))
        labels = {
            "train": labels_dealt(num_classes, per_class, rng),
            "val": [int(label) for label in rng.permutation(val_labels(num_classes))],
            "test": labels_dealt(num_classes, per_class, rng),
        }
        files = SuiteFiles(folder, folder, num_classes)
        for split, split_labels in labels.items():
            files.splits[split] = []
            for label in split_labels:
                name = f"image {images.count:05d}" if spaced_names else f"{images.count:05d}"
                path = f"images/{split}/{name}.{fmt}"
                images.write(folder / path, label)
                files.splits[split].append((path, label))
        files.splits["trainval"] = files.splits["train"] + files.splits["val"]
        for split, list_name in VTAB1K_LISTS.items():
            (folder / list_name).write_text("".join(f"{path} {label}\n" for path, label in files.splits[split]))
        files.splits = {split: files.splits[split] for split in VTAB1K_LISTS}
        written[task] = files
    return written


# ---------------------------------------------------------------------------- FGVC (VPT's jsons)


def fgvc_class_ids(name: str, num_classes: int) -> list[int]:
    """The dataset's own class ids: 1..K, except NABirds', which have gaps (1 to 1010) and sort
    differently as numbers and as strings, as a reader that maps them by sorted order must notice."""
    if name == "nabirds":
        return [round(1 + k * 1009 / (num_classes - 1)) for k in range(num_classes)]
    return list(range(1, num_classes + 1))


def write_fgvc(
    root: Path, names: list[str] | None = None, fmt: str = "jpg", per_class: int = 1, seed: int = 0
) -> dict[str, SuiteFiles]:
    """VPT's release of the given FGVC datasets (default: all five) under ``root``.

    Every class has ``per_class`` images in train and in test; val (carved from the training images
    in VPT's release) has one image of every other class. The json values are the dataset's own
    class ids (`fgvc_class_ids`); ``splits`` holds them mapped to 0..K-1 by sorted order.
    """
    written = {}
    for number, name in enumerate(names if names is not None else list(FGVC_TASKS)):
        num_classes = FGVC_TASKS[name].num_classes
        folder = Path(root) / name
        image_folder, pattern = FGVC_IMAGES[name]
        rng = np.random.default_rng([seed, 100 + number])
        images = ImageWriter(num_classes, fmt, seed=int(rng.integers(2**32)))
        class_ids = fgvc_class_ids(name, num_classes)
        labels = {
            "train": labels_dealt(num_classes, per_class, rng),
            "val": [int(label) for label in rng.permutation(val_labels(num_classes))],
            "test": labels_dealt(num_classes, per_class, rng),
        }
        files = SuiteFiles(folder, folder / image_folder, num_classes, class_ids=class_ids)
        for split, split_labels in labels.items():
            files.splits[split] = []
            for label in split_labels:
                path = pattern.format(cid=class_ids[label], n=images.count, fmt=fmt)
                images.write(files.image_dir / path, label)
                files.splits[split].append((path, label))
            listed = {path: class_ids[label] for path, label in files.splits[split]}
            (folder / FGVC_LISTS[split]).write_text(json.dumps(listed))
        written[name] = files
    return written


# ---------------------------------------------------------------------------- CUB-200-2011's own files


def write_cub_official(root: Path, fmt: str = "jpg", per_class: int = 3, seed: int = 0) -> SuiteFiles:
    """CUB-200-2011 as distributed: ``root`` holds the four official text files and images/.

    Image ids run 1..N in class order, as in the real images.txt; of a class's ``per_class`` images
    the 1st, 3rd, ... are training images (train_test_split.txt says 1) and the others test images,
    so ``per_class`` >= 2 puts every class in both splits. Paths in ``splits`` are relative to images/.
    """
    root = Path(root)
    num_classes = FGVC_TASKS["cub"].num_classes
    images = ImageWriter(num_classes, fmt, seed)
    class_ids = list(range(1, num_classes + 1))
    folders = [f"{cid:03d}.Bird_{cid:03d}" for cid in class_ids]
    files = SuiteFiles(root, root / "images", num_classes, {"train": [], "test": []}, class_ids)
    lines = {name: [] for name in CUB_OFFICIAL_FILES}
    for label, (cid, class_folder) in enumerate(zip(class_ids, folders)):
        lines["classes.txt"].append(f"{cid} {class_folder}")
        for k in range(per_class):
            image_id = images.count + 1
            path = f"{class_folder}/Bird_{cid:03d}_{image_id:04d}.{fmt}"
            images.write(files.image_dir / path, label)
            training = k % 2 == 0
            files.splits["train" if training else "test"].append((path, label))
            lines["images.txt"].append(f"{image_id} {path}")
            lines["image_class_labels.txt"].append(f"{image_id} {cid}")
            lines["train_test_split.txt"].append(f"{image_id} {int(training)}")
    for name, text in lines.items():
        (root / name).write_text("".join(f"{line}\n" for line in text))
    return files
