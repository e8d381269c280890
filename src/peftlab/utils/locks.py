"""Directory locks: one study process per study directory, one trainer per run directory.

An OS file lock (``fcntl.flock`` on ``<dir>/.lock``) is held for as long as the process
runs; the file also says who holds it (pid, host, command, since when), so a refused second
process can name the holder. The OS releases the lock of a process that dies, however it
dies, so the lock of a dead holder is simply taken over. ``flock`` works between processes
of one machine and on local file systems; on a shared file system across machines it depends
on the file system (NFS v4 supports it; see docs/studies.md, "Executors").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from peftlab.utils.errors import STORAGE_ERRORS, UserError
from peftlab.utils.files import check_kind, shown_path


class DirectoryInUse(UserError):
    """Another live process holds the directory's lock."""


def holder_text(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"])) if info.get("since") else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} ({info.get('command', '?')}, since {since})"


@contextlib.contextmanager
def hold(directory: str | Path, what: str, role: str, wait: bool = False, on_wait=None, wait_flag: str | None = None):
    """Hold ``directory``'s lock for the ``with`` block, as ``role`` (e.g. "peftlab study"); a held
    lock raises ``DirectoryInUse`` naming its holder (and ``wait_flag``, the option of the caller's command that
    waits, where it has one), or with ``wait`` blocks until it is free (``on_wait(text)`` is told once)."""
    path = Path(directory) / ".lock"
    check_kind(directory, True, what)
    check_kind(path, False, f"{what} entry", link_ok=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as err:  # a directory under /proc, a parent that is a file, a read-only disk
        if err.errno in STORAGE_ERRORS:
            raise  # the CLI names the storage problem
        raise UserError(
            f"{what} {shown_path(directory)} cannot hold peftlab's files: {path.name}: {err.strerror}"
        ) from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = holder_text(json.loads(f.read() or "{}"))
            except ValueError:
                holder = "another process"
            if not wait:
                waits = f", or add {wait_flag} to start when it does" if wait_flag else ""
                raise DirectoryInUse(
                    f"{what} {directory} is in use by {holder}; wait for it to finish{waits}"
                ) from None
            if on_wait:
                on_wait(f"{what} {directory} is in use by {holder}; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": role}))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def wait_until_free(directory: str | Path) -> None:
    """Block until no process holds ``directory``'s lock; return without holding it."""
    with open(Path(directory) / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        fcntl.flock(f, fcntl.LOCK_UN)
