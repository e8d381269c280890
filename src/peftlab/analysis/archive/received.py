"""A received submission (``peftlab submission``'s archive, or its unpacked folder) read and checked for
``peftlab reproduce``, as data from a stranger: surveyed as it streams and unpacked within bounds (``survey``,
``unpack``: members, bytes, names, depth, kinds), archive.json, spec.json and result.json read through their
writers' schemas, every path its configs name inside it (``check_configs``), its files against SHA256SUMS, the
results hash recomputed from its packed runs, its plugins' code hashed and their folders holding their declared
packages only (``check_plugin_folders``), its data's checksums, this machine against the runs' machine class, and
the metrics of rerun runs against the archived ones (``compare_runs``, the rule in ``RULE``). Reads files only and
imports nothing of the archive: the reruns train in ``reproduce.rerun``.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import re
import stat
import statistics
import tarfile
import zlib
from pathlib import Path

from peftlab.analysis.archive.pack import ARCHIVE_RECORD, ARCHIVE_VERSION, ArchiveRecord, data_command
from peftlab.analysis.results.record import NUMERIC_PACKAGES, machine_class
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
from peftlab.utils.provenance import cpu_vendor, package_versions
from peftlab.utils.typed_json import json_problem, shown

# the packages whose version can move a run's numbers: a difference is named, and makes the comparison a tolerance
RULE = (
    "a run is compared exactly (every metric equal) where it was pinned (train.reproducible) and the rerun's "
    "machine class is the runs' (CPU vendor, MKL branch, threads, device, versions of "
    + ", ".join(NUMERIC_PACKAGES)
    + "); otherwise each metric of a rerun must lie within its configuration's archived mean ± 2 seed-to-seed "
    "standard deviations, at least ± 0.5 points of a top-1 or accuracy and ± 1% of any other metric"
)


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
                    tar.extract(member, into, filter="data")
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
    if record.get("version") != ARCHIVE_VERSION:
        raise UserError(f"{path} has version {shown(record.get('version'))}: expected {ARCHIVE_VERSION}")
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


def check_sums(root: Path) -> list[str]:
    """A line per file that is not as SHA256SUMS says (changed, missing, or added to a checked folder)."""
    out = []
    listed = set()
    for line in (root / "SHA256SUMS").read_text(errors="replace").splitlines():
        sha, _, name = line.partition("  ")
        if not name:
            continue
        listed.add(name)
        path = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            out.append(f"SHA256SUMS names {name!r}, outside the archive")
        elif not path.is_file() or path.is_symlink():
            out.append(f"{name} is missing (SHA256SUMS lists it)")
        elif file_sha256(path) != sha:
            out.append(f"{name} is not as packed (its SHA-256 differs from SHA256SUMS)")
    for folder in ("configs", "results", "plugins", "files"):
        for path in sorted((root / folder).rglob("*")) if (root / folder).is_dir() else []:
            name = path.relative_to(root).as_posix()
            if path.is_file() and name not in listed and "__pycache__" not in path.parts:  # Python's own caches
                out.append(f"{name} was added after packing (SHA256SUMS does not list it)")
    return out


def results_hash(root: Path) -> tuple[str, list[str]]:
    """(the results SHA-256 recomputed from results/runs/, a line per disagreement): each packed run's spec.json
    and result.json against runs.sha256, the lines' hash against paper/results.tex's \\resultsSha and
    archive.json's."""
    out, lines = [], []
    run_names(root)  # every line names a run folder
    listed = (root / "results" / "runs.sha256").read_text(errors="replace").splitlines()
    for line in listed:
        name, *digests = line.split(" ")
        now = []
        for file in ("spec.json", "result.json"):
            path = root / "results" / "runs" / name / file
            now.append(file_sha256(path) if path.is_file() else "-")
        if now != digests:
            out.append(f"results/runs/{name}: its files are not those results/runs.sha256 names")
        lines.append(f"{name} {' '.join(now)}\n")
    packed = {p.name for p in (root / "results" / "runs").glob("*")} if (root / "results" / "runs").is_dir() else set()
    for name in sorted(packed - {line.split(" ")[0] for line in listed}):
        out.append(f"results/runs/{name} is not among the runs results/runs.sha256 names")
    sha = hashlib.sha256("".join(lines).encode()).hexdigest()
    tex = (
        (root / "paper" / "results.tex").read_text(errors="replace")
        if (root / "paper" / "results.tex").is_file()
        else ""
    )
    found = re.search(r"\\newcommand\{\\resultsSha\}\{([0-9a-f]{64})\}", tex)
    printed = found.group(1) if found else None
    if printed != sha:
        out.append(
            f"results hash {sha[:12]} recomputed from results/runs, paper/results.tex prints {str(printed)[:12]}"
        )
    recorded = read_json(root / ARCHIVE_RECORD).get("results_sha256")
    if recorded != sha and printed == sha:
        out.append(f"results hash {sha[:12]} recomputed from results/runs, {ARCHIVE_RECORD} says {str(recorded)[:12]}")
    return sha, out


