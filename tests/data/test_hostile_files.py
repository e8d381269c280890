"""Hostile data files (issue 26): each is refused with one DataError line naming the file, before
it can block, run code, or cost more memory or time than what the file's size declares."""

import gzip
import json
import os
import pickle
import struct
import warnings
import zlib

import datafiles
import numpy as np
import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)
from suitefiles import write_cub_official, write_fgvc, write_vtab1k
from testkit import REPO

from peftlab.config.schema import load_config
from peftlab.data import build_data
from peftlab.data import sources as sources_module
from peftlab.data.datasets import load_image
from peftlab.data.image_checks import MAX_IMAGE_PIXELS
from peftlab.data.readers import safe_pickle
from peftlab.data.readers.binary import (
    MNIST_CLASS_NAMES,
    read_cifar10_binary,
    read_cifar10_python,
    read_idx,
    read_idx_dataset,
    read_mnist_pickle,
)
from peftlab.data.readers.folders import read_image_folder, read_tiny_imagenet
from peftlab.data.readers.lists import read_cub_official, read_fgvc, read_vtab1k
from peftlab.data.readers.safe_pickle import load_pickle
from peftlab.data.sources import ENV_DATA_CACHE, find_data
from peftlab.data.text.tasks import load_text_splits
from peftlab.utils.errors import DataError


def write_text_folder(root):
    (root / "texts").mkdir()
    for split, n in (("train", 6), ("test", 3)):
        rows = "".join(json.dumps({"text": f"{split} {i}", "label": i % 2}) + "\n" for i in range(n))
        (root / "texts" / f"{split}.jsonl").write_text(rows)


def read_text_folder(root):
    return load_text_splits(load_config(None, ["data.name=text", f"data.root={root / 'texts'}"]).data)


def refused(read, *args, match: str, naming) -> str:
    """``read(*args)`` raises one DataError line that names ``naming`` and matches ``match``."""
    with pytest.raises(DataError, match=match) as err:
        read(*args)
    message = str(err.value)
    assert "\n" not in message and str(naming) in message, message
    return message


# ---------------------------------------------------------------------------- special files

