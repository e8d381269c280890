"""peftlab's cache folders (the data cache, the model records): marked by peftlab, cleared of its own entries only.

    mark_cache(folder, "data")                            # when peftlab creates the folder: .peftlab-cache
    plan = clearing_plan(folder, "data", sort, what)     # the entries to remove, or one UserError line
    count, size = clear(plan)                            # links removed as links, never followed
    size = tree_bytes(path)                               # bounded; what vanishes or cannot be read counts 0

A cache folder is named by an environment variable, so it can be anything: ``~``, ``/``, a folder of the
user's datasets. A clear removes only the entries that ``sort`` calls peftlab's own (by name and kind) and
refuses, before removing anything, ``/``, the home folder or an ancestor of it, and a folder holding any
entry that is not peftlab's. The marker says peftlab made the folder; a folder without one that holds only
peftlab's own entries is a cache an earlier peftlab wrote: it is cleared and marked. The marker is
peftlab's own file, not a ``CACHEDIR.TAG``: the data cache may hold datasets the user placed there
(``vtab1k/``), which a backup tool honouring the tag would skip.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peftlab.utils.errors import UserError
from peftlab.utils.files import check_kind, read_json, shown_path

MARKER = ".peftlab-cache"
MAX_MEASURED = 1_000_000  # entries tree_bytes visits: a cache entry of peftlab's holds far fewer


def mark_cache(folder: Path, kind: str) -> None:
    """Write ``folder``'s marker when it has none (created with O_EXCL, never through a link); a folder that
    cannot be written stays unmarked."""
    try:
        fd = os.open(folder / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError:
        return
    with os.fdopen(fd, "w") as f:
        json.dump({"peftlab": f"{kind} cache", "what": "peftlab clears only its own entries of this folder"}, f)


def is_marked(folder: Path, kind: str) -> bool:
    marker = folder / MARKER
    return not marker.is_symlink() and (read_json(marker) or {}).get("peftlab") == f"{kind} cache"


def home_folders() -> set[Path]:
    """The home folder as ``$HOME`` and the password database name it, resolved."""
    homes = {os.path.expanduser("~")}
    try:
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        pass
    return {Path(os.path.realpath(home)) for home in homes if home and home.startswith("/")}


def refuse_shared_root(folder: Path, what: str, hint: str) -> None:
    """One UserError line when ``folder`` (links resolved) is ``/``, the home folder or an ancestor of it."""
    real = Path(os.path.realpath(folder))
    homes = sorted(home for home in home_folders() if home.is_relative_to(real))
    if real == Path("/") or homes:
        which = "/" if real == Path("/") else "the home folder" if real == homes[0] else f"an ancestor of {homes[0]}"
        shown = shown_path(folder) + ("" if str(real) == str(folder) else f" ({shown_path(real)})")
        raise UserError(
            f"{what} {shown} is {which}: peftlab clears only a folder of its own, nothing was removed; {hint}"
        )


@dataclass(frozen=True)
class Clearing:
    """What a clear of ``folder`` removes (``entries``), and whether the folder must be marked first."""

    folder: Path
    kind: str
    entries: list[Path]
    mark: bool


def clearing_plan(folder: Path, kind: str, sort: Callable[[os.DirEntry], str], what: str, hint: str) -> Clearing:
    """The entries of ``folder`` that ``sort`` calls ``own`` (``kept``: known, never removed; anything else
    is foreign). One UserError line, before anything is removed, for ``/``, the home folder or an ancestor
    of it, a folder that is no directory or cannot be listed, and a folder holding a foreign entry."""
    refuse_shared_root(folder, what, hint)
    check_kind(folder, True, what)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda entry: entry.name)
    except FileNotFoundError:
        return Clearing(folder, kind, [], mark=False)
    except OSError as err:
        raise UserError(f"{what} {shown_path(folder)} cannot be listed: {err.strerror}") from None
    sorted_entries = {"own": [], "kept": [], "foreign": []}
    for entry in entries:
        sorted_entries["kept" if entry.name == MARKER else sort(entry)].append(entry)
    if foreign := sorted_entries["foreign"]:
        names = ", ".join(shown_path(entry.name, 60) for entry in foreign[:3])
        more = f" and {len(foreign) - 3:,} more" if len(foreign) > 3 else ""
        raise UserError(
            f"{what} {shown_path(folder)} holds {names}{more}, which peftlab did not write: it clears only a folder "
            f"of its own entries, nothing was removed; move {'it' if len(foreign) == 1 else 'them'} out, or {hint}"
        )
    return Clearing(folder, kind, [Path(entry.path) for entry in sorted_entries["own"]], not is_marked(folder, kind))


def clear(plan: Clearing) -> tuple[int, int]:
    """Remove the plan's entries (a link as a link, a folder with what it holds): (count, bytes)."""
    if plan.mark:
        mark_cache(plan.folder, plan.kind)
    count = size = 0
    for path in plan.entries:
        size += tree_bytes(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, **{RMTREE_HANDLER: vanished_ok})  # fd-based: a link inside is removed, never followed
        else:
            path.unlink(missing_ok=True)
        count += 1
    return count, size


RMTREE_HANDLER = "onexc" if sys.version_info >= (3, 12) else "onerror"  # onerror: deprecated in 3.12


def vanished_ok(function, path, error) -> None:
    """rmtree's error handler: an entry removed meanwhile is no error (``error``: the exception, or
    ``onerror``'s exc_info)."""
    error = error[1] if isinstance(error, tuple) else error
    if not isinstance(error, FileNotFoundError):
        raise error


def tree_bytes(path: str | Path) -> int:
    """Bytes of the files under ``path`` (links counted as links, never followed); an entry that vanishes
    or cannot be read while it is walked counts 0, and at most ``MAX_MEASURED`` entries are visited."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total, visited, folders = 0, 0, [path]
    while folders and visited < MAX_MEASURED:
        try:
            with os.scandir(folders.pop()) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries[: MAX_MEASURED - visited]:
            visited += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total