def check_plugins(root: Path, record: dict) -> list[str]:
    """A line per packed plugin whose code does not hash to what its runs recorded."""
    from peftlab.tuners.plugins import folder_code_sha256

    out = []
    for plugin in record.get("plugins") or []:
        folder = root / plugin["folder"]
        sha = folder_code_sha256(folder, set(plugin.get("packages") or []))
        if sha != plugin.get("code_sha256"):
            out.append(
                f"plugin {plugin['distribution']} {plugin['version']} in {plugin['folder']}: its code hashes to "
                f"{sha[:12]}, the runs trained {str(plugin.get('code_sha256'))[:12]}"
            )
    return out


SITE_HOOKS = ("sitecustomize", "usercustomize", "peftlab")  # names Python or peftlab itself imports on their own


def dist_info(plugin: dict) -> str:
    """The dist-info folder's name ``pack_plugins`` writes beside a plugin's packages."""
    return f"{plugin['distribution'].replace('-', '_')}-{plugin['version']}.dist-info"


def check_plugin_folders(root: Path, record: dict) -> list[str]:
    """A line per entry of plugins/ that is not a plugin archive.json declares, per entry of a plugin's folder that
    is neither one of its declared packages nor its dist-info (a sitecustomize.py or json.py beside them would run
    or shadow a module of that name wherever the folder is on the path), per declared package named as a module
    of Python's or of another installed distribution, and per entry point that points outside the packages.
    Nothing is imported: the entry points are read as metadata."""
    import importlib.metadata
    import sys

    from peftlab.tuners.plugins import GROUP

    out: list[str] = []
    declared = {plugin["folder"]: plugin for plugin in record["plugins"]}
    if (root / "plugins").is_dir():
        for entry in sorted((root / "plugins").iterdir()):
            if f"plugins/{entry.name}" not in declared:
                out.append(f"plugins/{entry.name} is no plugin {ARCHIVE_RECORD} declares")
    owners = importlib.metadata.packages_distributions() if record["plugins"] else {}
    for plugin in record["plugins"]:
        folder, packages = root / plugin["folder"], set(plugin["packages"])
        where = f"plugin {plugin['distribution']} {plugin['version']} in {plugin['folder']}"
        if not folder.is_dir():
            out.append(f"{where}: its folder is missing")
            continue
        for entry in sorted(folder.iterdir()):
            stem = entry.name.removesuffix(".py") if entry.is_file() else entry.name
            if stem in packages or entry.is_dir() and entry.name in (dist_info(plugin), "__pycache__"):
                continue  # (a __pycache__ Python wrote there is never copied to where the code runs from)
            out.append(
                f"{where}: {entry.name} is none of its packages ({', '.join(sorted(packages))}) nor its dist-info: "
                "a plugin folder holds those only (a module beside them could shadow any other)"
            )
        for package in sorted(packages):
            others = sorted(
                {o for o in owners.get(package, []) if o.lower().replace("_", "-") != plugin["distribution"].lower()}
            )
            if package in sys.stdlib_module_names or package in SITE_HOOKS or others:
                whose = f"installed {others[0]}'s" if others else "Python's own"
                out.append(f"{where}: its package {package} has the name of {whose} module {package}")
        info = folder / dist_info(plugin)
        try:
            points = list(importlib.metadata.PathDistribution(info).entry_points) if info.is_dir() else []
        except Exception as err:  # the archive's own metadata file: importlib.metadata's parser raises what it meets
            out.append(f"{where}: its entry_points.txt is unreadable ({one_line(err)})")
            continue
        for point in points:
            if point.group == GROUP and point.value.split(":")[0].split(".")[0] not in packages:
                out.append(f"{where}: its method {point.name} points outside its packages ({point.value})")
    return out


