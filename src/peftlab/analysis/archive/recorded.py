"""What the archive says of its runs beside the paper, held against what makes it (issue 86), so that "archive
intact" covers every packed file: each is compared with what peftlab makes again from the packed runs
(``results/runs/``) and archive.json, or named as not checked (``Regenerated.skipped``), never passed over.

- archive.json against the packed runs' records: the runs' machine (``environment``), the plugins and the base
  whose hashes they recorded, and every dataset: each one a packed run read is there by its name and root, with
  the files' SHA-256 the run recorded (a dataset renamed out of the check is a difference), and each entry is one
  a packed run or the study's pretraining reads;
- the packed configs: the study they expand to holds each packed run's configuration, value for value (paths
  aside: where they lie is checked by the files they name);
- environment.lock: a ``name==version`` line per distribution (nothing pip would read as an option or an
  address) naming the versions the runs recorded (``environment_lock`` writes it so); requirements.lock's lines
  of the same kind, and the file as this checkout's where it is;
- supplied/supplied.sha256 as archive.json's ``supplied`` writes it, REPRODUCE.md as ``reproduce_md`` writes it;
- a file SHA256SUMS does not list at the archive's top or in paper/ (``checks.check_sums`` looks in the others).

What nothing packed makes again is named: the times, commands and repository address archive.json records for
REPRODUCE.md, a plugin study's configs (their options are read by importing the plugin), a pretraining config
(its run is not packed: the reruns hash the base it makes) and a causal LM's greedy replies (generations.jsonl:
held to runs.sha256 and the results hash alone, as no packed table or paper shows them).
"""

from __future__ import annotations

import importlib.metadata
import posixpath
import re
from pathlib import Path

from peftlab.analysis.archive.received import (
    ENVIRONMENT_LOCK,
    LOCK_LINE,
    MAX_LOCK_BYTES,
    canonical,
    lock_lines,
    lock_versions,
)
from peftlab.analysis.archive.regenerate import Regenerated, first_difference, short
from peftlab.analysis.archive.supplied import SUPPLIED_SUMS, supplied_sums
from peftlab.training.run_result import GENERATIONS

ENVIRONMENT_KEYS = ("versions", "hardware", "arithmetic", "threads", "dtype", "git_sha")  # archive.json's
MARKER = re.compile(r" ; [A-Za-z0-9_.<>=!\"' ]+")  # requirements.lock's platform markers
UNLISTED = ("paper",)  # folders whose unlisted files are named here (checks.check_sums names the others')


def environment_lock(versions: dict) -> str:
    """environment.lock: every installed distribution as ``name==version``, sorted, with the versions the runs
    recorded for the packages they name (``versions``: their provenance's; python is no distribution): the
    packages of the machine of the runs, as far as their records say."""
    found: dict[str, list[str]] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata or {}).get("Name") if dist.metadata else None
        if name:
            found.setdefault(canonical(name), [name, dist.version])
    for name, version in versions.items():
        if name != "python" and isinstance(version, str):
            found.setdefault(canonical(name), [name, version])[1] = version
    return "".join(f"{name}=={version}\n" for name, version in (found[key] for key in sorted(found)))


def lock_differences(root: Path, record: dict) -> list[str]:
    """environment.lock and requirements.lock: a line per file that holds a line pip would read as anything but a
    pinned distribution (an option, an address, another file), and environment.lock's versions of the packages the
    runs recorded against archive.json's environment (which ``record_differences`` holds against the runs)."""
    out = []
    for name, marker in ((ENVIRONMENT_LOCK, False), ("requirements.lock", True)):
        lines = lock_lines(root, name)
        if lines is None:
            out.append(f"{name} is missing or no regular file of at most {MAX_LOCK_BYTES >> 20} MiB")
            continue
        bad = [
            (n, line)
            for n, line in enumerate(lines, 1)
            if not LOCK_LINE.fullmatch(line)
            and not (marker and (not line or line.startswith("#") or lock_line_with_marker(line)))
        ]
        if bad:
            n, line = bad[0]
            out.append(
                f"{name} line {n} is no `name==version` line: {short(line)!r}"
                + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                + ": pip would read it as an option, an address or another file"
            )
    packed = lock_versions(root)
    versions = (record.get("environment") or {}).get("versions") or {}
    for package, version in sorted(versions.items()):
        if package != "python" and isinstance(version, str) and packed.get(canonical(package)) != version:
            out.append(
                f"{ENVIRONMENT_LOCK} names {package} {packed.get(canonical(package)) or 'not at all'}, the runs "
                f"ran {version} (archive.json's environment, as their records say)"
            )
    return out


