"""Damaged dataset files are one DataError line or read: never another exception, never a hang,
never a memory blow-up.

Fuzzed with fixed seeds and a bounded count: bytes of a valid file of each layout (IDX, CIFAR
binary and pickled batches, the MNIST pickle inside its gzip, PNG and JPEG images) are replaced,
inserted or cut, and the layout is read (images decoded) under an alarm.
"""

import gzip
import random
import resource
import signal

import datafiles
import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)

from peftlab.data.binary_readers import (
    MNIST_CLASS_NAMES,
    read_cifar10_binary,
    read_cifar10_python,
    read_idx_dataset,
    read_mnist_pickle,
)
from peftlab.data.datasets import load_image
from peftlab.data.image_checks import image_header
from peftlab.errors import DataError


class Hang(Exception):
    pass


def damaged(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.choice([1, 4, 32])):
        if not data:
            break
        where = rng.randrange(len(data))
        kind = rng.random()
        if kind < 0.6:
            data[where] = rng.randrange(256)
        elif kind < 0.8:
            data[where:where] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        else:
            del data[where : where + rng.randrange(1, 64)]
    if rng.random() < 0.15 and len(data) > 1:
        data = data[: rng.randrange(1, len(data))]
    return bytes(data)


def gz_damaged(rng: random.Random, data: bytes) -> bytes:
    """The payload inside the gzip damaged (a damaged gzip is refused by its CRC already)."""
    return gzip.compress(damaged(rng, gzip.decompress(data)))


def decode_all(directory):
    return [load_image(str(p), 16, 3) for p in sorted(directory.rglob("*")) if p.suffix in (".png", ".JPEG")]


def check_all(directory):
    """The check every image gets before a run's first step (peftlab.data.image_checks)."""
    return [image_header(p) for p in sorted(directory.rglob("*")) if p.suffix in (".png", ".JPEG")]


# layout -> (writer, reader, the file damaged, how)
CASES = {
    "idx images": (
        datafiles.write_idx_dataset,
        lambda d: read_idx_dataset(d, MNIST_CLASS_NAMES),
        "train-images-idx3-ubyte.gz",
        gz_damaged,
    ),
    "idx labels": (
        lambda d: datafiles.write_idx_dataset(d, gz=False),
        lambda d: read_idx_dataset(d, MNIST_CLASS_NAMES),
        "t10k-labels-idx1-ubyte",
        damaged,
    ),
    "cifar binary": (datafiles.write_cifar10_binary, read_cifar10_binary, "data_batch_3.bin", damaged),
    "cifar pickle": (datafiles.write_cifar10_python, read_cifar10_python, "data_batch_2", damaged),
    "cifar meta pickle": (datafiles.write_cifar10_python, read_cifar10_python, "batches.meta", damaged),
    "mnist pickle": (
        lambda d: datafiles.write_mnist_pickle(d / "mnist.pkl.gz"),
        lambda d: read_mnist_pickle(d / "mnist.pkl.gz"),
        "mnist.pkl.gz",
        gz_damaged,
    ),
    "png": (lambda d: datafiles.write_image_folder(d), decode_all, "dog/2.png", damaged),
    "jpeg": (datafiles.write_tiny_imagenet, decode_all, "val/images/val_1.JPEG", damaged),
    "png header": (lambda d: datafiles.write_image_folder(d), check_all, "dog/2.png", damaged),
    "jpeg header": (datafiles.write_tiny_imagenet, check_all, "val/images/val_1.JPEG", damaged),
}


@pytest.mark.parametrize("case", CASES)
def test_damaged_dataset_files_are_one_line_or_read(tmp_path, case):
    write, read, name, damage = CASES[case]
    rng = random.Random(f"2026-11-23 {case}")
    write(tmp_path)
    original = (tmp_path / name).read_bytes()

    def alarm(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = {"read": 0, "refused": 0}
    try:
        for _ in range(25):
            (tmp_path / name).write_bytes(damage(rng, original))
            signal.alarm(30)
            try:
                read(tmp_path)
                outcomes["read"] += 1
            except DataError as err:
                assert "\n" not in str(err) and len(str(err)) < 1500, str(err)
                outcomes["refused"] += 1
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 512 * 1024, f"peak memory grew by {grown_kib / 1024:.0f} MiB on files of {len(original)} bytes"
    assert outcomes["refused"] >= 1, outcomes  # the damage is seen at least sometimes