# (layout writer, reader, the file replaced by something special)
LAYOUTS = {
    "cifar_binary": (datafiles.write_cifar10_binary, read_cifar10_binary, "data_batch_2.bin"),
    "cifar_binary_names": (datafiles.write_cifar10_binary, read_cifar10_binary, "batches.meta.txt"),
    "cifar_python": (datafiles.write_cifar10_python, read_cifar10_python, "data_batch_2"),
    "idx": (datafiles.write_idx_dataset, lambda d: read_idx_dataset(d, MNIST_CLASS_NAMES), "t10k-labels-idx1-ubyte.gz"),
    "mnist_pickle": (
        lambda d: datafiles.write_mnist_pickle(d / "mnist.pkl.gz"),
        lambda d: read_mnist_pickle(d / "mnist.pkl.gz"),
        "mnist.pkl.gz",
    ),
    "image_folder": (datafiles.write_image_folder, lambda d: read_image_folder(d, split_seed=0), "cat/3.png"),
    "tiny_imagenet_wnids": (datafiles.write_tiny_imagenet, read_tiny_imagenet, "wnids.txt"),
    "tiny_imagenet_val": (datafiles.write_tiny_imagenet, read_tiny_imagenet, "val/images/val_2.JPEG"),
    "vtab_list": (lambda d: write_vtab1k(d, ["svhn"]), lambda d: read_vtab1k("svhn", d / "svhn"), "svhn/test.txt"),
    "fgvc_json": (
        lambda d: write_fgvc(d, ["flowers"]),
        lambda d: read_fgvc("flowers", d / "flowers"),
        "flowers/val.json",
    ),
    "cub_ids": (
        lambda d: write_cub_official(d / "cub", per_class=2),
        lambda d: read_cub_official(d / "cub"),
        "cub/image_class_labels.txt",
    ),
    "text_file": (write_text_folder, read_text_folder, "texts/test.jsonl"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_fifo_in_a_dataset_folder_is_refused_without_blocking(tmp_path, layout):
    write, read, name = LAYOUTS[layout]
    write(tmp_path)
    (tmp_path / name).unlink()
    os.mkfifo(tmp_path / name)  # before the fix: open() waited forever for a writer
    refused(read, tmp_path, match="is a FIFO", naming=tmp_path / name)


@pytest.mark.parametrize("layout", ["cifar_binary", "cifar_python", "image_folder", "tiny_imagenet_wnids"])
def test_a_proc_file_that_passes_for_regular_is_refused(tmp_path, layout):
    """/proc/kmsg is a 'regular' file of 0 bytes whose read blocks; /proc/self/status is one that does not."""
    write, read, name = LAYOUTS[layout]
    write(tmp_path)
    (tmp_path / name).unlink()
    (tmp_path / name).symlink_to("/proc/self/status")
    refused(read, tmp_path, match=r"is empty \(0 bytes", naming=tmp_path / name)


@pytest.mark.parametrize("layout", ["vtab_list", "fgvc_json", "cub_ids", "text_file"])
@pytest.mark.parametrize("kind", ["a folder", "a character device"])
def test_a_list_json_split_or_text_file_that_is_no_regular_file_is_one_line(tmp_path, layout, kind):
    write, read, name = LAYOUTS[layout]
    write(tmp_path)
    (tmp_path / name).unlink()
    if kind == "a folder":
        (tmp_path / name).mkdir()
    else:
        (tmp_path / name).symlink_to("/dev/zero")
    refused(read, tmp_path, match=f"is {kind}", naming=tmp_path / name)


@pytest.mark.parametrize(
    "layout, size, match",
    [
        ("vtab_list", (256 << 20) + 1, "more than a list file may hold"),
        ("fgvc_json", (64 << 20) + 1, "more than a json split file may hold"),
        ("cub_ids", (16 << 20) + 1, "more than a list file may hold"),
        ("tiny_imagenet_wnids", (64 << 20) + 1, "more than a file of this kind may hold"),
        ("cifar_binary", (256 << 20) + 1, "more than a file of this kind may hold"),
    ],
)
def test_a_file_larger_than_its_kind_holds_is_refused_before_it_is_read(tmp_path, layout, size, match):
    """Sparse files: their size costs no disk, and a reader that read them whole would hold it in memory."""
    write, read, name = LAYOUTS[layout]
    write(tmp_path)
    os.truncate(tmp_path / name, size)
    refused(read, tmp_path, match=match, naming=tmp_path / name)


def test_a_device_is_refused(tmp_path):
    datafiles.write_cifar10_binary(tmp_path)
    (tmp_path / "test_batch.bin").unlink()
    (tmp_path / "test_batch.bin").symlink_to("/dev/zero")  # endless zeros: whole CIFAR records forever
    refused(read_cifar10_binary, tmp_path, match="is a character device", naming=tmp_path / "test_batch.bin")


# ---------------------------------------------------------------------------- IDX


def test_idx_shape_whose_product_overflows_int64_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", *[1 << 16] * 4))  # 2**64 bytes: 0 in int64
    refused(read_idx, path, match=r"declares shape \(65536, 65536, 65536, 65536\).*IDX_MAX_BYTES", naming=path)


def test_idx_declaring_more_than_a_gzip_file_can_hold_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 1000, 1000, 1000)))  # 1 GB from 40 bytes
    refused(read_idx, path, match=r"more than a gzip file of [0-9,]+ bytes can hold \([0-9,]+\)", naming=path)


class CountingGzipFile(gzip.GzipFile):
    """A GzipFile that counts the decompressed bytes handed out (its readinto calls read)."""

    handed_out = 0

    def read(self, size=-1):
        data = super().read(size)
        CountingGzipFile.handed_out += len(data)
        return data


@pytest.mark.parametrize("extra", [1, 16 << 20])
def test_gz_idx_is_read_no_further_than_its_header_declares(tmp_path, monkeypatch, extra):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    declared = datafiles.idx_bytes(datafiles.make_images(2, (28, 28), 0))
    path.write_bytes(gzip.compress(declared + bytes(extra), compresslevel=1))
    monkeypatch.setattr(gzip, "GzipFile", CountingGzipFile)
    CountingGzipFile.handed_out = 0
    refused(read_idx, path, match=r"declares shape \(2, 28, 28\) \(1584 bytes\) but the file holds more", naming=path)
    assert CountingGzipFile.handed_out <= len(declared) + 1


