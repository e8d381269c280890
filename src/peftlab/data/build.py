"""From a data config to checked splits (`describe_data`) and torch datasets (`build_data`).

`cfg` is any object with the attributes of peftlab's data config: name, root, download,
val_fraction, split_seed, train_subset, val_subset, test_subset, classes, augment,
num_workers, cache; trainval (absent: false), interpolation (bilinear), normalize (model); for
filelist also train_list, val_list, test_list and trainval_list.

Order of operations: read the dataset's own train and test splits; keep the label set
(`classes`, relabelled 0..k-1) in both; carve val from train (seeded permutation);
then take the class-stratified subsets. The test split is otherwise untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from peftlab.config.checks import TEXT_DATASET_NAMES
from peftlab.config.suites import suite_task
from peftlab.data.image_checks import checked_headers, headers_file, image_header
from peftlab.data.manifest import check_or_record, list_manifest, lossy_copy_note, manifest_file, stored_manifest
from peftlab.data.readers.lists import ListedSplits, read_fgvc, read_filelist, read_vtab1k
from peftlab.data.readers.records import DataInfo, RawData, Samples, concat
from peftlab.data.sources import find_data, find_listed, read_layout
from peftlab.data.splits import select_and_subset, split_train_val
from peftlab.data.text.tasks import load_text_splits
from peftlab.utils.errors import DataError

if TYPE_CHECKING:  # torch is imported where tensors are made: describe_data (peftlab data info) needs none
    import torch
    from torch.utils.data import Dataset

DIGIT_DATASETS = ("mnist",)  # no horizontal flips


@dataclass
class DataBundle:
    train: Dataset  # items: (float in_chans x S x S, int label)
    val: Dataset
    test: Dataset
    info: DataInfo


def load_splits(cfg) -> tuple[dict[str, Samples], DataInfo]:
    """Read and check the files of `cfg.name`; return the train/val/test samples and their info."""
    if is_listed(cfg.name):
        read = read_listed_splits(cfg)
    else:
        read = read_stored_splits(cfg)
    splits, class_names, notes = read.splits, read.class_names, list(read.notes)

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
        split_sources=read.split_sources,
        manifests=read.manifests,
    )
    return splits, info


@dataclass
class ReadSplits:
    """A dataset's train / val / test before data.classes and the subsets."""

    splits: dict[str, Samples]
    class_names: list[str]
    source: str
    sha256: dict[str, str]
    notes: list[str]
    split_sources: dict[str, str]
    manifests: dict[str, str] = field(default_factory=dict)


def read_stored_splits(cfg) -> ReadSplits:
    """A dataset stored with its own train and test splits; val carved from train (none with data.trainval).
    The images of a folder dataset are checked here, all of them, before any is decoded for a step."""
    layout, directory = find_data(cfg.name, cfg.root, cfg.download)
    raw = read_layout(layout, directory, cfg.split_seed, cfg.test_dir)
    if raw.train.is_files:  # TinyImageNet, ImageFolder
        check_folder_images(raw, cfg.test_dir)
    trainval = getattr(cfg, "trainval", False)
    fraction = 0.0 if trainval else cfg.val_fraction
    train_index, val_index = split_train_val(len(raw.train), fraction, cfg.split_seed)
    splits = {"train": raw.train.take(train_index), "val": raw.train.take(val_index), "test": raw.test}
    sources = split_sources(raw, cfg)
    if trainval:
        sources["train"] = sources["train"].removesuffix(" minus val")
        sources["val"] = "none: data.trainval trains on train + val"
    return ReadSplits(splits, list(raw.class_names), raw.source, dict(raw.sha256), list(raw.notes), sources)


def check_folder_images(raw: RawData, test_dir: str | None) -> None:
    """Every image of the dataset's train and test splits (val is carved from train) passes
    `image_header`, or one DataError line names the first that does not. Cached per folder."""
    key = (Path(raw.source).resolve(), Path(test_dir).resolve() if test_dir else None)
    checked_headers(np.concatenate([raw.train.images, raw.test.images]), headers_file(*key))


