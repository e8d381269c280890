"""Array datasets held decoded by a study's forkserver, so that each run forked from it reads none of their files.

A study's local workers are forked from one forkserver, a process per run; every run of the default study would
otherwise decompress and hash Fashion-MNIST's IDX files again (about 0.6 s of a 20 s run, and a rung's second
job reads them once more). The study names the array datasets its runs read in ``$PEFTLAB_HELD_DATA`` while it
starts the forkserver (``study.executors.local.held_for``), whose preload imports
``study.executors.held_preload``: it reads each one there, once, with the readers any run uses. ``read_layout`` in
a run forked from it then takes a held dataset instead of its files while every file in its folder still has the
stat it had when it was read (the same inode, size, modification and change times: a file rewritten, replaced or
touched since is read again). Each run is a process of its own, so nothing it does to its arrays reaches the held
ones or another run. Only the forkserver holds anything: spawned workers (macOS), which train runs one after
another, and a run trained alone (``peftlab train``, the Python API) read their files as before. A forked run's RSS
counts the held pages it shares (result.json's ``memory.peak_rss_bytes``: 40 to 70 MB more on the default study;
the figures above its baseline, which holds them already, do not).
"""

from __future__ import annotations

import os
from pathlib import Path

from peftlab.data.readers.records import RawData

ENV_HELD_DATA = "PEFTLAB_HELD_DATA"  # JSON list of [layout, folder]: what a study's forkserver reads and holds
# the layouts read whole into arrays (what a folder of image files has is read per image, not held)
HELD_LAYOUTS = frozenset(
    {
        "mnist_idx",
        "fashion_mnist_idx",
        "mnist_pickle",
        "cifar10_python",
        "cifar10_binary",
        "cifar100_python",
        "cifar100_binary",
    }
)
HELD: dict[tuple[str, str], tuple[tuple, RawData]] = {}  # (layout, folder) -> (the folder's stats then, its data)
HOLDER: dict[str, int] = {}  # "pid": the process that read and holds them (the forkserver), which runs no run


def folder_stats(directory: Path) -> tuple | None:
    """Every entry of ``directory`` (not its sub-folders' entries) with its own and its target's identity, size and
    times; None where the folder cannot be listed or an entry cannot be stat'ed (then nothing is held)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        found = []
        for entry in entries:
            own = entry.stat(follow_symlinks=False)
            target = os.stat(entry.path) if entry.is_symlink() else own
            found.append((entry.name, own.st_ino, own.st_mtime_ns, own.st_ctime_ns, target.st_dev, target.st_ino))
            found.append((target.st_size, target.st_mtime_ns, target.st_ctime_ns))
        return tuple(found)
    except OSError:
        return None


def hold(layout: str, directory: Path, read) -> None:
    """Read the dataset in ``directory`` with ``read(layout, directory)`` (``sources.read_layout``'s) and hold it; any
    failure holds nothing (the run that reads it meets the error itself, in its own record)."""
    if layout not in HELD_LAYOUTS:
        return
    before = folder_stats(directory)
    try:
        raw = read(layout, directory)
    except Exception:  # a run reading these files reports what is wrong with them
        return
    if before is not None and folder_stats(directory) == before:  # unchanged while it was read
        HELD[(layout, str(directory))] = (before, raw)
        HOLDER["pid"] = os.getpid()


def held(layout: str, directory: Path) -> RawData | None:
    """The held dataset of ``layout`` in ``directory`` while its folder is as it was read, else None; only in a
    process forked from the one that holds it (``HOLDER``), whose pages are its own once it writes to them: what a
    run does to its arrays stays in its own process, and the holder itself reads its files like any process."""
    entry = HELD.get((layout, str(directory)))
    if entry is None or HOLDER.get("pid") in (None, os.getpid()) or folder_stats(directory) != entry[0]:
        return None
    return entry[1]
