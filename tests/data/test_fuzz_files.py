"""Damaged dataset files are one DataError line or read: never another exception, never a hang,
never a memory blow-up.

Fuzzed with fixed seeds and a bounded count: bytes of a valid file of each layout (IDX, CIFAR
binary and pickled batches, the MNIST pickle inside its gzip, PNG and JPEG images, a VTAB-1k list,
an FGVC json split, CUB's images.txt, JSONL and CSV text files, a GLUE TSV) are replaced, inserted
or cut, and the layout is read (images decoded) under an alarm.
"""

import gzip
import json
import random
import resource
import signal

import datafiles
import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)
from suitefiles import write_cub_official, write_fgvc, write_vtab1k

from peftlab.config.schema import load_config
from peftlab.data.datasets import load_image
from peftlab.data.image_checks import image_header
from peftlab.data.readers.binary import (
    MNIST_CLASS_NAMES,
    read_cifar10_binary,
    read_cifar10_python,
    read_idx_dataset,
    read_mnist_pickle,
)
from peftlab.data.readers.lists import read_cub_official, read_fgvc, read_vtab1k
from peftlab.data.text.tasks import load_text_splits
from peftlab.utils.errors import DataError


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


def write_text_folder(directory, fmt):
    rows = [{"text": f"a text, number {i}", "second": f"and its pair {i}", "label": i % 3} for i in range(12)]
    for split, part in (("train", rows[:9]), ("test", rows[9:])):
        if fmt == "jsonl":
            text = "".join(json.dumps(row) + "\n" for row in part)
        else:
            text = "text,second,label\n" + "".join(f"{r['text']},{r['second']},{r['label']}\n" for r in part)
        (directory / f"{split}.{fmt}").write_text(text)


def read_text_folder(directory):
    cfg = load_config(None, ["data.name=text", f"data.root={directory}", "data.text_pair_column=second"]).data
    return load_text_splits(cfg)


def write_glue_task(directory):
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    rows = "".join(f"{i % 2}\t{100 + i}\t{200 + i}\tFirst {i}.\tSecond {i}.\n" for i in range(12))
    (directory / "MRPC").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (directory / "MRPC" / name).write_text(header + rows)


def read_glue_task(directory):
    return load_text_splits(load_config(None, ["data.name=glue/mrpc", f"data.root={directory}"]).data)


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
    "vtab list": (
        lambda d: write_vtab1k(d, ["svhn"]),
        lambda d: read_vtab1k("svhn", d / "svhn"),
        "svhn/test.txt",
        damaged,
    ),
    "fgvc json": (
        lambda d: write_fgvc(d, ["flowers"]),
        lambda d: read_fgvc("flowers", d / "flowers"),
        "flowers/val.json",
        damaged,
    ),
    "cub images.txt": (
        lambda d: write_cub_official(d / "cub", per_class=2),
        lambda d: read_cub_official(d / "cub"),
        "cub/images.txt",
        damaged,
    ),
    "text jsonl": (lambda d: write_text_folder(d, "jsonl"), lambda d: read_text_folder(d), "train.jsonl", damaged),
    "text csv": (lambda d: write_text_folder(d, "csv"), lambda d: read_text_folder(d), "test.csv", damaged),
    "glue tsv": (write_glue_task, read_glue_task, "MRPC/train.tsv", damaged),
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