def is_listed(name: str) -> bool:
    return name == "filelist" or suite_task(name) is not None


def read_listed(cfg) -> ListedSplits:
    directory = find_listed(cfg.name, cfg.root)
    if cfg.name == "filelist":
        return read_filelist(directory, cfg.train_list, cfg.val_list, cfg.test_list, cfg.trainval_list)
    suite, task = suite_task(cfg.name)
    return read_vtab1k(task.name, directory) if suite == "vtab1k" else read_fgvc(task.name, directory)


def read_listed_splits(cfg) -> ReadSplits:
    """A dataset given by lists: train / val / test as listed (val carved from train where no list names
    it); with data.trainval, train is train + val and val is empty. Every list used gets its manifest."""
    listed = read_listed(cfg)
    train, val, sources = listed.train, listed.val, {}
    lists = dict(listed.lists)
    if cfg.trainval:
        if listed.trainval is not None:
            train, sources["train"] = listed.trainval, lists["trainval"]
        else:
            train = concat([train, val]) if val is not None else train
            sources["train"] = lists["train"] + (f" + {lists['val']}" if val is not None else "")
        val = Samples(np.array([], dtype=str), np.array([], dtype=np.int64))
        sources["val"] = "none: data.trainval trains on train + val"
    elif val is None:
        train_index, val_index = split_train_val(len(train), cfg.val_fraction, cfg.split_seed)
        train, val = train.take(train_index), train.take(val_index)
        sources["train"] = f"{lists['train']} minus val"
        sources["val"] = f"{100 * cfg.val_fraction:.3g}% of {lists['train']} (seed {cfg.split_seed})"
    else:
        sources["train"], sources["val"] = lists["train"], lists["val"]
    sources["test"] = lists["test"]
    combined = cfg.trainval and listed.trainval is not None  # train + val read from their combined list
    used = {"train": lists["trainval"] if combined else lists["train"], "test": lists["test"]}
    if listed.val is not None and not combined:  # val's images are read, for validation or for training
        used["val"] = lists["val"]
    wholes = {"train": listed.trainval if combined else listed.train, "val": listed.val, "test": listed.test}
    sha256, notes, manifests = check_manifests(cfg.name, Path(listed.source), used, wholes)
    class_names = listed.class_names or [str(i) for i in range(listed.num_classes)]
    return ReadSplits(
        {"train": train, "val": val, "test": listed.test}, class_names, listed.source, sha256, notes, sources, manifests
    )


def check_manifests(name: str, base: Path, used: dict[str, str], wholes: dict[str, Samples]):
    """(sha256, notes, manifest paths) of the lists used: checked against the dataset's manifest, which
    records each list and image on first use; a lossy copy of a lossless source is noted."""
    task = suite_task(name)
    sha256, notes, manifests, records = {}, [], {}, {}
    stored = stored_manifest(base, list(used.values()))
    for split, list_file in used.items():
        manifest = records[list_file] = list_manifest(list_file, base, wholes[split], stored)
        manifests[split] = str(manifest_file(base))
        sha256[f"{split} list {Path(list_file).name}"] = manifest["list_sha256"] or "-"
        sha256[f"{split} images:{manifest['count']}"] = manifest["files_sha256"]
        if task is not None and task[1].lossless_source and (note := lossy_copy_note(name, split, manifest)):
            notes.append(note)
    if check_or_record(base, records, stored):
        notes.append(f"manifest written: {manifest_file(base)} ({', '.join(used)} recorded)")
    return sha256, notes, manifests