def check_data(root: Path, record: dict, kept: Path | None = None) -> tuple[list[str], list[str], dict[str, Path]]:
    """(a line per data file whose SHA-256 differs, a line per dataset that is absent, where each present dataset
    is read: archive folder -> folder). A dataset the archive puts in ``data/<name>`` is read from ``kept/<name>``
    where ``kept`` (``--data``) holds it, else from the archive's folder. A recorded name that is no file under
    the dataset's folder (a split's list of images) is checked by the reruns, which record it."""
    differ, absent, found = [], [], {}
    for data in record.get("data") or []:
        if not data.get("folder"):
            continue
        shown = f"data {data['folder']} ({data['name']})"
        outside = kept / Path(data["folder"]).name if kept is not None else None
        folder = outside if outside is not None and outside.is_dir() else root / data["folder"]
        if not folder.is_dir():
            where = outside or folder
            made = f"`{data_command(data['made_by'], str(where))}` makes it" if data.get("made_by") else "REPRODUCE.md"
            absent.append(f"{shown} is absent: put it in {where} ({made})")
            continue
        found[data["folder"]] = folder
        for name, sha in sorted((data.get("sha256") or {}).items()):
            now = data_sha256(folder, data["name"], name)
            if now is not None and now != sha:
                what = folder / name if (folder / name).is_file() else f"{folder} ({name})"
                differ.append(f"{shown}: {what} differs (SHA-256 {now[:12]}, the runs read {sha[:12]})")
    return differ, absent, found


def data_sha256(folder: Path, data_name: str, name: str) -> str | None:
    """What a run reading the dataset in ``folder`` would record for ``name`` (``provenance.data_sha256``): a
    file's SHA-256, or an image folder's one hash over all its images (``images:<n>``, as ``readers.folders``
    hashes them); None where only a rerun can tell (a list of a split's images, a test folder elsewhere)."""
    path = folder / name
    if ".." not in Path(name).parts and path.is_file():
        refuse_links_below(folder, path, "dataset entry")  # a received folder's link reads nothing outside it
        return file_sha256(path)
    if data_name != "imagefolder" or not re.fullmatch(r"images:\d+", name):
        return None
    from peftlab.data.readers.folders import folder_splits
    from peftlab.data.readers.records import hash_files
    from peftlab.utils.errors import DataError

    try:
        splits = folder_splits(folder, 0)  # the seed picks the test images, not which images there are
    except DataError as err:
        return f"unreadable: {one_line(err)}"
    return hash_files(splits.train_paths + splits.test_paths, folder)


def check_configs(root: Path, record: dict) -> None:
    """Every config in the study file's folder, each path it names (``config.paths.PATH_FIELDS``, nested, dotted, in
    a study's ``set:`` and ``axes:``) resolving inside the archive, and the study's ``base:`` and ``pretrain:``
    naming configs beside it; before any of them is read for a run. Anything else (an absolute path, ``~``, a
    ``..`` that leaves the archive) is one UserError line naming the file and the field. A dataset the receiver
    keeps elsewhere is named by ``--data``, never by the archive."""
    from peftlab.config.paths import PATH_FIELDS, PATH_WORDS
    from peftlab.config.reading import read_yaml

    top = os.path.abspath(root)
    study = Path(top) / record["study"]
    if not study.is_file():
        raise UserError(f"{record['study']} is missing: the archive is damaged")
    fields = {tuple(field.split(".")): field for field in PATH_FIELDS}

    def paths(node, keys: tuple = ()):
        """(field, value) of each string at a path field, however nested (``{value, set}``: value's keys)."""
        if isinstance(node, dict):
            for key, value in node.items():
                yield from paths(value, keys if key == "value" else keys + tuple(str(key).split(".")))
        elif isinstance(node, list):
            for item in node:
                yield from paths(item, keys)
        elif isinstance(node, str) and keys[-2:] in fields and node not in PATH_WORDS.get(fields[keys[-2:]], ()):
            yield ".".join(keys), node

    for path in sorted(study.parent.glob("*.yaml")):
        shown_file = path.relative_to(top).as_posix()
        data = read_yaml(path)
        if path == study:
            for key in ("base", "pretrain"):
                value = data.get(key)
                if value is None and key == "pretrain":
                    continue
                if (
                    not (isinstance(value, str) and re.fullmatch(r"[^/\\\x00-\x1f~][^/\\\x00-\x1f]*\.ya?ml", value))
                    or not (study.parent / value).is_file()
                ):
                    raise UserError(
                        f"{shown_file}: {key}={shown(value)} is invalid: expected the name of a config beside it in "
                        f"{study.parent.name}/ (a received study names no file outside its archive)"
                    )
        for field, value in paths(data):
            problem = path_problem(value, study.parent, top)
            if problem is not None:
                raise UserError(
                    f"{shown_file}: {field}={shown(value)} {problem}: a received config names files inside its "
                    "archive only (a dataset kept elsewhere is given with --data)"
                )


