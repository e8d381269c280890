"""A received submission (``peftlab submission``'s archive, or its unpacked folder) read for ``peftlab
reproduce``, as data from a stranger: surveyed as it streams and unpacked within bounds (``survey``, ``unpack``:
members, bytes, names, depth, kinds; ``walk_folder`` for a folder), archive.json, spec.json and result.json read
through their writers' schemas (``read_archive_record``, ``archived_runs``), its files hashed without following a
link or blocking on a FIFO (``file_sha256``). Reads files only and imports nothing of the archive: the checks are
``checks.py``'s, the reruns ``rerun.py``'s.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import stat
import tarfile
import zlib
from pathlib import Path

from peftlab.analysis.archive.pack import ARCHIVE_RECORD, ARCHIVE_VERSION, ArchiveRecord
from peftlab.study.records import SpecRecord
from peftlab.training.run_result import RunResult
from peftlab.utils.errors import UserError
from peftlab.utils.files import (
    kind_of,
    one_line,
    read_json,
    read_regular_file,
    refuse_links_below,
    shown_path,
)
from peftlab.utils.typed_json import json_problem, shown

# Bounds of a received archive, checked as its members stream (before they are written) and as a received folder is
# walked: far beyond any archive peftlab writes (a run is two small files; a file a config names is packed up to
# 8 MiB), and short of what fills a disk or takes minutes to list.
MAX_MEMBERS = 20_000
MAX_UNPACKED_BYTES = 2 << 30
MAX_NAME = 1024  # characters of a member's path
MAX_PART = 255  # characters of one of its names
MAX_DEPTH = 32  # names in a member's path
MAX_RECORD_BYTES = 16 << 20  # archive.json, SHA256SUMS
RECEIVER_FOLDERS = ("data", "base")  # the archive's folders the receiver fills (datasets; the pretraining's base)
SHOWN = 20  # repeated lines (differences) printed; reproduce.json keeps up to KEPT of them and their count
KEPT = 1000


def capped(lines: list[str], limit: int = SHOWN) -> list[str]:
    """The first ``limit`` of ``lines`` and, past them, one "and N more"."""
    return lines if len(lines) <= limit else lines[:limit] + [f"and {len(lines) - limit:,} more"]


def name_problem(name: str) -> str | None:
    """What makes ``name`` (a member's path, ``/``-separated) no path of a submission; None when it is one."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in parts:
        return "leaves the archive ('..')"
    if not name.isprintable():
        return "holds control characters"
    if len(name) > MAX_NAME or any(len(part) > MAX_PART for part in parts):
        return f"is longer than {MAX_NAME} characters (or {MAX_PART} a name)"
    if len(parts) > MAX_DEPTH:
        return f"lies deeper than {MAX_DEPTH} folders"
    return None


def shown_name(name: str) -> str:
    return repr(name[:200] + ("..." if len(name) > 200 else ""))


def tar_members(tar: tarfile.TarFile, source: Path):
    """The members of ``tar`` (read as a stream), each checked before it is yielded: a plain file or folder under
    the one folder at the archive's top, of a name ``name_problem`` accepts, within MAX_MEMBERS and
    MAX_UNPACKED_BYTES; a file's name once. Anything else is one UserError line."""
    count, size, top, seen = 0, 0, None, set()
    for member in tar:
        count += 1
        if count > MAX_MEMBERS:
            raise UserError(f"{source} holds more than {MAX_MEMBERS:,} members: no submission holds so many")
        problem = name_problem(member.name)
        if problem is None and not (member.isfile() or member.isdir()):
            problem = "is a link, a device or another special file"
        if problem is not None:
            raise UserError(
                f"{source}: member {shown_name(member.name)} {problem}: a submission holds plain files and folders "
                "only, under one folder"
            )
        parts = [part for part in member.name.split("/") if part not in ("", ".")]
        if not parts or (top is not None and parts[0] != top) or (member.isfile() and len(parts) == 1):
            raise UserError(f"{source} is no submission archive: expected one folder at its top")
        top = parts[0]
        size += member.size if member.isfile() else 0
        if size > MAX_UNPACKED_BYTES:
            raise UserError(
                f"{source} unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB: no submission is so large (weights "
                "and data are not packed)"
            )
        key = "/".join(parts)
        if member.isfile() and key in seen:
            raise UserError(f"{source}: member {shown_name(member.name)} appears twice: the archive is damaged")
        seen.add(key)
        yield member, parts


def extract_checked(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, into: Path) -> None:
    """``member``, checked by ``tar_members`` (a plain file or folder under the archive's one folder), written to
    ``target`` under ``into`` through tarfile's 'data' filter (PEP 706: Python 3.11.4 and later). An earlier 3.11
    (Debian 12's python3 is 3.11.2) has no filter: the member is written without its recorded owner, mode or time
    (``set_attrs=False``), then given what the filter keeps of a file's: its time, and its mode less the set-id,
    sticky and group or other write bits (no one executes it where its owner may not), read and write for its
    owner."""
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, into, filter="data")
        return
    tar.extract(member, into, set_attrs=False)
    if member.isfile():
        mode = member.mode & 0o755
        os.chmod(target, (mode if mode & 0o100 else mode & ~0o111) | 0o600)
        os.utime(target, (member.mtime, member.mtime))