def lock_line_with_marker(line: str) -> bool:
    head, _, marker = line.partition(" ; ")
    return bool(LOCK_LINE.fullmatch(head)) and bool(MARKER.fullmatch(" ; " + marker))


def record_differences(root: Path, record: dict, packed: list[dict]) -> list[str]:
    """archive.json against the packed runs (``received.archived_runs``): their machine, plugins, base and data."""
    results = [run["result"] for run in packed]
    out = []
    first = next((r.get("provenance") or {} for r in results if r.get("status") == "completed"), {})
    ran = {key: first.get(key) for key in ENVIRONMENT_KEYS}
    for key in ENVIRONMENT_KEYS:
        if (record.get("environment") or {}).get(key) != ran[key]:
            said = short((record.get("environment") or {}).get(key))
            out.append(f"archive.json's environment.{key} is {said}, the runs record {short(ran[key])}")
    trained = sorted(
        {
            (p.get("distribution"), p.get("version"), p.get("code_sha256"))
            for r in results
            if isinstance(p := (r.get("provenance") or {}).get("plugin"), dict) and p.get("distribution")
        },
        key=str,
    )
    listed = sorted({(p["distribution"], p["version"], p["code_sha256"]) for p in record["plugins"]}, key=str)
    if listed != trained:
        out.append(f"archive.json's plugins are {short(listed)}, the runs trained {short(trained)}")
    bases = [s for r in results if isinstance(s := (r.get("provenance") or {}).get("base_sha256"), str)]
    if record.get("base") and bases and record["base"].get("sha256") != bases[0]:
        said = str(record["base"].get("sha256"))[:12]
        out.append(f"archive.json's base.sha256 is {said}, the runs started from {bases[0][:12]}")
    return out + unread_supplied(record, set(bases)) + data_differences(root, record, packed)


def unread_supplied(record: dict, bases: set[str]) -> list[str]:
    """A line per supplied entry no packed run reads: a base file (``model.pretrained``, directly in supplied/)
    whose SHA-256 is no packed run's ``base_sha256``, or a place recorded twice (the receiver would be asked for a
    file nothing reads, or for one file twice)."""
    out, seen = [], set()
    for entry in record.get("supplied") or []:
        path, sha = entry.get("path"), str(entry.get("sha256"))
        if path in seen:
            out.append(f"archive.json's supplied records {path} twice")
        seen.add(path)
        single = isinstance(path, str) and len(Path(path).parts) == 2
        if single and entry.get("field") == "model.pretrained" and bases and sha not in bases:
            out.append(
                f"archive.json's supplied {path} (model.pretrained, SHA-256 {sha[:12]}) is no base a packed run "
                f"read (they read {', '.join(sorted(s[:12] for s in bases))})"
            )
    return out


def data_differences(root: Path, record: dict, packed: list[dict]) -> list[str]:
    """Every dataset a packed run read (its config's data.name and data.root, its record's files and SHA-256) in
    archive.json's data, and every entry there one a packed run or the study's pretraining reads."""
    from peftlab.config.reading import read_yaml

    entries, used, out = record["data"], set(), []
    for run in packed:
        data = (run["result"].get("config") or {}).get("data") or {}
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            continue
        was = data.get("root") if isinstance(data.get("root"), str) else None
        shown = f"data {data['name']}" + (f" (data.root {was})" if was else " (by name)")
        found = [n for n, e in enumerate(entries) if e["name"] == data["name"] and (e.get("was") or None) == was]
        if not found:
            out.append(
                f"{shown}, which results/runs/{run['run_id']} read, is not in archive.json's data: its files are "
                "checked nowhere"
            )
            continue
        used.add(found[0])
        recorded = (run["result"].get("provenance") or {}).get("data_sha256") or {}
        wrong = (
            [f for f, sha in recorded.items() if entries[found[0]]["sha256"].get(f) != sha]
            if isinstance(recorded, dict)
            else []
        )
        if wrong:
            out.append(
                f"archive.json's {shown} does not record {wrong[0][:80]} as results/runs/{run['run_id']} read it"
            )
    pretrain = (record.get("base") or {}).get("pretrain")
    config = read_yaml(root / pretrain) if pretrain and (root / pretrain).is_file() else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    named, where = data.get("name"), data.get("root")
    folder = posixpath.normpath(posixpath.join(posixpath.dirname(pretrain), where)) if isinstance(where, str) else None
    for n, entry in enumerate(entries):
        if n not in used and (entry["name"] != named or entry.get("folder") != folder):
            out.append(
                f"archive.json's data {entry['name']} ({entry.get('folder') or 'by name'}) is no dataset a packed "
                "run or the pretraining reads"
            )
    if named and not any(entry["name"] == named and entry.get("folder") == folder for entry in entries):
        out.append(f"data {named}, which {pretrain} reads, is not in archive.json's data")
    return out