def path_problem(value: str, folder: Path, top: str) -> str | None:
    """What takes ``value``, a path a config in ``folder`` names, outside the archive at ``top``; None inside."""
    if "\x00" in value:
        return "holds a NUL"
    if value.startswith("~"):
        return "names the home folder ('~')"
    if os.path.isabs(value):
        return "is an absolute path"
    resolved = os.path.normpath(os.path.join(folder, value))
    return None if resolved == top or resolved.startswith(top + os.sep) else "leaves the archive ('..')"


def environment_notes(record: dict) -> list[str]:
    """A line per difference between this machine and the runs' that can move numbers."""
    env = record.get("environment") or {}
    versions, arithmetic = env.get("versions") or {}, env.get("arithmetic") or {}
    here = package_versions()
    out = [
        f"{name} {here.get(name) or 'absent'} here, {versions.get(name) or 'absent'} in the runs"
        for name in NUMERIC_PACKAGES
        if name in versions and here.get(name) != versions.get(name)
    ]
    vendor = cpu_vendor()
    if arithmetic.get("cpu_vendor") and vendor != arithmetic.get("cpu_vendor"):
        out.append(f"CPU vendor {vendor} here, {arithmetic['cpu_vendor']} in the runs")
    if not arithmetic.get("pinned"):
        out.append("the runs' arithmetic was not pinned (train.reproducible off): compared within the tolerance")
    hardware = env.get("hardware") or {}
    if hardware.get("gpu"):
        out.append(f"the runs trained on a GPU ({hardware['gpu']}): compared within the tolerance")
    return out


