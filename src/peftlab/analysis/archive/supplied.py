"""Files the receiver supplies: what a packed run reads that the archive cannot pack (a weights file, a base outside
the study, any file over ``pack.MAX_PACKED_BYTES``); a value every run's config overrides is none (``read_paths``:
what the runs read, by their result.json). Each has a place of its own, ``supplied/<name>`` (a folder a
config names goes there whole: its small files packed, its weights to be put beside them), recorded in
archive.json's ``supplied`` with its SHA-256 and size, named in REPRODUCE.md, and checked against that hash at every
level of ``peftlab reproduce`` (``--runs 0`` included): one that differs is named, one that is absent is a note
(and stops a rerun), the right one is "as recorded", never a file "added after packing". A file under supplied/
that neither archive.json's ``supplied`` records nor SHA256SUMS lists (the small files of a folder packed there) is
named too: no run or dataset reads it (``stray_supplied``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.analysis.paper.latex import file_sha256
from peftlab.utils.errors import UserError

SUPPLIED = "supplied"  # the archive's folder of the files the receiver puts there
SUPPLIED_RECORD = "supplied"  # archive.json's field: a list of {path, sha256, bytes, field}
SUPPLIED_SUMS = f"{SUPPLIED}/supplied.sha256"  # `sha256sum -c` checks the supplied files with it
SHA256 = re.compile(r"[0-9a-f]{64}")


def supplied_entry(path: Path, shown: str, config_field: str) -> dict:
    """archive.json's record of a file the receiver supplies: ``shown`` its archive path, ``path`` the file the
    runs read (hashed here), ``config_field`` the config field that names it (or the folder it lies in)."""
    return {"path": shown, "sha256": file_sha256(path), "bytes": path.stat().st_size, "field": config_field}


def write_supplied_sums(root: Path, entries: list[dict]) -> None:
    """``supplied/supplied.sha256``: a line per file to supply, as ``sha256sum -c`` reads it from the archive's
    folder (so the folder is there, waiting for them)."""
    if entries:
        (root / SUPPLIED).mkdir(parents=True, exist_ok=True)
        (root / SUPPLIED_SUMS).write_text(supplied_sums(entries))


def supplied_sums(entries: list[dict]) -> str:
    """supplied.sha256's text: a ``sha256sum`` line per file to supply."""
    return "".join(f"{entry['sha256']}  {entry['path']}\n" for entry in entries)


def supplied_entries(record: dict, where: Path) -> list[dict]:
    """archive.json's ``supplied`` as ``supplied_entry`` writes it, each path inside ``supplied/``: anything else
    is one UserError line naming the field (a hostile record names no file outside the archive)."""
    value = record.get(SUPPLIED_RECORD) or []
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise UserError(f"{where}: {SUPPLIED_RECORD} is invalid: expected a list of objects with path and sha256")
    for entry in value:
        path = entry.get("path")
        parts = Path(path).parts if isinstance(path, str) else ()
        if not parts or parts[0] != SUPPLIED or ".." in parts or Path(path).is_absolute() or len(parts) < 2:
            raise UserError(f"{where}: {SUPPLIED_RECORD}.path={path!r} is invalid: expected a path inside supplied/")
        if not isinstance(entry.get("sha256"), str) or not SHA256.fullmatch(entry["sha256"]):
            raise UserError(f"{where}: {SUPPLIED_RECORD}.sha256={entry.get('sha256')!r} is invalid: expected a SHA-256")
    return value


@dataclass
class SuppliedCheck:
    differ: list[str] = field(default_factory=list)  # a line per supplied file that is not the one the runs read
    absent: list[str] = field(default_factory=list)  # a line per supplied file not there yet
    checked: dict[str, str] = field(default_factory=dict)  # archive path -> SHA-256 found equal to the record


def check_supplied(root: Path, record: dict) -> SuppliedCheck:
    """Each file the receiver supplies against its recorded SHA-256 (a link in its place is refused: the check
    reads the archive's own folder)."""
    out = SuppliedCheck()
    for entry in supplied_entries(record, root / "archive.json"):
        path = root / entry["path"]
        named = f"supplied file {entry['path']} ({entry.get('field') or 'a config names it'})"
        if path.is_symlink():
            out.differ.append(f"{named} is a symbolic link: put the file itself there")
        elif not path.is_file():
            out.absent.append(
                f"{named} is absent: put it in {path} (SHA-256 {entry['sha256']}, {entry.get('bytes')} bytes)"
            )
        else:
            sha = file_sha256(path)
            if sha != entry["sha256"]:
                out.differ.append(
                    f"{named} is not the file the runs read: its SHA-256 is {sha[:12]}, archive.json records "
                    f"{entry['sha256'][:12]} ({path.stat().st_size} bytes here, {entry.get('bytes')} recorded)"
                )
            else:
                out.checked[entry["path"]] = sha
    out.differ += stray_supplied(root, record)
    return out


def stray_supplied(root: Path, record: dict) -> list[str]:
    """A line per file under supplied/ that no run or dataset names: neither a file archive.json's ``supplied``
    records nor one SHA256SUMS lists (a folder a config names is packed there with its small files), nor
    supplied.sha256. Links are not followed (the received folder's walk refuses them first)."""
    folder = root / SUPPLIED
    if not folder.is_dir() or folder.is_symlink():
        return []
    sums = root / "SHA256SUMS"
    text = sums.read_text(errors="replace") if sums.is_file() and not sums.is_symlink() else ""
    known = {line.partition("  ")[2] for line in text.splitlines()} | {SUPPLIED_SUMS}
    known |= {entry["path"] for entry in supplied_entries(record, root / "archive.json")}
    out = []
    for top, folders, files in os.walk(folder):
        folders.sort()
        for name in sorted(files):
            path = Path(top, name).relative_to(root).as_posix()
            if path not in known:
                out.append(
                    f"{path} is no file a run or dataset names (archive.json's {SUPPLIED_RECORD} does not record it, "
                    "SHA256SUMS does not list it): remove it"
                )
    return out


def is_supplied(path: str, record: dict) -> bool:
    """Whether archive path ``path`` (from the archive's root) is a file the receiver supplies."""
    return any(entry.get("path") == path for entry in record.get(SUPPLIED_RECORD) or [] if isinstance(entry, dict))


def read_paths(results: list[dict]) -> set[str]:
    """Every path of ``PATH_FIELDS`` the configs of ``results`` (the packed runs' result.json) name, absolute and
    normalised, as its real path too (a relative one is the checkout's, as run ids hash it)."""
    from peftlab.config.paths import PATH_FIELDS, PATH_WORDS, REPO_ROOT

    out = set()
    for result in results:
        config = result.get("config") if isinstance(result.get("config"), dict) else {}
        for dotted in PATH_FIELDS:
            section, _, name = dotted.rpartition(".")
            value = (config.get(section) or {}).get(name) if isinstance(config.get(section), dict) else None
            if isinstance(value, str) and value and value not in PATH_WORDS.get(dotted, ()) and "\x00" not in value:
                path = os.path.normpath(os.path.join(REPO_ROOT, value))
                out |= {path, os.path.realpath(path)}
    return out


def read_by_runs(value: str, read: set[str]) -> bool:
    return os.path.normpath(value) in read or os.path.realpath(value) in read
