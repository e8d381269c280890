"""``peftlab reproduce ARCHIVE_OR_FOLDER [--runs all|one-seed|N] [--out DIR]``: a received submission checked and
rerun, number by number (docs/reproduce.md).

In order: unpack (``received.unpack``), this machine against the runs' (a note per difference that can move
numbers), the files against SHA256SUMS, the results hash recomputed from the packed runs, the plugins' code, the
data's checksums, then the chosen runs rerun from the archived configs (``rerun``, into OUT/rerun) and
each compared with its archived result (``received.compare_runs``, the rule in ``received.RULE``). One verdict
line; exit 0 when everything agrees, 1 when anything differs; OUT/reproduce.json records it all.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

from peftlab.analysis.archive.claims import compare_claims
from peftlab.analysis.archive.datasets import check_named_data, named_entries, rerun_environment
from peftlab.analysis.archive.pack import ARCHIVE_RECORD, rewrite_paths
from peftlab.analysis.archive.received import (
    RULE,
    archived_runs,
    check_data,
    check_plugins,
    check_sums,
    compare_runs,
    environment_notes,
    file_sha256,
    results_hash,
    unpack,
)
from peftlab.analysis.archive.regenerate import regenerate
from peftlab.analysis.archive.sample import draw
from peftlab.analysis.archive.sample import sample_seed as sample_seed_of
from peftlab.analysis.archive.supplied import check_supplied
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
from peftlab.utils.files import read_json, refuse_link, write_json_atomic

RECORD = "reproduce.json"


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
    sample_seed: int | str | None = None,
    trials: bool = False,
) -> int:
    source = Path(source)
    out = Path(out) if out else default_out(source)
    refuse_link(out, "--out folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: expected a folder (made when missing)")
    kept = Path(data) if data is not None else None
    if kept is not None and not kept.is_dir():
        raise UserError(
            f"--data {kept} is not a folder: expected the folder that holds the datasets, each in a folder named "
            "as in the archive's data/"
        )
    seed = sample_seed_of(sample_seed)
    phases, evidence = Phases(), Evidence()
    with phases.timed("unpack"):
        root = unpack(source, out / "archive")
    record = read_json(root / ARCHIVE_RECORD)
    packed = archived_runs(root)
    chosen = draw(packed, runs, seed)
    differences: list[str] = []

    with phases.timed("check"):
        notes = environment_notes(record)
        for note in notes:
            say(f"environment: {note}")
        if not notes:
            say("environment: this machine is of the runs' machine class (CPU vendor, pin, threads, package versions)")
        for line in check_sums(root):
            differences.append(line)
        sha, hash_lines = results_hash(root)
        differences += hash_lines
        if not hash_lines:
            say(f"results hash: {sha[:12]}, recomputed from results/runs, as paper/results.tex and runs.sha256 say")
        differences += check_plugins(root, record)
        data_differ, absent, found = check_data(root, record, kept)
        supplied, named = check_supplied(root, record), check_named_data(record, kept)
        differences += data_differ + supplied.differ + named.differ
        absent += supplied.absent + named.absent
    with phases.timed("regenerate"):
        regenerated = regenerate(root, record)
        differences += regenerated.differ
    for line in differences:
        say(f"differs: {line}")
    for line in absent:
        say(f"note: {line}")
    unseen = [data["folder"] for data in record.get("data") or [] if data.get("folder") and data["folder"] not in found]
    unseen += [
        f"{entry['name']} (by name)"
        for entry in named_entries(record)
        if entry["name"] not in named.found and not (chosen and entry["name"] in named.rerun_checked)
    ]
    for line in named.by_reruns:
        say(f"note: {line}")
    if chosen and absent:
        raise UserError(f"{absent[0]}; or --runs 0 to check the archive without rerunning")
    evidence.archive = list(differences)
    evidence.not_checked = [f"data not checked (absent: {', '.join(unseen)})"] if unseen else []
    evidence.not_checked += [f"supplied file not checked: {line}" for line in supplied.absent]
    evidence.checked = checked_record(root, record, sha, found, named, supplied, regenerated)
    evidence.runs_total = sum(1 for run in packed if run["result"].get("status") == "completed")
    evidence.sample = "all" if runs == "all" else f"drawn with sample seed {seed}"
    evidence.tuned = any(run.get("tuned_by") for run in packed)

    compared: list[dict] = []
    if chosen:
        say(f"rule: {RULE}")
        say(f"rerunning {len(chosen)} of the {len(packed)} archived runs into {out / 'rerun'}")
        os.environ.update(rerun_environment(named, kept))  # the reruns read each dataset by name as checked
        with phases.timed("rerun"):
            compared, lines = rerun_and_compare(root, record, chosen, packed, out, progress, found, trials)
        lines += base_lines(record, out / "configs" / Path(record["study"]).name, same_class=not notes)
        for line in lines:
            say(line)
        evidence.run_differences = [line for line in lines if not line.split(": ", 1)[1].startswith("reproduced")]
        differences += evidence.run_differences
        if trials:  # each search's choice against the archive's
            evidence.trial_differences, evidence.trials = compare_choices(chosen, rerun_dirs(out / "rerun"))
            for line in evidence.trial_differences:
                say(f"differs: {line}")
            differences += evidence.trial_differences
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
    for line in closing:
        say(line)
    write_json_atomic(
        out / RECORD,
        {
            "source": str(source),
            "archive": str(root),
            "runs": runs,
            "environment": notes,
            "results_sha256": sha,
            "rule": RULE,
            "compared": compared,
            "differences": differences + (evidence.claims.differ if evidence.claims else []),
            "tuning_choices": evidence.trials,
            "data_not_checked": unseen,
            "verdicts": closing[:-1],
            "verdict": closing[-1],
            "reproduced": agree and level >= 2,
            **closing_record(evidence, record, phases, drawn, level),
        },
    )
    return 0 if agree else 1


def rerun_and_compare(
    root: Path,
    record: dict,
    chosen: list[dict],
    packed: list[dict],
    out: Path,
    progress: bool,
    found: dict[str, Path],
    trials: bool = False,
):
    """Rerun ``chosen`` with the archive's study file (its plugins first on the path; its configs copied into
    OUT/configs naming the datasets where ``found`` says) and compare each."""
    folders = [str((root / plugin["folder"]).resolve()) for plugin in record.get("plugins") or []]
    sys.path[:0] = folders  # the archive's plugin code, before any installed version: the workers inherit it
    os.environ["PYTHONPATH"] = os.pathsep.join(folders + [p for p in [os.environ.get("PYTHONPATH")] if p])
    wanted = [{"variant": run["variant"], "seed": run["seed"], "tuned_by": run["tuned_by"]} for run in chosen]
    study_file = rerun_configs(root, record["study"], found, out / "configs")
    if trials:  # the searches again, then the final runs at their choices (trials.py)
        study, missing = trial_study(study_file, wanted)
        dirs = rerun_with_trials(study, out / "rerun", progress) if study.runs else {}
    else:
        study, picked, missing = chosen_runs(study_file, wanted)
        dirs = rerun(study, out / "rerun", progress) if picked else {}
    pairs = []
    for run in chosen:
        run_dir = dirs.get((run["variant"], run["seed"]))
        rerun_result = read_json(run_dir / "result.json") if run_dir is not None else None
        if run_dir is None:
            rerun_result = {"status": "missing", "error": "the archived study file has no such run (a config changed?)"}
        pairs.append(
            {
                "variant": run["variant"],
                "seed": run["seed"],
                "run_id": run["run_id"],
                "archived": run["result"],
                "rerun": rerun_result,
            }
        )
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
    into.mkdir(parents=True, exist_ok=True)
    for path in sorted(configs.glob("*.yaml")):
        refuse_link(into / path.name, "--out folder entry")
        data = rewrite_paths(read_yaml(path), configs, Found(), os.path.abspath(into))
        (into / path.name).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
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


def rerun(study, out_dir: Path, progress: bool = True) -> dict[tuple[str, int], Path]:
    """Train ``study``'s runs (``chosen_runs``) in ``out_dir``, as ``peftlab study`` trains them (the arithmetic
    pinned before the workers import torch where a run asks for it); each run's folder by (label, seed)."""
    from peftlab.study.runner import run_dir_of, run_study
    from peftlab.utils.cpu import pin_arithmetic

    if any(spec.config.train.reproducible for spec in study.runs):
        pin_arithmetic()
    run_study(study, out_dir, progress=progress, retry_failed=True)  # a failure of an earlier call: trained again
    return {(spec.variant, spec.seed): run_dir_of(out_dir, spec) for spec in study.runs}
