"""What ``peftlab validate`` and a study's pre-flight check of a run's data before any run folder is made, opening no
image and reading no array file: the dataset is found (``data.root``, or its standard places), the named dataset's
files are all there, an image folder's class folders (at least two, the test split's classes among the training
split's, the splits apart), a list dataset's lists parse and name files that exist, a text dataset's files read.
Each problem is the one DataError line the run itself would stop with, in the same words."""

from __future__ import annotations

import os
from pathlib import Path

from peftlab.config.checks import TEXT_DATASET_NAMES
from peftlab.data.build import is_listed, read_listed
from peftlab.data.readers.binary import IDX_FILES
from peftlab.data.readers.folders import folder_splits
from peftlab.data.sources import DOWNLOADABLE, find_data
from peftlab.data.text.tasks import load_text_splits
from peftlab.utils.errors import DataError

CIFAR10_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
# the files each stored layout's reader opens (an idx file may be gzipped)
LAYOUT_FILES = {
    "mnist_idx": list(IDX_FILES.values()),
    "fashion_mnist_idx": list(IDX_FILES.values()),
    "mnist_pickle": ["mnist.pkl.gz"],
    "cifar10_python": [*CIFAR10_BATCHES, "test_batch", "batches.meta"],
    "cifar10_binary": [f"{name}.bin" for name in (*CIFAR10_BATCHES, "test_batch")] + ["batches.meta.txt"],
    "cifar100_python": ["train", "test", "meta"],
    "cifar100_binary": ["train.bin", "test.bin", "fine_label_names.txt"],
    "tiny_imagenet": ["wnids.txt"],
}
GZIPPED = ("mnist_idx", "fashion_mnist_idx")


def check_data(cfg, language_model: bool = False) -> None:
    """One DataError line for the first problem of ``cfg`` (a data config) that stops a run before its first step
    and is found without decoding the data; nothing when there is none. A dataset the run may download
    (``data.download: true``) and that is not here yet passes: the run downloads it. ``language_model``: the
    run's model is a causal LM (its text has no labels)."""
    if cfg.name in TEXT_DATASET_NAMES:
        load_text_splits(cfg, language_model)  # text files are small: read whole, as the run reads them
        return
    if is_listed(cfg.name):
        read_listed(cfg)  # the lists parsed, each named image found
        return
    try:
        layout, directory = find_data(cfg.name, cfg.root, download_allowed=False)
    except DataError:
        if cfg.download and cfg.name in DOWNLOADABLE:
            return
        raise
    if layout == "imagefolder":
        folder_splits(directory, cfg.split_seed, Path(cfg.test_dir) if cfg.test_dir else None)
        return
    missing = [
        name
        for name in LAYOUT_FILES[layout]
        if not (os.path.isfile(directory / name) or (layout in GZIPPED and os.path.isfile(directory / f"{name}.gz")))
    ]
    if missing:
        raise DataError(
            f"{cfg.name} in {directory} is incomplete: {', '.join(missing)} missing; expected "
            f"{', '.join(LAYOUT_FILES[layout])}"
        )


def folder_classes(cfg) -> int | None:
    """An image folder's number of classes, from its class folders (no image opened; a missing root is its
    DataError line); None for another dataset."""
    if cfg.name != "imagefolder":
        return None
    _, directory = find_data(cfg.name, cfg.root, download_allowed=False)
    return len(folder_splits(directory, cfg.split_seed, Path(cfg.test_dir) if cfg.test_dir else None).class_names)


def folder_train_images(cfg) -> int | None:
    """The images an image folder's training split lists (validation is carved from them), by listing its folders
    (no image opened); None for another dataset, or where the folder is not there or not one."""
    if cfg.name != "imagefolder":
        return None
    try:
        _, directory = find_data(cfg.name, cfg.root, download_allowed=False)
        return len(folder_splits(directory, cfg.split_seed, Path(cfg.test_dir) if cfg.test_dir else None).train_paths)
    except DataError:
        return None


def data_key(cfg) -> tuple:
    """What ``check_data`` reads of a data config: a study checks each distinct one once."""
    return tuple(getattr(cfg, name, None) for name in KEY_FIELDS)


KEY_FIELDS = (
    "name",
    "root",
    "download",
    "test_dir",
    "split_seed",
    "val_fraction",
    "trainval",
    "classes",
    "train_list",
    "val_list",
    "test_list",
    "trainval_list",
    "text_column",
    "text_pair_column",
    "label_column",
)