def survey(source: Path) -> tuple[str, str]:
    """(the archive's identity, its top folder's name), before anything is written: ``source``'s members checked
    as they stream (``tar_members``) or, for a folder, its entries walked (``walk_folder``). The identity is the
    SHA-256 of its archive.json and SHA256SUMS (which hashes every other file): the same for an archive and for
    the folder it unpacks to. Not an archive, a damaged one or a missing file is one UserError line."""
    if not os.path.lexists(source):
        raise UserError(f"{source} does not exist: expected a submission archive (.tar.gz) or its unpacked folder")
    if source.is_dir():
        if not (source / ARCHIVE_RECORD).is_file():
            raise_no_record(source)
        walk_folder(source, "received folder")
        return identity(source / ARCHIVE_RECORD, source / "SHA256SUMS"), source.name
    if not source.is_file():
        raise UserError(f"{source} is no regular file: expected a submission archive (.tar.gz) or its unpacked folder")
    kept: dict[str, bytes] = {}
    top = None
    try:
        with tarfile.open(source, "r|*") as tar:
            for member, parts in tar_members(tar, source):
                top = parts[0]
                if len(parts) == 2 and parts[1] in (ARCHIVE_RECORD, "SHA256SUMS") and member.isfile():
                    if member.size > MAX_RECORD_BYTES:
                        raise UserError(f"{source}: {member.name} is larger than {MAX_RECORD_BYTES >> 20} MiB")
                    kept[parts[1]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError) as err:
        raise UserError(f"{source} is no readable archive ({one_line(err)})") from None
    if top is None:
        raise UserError(f"{source} is no submission archive: expected one folder at its top")
    if ARCHIVE_RECORD not in kept:
        raise_no_record(f"{source} ({top}/)")
    digest = hashlib.sha256(kept[ARCHIVE_RECORD] + b"\0" + kept.get("SHA256SUMS", b""))
    return digest.hexdigest(), top


def identity(record: Path, sums: Path) -> str:
    parts = []
    for path in (record, sums):
        try:
            raw = read_regular_file(path, MAX_RECORD_BYTES + 1)
        except OSError:
            raw = b""
        if raw is not None and len(raw) > MAX_RECORD_BYTES:
            raise UserError(f"{path} is larger than {MAX_RECORD_BYTES >> 20} MiB: no file of a submission")
        parts.append(raw or b"")
    return hashlib.sha256(parts[0] + b"\0" + parts[1]).hexdigest()