def check_images(cfg) -> tuple[int, list[str]]:
    """Check and decode every image file of a file dataset (TinyImageNet, ImageFolder, the listed ones): the
    number of files checked and one line per file that a run refuses. Array datasets hold no files."""
    if cfg.name in TEXT_DATASET_NAMES:  # no images: describe_data checks every line of a text dataset
        return 0, []
    if is_listed(cfg.name):
        listed = read_listed(cfg)
        splits = [listed.train, listed.test] + [s for s in (listed.val, listed.trainval) if s is not None]
    else:
        layout, directory = find_data(cfg.name, cfg.root, cfg.download)
        raw = read_layout(layout, directory, cfg.split_seed, cfg.test_dir)
        splits = [raw.train, raw.test]
    from peftlab.data.datasets import load_image  # decodes with torch: --check only

    paths = sorted({str(p) for split in splits if split.is_files for p in split.images})
    bad = []
    for path in paths:
        try:
            image_header(Path(path))  # what a run checks before its first step
            load_image(path, 8, 3)
        except DataError as err:
            bad.append(str(err))
    return len(paths), bad


def split_sources(raw: RawData, cfg) -> dict[str, str]:
    """Which files each split is: the dataset's own train and test splits (for a folder, the
    folders the reader took them from), and validation carved from train."""
    train, test = "the dataset's train split", "the dataset's test split"
    for note in raw.notes:  # a folder dataset names its folders
        if note.startswith("train split from "):
            train, _, test = note.removeprefix("train split from ").partition(", test split from ")
            test = test.removesuffix(" (data.test_dir)")
        elif note.startswith("no train/ and test/ folders"):
            train, test = f"{raw.source} minus the test split", f"20% of {raw.source} (seed {cfg.split_seed})"
    return {
        "train": f"{train} minus val",
        "val": f"{100 * cfg.val_fraction:.3g}% of {train} (seed {cfg.split_seed})",
        "test": test,
    }


def describe_data(cfg) -> DataInfo:
    """Read and check the dataset's files and split them; no transforms, no tensors."""
    if cfg.name in TEXT_DATASET_NAMES:
        return load_text_splits(cfg)[1]
    return load_splits(cfg)[1]


def build_data(
    cfg,
    *,
    img_size: int,
    in_chans: int = 3,
    mean=(0.5,) * 3,
    std=(0.5,) * 3,
    device: torch.device | None = None,
    cache_dir: Path | None = None,
) -> DataBundle:
    """Train/val/test datasets of (float in_chans x img_size x img_size, label), normalised with mean/std.

    Train is augmented (random crop, 4 px per 32 px padding; horizontal flip except for
    digits) only when cfg.augment is true. Folder splits are decoded on demand, or with
    cfg.cache once into a memory-mapped uint8 file (`peftlab.data.cache`), by cfg.num_workers
    processes (null: chosen for ``device``, see `loading.default_num_workers`), in ``cache_dir``
    (default: `sources.decoded_cache_dir()`).
    """
    import torch

    from peftlab.data.cache import cached_images
    from peftlab.data.datasets import (
        ArrayDataset,
        DecodedFiles,
        FileDataset,
        crop_padding,
        make_transform,
        resize_images,
    )
    from peftlab.data.loading import default_num_workers

    splits, info = load_splits(cfg)
    num_workers = cfg.num_workers
    if num_workers is None:
        num_workers = default_num_workers(device or torch.device("cpu"))
    interpolation = getattr(cfg, "interpolation", "bilinear")
    mean, std = normalization(getattr(cfg, "normalize", "model"), mean, std)
    eval_transform = make_transform(mean, std, in_chans)
    train_transform = eval_transform
    if cfg.augment:
        flip = cfg.name not in DIGIT_DATASETS
        train_transform = make_transform(mean, std, in_chans, crop_pad=crop_padding(img_size), flip=flip)

    datasets = {}
    for split, samples in splits.items():
        transform = train_transform if split == "train" else eval_transform
        if samples.is_files and cfg.cache:  # decoded once, then memory-mapped: an in-memory split
            decoded = DecodedFiles(samples.images, samples.labels, img_size, in_chans, interpolation)
            images = cached_images(info.sha256, split, decoded, num_workers, cache_dir)
            datasets[split] = ArrayDataset(
                images, torch.from_numpy(samples.labels), img_size, in_chans, transform, interpolation
            )
        elif samples.is_files:
            datasets[split] = FileDataset(samples.images, samples.labels, img_size, in_chans, transform, interpolation)
        else:
            images = resize_images(samples.images, img_size, in_chans, interpolation)
            datasets[split] = ArrayDataset(
                images, torch.from_numpy(samples.labels), img_size, in_chans, transform, interpolation
            )
    return DataBundle(datasets["train"], datasets["val"], datasets["test"], info)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalization(normalize: str, mean, std) -> tuple[tuple, tuple]:
    """The mean/std of ``data.normalize``: the model's, ImageNet's, or none (pixels in [0, 1])."""
    if normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if normalize == "none":
        return (0.0,) * len(mean), (1.0,) * len(std)
    return tuple(mean), tuple(std)


