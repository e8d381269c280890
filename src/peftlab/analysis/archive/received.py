"""A received submission (``peftlab submission``'s archive, or its unpacked folder) read and checked for
``peftlab reproduce``: unpacked safely, its files against SHA256SUMS, the results hash recomputed from its packed
runs, its plugins' code hashed, its data's checksums, this machine against the runs' machine class, and the
metrics of rerun runs against the archived ones (``compare_runs``, the rule in ``RULE``). Reads files only: the
reruns train in ``reproduce.rerun``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import statistics
import tarfile
import zlib
from pathlib import Path

from peftlab.analysis.archive.pack import ARCHIVE_RECORD, ARCHIVE_VERSION, data_command
from peftlab.analysis.results.record import NUMERIC_PACKAGES, machine_class
from peftlab.utils.errors import UserError
from peftlab.utils.files import one_line, read_json
from peftlab.utils.provenance import cpu_vendor, package_versions

# the packages whose version can move a run's numbers: a difference is named, and makes the comparison a tolerance
RULE = (
    "a run is compared exactly (every metric equal) where it was pinned (train.reproducible) and the rerun's "
    "machine class is the runs' (CPU vendor, MKL branch, threads, device, versions of "
    + ", ".join(NUMERIC_PACKAGES)
    + "); otherwise each metric of a rerun must lie within its configuration's archived mean ± 2 seed-to-seed "
    "standard deviations, at least ± 0.5 points of a top-1 or accuracy and ± 1% of any other metric"
)


def unpack(source: Path, into: Path) -> Path:
    """The archive's root folder: ``source`` itself when it is a folder, else ``source`` unpacked into ``into``
    (tarfile's 'data' filter, and no link, device, absolute path or '..' in any member). Not an archive, a
    damaged one or a missing file is one UserError line."""
    if not os.path.lexists(source):
        raise UserError(f"{source} does not exist: expected a submission archive (.tar.gz) or its unpacked folder")
    if source.is_dir():
        root = source
    else:
        try:
            with tarfile.open(source, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    parts = Path(member.name).parts
                    if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                        raise UserError(
                            f"{source}: member {member.name!r} is a link, a device, an absolute path or leaves the "
                            "archive: a submission holds plain files and folders only"
                        )
                tops = {Path(member.name).parts[0] for member in members if Path(member.name).parts}
                if len(tops) != 1:
                    raise UserError(f"{source} is no submission archive: expected one folder at its top")
                into.mkdir(parents=True, exist_ok=True)
                tar.extractall(into, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise UserError(f"{source} is no readable archive ({one_line(err)})") from None
        root = into / tops.pop()
    record = read_json(root / ARCHIVE_RECORD)
    if record is None or not isinstance(record.get("study"), str):
        raise UserError(
            f"{root} has no readable {ARCHIVE_RECORD}: not an archive of `peftlab submission` (or one packed by an "
            "older peftlab: pack it again)"
        )
    if record.get("version") != ARCHIVE_VERSION:
        raise UserError(f"{root / ARCHIVE_RECORD} has version {record.get('version')!r}: expected {ARCHIVE_VERSION}")
    check_record(record, root / ARCHIVE_RECORD)
    for name in ("SHA256SUMS", record["study"], "results/runs.sha256"):
        if not (root / name).is_file() or (root / name).is_symlink():
            raise UserError(f"{root / name} is missing: the archive is damaged")
    return root


def check_record(record: dict, where: Path) -> None:
    """archive.json's fields as ``pack`` writes them, each path one inside the archive: anything else is one
    UserError line naming the field (a hostile archive.json names no file outside its folder)."""

    def inside(value, field: str) -> None:
        if not isinstance(value, str) or not value or Path(value).is_absolute() or ".." in Path(value).parts:
            raise UserError(f"{where}: {field}={value!r} is invalid: expected a relative path inside the archive")

    def entries(field: str, keys: tuple[str, ...]) -> list[dict]:
        value = record.get(field) or []
        if not isinstance(value, list) or not all(isinstance(e, dict) and all(k in e for k in keys) for e in value):
            raise UserError(f"{where}: {field} is invalid: expected a list of objects with {', '.join(keys)}")
        return value

    inside(record.get("study"), "study")
    for plugin in entries("plugins", ("distribution", "version", "code_sha256", "folder", "packages")):
        inside(plugin["folder"], "plugins.folder")
        if not isinstance(plugin["packages"], list) or not all(
            isinstance(p, str) and p.isidentifier() for p in plugin["packages"]
        ):
            raise UserError(f"{where}: plugins.packages={plugin['packages']!r} is invalid: expected package names")
    for data in entries("data", ("name", "folder", "sha256")):
        if data["folder"] is not None:
            inside(data["folder"], "data.folder")
        if not isinstance(data["sha256"], dict):
            raise UserError(f"{where}: data.sha256 is invalid: expected an object of file names and SHA-256")
        made_by = data.get("made_by")
        if made_by is not None and not (
            isinstance(made_by, list) and made_by and all(isinstance(a, str) and a.isprintable() for a in made_by)
        ):
            raise UserError(f"{where}: data.made_by={made_by!r} is invalid: expected the arguments of `peftlab data`")
    environment = record.get("environment") or {}
    if not isinstance(environment, dict) or not all(
        isinstance(environment.get(key, {}), dict | None) for key in ("versions", "hardware", "arithmetic")
    ):
        raise UserError(f"{where}: environment is invalid: expected an object of versions, hardware and arithmetic")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    for line in (root / "results" / "runs.sha256").read_text(errors="replace").splitlines():
        name = line.split(" ")[0]
        spec = read_json(root / "results" / "runs" / name / "spec.json")
        result = read_json(root / "results" / "runs" / name / "result.json")
        if spec is None or result is None:
            raise UserError(f"results/runs/{name}: its spec.json or result.json is unreadable: the archive is damaged")
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
    if not which.isdigit():
        raise UserError(f"--runs {which!r} is invalid: expected all, one-seed or a count of runs (0 reruns none)")
    return ordered[: int(which)]