def config_differences(root: Path, record: dict, packed: list[dict]) -> list[str]:
    """The study the packed configs expand to (``study.spec.load_study``, which reads no plugin: ``not_recorded``
    names a plugin study's configs) against each packed run's configuration, at the values its tuning chose
    (spec.json's ``tuned_by``): a line per run whose configuration the configs do not give. Paths aside: the
    archive's are where its files lie, the runs' where they lay (the files they name are checked themselves)."""
    import dataclasses
    import json

    from peftlab.config.paths import PATH_FIELDS
    from peftlab.study.spec import load_study

    if record["plugins"]:
        return []
    try:
        study = load_study(root / record["study"])
    except Exception as err:  # a config's own refusal, whatever its kind: a difference, named
        from peftlab.utils.files import one_line

        return [f"{record['study']} does not load: {one_line(err)}"]
    specs = {(run.variant, run.seed): run for run in study.runs}
    out = []
    for run in packed:
        spec = specs.get((run["variant"], run["seed"]))
        if spec is None:
            out.append(
                f"results/runs/{run['run_id']}: {run['variant']} seed {run['seed']} is no run {record['study']} makes"
            )
            continue
        made = json.loads(json.dumps(dataclasses.asdict(spec.config), default=str))
        for key, value in ((run.get("tuned_by") or {}).get("params") or {}).items():
            section, _, name = str(key).rpartition(".")
            if isinstance(made.get(section), dict):
                made[section][name] = value
        made, ran = flat(made), flat(run["result"].get("config") or {})
        wrong = [
            f"{key}={short(value)} (the run: {short(ran[key])})"
            for key, value in made.items()
            if key in ran and key not in PATH_FIELDS and value != ran[key]
        ]
        if wrong:
            out.append(
                f"{record['study']} gives {run['variant']} seed {run['seed']} {wrong[0]}"
                + (f" and {len(wrong) - 1} more" if len(wrong) > 1 else "")
            )
    return out


def flat(config: dict) -> dict:
    """A config's values by their dotted keys (``model.r``; ``seed``)."""
    return {
        f"{key}.{name}" if isinstance(value, dict) else key: item
        for key, value in config.items()
        for name, item in (value.items() if isinstance(value, dict) else [(None, value)])
    }


def not_recorded(root: Path, record: dict) -> list[str]:
    """What of archive.json, the configs and the runs nothing packed makes again, whatever machine checks it (a line
    each, with why): the times, commands and address REPRODUCE.md says, a plugin study's configs, the pretraining
    config, the files configs name (``files/``), the runs' greedy replies (generations.jsonl)."""
    out = [
        "archive.json's phases, superseded, repository and made (REPRODUCE.md's times, commands and the address to "
        "install from: no run records them)"
    ]
    if record["plugins"]:
        out.append("configs/ (a plugin method's options are read by importing its code: the reruns read them)")
    pretrain = (record.get("base") or {}).get("pretrain")
    if pretrain:
        out.append(f"{pretrain} (its run is not packed: the reruns hash the base it makes against archive.json's)")
    files = (
        [path for path in sorted((root / "files").rglob("*")) if path.is_file()] if (root / "files").is_dir() else []
    )
    if files:
        out.append(
            f"files/ ({len(files)} file{'s' if len(files) > 1 else ''} the configs name: read by the reruns alone)"
        )
    replies = sorted((root / "results" / "runs").glob(f"*/{GENERATIONS}"))
    if replies:  # the report's "Generations" section shows them; no packed file does
        out.append(
            f"results/runs/*/{GENERATIONS} ({len(replies)} file{'s' if len(replies) > 1 else ''}: held to runs.sha256 "
            "and the results hash alone; no packed table or paper shows the replies: a rerun run's are compared on its "
            "line)"
        )
    return out


