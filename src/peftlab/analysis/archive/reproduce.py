"""``peftlab reproduce ARCHIVE_OR_FOLDER [--runs all|one-seed|N] [--out DIR] [--data DIR] [--run-archive-code]``:
a received submission checked and rerun, number by number (docs/reproduce.md). A received archive is data, never
code, until the user says otherwise; every check comes before any action, and a failed check stops them.

The phases, one function each, in this order:

- ``receive``: the archive surveyed as it streams (``received.survey``: sizes, names, kinds; nothing written),
  ``--out`` claimed (a new folder, or the one an earlier reproduce of the same archive made: ``claim_out``), the
  archive unpacked into OUT/archive and archive.json read through its schema;
- ``check``: this machine against the runs' (a note per difference that can move numbers), the configs' paths
  (inside the archive, or one line, exit 2), the files against SHA256SUMS, the results hash recomputed from the
  packed runs, the plugins' code and folders, the data's checksums: ``Checks``;
- ``gate``: a difference stops the reruns before anything trains or imports (exit 1), an absent dataset too
  (one line, exit 2);
- ``consent``: reruns that need the archive's plugin code stop (one line, exit 2) unless ``--run-archive-code``
  was given; with it, only the declared packages are importable, from a folder of their own (``plugin_code``);
- ``rerun``: the chosen runs from the archived configs (into OUT/rerun), as ``peftlab study`` trains them;
- ``compare``: each with its archived result (``received.compare_runs``, the rule in ``received.RULE``).

One verdict line; exit 0 when everything agrees, 1 when anything differs; OUT/reproduce.json records it all, the
received texts as they are (the terminal is given them through the CLI's escaper).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from peftlab.analysis.archive.claims import compare_claims
from peftlab.analysis.archive.datasets import NamedData, check_named_data, named_entries, rerun_environment
from peftlab.analysis.archive.pack import rewrite_paths
from peftlab.analysis.archive.received import (
    KEPT,
    RULE,
    SHOWN,
    archived_runs,
    capped,
    check_configs,
    check_data,
    check_plugin_folders,
    check_plugins,
    check_sums,
    compare_runs,
    dist_info,
    environment_notes,
    file_sha256,
    read_archive_record,
    results_hash,
    survey,
    unpack,
    walk_folder,
)
from peftlab.analysis.archive.regenerate import regenerate
from peftlab.analysis.archive.sample import draw
from peftlab.analysis.archive.sample import sample_seed as sample_seed_of
from peftlab.analysis.archive.supplied import SuppliedCheck, check_supplied
from peftlab.analysis.archive.trials import compare_choices, rerun_dirs, rerun_with_trials, trial_study
from peftlab.analysis.archive.verdicts import (
    Evidence,
    Phases,
    checked_record,
    closing_record,
    machine_lines,
    reruns_of,
    verdict_lines,
)
from peftlab.config.reading import read_yaml
from peftlab.utils.errors import UserError
from peftlab.utils.files import read_json, refuse_link, write_atomic, write_json_atomic, write_text_atomic

RECORD = "reproduce.json"
OWNER = "reproduce-of.json"  # written first into OUT: the archive it reproduces (received.survey's identity)
PLUGIN_CODE = "plugin-code"  # OUT/plugin-code/<plugin>/: the declared packages alone, when the user allows them
CONSENT = "--run-archive-code"


def default_out(source: Path) -> Path:
    name = source.name.removesuffix(".tar.gz").removesuffix(".tgz").removesuffix(".tar") or "submission"
    return Path(f"{name}-reproduced")


def reproduce(
    source: str | Path,
    runs: str = "one-seed",
    out: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
    data: str | Path | None = None,
    run_archive_code: bool = False,
    sample_seed: int | str | None = None,
    trials: bool = False,
) -> int:
    """Check the archive at ``source`` and rerun ``runs`` of it into ``out``; the exit status (0 nothing differs, 1
    something does). ``say`` prints a line (the CLI's escapes what the archive holds); ``run_archive_code``: the
    archive's plugin code may be imported for the reruns (``--run-archive-code``); ``sample_seed``: the seed that
    draws the reruns (``sample``); ``trials``: the tuning searches rerun (``trials``). The closing lines say the
    three verdicts (``verdicts``)."""
    source = Path(source)
    out = Path(out) if out else default_out(source)
    kept = Path(data) if data is not None else None
    if kept is not None and not kept.is_dir():
        raise UserError(
            f"--data {kept} is not a folder: expected the folder that holds the datasets, each in a folder named "
            "as in the archive's data/"
        )
    seed = sample_seed_of(sample_seed)
    phases, evidence = Phases(), Evidence()
    with phases.timed("unpack"):
        root, record = receive(source, out)
    packed = archived_runs(root)
    chosen = draw(packed, runs, seed)
    with phases.timed("check"):
        checks = check(root, record, kept)
    with phases.timed("regenerate"):
        regenerated = regenerate(root, record)
        checks.differences += regenerated.differ
    show(checks, say)
    for line in checks.named.by_reruns:
        say(f"note: {line}")
    stopped = gate(checks, chosen)
    evidence.archive = list(checks.differences)
    evidence.not_checked = [f"data not checked (absent: {', '.join(checks.unseen)})"] if checks.unseen else []
    evidence.not_checked += [f"supplied file not checked: {line}" for line in checks.supplied.absent]
    evidence.checked = checked_record(
        root, record, checks.sha, checks.found, checks.named, checks.supplied, regenerated
    )
    evidence.runs_total = sum(1 for run in packed if run["result"].get("status") == "completed")
    evidence.sample = "all" if runs == "all" else f"drawn with sample seed {seed}"
    evidence.tuned = any(run.get("tuned_by") for run in packed)
    compared: list[dict] = []
    allowed: list[dict] = []
    if chosen and stopped is None:
        allowed = consent(root, record, out, run_archive_code)
        say(f"rule: {RULE}")
        say(f"rerunning {len(chosen)} of the {len(packed)} archived runs into {out / 'rerun'}")
        os.environ.update(rerun_environment(checks.named, kept))  # the reruns read each dataset by name as checked
        with phases.timed("rerun"):
            results = rerun(root, record, chosen, out, progress, checks.found, trials)
        compared, lines = compare(chosen, results, packed)
        lines += base_lines(record, out / "configs" / Path(record["study"]).name, same_class=not checks.notes)
        for line in lines:
            say(line)
        evidence.run_differences = [line for line in lines if not line.split(": ", 1)[1].startswith("reproduced")]
        if trials:  # each search's choice against the archive's
            evidence.trial_differences, evidence.trials = compare_choices(chosen, rerun_dirs(out / "rerun"))
            for line in evidence.trial_differences:
                say(f"differs: {line}")
    evidence.compared = compared
    if runs == "all" and compared and all(run["rule"] != "none" for run in compared):
        with phases.timed("claims"):
            evidence.claims = compare_claims(
                root, record, reruns_of(compared), exact=all(run["rule"] == "exact" for run in compared)
            )
        for line in evidence.claims.differ:
            say(f"claim differs: {line}")
    drawn = seed if chosen and runs != "all" else None  # the seed that drew the reruns, where one did
    for line in machine_lines(record, evidence, phases, drawn):
        say(line)
    closing, level, agree = verdict_lines(evidence)
    if stopped is not None:  # the checks stopped the reruns: that is the verdict
        closing[-1] = stopped
    for line in closing:
        say(line)
    differences = evidence.archive + evidence.run_differences + evidence.trial_differences
    differences += evidence.claims.differ if evidence.claims else []
    write_json_atomic(
        out / RECORD,
        {
            "source": str(source),
            "archive": str(root),
            "runs": runs,
            "environment": checks.notes,
            "results_sha256": checks.sha,
            "rule": RULE,
            "rerun": stopped is None and bool(chosen),
            "plugin_code_run": allowed,
            "compared": compared,
            "differences": capped(differences, KEPT),
            "differences_count": len(differences),
            "data_not_checked": checks.unseen,
            "tuning_choices": evidence.trials,
            "verdicts": closing[:-1],
            "verdict": closing[-1],
            "reproduced": agree and level >= 2,
            **closing_record(evidence, record, phases, drawn, level),
        },
    )
    return 0 if agree else 1


# --- receive ---------------------------------------------------------------------------------------------------


def receive(source: Path, out: Path) -> tuple[Path, dict]:
    """(the archive's folder, its archive.json): surveyed, ``out`` claimed for it, unpacked, read."""
    identity, _ = survey(source)
    claim_out(out, identity, source)
    root = unpack(source, out / "archive")
    return root, read_archive_record(root)


def claim_out(out: Path, identity: str, source: Path) -> None:
    """``out`` made peftlab's for the archive ``identity``: a new (or empty) folder, or one that an earlier
    reproduce of the same archive made (OWNER says so; it is resumed). A folder of anything else, or one of
    another archive, is one UserError line: no user's file is replaced and no two archives are merged. No entry
    under it may be a symbolic link (nothing is written or read through one)."""
    refuse_link(out, "--out folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: expected a folder (made when missing)")
    if out.is_dir() and any(out.iterdir()):
        refuse_link(out / OWNER, "--out folder entry")
        owner = read_json(out / OWNER)
        if owner is None:
            raise UserError(
                f"--out {out} holds files that no `peftlab reproduce` made: give a new folder (reproduce writes "
                "into a folder of its own, or resumes one it made for the same archive)"
            )
        if owner.get("archive") != identity:
            raise UserError(
                f"--out {out} holds the reproduction of another archive ({owner.get('source')!r}): give a new folder "
                "(two archives' files and runs are never merged)"
            )
        walk_folder(out, "--out folder", receiver=("archive",), bounded=False)  # links, devices: the reruns' too
        for folder in (out / "archive").iterdir() if (out / "archive").is_dir() else []:
            walk_folder(folder, "--out folder")  # the archive unpacked, the receiver's data/<name> and base/ aside
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / OWNER, {"archive": identity, "source": str(source)})


# --- check -----------------------------------------------------------------------------------------------------


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


# --- gate ------------------------------------------------------------------------------------------------------


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


# --- consent ---------------------------------------------------------------------------------------------------


def consent(root: Path, record: dict, out: Path, allowed: bool) -> list[dict]:
    """The archive's plugins the reruns import (the study names their methods, so every rerun reads them), each
    ``{distribution, version, code_sha256, files}``. Without ``allowed`` (``--run-archive-code``) one UserError
    line lists what would run and stops before anything is imported; with it, the declared packages alone are
    copied into a folder of their own (``plugin_code``) and put on the path of this process and its workers."""
    plugins = record["plugins"]
    if not plugins:
        return []
    ran = [
        {**{k: p[k] for k in ("distribution", "version", "code_sha256")}, "files": code_files(root / p["folder"], p)}
        for p in plugins
    ]
    if not allowed:
        what = "; ".join(
            f"{p['distribution']} {p['version']} ({', '.join(capped(p['files'], 8))}; code SHA-256 "
            f"{p['code_sha256'][:12]})"
            for p in ran
        )
        raise UserError(
            f"the reruns would import the archive's plugin code, which peftlab runs only when asked: {what}; give "
            f"{CONSENT} to run it (its declared packages alone), or --runs 0 to check the archive without running "
            "anything"
        )
    folders = plugin_code(root, record, out / PLUGIN_CODE)
    sys.path[:0] = [str(folder) for folder in folders]  # this process (it reads the study's methods) and workers
    before = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []  # never an empty entry (the cwd)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder) for folder in folders] + before)
    return ran


def code_files(folder: Path, plugin: dict) -> list[str]:
    """The files of ``plugin``'s declared packages in ``folder`` (relative to it), as its code hash reads them."""
    files = []
    for package in sorted(plugin["packages"]):
        if (folder / package).is_dir():
            for top, folders, names in os.walk(folder / package):
                folders[:] = sorted(f for f in folders if f != "__pycache__")
                here = Path(top).relative_to(folder)
                files += [(here / name).as_posix() for name in sorted(names) if not name.endswith(".pyc")]
        elif (folder / f"{package}.py").is_file():
            files.append(f"{package}.py")
    return files


def plugin_code(root: Path, record: dict, where: Path) -> list[Path]:
    """Each plugin's declared packages and dist-info (its METADATA and entry points) copied from the archive into
    ``where``/<plugin> (made anew: peftlab's own folder), no other file of its folder and no compiled ``.pyc``
    (Python compiles the sources the code hash covers); the copy hashed again against the runs' code."""
    from peftlab.tuners.plugins import folder_code_sha256

    refuse_link(where, "--out folder entry")
    if where.exists():
        shutil.rmtree(where)
    folders = []
    for plugin in record["plugins"]:
        src, folder = root / plugin["folder"], Path(os.path.abspath(where / Path(plugin["folder"]).name))
        info = [f"{dist_info(plugin)}/{name}" for name in ("METADATA", "entry_points.txt", "top_level.txt")]
        for name in code_files(src, plugin) + [name for name in info if (src / name).is_file()]:
            write_atomic(folder / name, lambda tmp, path=src / name: shutil.copyfile(path, tmp, follow_symlinks=False))
        copied = folder_code_sha256(folder, set(plugin["packages"]))
        if copied != plugin["code_sha256"]:
            raise UserError(
                f"plugin {plugin['distribution']} {plugin['version']}: its code copied into {folder} hashes to "
                f"{copied[:12]}, the runs trained {plugin['code_sha256'][:12]} (the archive changed while read?)"
            )
        folders.append(folder)
    return folders


# --- rerun and compare -----------------------------------------------------------------------------------------


def rerun(
    root: Path,
    record: dict,
    chosen: list[dict],
    out: Path,
    progress: bool,
    found: dict[str, Path],
    trials: bool = False,
) -> dict[tuple, dict]:
    """Rerun ``chosen`` with the archive's study file (its configs copied into OUT/configs, naming the datasets
    where ``found`` says) into OUT/rerun; each run's result by (variant, seed), a missing one's as an error."""
    wanted = [{"variant": run["variant"], "seed": run["seed"], "tuned_by": run.get("tuned_by")} for run in chosen]
    study_file = rerun_configs(root, record["study"], found, out / "configs")
    if trials:  # the searches again, then the final runs at their choices (trials.py)
        study, missing = trial_study(study_file, wanted)
        dirs = rerun_with_trials(study, out / "rerun", progress) if study.runs else {}
    else:
        study, picked, missing = chosen_runs(study_file, wanted)
        dirs = run_chosen(study, out / "rerun", progress) if picked else {}
    results = {}
    for run in chosen:
        run_dir = dirs.get((run["variant"], run["seed"]))
        results[(run["variant"], run["seed"])] = (
            read_json(run_dir / "result.json")
            if run_dir is not None
            else {"status": "missing", "error": "the archived study file has no such run (a config changed?)"}
        )
    return results


def compare(chosen: list[dict], results: dict[tuple, dict], packed: list[dict]) -> tuple[list[dict], list[str]]:
    """Each rerun against its archived run (``received.compare_runs``): a record and a line per run."""
    pairs = [
        {
            "variant": run["variant"],
            "seed": run["seed"],
            "run_id": run["run_id"],
            "archived": run["result"],
            "rerun": results.get((run["variant"], run["seed"])),
        }
        for run in chosen
    ]
    by_variant: dict[str, list[dict]] = {}
    for run in packed:
        if run["result"].get("status") == "completed":
            by_variant.setdefault(run["variant"], []).append(run["result"])
    return compare_runs(pairs, by_variant)


def base_lines(record: dict, study_file: Path, same_class: bool) -> list[str]:
    """The line on the base the rerun's pretraining made (where the archive records its SHA-256 and the rerun
    made or found it): its weights equal to the recorded ones; other weights are a difference on the runs'
    machine class and, on another class, what that class may give (its runs are then held to the tolerance)."""
    recorded = (record.get("base") or {}).get("sha256")
    if not recorded or not study_file.is_file():
        return []
    from peftlab.study.runner import pretrain_dir
    from peftlab.study.spec import load_study

    study = load_study(study_file)
    directory = pretrain_dir(study) if study.pretrain is not None else None
    weights = directory / "model.safetensors" if directory is not None else None
    if weights is None or not weights.is_file():
        return []
    made = file_sha256(weights)
    if made == recorded:
        return [f"base: reproduced, its weights' SHA-256 {made[:12]} as recorded"]
    if not same_class:
        return [
            f"base: reproduced by the tolerance only: other weights ({made[:12]}, recorded {recorded[:12]}), as "
            "another machine class may give"
        ]
    return [f"base: other weights on the runs' machine class: SHA-256 {made[:12]}, recorded {recorded[:12]}"]


def rerun_configs(root: Path, study: str, found: dict[str, Path], into: Path) -> Path:
    """The archive's configs (``study``'s folder) copied into ``into``, each path field naming what it names in
    the archive, but a dataset's folder where ``found`` says it is (``--data``); returns the study file's copy."""
    import yaml

    top = Path(os.path.abspath(root))
    kept = {os.path.normpath(top / folder): os.path.abspath(where) for folder, where in found.items()}

    class Found:
        """``pack.rewrite_paths``' places: the same absolute path, or the folder a dataset was found in."""

        def place(self, field: str, value: str) -> str:
            return kept.get(os.path.normpath(value), value)

    configs = (top / study).parent
    refuse_link(into, "--out folder entry")
    for path in sorted(configs.glob("*.yaml")):  # received.check_configs: each path in them inside the archive
        data = rewrite_paths(read_yaml(path), configs, Found(), os.path.abspath(into))
        write_text_atomic(into / path.name, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return into / Path(study).name


# Reruns: a run is chosen by its configuration's label and its seed (the archive's run ids hash the paths of the
# machine that made it, so they are not the ids here). A tuned study's final runs train at the values their
# spec.json records (``tuned_by``): the searches are not repeated. The runs train as ``peftlab study`` trains them
# (``study.runner.run_study``: the study's pretraining first, then the runs in workers, which import torch).
CHOSEN_KEYS = ("trial", "value", "metric", "params")


def chosen_runs(study_file: Path, wanted: list[dict]) -> tuple[object, list, list[dict]]:
    """(the study, the runs of it that ``wanted`` names, the wanted runs it has none for). ``wanted``: one
    ``{"variant", "seed", "tuned_by"}`` per run, ``tuned_by`` as its spec.json records it (or None)."""
    from peftlab.study.search import with_choices
    from peftlab.study.spec import load_study
    from peftlab.study.tuning.configurations import search_key

    study = load_study(study_file)
    if study.tune:
        chosen: dict[str, dict] = {}
        tuned = {w["variant"]: w["tuned_by"] for w in wanted if w.get("tuned_by")}
        for spec in study.runs:
            key = search_key(spec, study.tune)
            if key is not None and spec.variant in tuned and key not in chosen:
                chosen[key] = {k: tuned[spec.variant][k] for k in CHOSEN_KEYS if k in tuned[spec.variant]}
        study = dataclasses.replace(with_choices(study, chosen), tune={})
    by_key = {(spec.variant, spec.seed): spec for spec in study.runs}
    picked = [by_key[(w["variant"], w["seed"])] for w in wanted if (w["variant"], w["seed"]) in by_key]
    missing = [w for w in wanted if (w["variant"], w["seed"]) not in by_key]
    return dataclasses.replace(study, runs=picked), picked, missing


def run_chosen(study, out_dir: Path, progress: bool = True) -> dict[tuple[str, int], Path]:
    """Train ``study``'s runs (``chosen_runs``) in ``out_dir``, as ``peftlab study`` trains them (the arithmetic
    pinned before the workers import torch where a run asks for it); each run's folder by (label, seed)."""
    from peftlab.study.runner import run_dir_of, run_study
    from peftlab.utils.cpu import pin_arithmetic

    if any(spec.config.train.reproducible for spec in study.runs):
        pin_arithmetic()
    run_study(study, out_dir, progress=progress, retry_failed=True)  # a failure of an earlier call: trained again
    return {(spec.variant, spec.seed): run_dir_of(out_dir, spec) for spec in study.runs}
