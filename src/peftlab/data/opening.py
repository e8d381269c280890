"""Opening a dataset's files: regular files only, and never an open or a read that blocks.

A FIFO in a dataset folder blocks ``open()`` forever, a device or a socket holds no dataset, and
a file in /proc or /sys (such as /proc/kmsg) passes for a regular file but reports 0 bytes and may
block on read. `open_data_file` refuses each of them with one `DataError` line naming the file: it
checks the path with ``os.stat`` before opening it, opens it with ``O_NONBLOCK`` (a FIFO put there
in between cannot block either), checks the open file again and refuses an empty one (no dataset
file is empty). Every reader in peftlab.data opens its files through it.
"""

import os
import stat
from pathlib import Path
from typing import BinaryIO

from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line

GZIP_MAX_RATIO = 1032  # deflate expands a byte to at most about 1032 bytes
MAX_DATA_FILE_BYTES = 256 << 20  # CIFAR-100's train.bin, the largest file read whole, is 154 MB
MAX_TEXT_LINES_BYTES = 64 << 20  # a names or annotations file (TinyImageNet's val_annotations.txt: 2 MB)

NOT_REGULAR = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def check_regular(path: Path, st: os.stat_result, allow_empty: bool = False) -> None:
    """A DataError unless ``st`` (of ``path``) is a regular file, and a non-empty one unless ``allow_empty``."""
    if not stat.S_ISREG(st.st_mode):
        kind = NOT_REGULAR.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise DataError(f"{path} is {kind}: expected a regular data file")
    if st.st_size == 0 and not allow_empty:
        raise DataError(f"{path} is empty (0 bytes; files in /proc and /sys also say 0): expected a data file")


def stat_data_path(path: Path, missing: str | None = None) -> os.stat_result:
    """``os.stat`` of ``path`` (symlinks followed), or one DataError line: a broken symlink, ``missing`` (default
    "missing file PATH") when nothing is there, the system's reason otherwise."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise DataError(f"{path}: a broken symlink; remove it or restore its target") from None
        raise DataError(missing or f"missing file {path}") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the name
        raise DataError(f"cannot read {path}: {one_line(err)}") from None


def check_data_file(path: Path, allow_empty: bool = False) -> None:
    """``path`` (symlinks followed) is a non-empty regular file, or one DataError line."""
    check_regular(path, stat_data_path(path), allow_empty)


def open_data_file(path: Path, allow_empty: bool = False) -> BinaryIO:
    """``path`` opened for reading in binary mode, once checked to be a non-empty regular file."""
    check_data_file(path, allow_empty)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise DataError(f"cannot read {path}: {one_line(err)}") from None
    try:
        check_regular(path, os.fstat(fd), allow_empty)  # the file opened, not what the name pointed at before
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_data_file(path: Path, limit: int = MAX_DATA_FILE_BYTES, what: str = "a file of this kind") -> bytes:
    """The whole content of a regular file (never a FIFO, a device or a /proc file) of at most ``limit`` bytes
    (``what`` names the kind of file in the error)."""
    with open_data_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise DataError(f"{path}: {size:,} bytes, more than {what} may hold ({limit:,})")
        try:
            data = f.read(size + 1)  # not limit + 1: read(n) allocates n bytes first
        except OSError as err:
            raise DataError(f"cannot read {path}: {one_line(err)}") from None
    check_size_held(path, size, len(data))
    return data


def check_size_held(path: Path, size: int, read: int) -> None:
    """A DataError when a file read ``read`` bytes against the ``size`` its stat declared: it grew meanwhile."""
    if read > size:
        raise DataError(f"{path} grew while it was read (from {size:,} bytes): expected a file nothing writes to")