def numbers(result: dict) -> dict[str, float]:
    """The run's metrics that are finite numbers."""
    return {
        key: float(value)
        for key, value in (result.get("metrics") or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def tolerance(metric: str, values: list[float]) -> float:
    spread = 2 * statistics.stdev(values) if len(values) > 1 else 0.0
    floor = 0.005 if "top" in metric or "acc" in metric else 0.01 * abs(statistics.fmean(values))
    return max(spread, floor)


def compare_runs(pairs: list[dict], archived_by_variant: dict[str, list[dict]]) -> tuple[list[dict], list[str]]:
    """Each rerun against its archived run. ``pairs``: {variant, seed, archived, rerun} (result records; rerun
    None where it did not complete). Returns (a record per run, a line per run). Exact where ``machine_class``
    agrees and the run was pinned; else the configuration's mean within ``tolerance`` (``RULE``)."""
    records, lines = [], []
    for pair in pairs:
        archived, rerun = pair["archived"], pair["rerun"]
        name = f"{pair['variant']} seed {pair['seed']}"
        if rerun is None or rerun.get("status") != "completed":
            why = (rerun or {}).get("error") or "it did not complete"
            records.append({**label(pair), "agrees": False, "rule": "none", "why": why})
            lines.append(f"run {name}: not reproduced: {why}")
            continue
        mine, theirs = machine_class(rerun), machine_class(archived)
        exact = mine == theirs and theirs["pinned"]
        old, new = numbers(archived), numbers(rerun)
        shared = sorted(set(old) & set(new))
        problems = []
        provenance_old, provenance_new = archived.get("provenance") or {}, rerun.get("provenance") or {}
        for key in ("data_sha256", "base_sha256"):
            old_sha, new_sha = provenance_old.get(key), provenance_new.get(key)
            if isinstance(old_sha, dict) and isinstance(new_sha, dict):
                for file in sorted(set(old_sha) | set(new_sha), key=str):
                    if old_sha.get(file) != new_sha.get(file):
                        problems.append(
                            f"{key} of {file} differs ({short(new_sha.get(file))} here, {short(old_sha.get(file))})"
                        )
            elif old_sha != new_sha:
                problems.append(f"{key} differs ({short(new_sha)} here, {short(old_sha)})")
        code_old, code_new = ((p.get("plugin") or {}).get("code_sha256") for p in (provenance_old, provenance_new))
        if code_old != code_new:
            problems.append(f"plugin code differs ({short(code_new)} here, {short(code_old)})")
        deltas = {key: new[key] - old[key] for key in shared}
        if exact:
            problems += [
                f"{key} {new[key]:.6g} (archived {old[key]:.6g}, {deltas[key]:+.3g})" for key in shared if deltas[key]
            ]
        else:
            seeds = archived_by_variant.get(pair["variant"], [])
            for key in shared:
                values = [numbers(r)[key] for r in seeds if key in numbers(r)]
                if values and abs(new[key] - statistics.fmean(values)) > tolerance(key, values):
                    problems.append(
                        f"{key} {new[key]:.6g} outside {statistics.fmean(values):.6g} ± {tolerance(key, values):.3g}"
                    )
        rule = "exact" if exact else "tolerance"
        differing = [k for k, v in mine.items() if v != theirs.get(k)]
        why_tolerance = "" if exact else f" (machine class differs: {', '.join(differing) or 'not pinned'})"
        records.append(
            {
                **label(pair),
                "agrees": not problems,
                "rule": rule,
                "metrics": {k: [old[k], new[k]] for k in shared},
                "problems": problems,
                "machine_class_differs": differing,
            }
        )
        if problems:
            lines.append(f"run {name}: differs ({rule}{why_tolerance}): {'; '.join(problems)}")
        else:
            said = "every metric equal" if exact else "within the tolerance"
            lines.append(
                f"run {name}: reproduced, {said} ({rule}{why_tolerance}): "
                + ", ".join(f"{k} {new[k]:.6g}" for k in shared)
            )
    return records, lines


def label(pair: dict) -> dict:
    return {"variant": pair["variant"], "seed": pair["seed"], "archived_run": pair.get("run_id")}


def short(value) -> str:
    return str(value)[:12] if value is not None else "none"


def archived_runs(root: Path) -> list[dict]:
    """Each packed run: {run_id, variant, seed, method, tuned_by, order, result}, in the study's order."""
    runs = []
    for name in run_names(root):
        spec = read_json(root / "results" / "runs" / name / "spec.json")
        result = read_json(root / "results" / "runs" / name / "result.json")
        if spec is None or result is None:
            raise UserError(f"results/runs/{name}: its spec.json or result.json is unreadable: the archive is damaged")
        for file, data, schema in (("spec.json", spec, SpecRecord), ("result.json", result, RunResult)):
            problem = json_problem(data, schema)
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


def choose(runs: list[dict], which: str) -> list[dict]:
    """The completed runs to rerun: ``all``, ``one-seed`` (each configuration's first seed) or a count N (one
    seed of each configuration first, then their next seeds, N in all; 0 reruns none)."""
    done = [run for run in runs if run["result"].get("status") == "completed"]
    firsts, rest, seen = [], [], set()
    for run in sorted(done, key=lambda r: r["seed"] if isinstance(r["seed"], int) else 0):
        (rest if run["variant"] in seen else firsts).append(run)
        seen.add(run["variant"])
    ordered = sorted(firsts, key=lambda r: r["order"]) + rest
    if which == "all":
        return ordered
    if which == "one-seed":
        return sorted(firsts, key=lambda r: r["order"])
    if not (which.isascii() and which.isdigit()):  # str.isdigit takes '²', which int() refuses
        raise UserError(f"--runs {which!r} is invalid: expected all, one-seed or a count of runs (0 reruns none)")
    return ordered[: int(which)]