def checkout_copies(root: Path, out: Regenerated) -> None:
    """requirements.lock and configs/literature.yaml, the packing checkout's: compared with this checkout's, or
    named as not checked where they differ (another commit's may)."""
    from peftlab.analysis.report.literature import LITERATURE
    from peftlab.config.paths import REPO_ROOT

    for name, ours in (("requirements.lock", REPO_ROOT / "requirements.lock"), ("configs/literature.yaml", LITERATURE)):
        path = root / name
        if not path.is_file() or path.is_symlink():
            out.differ.append(f"{name} is missing")
        elif ours.is_file() and path.read_bytes() == ours.read_bytes():
            out.compared[name] = "this checkout's"
        else:
            out.skipped.append(f"{name} (not this checkout's: the one that packed it may be at another commit)")


# every file ``peftlab submission`` packs (SHA256SUMS lists it): another is named, never passed over
PACKED = re.compile(
    r"REPRODUCE\.md|archive\.json|environment\.lock|requirements\.lock"
    r"|paper/(main\.tex|results\.tex|references\.bib|main\.pdf|tables/[^/]+\.tex|figures/[^/]+\.(pdf|png))"
    r"|results/(results\.csv|results\.parquet|runs\.sha256|runs/[^/]+/((spec|result)\.json|generations\.jsonl))"
    r"|configs/[^/]+\.ya?ml|(files|plugins|supplied)/.+"
)


def unlisted_files(root: Path) -> list[str]:
    """A line per file SHA256SUMS lists that ``peftlab submission`` does not pack, and per file at the archive's top
    or in paper/ that SHA256SUMS does not list (added after packing)."""
    sums = root / "SHA256SUMS"
    text = sums.read_text(errors="replace") if sums.is_file() and not sums.is_symlink() else ""
    listed = {line.partition("  ")[2] for line in text.splitlines()} - {""}
    out = [f"{name} is no file `peftlab submission` packs" for name in sorted(listed) if not PACKED.fullmatch(name)]
    found = [path for path in sorted(root.iterdir()) if path.is_file() or path.is_symlink()]
    for folder in UNLISTED:
        found += [path for path in sorted((root / folder).rglob("*")) if path.is_file() or path.is_symlink()]
    return out + [
        f"{name} was added after packing (SHA256SUMS does not list it)"
        for name in (path.relative_to(root).as_posix() for path in found)
        if name not in listed and name != "SHA256SUMS"
    ]


def check_recorded(root: Path, record: dict, packed: list[dict]) -> Regenerated:
    """Every check of this module (see its docstring) but REPRODUCE.md's (``reproduce_md.compare_reproduce_md``), what
    it compared and what it could not."""
    out = Regenerated(skipped=not_recorded(root, record))
    out.differ += record_differences(root, record, packed) + config_differences(root, record, packed)
    out.differ += lock_differences(root, record) + unlisted_files(root)
    out.compared["archive.json"] = "its environment, plugins, base and data against the runs"
    if not record["plugins"]:
        out.compared[record["study"]] = f"the {len(packed)} runs' configurations"
    out.compared[ENVIRONMENT_LOCK] = "the runs' versions"
    checkout_copies(root, out)
    sums = root / SUPPLIED_SUMS
    if record["supplied"] or sums.exists():
        archived = sums.read_text(errors="replace") if sums.is_file() and not sums.is_symlink() else ""
        made = supplied_sums(record["supplied"])
        if archived != made:
            out.differ.append(
                f"{SUPPLIED_SUMS} is not what archive.json's supplied gives: {first_difference(archived, made)}"
            )
        else:
            out.compared[SUPPLIED_SUMS] = "archive.json's supplied"
    return out