def test_short_gz_idx_is_refused(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(datafiles.idx_bytes(datafiles.make_images(2, (28, 28), 0))[:-10]))
    refused(read_idx, path, match=r"\(1584 bytes\) but the file holds 1574 bytes", naming=path)


# ---------------------------------------------------------------------------- CIFAR python labels


@pytest.mark.parametrize(
    "labels, match",
    [
        ([[0, 1], 0, 0, 0, 0, 0], "expected labels as a list of integers, found a list"),  # ragged: numpy raised
        ([0, 0, 0, 0, 0, True], "found a bool"),
        ([0, 0, 0, 0, 0, 1.0], "found a float"),
        ([0, 0, 0, 0, 0, 2**70], r"labels must lie in 0..9, found 0..1180591620717411303424"),  # beyond int64
        ([0, 0, 0, 0, 0], "6 images but 5 labels"),
        ({0: 1}, "expected labels as a list of integers, found dict"),
        ([0, 0, 0, 0, 0, 10**5000], r"labels must lie in 0..9, found 0..<int>"),  # too long for repr()
    ],
)
def test_cifar_python_batch_with_bad_labels_is_refused(tmp_path, labels, match):
    datafiles.write_cifar10_python(tmp_path)
    batch = {b"data": np.zeros((6, 3072), np.uint8), b"labels": labels}
    path = datafiles.write_pickle(tmp_path / "data_batch_2", batch)
    refused(read_cifar10_python, tmp_path, match=match, naming=path)


def test_cifar_python_batch_with_ragged_data_is_refused(tmp_path):
    datafiles.write_cifar10_python(tmp_path)
    path = datafiles.write_pickle(tmp_path / "data_batch_2", {b"data": [[0] * 3072, [0]], b"labels": [0, 0]})
    refused(read_cifar10_python, tmp_path, match="expected 'data' .* as a numpy array, found list", naming=path)


def test_cifar_python_names_that_are_not_strings_are_refused(tmp_path):
    datafiles.write_cifar10_python(tmp_path)
    path = datafiles.write_pickle(tmp_path / "batches.meta", {b"label_names": [[1, 2]] * 10})
    refused(read_cifar10_python, tmp_path, match="a list of 10 class names", naming=path)


# ---------------------------------------------------------------------------- TinyImageNet wnids


@pytest.mark.parametrize("wnid", ["../../outside", "OUTSIDE", "n01/../../outside", "..", "a\\b", "a\0b"])
def test_tiny_imagenet_wnid_that_is_a_path_is_refused(tmp_path, wnid):
    outside = tmp_path / "outside"
    datafiles.write_image(outside / "images" / "x.JPEG", (1, 2, 3))  # before the fix: read as a class
    datafiles.write_tiny_imagenet(tmp_path / "tin")
    wnid = wnid.replace("OUTSIDE", str(outside))
    (tmp_path / "tin" / "wnids.txt").write_text(f"n01\nn02\nn03\n{wnid}\n")
    message = refused(
        read_tiny_imagenet, tmp_path / "tin", match="is not a plain folder name", naming=tmp_path / "tin" / "wnids.txt"
    )
    assert repr(wnid) in message


# ---------------------------------------------------------------------------- the data cache


@pytest.mark.parametrize("where", ["a file", "under a file", "/proc", "read-only"])
def test_an_unusable_data_cache_is_one_line_naming_the_variable(tmp_path, monkeypatch, where):
    datafiles.write_image_folder(tmp_path / "images")
    (tmp_path / "afile").write_text("not a folder")
    cache = {
        "a file": tmp_path / "afile",
        "under a file": tmp_path / "afile" / "cache",
        "/proc": "/proc",
        "read-only": tmp_path / "ro",
    }[where]
    if where == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        cache.mkdir(mode=0o555)
    monkeypatch.setenv(ENV_DATA_CACHE, str(cache))
    cfg = datafiles.make_cfg(name="imagefolder", root=str(tmp_path / "images"), cache=True, num_workers=0)
    with pytest.raises(DataError, match=f"{ENV_DATA_CACHE}={cache}\\).*set {ENV_DATA_CACHE} to a writable") as err:
        build_data(cfg, img_size=8)
    assert "\n" not in str(err.value)


