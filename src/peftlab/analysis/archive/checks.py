"""The check and gate phases of ``peftlab reproduce``: every check that needs no rerun (``check``: this machine
against the runs' machine class, every path the configs name inside the archive, the files against SHA256SUMS, the
results hash recomputed from the packed runs, the plugins' code and folders, the data and the supplied files), what
they found printed (``show``), and the gate (``gate``): a difference stops the reruns before anything trains or
imports. Reads files only and imports nothing of the archive.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from peftlab.analysis.archive.datasets import NamedData, check_data, check_named_data, named_entries
from peftlab.analysis.archive.pack import ARCHIVE_RECORD
from peftlab.analysis.archive.plugins import check_plugin_folders, check_plugins
from peftlab.analysis.archive.received import SHOWN, capped, file_sha256, run_names
from peftlab.analysis.archive.supplied import SuppliedCheck, check_supplied
from peftlab.analysis.results.load import run_digests
from peftlab.analysis.results.record import NUMERIC_PACKAGES, class_vendor
from peftlab.utils.errors import UserError
from peftlab.utils.files import read_json
from peftlab.utils.provenance import cpu_vendor, package_versions
from peftlab.utils.typed_json import shown


@dataclasses.dataclass
class Checks:
    """What the checks found before any rerun."""

    notes: list[str]  # this machine against the runs' machine class
    sha: str  # the results hash recomputed from results/runs
    said: str | None  # the line that says the results hash agrees
    differences: list[str]  # files, hashes, plugin code and folders, data: each stops the reruns
    absent: list[str]  # datasets in neither the archive nor --data
    found: dict[str, Path]  # the archive's data/<name> -> where it was found
    unseen: list[str]  # the archive's data folders not checked (absent)
    supplied: SuppliedCheck  # the files the receiver supplies (supplied.py)
    named: NamedData  # the datasets by name (datasets.py)


def check(root: Path, record: dict, kept: Path | None) -> Checks:
    """Every check that needs no rerun, in the order they are printed; reads files only."""
    check_configs(root, record)  # a path outside the archive: one line, before any config is read for a run
    differences = check_sums(root)
    sha, hash_lines = results_hash(root)
    differences += hash_lines
    differences += check_plugins(root, record) + check_plugin_folders(root, record)
    data_differ, absent, found = check_data(root, record, kept)
    supplied, named = check_supplied(root, record), check_named_data(record, kept)
    differences += data_differ + supplied.differ + named.differ
    absent += supplied.absent + named.absent
    unseen = [data["folder"] for data in record["data"] if data["folder"] and data["folder"] not in found]
    unseen += [
        f"{entry['name']} (by name)"
        for entry in named_entries(record)
        if entry["name"] not in named.found and entry["name"] not in named.rerun_checked
    ]
    said = (
        None
        if hash_lines
        else f"results hash: {sha[:12]}, recomputed from results/runs, as paper/results.tex and runs.sha256 say"
    )
    return Checks(environment_notes(record), sha, said, differences, absent, found, unseen, supplied, named)


def show(checks: Checks, say: Callable[[str], None]) -> None:
    for note in checks.notes:
        say(f"environment: {note}")
    if not checks.notes:
        say("environment: this machine is of the runs' machine class (CPU vendor, pin, threads, package versions)")
    if checks.said:
        say(checks.said)
    for line in capped(checks.differences, SHOWN):
        say(f"differs: {line}")
    for line in capped(checks.absent, SHOWN):
        say(f"note: {line}")


def gate(checks: Checks, chosen: list[dict]) -> str | None:
    """None when the chosen runs may be rerun; else the verdict line that stops them, naming the first
    difference the checks found (exit 1). A dataset in neither the archive nor --data is one UserError line."""
    if not chosen:
        return None
    if checks.differences:
        more = len(checks.differences) - 1
        return (
            f"not reproduced: no run was rerun, the checks found {len(checks.differences)} difference"
            f"{'s' if more else ''}: {checks.differences[0]}" + (f"; and {more:,} more" if more else "")
        )
    if checks.absent:
        raise UserError(f"{checks.absent[0]}; or --runs 0 to check the archive without rerunning")
    return None


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
    and result.json, and its generations.jsonl where one is packed (``load.results_lines``), against runs.sha256,
    the lines' hash against paper/results.tex's \\resultsSha and archive.json's."""
    out, lines = [], []
    run_names(root)  # every line names a run folder
    listed = (root / "results" / "runs.sha256").read_text(errors="replace").splitlines()
    for line in listed:
        name, *digests = line.split(" ")
        now = run_digests(root / "results" / "runs" / name, file_sha256)
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
    here = class_vendor({**arithmetic, "cpu_vendor": vendor})
    if arithmetic.get("cpu_vendor") and here != class_vendor(arithmetic):  # a vendor-free pin: no difference
        out.append(f"CPU vendor {vendor} here, {arithmetic['cpu_vendor']} in the runs")
    if not arithmetic.get("pinned"):
        out.append("the runs' arithmetic was not pinned (train.reproducible off): compared within the tolerance")
    hardware = env.get("hardware") or {}
    if hardware.get("gpu"):
        out.append(f"the runs trained on a GPU ({hardware['gpu']}): compared within the tolerance")
    return out
