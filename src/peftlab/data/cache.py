"""`data.cache: true`: a folder split's decoded, resized images kept as one uint8 .npy file.

The file holds N x C x S x S uint8 (what `load_image` gives, before any augmentation or
normalisation), lies in ``<data cache>/decoded/<key>.npy`` (``$PEFTLAB_DATA_CACHE``, default
~/.cache/peftlab/data) and is memory-mapped on read (numpy's format, no pickle). The key hashes
everything the pixels depend on: the dataset's checksums (every image file's SHA-256), the split's
file list in order, the image size and channels, and the Pillow and torch versions that decode
and resize. It is written atomically (a temporary file renamed over the key), so a crash never
leaves half a cache. The SHA-256 of the file as written is kept beside it (``<key>.sha256.json``)
and checked on every read (once per process while the file's stat stays the same): a file whose
pixels were overwritten, one without its digest, or one that does not read back as the expected
array is rebuilt, with a one-line warning, never trusted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np
import PIL
import torch
from torch.utils.data import DataLoader

from peftlab.data.datasets import DecodedFiles
from peftlab.data.loading import decoded_in_this_process
from peftlab.data.readers.records import hash_file, hash_open_file
from peftlab.data.sources import decoded_cache_dir, writable_cache_dir
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line, read_json, refuse_link, reopening_name, write_atomic, write_json_atomic

CACHE_FORMAT = 1  # bump when what a cache file holds changes
BUILD_BATCH = 64
# cache files whose digest this process checked: path -> the stat it had then (a rewrite changes its ctime)
VERIFIED: dict[str, tuple[int, int, int, int]] = {}


def cache_key(
    sha256: dict[str, str], split: str, paths, size: int, in_chans: int, interpolation: str = "bilinear"
) -> str:
    """Hex digest naming the cache file of one split."""
    facts = {
        "format": CACHE_FORMAT,
        "sha256": dict(sorted(sha256.items())),
        "split": split,
        "paths": [str(p) for p in paths],
        "size": size,
        "in_chans": in_chans,
        **({} if interpolation == "bilinear" else {"interpolation": interpolation}),  # bilinear: keys stay
        "pillow": PIL.__version__,
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def digest_file(path: Path) -> Path:
    """Where the SHA-256 of cache file ``path``, as it was written, is kept."""
    return path.with_name(f"{path.stem}.sha256.json")


def file_stat(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def verify(path: Path, f: BinaryIO) -> None:
    """A ValueError unless ``path``, open as ``f``, holds the bytes whose SHA-256 was recorded when it was written."""
    st = os.fstat(f.fileno())
    stamp = st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
    if VERIFIED.get(str(path)) == stamp:
        return
    recorded = (read_json(digest_file(path)) or {}).get("sha256")
    if not isinstance(recorded, str):
        raise ValueError(f"no digest recorded in {digest_file(path).name}")
    if hash_open_file(f, path) != recorded:
        raise ValueError("its SHA-256 is not the one recorded when it was written (pixels overwritten?)")
    VERIFIED[str(path)] = stamp


def open_cache(path: Path) -> BinaryIO | None:
    """Cache file ``path`` open for reading, or None when it is absent or no regular file (the rebuild's
    write names what is there). Never through a link: peftlab wrote none there (one UserError line)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            refuse_link(path, "decoded-image cache file")
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array, memory-mapped (copy on write: never written back), or None when absent, not the
    bytes written (`verify`) or not a uint8 array of ``shape`` (a warning says so; the caller rebuilds it).
    The file is opened once: what is mapped is the file whose digest was checked, never one swapped in."""
    try:
        f = open_cache(path)
        if f is None:
            return None
        with f:
            verify(path, f)
            images = np.load(reopening_name(f.fileno(), path), mmap_mode="c", allow_pickle=False)
        if images.dtype != np.uint8 or images.shape != shape:
            raise ValueError(f"holds {images.dtype} {images.shape}, expected uint8 {shape}")
    except (OSError, ValueError, EOFError, DataError) as err:
        VERIFIED.pop(str(path), None)
        print(
            f"peftlab: warning: rebuilding the decoded-image cache {path}: {one_line(err)[:200]}",
            file=sys.stderr,
            flush=True,
        )
        return None
    return images


def reserve_blocks(path: str) -> None:
    """Allocate the (sparse) memory-mapped file's disk blocks before writing through the map: on a
    full disk the allocation fails with ENOSPC (one line), where a write to an unbacked page would
    kill the process with SIGBUS. File systems without fallocate keep the sparse file."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


def build_cache(path: Path, decoded: DecodedFiles, num_workers: int) -> None:
    """Decode every image of ``decoded`` (in order, ``num_workers`` processes) into ``path``, atomically."""
    shape = (len(decoded), decoded.in_chans, decoded.size, decoded.size)

    def write(tmp: str) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        reserve_blocks(tmp)
        loader = DataLoader(decoded, batch_size=BUILD_BATCH, num_workers=num_workers, generator=torch.Generator())
        start = 0
        for images, _ in loader if num_workers else decoded_in_this_process(loader):
            out[start : start + len(images)] = images.numpy()
            start += len(images)
        out.flush()
        del out
        digest["sha256"] = hash_file(Path(tmp))

    digest = {}
    write_atomic(path, write)
    write_json_atomic(digest_file(path), {"format": CACHE_FORMAT, "sha256": digest["sha256"]})
    VERIFIED[str(path)] = file_stat(path)  # hashed as it was written


def cached_images(
    sha256: dict[str, str], split: str, decoded: DecodedFiles, num_workers: int, directory: Path | None = None
) -> torch.Tensor:
    """uint8 N x C x S x S of a folder split, from the cache in ``directory`` (default
    ``decoded_cache_dir()``), decoding (and caching) it first if needed."""
    shape = (len(decoded), decoded.in_chans, decoded.size, decoded.size)
    if not len(decoded):  # nothing to decode (an empty val split): numpy cannot map an empty array
        return torch.empty(shape, dtype=torch.uint8)
    directory = directory or writable_cache_dir(decoded_cache_dir())
    key = cache_key(sha256, split, decoded.paths, decoded.size, decoded.in_chans, decoded.interpolation)
    path = directory / f"{key}.npy"
    images = read_cache(path, shape)
    if images is None:
        try:
            build_cache(path, decoded, num_workers)
        except OSError as err:  # a full disk; decoding errors are DataErrors already
            raise DataError(f"cannot write the decoded-image cache {path}: {one_line(err)}") from None
        images = read_cache(path, shape)
        if images is None:
            raise OSError(f"the decoded-image cache {path} did not read back after writing it")
    return torch.from_numpy(images)