def test_no_download_into_an_unusable_data_cache(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setenv(ENV_DATA_CACHE, str(tmp_path / "afile"))
    downloads = []
    monkeypatch.setattr(sources_module, "download", lambda name, target: downloads.append(target))
    with pytest.raises(DataError, match=f"{ENV_DATA_CACHE}=.*afile"):
        find_data("cifar10", None, download_allowed=True)
    assert downloads == []


# ---------------------------------------------------------------------------- images


def png_bytes(width: int, height: int) -> bytes:
    """A 1-bit PNG of ``width`` x ``height`` black pixels (small on disk, large decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = bytes(1 + (width + 7) // 8) * height
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


def test_an_image_above_the_pixel_budget_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(4097, 4096))
    assert 4097 * 4096 > MAX_IMAGE_PIXELS
    refused(load_image, str(path), 8, 3, match="4097 x 4096 pixels, more than MAX_IMAGE_PIXELS", naming=path)
    path.write_bytes(png_bytes(4096, 4096))
    assert load_image(str(path), 8, 3).shape == (3, 8, 8)


def test_pils_decompression_bomb_warning_is_not_shown(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(10000, 10000))  # 100 Mpx: above PIL's warning limit, below its error limit
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        refused(load_image, str(path), 8, 3, match="10000 x 10000 pixels", naming=path)
    assert [str(w.message) for w in shown] == []


# ---------------------------------------------------------------------------- pickles that cost more than their size


def test_a_stack_of_none_opcodes_is_refused_before_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_pickle, "MAX_PICKLE_ITEMS", 1000)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(b"\x80\x02" + b"N" * 2000 + b"."))
    refused(read_mnist_pickle, path, match="more than 1,000 objects on its stack", naming=path)


def nested(depth: int, make=list):
    """A list (or tuple) nested ``depth`` deep, each level holding the level below twice: 2**depth
    leaves from one memo reference a level."""
    value = make([0])
    for _ in range(depth):
        value = make([value, value])
    return value


@pytest.mark.parametrize(
    "batch",
    [
        {b"data": np.zeros((6, 3072), np.uint8), b"labels": [nested(20)] * 6},  # numpy walked 6 x 2**20 items
        {b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 6, nested(22, tuple): 0},  # hashed 2**22 items
    ],
    ids=["labels", "dict-key"],
)
def test_memo_references_that_multiply_an_object_are_refused(tmp_path, batch):
    datafiles.write_cifar10_python(tmp_path)
    path = datafiles.write_pickle(tmp_path / "data_batch_1", batch)
    assert path.stat().st_size < 20_000  # 18 KB of pixels, a few hundred bytes of references
    refused(read_cifar10_python, tmp_path, match="its objects would weigh", naming=path)


def test_a_huge_memo_index_is_refused_before_loading(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02N" + b"r" + struct.pack("<I", 1 << 24) + b".")  # the unpickler sized its memo for it
    refused(load_pickle, path, match="memo index 16,777,216", naming=path)


def test_copies_parked_in_the_memo_are_refused(tmp_path):
    """_codecs.encode copies a 100 KB string 64 times, each copy kept in the memo, never on the stack."""
    text = "x" * 100_000
    data = (
        b"\x80\x02c_codecs\nencode\nq\x000"
        + b"X"
        + struct.pack("<I", len(text))
        + text.encode()
        + b"q\x010"
        + b"X\x06\x00\x00\x00latin1q\x020"
    )
    for i in range(64):
        data += b"h\x00h\x01h\x02\x86R" + b"r" + struct.pack("<I", 3 + i) + b"0"
    path = tmp_path / "batch"
    path.write_bytes(data + b"N.")
    refused(load_pickle, path, match="its objects would weigh", naming=path)


@pytest.mark.parametrize(
    "source, match",
    [
        (b"cnumpy\ndtype\n(S'f4'\nI2\nI1\ntR.", "numpy.dtype is allowed only with a type string and two flags"),
        (b"cnumpy\ndtype\n(S'a4'\nI0\nI1\ntR.", "not a valid pickle .*DeprecationWarning"),
    ],
)
def test_numpy_warnings_about_a_pickle_are_a_refusal_not_stderr(tmp_path, source, match):
    path = tmp_path / "batch"
    path.write_bytes(source)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        refused(load_pickle, path, match=match, naming=path)
    assert [str(w.message) for w in shown] == []


def test_dtype_flags_as_python_2_wrote_them_load(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"cnumpy\ndtype\n(S'u1'\nI0\nI1\ntR.")
    assert load_pickle(path) == np.dtype("u1")


def test_the_datasets_own_pickles_pass_the_scan(tmp_path):
    """A CIFAR batch pickled at every protocol numpy and Python 2 used, with 1000 file names."""
    batch = {
        b"data": datafiles.make_images(1000, (3072,), 0),
        b"labels": list(range(10)) * 100,
        b"filenames": [f"img_{i}.png".encode() for i in range(1000)],
        b"batch_label": b"training batch 1 of 5",
    }
    for protocol in (0, 2, 4, 5):
        path = datafiles.write_pickle(tmp_path / f"p{protocol}", batch, protocol=protocol)
        with open(path, "rb") as f:
            assert safe_pickle.scan_pickle(f, path) == path.stat().st_size
    assert pickle.DEFAULT_PROTOCOL in (4, 5)


# ---------------------------------------------------------------------------- through the CLI


def test_hostile_data_files_are_one_line_and_exit_2_through_the_cli(tmp_path):
    from testkit import run_cli

    datafiles.write_cifar10_binary(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_4.bin").unlink()
    os.mkfifo(tmp_path / "cifar" / "data_batch_4.bin")
    proc = run_cli("data", "info", "cifar10", "--root", str(tmp_path / "cifar"), timeout=480)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("peftlab: error: "), proc.stderr
    assert f"{tmp_path / 'cifar' / 'data_batch_4.bin'} is a FIFO" in proc.stderr


def test_a_cache_on_a_full_disk_is_one_line_not_sigbus(tmp_path, small_disk):
    """The decoded-image cache is memory-mapped: on a file system that fills up, a write through
    the map used to kill the trainer with SIGBUS (exit 135, no message) and leave a temporary file.
    Its blocks are reserved first: one DataError line naming the cache file, nothing left behind."""
    import subprocess
    import sys

    datafiles.write_image_folder(tmp_path / "images", per_class=30)  # 90 images x 3 x 32 x 32: 270 KiB decoded
    script = (
        "import sys\nfrom peftlab.data import build_data\nfrom peftlab.utils.errors import DataError\n"
        "import datafiles\n"
        f"cfg = datafiles.make_cfg(name='imagefolder', root={str(tmp_path / 'images')!r}, cache=True, "
        "num_workers=0, val_fraction=0.0)\n"
        "try:\n    build_data(cfg, img_size=32)\nexcept DataError as err:\n"
        "    print(err, file=sys.stderr)\n    sys.exit(2)\n"
    )
    env = dict(
        os.environ,
        **{ENV_DATA_CACHE: str(small_disk)},
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests" / "data"), str(REPO / "tests")]),
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.count("\n") == 1 and "cannot write the decoded-image cache" in proc.stderr
    assert "No space left on device" in proc.stderr
    left = [p for p in small_disk.rglob("*") if p.is_file() and p.parent.name != "image-headers"]  # checked before
    assert not left, left


@pytest.mark.parametrize("name", ["loop/x.JPEG", "n" * 300 + ".JPEG"], ids=["symlink loop", "300-character name"])
def test_a_tiny_imagenet_annotation_the_system_refuses_is_one_line(tmp_path, name):
    datafiles.write_tiny_imagenet(tmp_path)
    (tmp_path / "val" / "images" / "loop").symlink_to("loop")
    annotations = tmp_path / "val" / "val_annotations.txt"
    lines = annotations.read_text().split("\n")
    lines[1] = name + lines[1][lines[1].index("\t") :]
    annotations.write_text("\n".join(lines))
    refused(read_tiny_imagenet, tmp_path, match="val_annotations.txt line 2: ", naming=annotations)
