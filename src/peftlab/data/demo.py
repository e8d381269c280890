"""An offline task in VTAB-1k's layout: Fashion-MNIST written as PNG files with VTAB-1k's list files.

``peftlab data vtab-demo OUT`` writes it from the Fashion-MNIST that peftlab finds offline (never a
download); the study configs/studies/vtab_demo.yaml trains on it, an end-to-end check of an
installation that needs no benchmark download::

    OUT/<task>/images/{train,val,test}/NNNNN.png   NNNNN: the image's index in Fashion-MNIST's own split
                                                   (val200's come from its training images too)
    OUT/<task>/{train800,val200,train800val200,test}.txt    lines "images/train/01234.png 7"
    OUT/<task>/vtab-demo.json                      what was written from what: a re-run compares it

train800 and val200 are disjoint class-stratified draws from Fashion-MNIST's 60,000 training images,
as VTAB-1k's are from a task's training split; test is a class-stratified subset of its 10,000 test
images. The same seed gives the same bytes. The task is written in a hidden folder beside it and
renamed when complete, so an interrupted writer never leaves a task that looks complete.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from peftlab.config.suites import VTAB1K_LISTS
from peftlab.data.readers.records import RawData
from peftlab.data.sources import find_data, read_layout
from peftlab.data.splits import STREAM_TEST_SUBSET, STREAM_TRAIN_SUBSET, STREAM_VAL_SUBSET, pick_subset
from peftlab.utils.errors import DataError, UserError
from peftlab.utils.files import check_output, read_json, shown_path, write_json_atomic
from peftlab.utils.progress import TextProgress

TRAIN_SIZE, VAL_SIZE = 800, 200
DEFAULT_TEST_SIZE = 2000
DEFAULT_TASK = "fashion_mnist"
MANIFEST = "vtab-demo.json"
MANIFEST_FORMAT = 1  # raise when the same arguments would write other bytes
# zlib at a fixed level and no metadata: the same pixels give the same file
PNG_SETTINGS = {"format": "PNG", "compress_level": 6, "optimize": False}
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class DemoTask:
    folder: Path
    sizes: dict[str, int]  # list file -> its lines, in VTAB1K_LISTS' order
    written: bool  # False: the folder already held this very task
    leftovers: list[Path] = field(default_factory=list)  # temporary folders of killed writers, for the user


def demo_splits(
    train_labels: np.ndarray, test_labels: np.ndarray, test_size: int | None, seed: int
) -> dict[str, tuple[str, np.ndarray]]:
    """split -> (Fashion-MNIST's split it comes from, sorted indices into it).

    train800 first, then val200 from the training images it left (disjoint, both stratified); test
    draws from its own stream, so ``test_size`` never moves train800 or val200.
    """
    train = pick_subset(train_labels, TRAIN_SIZE, seed, STREAM_TRAIN_SUBSET)
    rest = np.setdiff1d(np.arange(len(train_labels)), train)
    val = rest[pick_subset(train_labels[rest], VAL_SIZE, seed, STREAM_VAL_SUBSET)]
    test = pick_subset(test_labels, test_size or None, seed, STREAM_TEST_SUBSET)
    return {"train": ("train", train), "val": ("train", val), "test": ("test", test)}


def list_lines(splits: dict[str, tuple[str, np.ndarray]], raw: RawData) -> dict[str, list[str]]:
    """VTAB1K_LISTS key -> the list file's lines, "images/<split>/NNNNN.png label"."""
    lines = {}
    for split, (source, index) in splits.items():
        labels = getattr(raw, source).labels
        lines[split] = [f"images/{split}/{i:05d}.png {labels[i]}\n" for i in index]
    lines["trainval"] = lines["train"] + lines["val"]  # the release's train800val200.txt: train800, then val200
    return {split: lines[split] for split in VTAB1K_LISTS}


def check_arguments(task: str, test_size: int | None, seed: int) -> None:
    if not TASK_NAME.fullmatch(task):
        raise UserError(f"task name {task!r}: expected a folder name of letters, digits, '_', '.' and '-'")
    if test_size is not None and test_size < 0:
        raise UserError(f"test size {test_size}: expected an integer >= 0 (0: all 10,000 test images)")
    if seed < 0:
        raise UserError(f"seed {seed}: expected an integer >= 0")


def read_fashion_mnist(root: str | None) -> RawData:
    """Fashion-MNIST through peftlab's own reader, from ``root`` or the standard offline places."""
    try:
        layout, directory = find_data("fashion_mnist", root, False)
    except DataError as err:  # its advice names the config keys
        raise DataError(f"{err} (for vtab-demo: --root DIR is data.root; it never downloads)") from None
    raw = read_layout(layout, directory, split_seed=0)
    if len(raw.train) < TRAIN_SIZE + VAL_SIZE:
        raise DataError(
            f"{raw.source} holds {len(raw.train):,} training images: train800 and val200 need {TRAIN_SIZE + VAL_SIZE:,}"
        )
    return raw


def write_vtab_demo(
    out: str | Path,
    task: str = DEFAULT_TASK,
    test_size: int | None = DEFAULT_TEST_SIZE,
    seed: int = 0,
    root: str | None = None,
    progress: bool = False,
) -> DemoTask:
    """Write ``out/task`` (see the module's docstring); the same task already there is left as it is,
    another task there is a UserError line. ``test_size`` 0 or None: every test image."""
    check_arguments(task, test_size, seed)
    out = Path(out)
    check_output(out, True, "vtab-demo output folder")
    raw = read_fashion_mnist(root)
    splits = demo_splits(raw.train.labels, raw.test.labels, test_size, seed)
    lines = list_lines(splits, raw)
    sizes = {VTAB1K_LISTS[split]: len(split_lines) for split, split_lines in lines.items()}
    manifest = {
        "format": MANIFEST_FORMAT,
        "task": task,
        "source": "fashion_mnist",
        "source_sha256": raw.sha256,
        "seed": seed,
        "test_size": len(splits["test"][1]),
        "sizes": sizes,
        "class_names": raw.class_names,
    }
    folder = out / task
    leftovers = sorted(out.glob(f".{task}.*.tmp"))
    if already_there(folder, manifest):
        return DemoTask(folder, sizes, False, leftovers)
    tmp = out / f".{task}.{secrets.token_hex(6)}.tmp"
    try:
        write_task_files(tmp, raw, splits, lines, manifest, progress)
        try:
            os.rename(tmp, folder)
        except OSError:  # another writer finished first: its task is fine if it is this one
            if not already_there(folder, manifest):
                raise
            return DemoTask(folder, sizes, False, leftovers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoTask(folder, sizes, True, leftovers)


def already_there(folder: Path, manifest: dict) -> bool:
    """True when ``folder`` holds this task; False when it does not exist; a UserError line otherwise."""
    if not os.path.lexists(folder) or (folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())):
        return False  # an empty folder is replaced by the rename
    found = read_json(folder / MANIFEST) if folder.is_dir() else None
    if found == manifest:
        return True
    differs = ", ".join(key for key in manifest if found and found.get(key) != manifest[key])
    what = (
        f"a vtab-demo task written with seed {found.get('seed')} and test size {found.get('test_size')} "
        f"(its {MANIFEST} differs in {differs})"
        if found
        else "something else"
    )
    raise UserError(
        f"{shown_path(folder)} already holds {what}, not this one (seed {manifest['seed']}, test size "
        f"{manifest['test_size']}); choose another output folder or --task name, or delete it"
    )


def write_task_files(
    folder: Path,
    raw: RawData,
    splits: dict[str, tuple[str, np.ndarray]],
    lines: dict[str, list[str]],
    manifest: dict,
    progress: bool,
) -> None:
    """The images, the list files and the manifest (last) into ``folder``, which must not exist."""
    total = sum(len(index) for _, index in splits.values())
    bar = tqdm(total=total, desc=f"vtab-demo {manifest['task']}", unit="image", disable=not progress or None)
    lines_progress = TextProgress(bar, progress, f"vtab-demo {manifest['task']}", "image", every=max(1, total // 10))
    folder.mkdir()
    done = 0  # a disabled bar counts nothing
    for split, (source, index) in splits.items():
        images = getattr(raw, source).images  # N x 1 x 28 x 28 uint8
        (folder / "images" / split).mkdir(parents=True)
        for i in index:
            Image.fromarray(images[i, 0]).save(folder / "images" / split / f"{i:05d}.png", **PNG_SETTINGS)
            done += 1
            bar.update(1)
            lines_progress.update(done)
    bar.close()
    for split, list_name in VTAB1K_LISTS.items():
        (folder / list_name).write_text("".join(lines[split]))
    write_json_atomic(folder / MANIFEST, manifest)