def eval_preprocessing(cfg, img_size: int, in_chans: int, mean, std) -> dict:
    """How an evaluation image is made from its file, as ``build_data`` makes it for the model of
    ``img_size``, ``in_chans`` and default ``mean`` / ``std``: what an export's header states, so that
    code without peftlab feeds the exported model what it was tested on. No crop at evaluation (the random
    crop is a training augmentation): the whole image is resized to img_size x img_size."""
    from peftlab.data.datasets import channel_stats

    normalize = getattr(cfg, "normalize", "model")
    mean, std = channel_stats(*normalization(normalize, mean, std), in_chans)
    return {
        "channels": "L" if in_chans == 1 else "RGB",  # PIL's convert()
        "resize": [img_size, img_size],
        "interpolation": getattr(cfg, "interpolation", "bilinear"),
        "antialias": True,
        "rounded_to_uint8": True,  # the resized pixels are rounded to 0..255 before they are scaled
        "crop": None,
        "scale": 1 / 255,
        "normalize": normalize,
        "mean": [round(float(v), 7) for v in mean],  # float32 values: 7 digits
        "std": [round(float(v), 7) for v in std],
    }


def eval_images(cfg, paths, img_size: int, in_chans: int, mean, std) -> torch.Tensor:
    """Image files made as ``build_data`` makes a test split of files (its eval transform): decoded, converted
    to the model's channels, resized with data.interpolation, normalised with data.normalize's mean and std
    (``eval_preprocessing`` states it); float N x in_chans x img_size x img_size. ``peftlab predict`` feeds these."""
    from peftlab.data.datasets import FileDataset, make_transform

    transform = make_transform(*normalization(getattr(cfg, "normalize", "model"), mean, std), in_chans)
    interpolation = getattr(cfg, "interpolation", "bilinear")
    files = FileDataset(
        np.array(paths, dtype=str), np.zeros(len(paths), np.int64), img_size, in_chans, transform, interpolation
    )
    return files.get_batch(range(len(paths)))[0]


def format_data_info(info: DataInfo) -> str:
    """A human-readable summary for `peftlab data info`."""
    shown = ", ".join(info.class_names[:20])
    if len(info.class_names) > 20:
        shown += f", ... ({len(info.class_names) - 20} more)"
    lines = [
        f"dataset   {info.name}",
        f"source    {info.source}",
        f"classes   {info.num_classes}: {shown}",
        "splits    " + "  ".join(f"{split} {size:,}" for split, size in info.split_sizes.items()),
    ]
    for split, source in info.split_sources.items():
        lines.append(f"{split:<10}{source}")
    width = max((len(name) for name in info.sha256), default=0)
    for i, (name, digest) in enumerate(sorted(info.sha256.items())):
        lines.append(f"{'sha256' if i == 0 else '':<10}{name:<{width}}  {digest}")
    for i, note in enumerate(info.notes):
        lines.append(f"{'notes' if i == 0 else '':<10}{note}")
    return "\n".join(lines)