def raise_no_record(where) -> None:
    raise UserError(
        f"{where} has no readable {ARCHIVE_RECORD}: not an archive of `peftlab submission` (or one packed by an "
        "older peftlab: pack it again)"
    )


def walk_folder(root: Path, what: str, receiver: tuple[str, ...] = RECEIVER_FOLDERS, bounded: bool = True) -> None:
    """A UserError line naming the first entry of ``root`` that is a symbolic link, a device, a FIFO or another
    special file, or (``bounded``: a received folder) whose name ``name_problem`` refuses, and when it holds more
    than MAX_MEMBERS entries or MAX_UNPACKED_BYTES. Links are not followed. What the receiver put in
    ``receiver``'s folders (a dataset in ``data/<name>``, the pretraining's ``base/``) is the receiver's: only
    the folder's own entry is checked, not what it holds."""
    count, size = 0, 0
    for top, folders, files in os.walk(root):
        here = Path(top)
        relative = here.relative_to(root).parts
        if len(relative) == 2 and relative[0] in receiver or relative == ("base",) and "base" in receiver:
            folders[:] = []
            continue
        for name in sorted(folders) + sorted(files):
            path = here / name
            info = os.lstat(path)
            problem = name_problem(path.relative_to(root).as_posix()) if bounded else None
            if problem is None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                problem = f"is a {'symbolic link' if stat.S_ISLNK(info.st_mode) else kind_of(info.st_mode)}"
            if problem is not None:
                raise UserError(
                    f"{what} entry {shown_path(path)} {problem}: a submission holds plain files and folders only "
                    "(peftlab writes and reads nothing through a link in it; keep datasets elsewhere with --data DIR)"
                )
            count += 1
            size += info.st_size if stat.S_ISREG(info.st_mode) else 0
            if bounded and count > MAX_MEMBERS:
                raise UserError(f"{what} {shown_path(root)} holds more than {MAX_MEMBERS:,} entries: no submission")
            if bounded and size > MAX_UNPACKED_BYTES:
                raise UserError(f"{what} {shown_path(root)} holds more than {MAX_UNPACKED_BYTES >> 30} GiB")


def unpack(source: Path, into: Path) -> Path:
    """The archive's root folder: ``source`` itself when it is a folder, else ``source`` unpacked into ``into``
    member by member as it streams (tarfile's 'data' filter, each member checked by ``tar_members`` before it is
    written). ``survey`` has checked it whole before. Then archive.json is read through its schema
    (``read_archive_record``) and the files every check reads must be there."""
    if source.is_dir():
        root = source
    else:
        top = None
        try:
            with tarfile.open(source, "r|*") as tar:
                for member, parts in tar_members(tar, source):
                    top = parts[0]
                    refuse_links_below(into, into / "/".join(parts), "--out folder entry")
                    extract_checked(tar, member, into / "/".join(parts), into)
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError) as err:
            raise UserError(f"{source} is no readable archive ({one_line(err)})") from None
        root = into / top
    read_archive_record(root)
    for name in ("SHA256SUMS", "results/runs.sha256"):
        if not (root / name).is_file() or (root / name).is_symlink():
            raise UserError(f"{root / name} is missing: the archive is damaged")
    return root


def read_archive_record(root: Path) -> dict:
    """archive.json read through its schema (``pack.ArchiveRecord``): its types, sizes and paths (each one inside
    the archive, a dataset's file inside its dataset). Anything else is one UserError line naming the field."""
    path = root / ARCHIVE_RECORD
    raw = read_regular_file(path, MAX_RECORD_BYTES + 1) if path.is_file() and not path.is_symlink() else None
    try:
        record = json.loads(raw) if raw is not None and len(raw) <= MAX_RECORD_BYTES else None
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("study"), str):
        raise_no_record(root)
    found = record.get("version")
    if found != ARCHIVE_VERSION:
        older = isinstance(found, int) and not isinstance(found, bool) and found < ARCHIVE_VERSION
        why = (
            "packed by an older peftlab, whose archive records no supplied files and no checksums of datasets by "
            "name: pack it again with this peftlab's `peftlab submission`"
            if older
            else "not an archive this peftlab reads: reproduce it with the peftlab that packed it"
        )
        raise UserError(f"{path} has version {shown(found)}: expected {ARCHIVE_VERSION} ({why})")
    problem = json_problem(record, ArchiveRecord)
    if problem is not None:
        raise UserError(f"{path} is invalid: {problem}")
    return record


def file_sha256(path: Path) -> str:
    """The SHA-256 of a regular file, read in pieces (never whole into memory), opened without blocking (a FIFO
    swapped in after a check is one UserError line, not a hang)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"{shown_path(path)} is a {kind_of(mode)}: expected a regular file")
        return hashlib.file_digest(f, "sha256").hexdigest()


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # a run's folder under results/runs/


def run_names(root: Path) -> list[str]:
    """The runs results/runs.sha256 lists, each a folder name under results/runs/ (one UserError line for a line
    that names anything else: a received runs.sha256 reads nothing outside its folder)."""
    path = root / "results" / "runs.sha256"
    raw = read_regular_file(path, MAX_RECORD_BYTES + 1)
    if raw is None or len(raw) > MAX_RECORD_BYTES:
        raise UserError(f"{path} is no regular file of at most {MAX_RECORD_BYTES >> 20} MiB: the archive is damaged")
    names = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        name = line.split(" ")[0]
        if not RUN_NAME.fullmatch(name) or ".." in name:
            raise UserError(f"{path} line {number} names {shown_name(name)}: expected a run folder's name")
        names.append(name)
    return names


def archived_runs(root: Path, checked: bool = True) -> list[dict]:
    """Each packed run: {run_id, variant, seed, method, tuned_by, order, result}, in the study's order; each file
    read through its schema unless not ``checked`` (the packing machine's own, read back by submission)."""
    runs = []
    for name in run_names(root):
        spec = read_json(root / "results" / "runs" / name / "spec.json")
        result = read_json(root / "results" / "runs" / name / "result.json")
        if spec is None or result is None:
            raise UserError(f"results/runs/{name}: its spec.json or result.json is unreadable: the archive is damaged")
        for file, data, schema in (("spec.json", spec, SpecRecord), ("result.json", result, RunResult)):
            problem = json_problem(data, schema) if checked else None
            if problem is not None:
                raise UserError(f"results/runs/{name}/{file} is invalid: {problem}")
        runs.append(
            {
                "run_id": name,
                "variant": spec.get("variant"),
                "seed": spec.get("seed"),
                "method": spec.get("method"),
                "tuned_by": spec.get("tuned_by"),
                "order": spec.get("order", len(runs)),
                "result": result,
            }
        )
    return sorted(runs, key=lambda run: run["order"] if isinstance(run["order"], int) else 0)


# --- the lock files: environment.lock's versions (``recorded`` checks them, ``regenerate`` draws by them) ----------

ENVIRONMENT_LOCK = "environment.lock"
LOCK_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)")
MAX_LOCK_BYTES = 1 << 20


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_lines(root: Path, name: str) -> list[str] | None:
    """The lines of the archive's lock file ``name`` (a regular file of at most MAX_LOCK_BYTES), or None."""
    path = root / name
    raw = read_regular_file(path, MAX_LOCK_BYTES + 1) if path.is_file() and not path.is_symlink() else None
    return raw.decode("utf-8", errors="replace").splitlines() if raw is not None else None


def lock_versions(root: Path) -> dict[str, str]:
    """environment.lock's version of each distribution, by the name FIGURE_VERSIONS and the runs' records use."""
    found = (LOCK_LINE.fullmatch(line) for line in lock_lines(root, ENVIRONMENT_LOCK) or [])
    return {canonical(m.group(1)): m.group(2) for m in found if m}
