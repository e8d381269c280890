"""The rerun and compare phases of ``peftlab reproduce``: the chosen runs trained again from the archive's configs
(copied into OUT/configs, each dataset named where it was found), as ``peftlab study`` trains them, into OUT/rerun
(``rerun``); then each rerun against its archived run, exactly where the runs were pinned and this machine is of
their class, else within the tolerance (``compare_runs``, the rule in ``RULE``), and the base the rerun's
pretraining made against the recorded one (``base_lines``).

The sample (``draw``, ``sample_seed``): which archived runs ``peftlab reproduce`` reruns, drawn so that whoever
packed the archive cannot predict them. The default (``--runs one-seed``) reruns one seed of each configuration,
drawn from a seed the receiver controls: random by default (``secrets``), recorded in reproduce.json and the last
lines, ``--sample-seed N`` to draw the same runs again. A forger who edits the one seed a fixed rule reruns (the
first) is caught with the probability that seed is drawn; a forger who edits every seed is caught by any rerun.
``--runs N`` draws one seed of each configuration first, then the others, in the drawn order; ``--runs all``
reruns every completed run.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import secrets
import statistics
from pathlib import Path

from peftlab.analysis.archive.pack import rewrite_paths
from peftlab.analysis.archive.received import file_sha256
from peftlab.analysis.archive.trials import rerun_with_trials, trial_study
from peftlab.analysis.results.record import NUMERIC_PACKAGES, machine_class
from peftlab.config.reading import read_yaml
from peftlab.training.run_result import GENERATIONS
from peftlab.utils.cpu import PRODUCTS_MKL, PRODUCTS_PIN, PRODUCTS_SWITCH, products_switch
from peftlab.utils.errors import UserError
from peftlab.utils.files import read_json, refuse_link, write_text_atomic


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


def rerun_configs(root: Path, study: str, found: dict[str, Path], into: Path) -> Path:
    """The archive's configs (``study``'s folder) copied into ``into``, each path field naming what it names in
    the archive, but a dataset's folder where ``found`` says it is (``--data``); returns the study file's copy. The
    copy sets ``train.merged_test: always``: an archive made before exact merges went untested merged (or with
    ``always``) holds their merged test top-1, which a rerun must score to compare it."""
    import yaml

    top = Path(os.path.abspath(root))
    kept = {os.path.normpath(top / folder): os.path.abspath(where) for folder, where in found.items()}

    class Found:
        """``pack.rewrite_paths``' places: the same absolute path, or the folder a dataset was found in."""

        def place(self, field: str, value: str, read: bool = False) -> str:
            return kept.get(os.path.normpath(value), value)

    configs = (top / study).parent
    refuse_link(into, "--out folder entry")
    for path in sorted(configs.glob("*.yaml")):  # checks.check_configs: each path in them inside the archive
        data = rewrite_paths(read_yaml(path), configs, Found(), os.path.abspath(into))
        if path.name == Path(study).name and isinstance(data, dict):  # every merged score the archive holds checked
            data["set"] = {**(data.get("set") or {}), "train.merged_test": "always"}
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


# the packages whose version can move a run's numbers: a difference is named, and makes the comparison a tolerance
RULE = (
    "a run is compared exactly (every metric equal) where it was pinned (train.reproducible) and the rerun's "
    "machine class is the runs' (CPU vendor, MKL branch, threads, device, versions of "
    + ", ".join(NUMERIC_PACKAGES)
    + "); otherwise each metric of a rerun must lie within its configuration's archived mean ± 2 seed-to-seed "
    "standard deviations, at least ± 0.5 points of a top-1 or accuracy and ± 1% of any other metric"
)


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
        problems += [f"{key} archived {old[key]:.6g}, the rerun has none" for key in sorted(set(old) - set(new))]
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
        replies, replies_record = reply_differences(pair.get("replies"))
        if replies and exact:  # greedy decoding follows the logits' bits: held to them where the metrics are
            problems.append(replies)
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
                **({"replies": replies_record} if replies_record else {}),
            }
        )
        if problems:
            lines.append(f"run {name}: differs ({rule}{why_tolerance}): {'; '.join(problems)}")
        else:
            said = "every metric equal" if exact else "within the tolerance"
            lines.append(
                f"run {name}: reproduced, {said} ({rule}{why_tolerance}): "
                + ", ".join(f"{k} {new[k]:.6g}" for k in shared)
                + reply_note(replies, replies_record)
            )
    return records, lines


def reply_differences(replies: tuple[list | None, list | None] | None) -> tuple[str | None, dict | None]:
    """(a line naming the greedy replies of generations.jsonl that differ, or None where all are equal; a record of
    how many were compared and differ). ``replies``: (the archive's rows, the rerun's rows); nothing where the
    archive packs none."""
    archived, rerun = replies or (None, None)
    if not archived:
        return None, None
    if not rerun:
        return f"{GENERATIONS}: the rerun wrote no greedy replies (the archive packs {len(archived)})", {
            "compared": len(archived),
            "differ": len(archived),
        }
    pairs = list(itertools.zip_longest(archived, rerun))
    differ = [
        i for i, (a, b) in enumerate(pairs) if not a or not b or (a["prompt"], a["reply"]) != (b["prompt"], b["reply"])
    ]
    record = {"compared": len(archived), "differ": len(differ)}
    if not differ:
        return None, record
    first, (old, new) = differ[0] + 1, pairs[differ[0]]
    said = f"{(new or {}).get('reply')!r} here, {(old or {}).get('reply')!r} archived"
    return (
        f"{GENERATIONS}: {len(differ)} of {len(archived)} greedy replies differ, the first to prompt {first}: {said}",
        record,
    )


def reply_note(replies: str | None, record: dict | None) -> str:
    """The end of a reproduced run's line: its greedy replies equal, or (another machine class: not held to
    them) how many differ."""
    if record is None:
        return ""
    if replies is None:
        return f"; greedy replies: {record['compared']} of {record['compared']} equal"
    return f"; note: {replies} (greedy decoding follows the logits' last bits, which another machine class moves)"


def label(pair: dict) -> dict:
    return {"variant": pair["variant"], "seed": pair["seed"], "archived_run": pair.get("run_id")}


def short(value) -> str:
    return str(value)[:12] if value is not None else "none"


def compare(
    chosen: list[dict], results: dict[tuple, dict], packed: list[dict], replies: dict | None = None
) -> tuple[list[dict], list[str]]:
    """Each rerun against its archived run (``compare_runs``): a record and a line per run. ``replies``: by
    (variant, seed), the archive's and the rerun's generations.jsonl rows (``replies_of``)."""
    pairs = [
        {
            "variant": run["variant"],
            "seed": run["seed"],
            "run_id": run["run_id"],
            "archived": run["result"],
            "rerun": results.get((run["variant"], run["seed"])),
            "replies": (replies or {}).get((run["variant"], run["seed"])),
        }
        for run in chosen
    ]
    by_variant: dict[str, list[dict]] = {}
    for run in packed:
        if run["result"].get("status") == "completed":
            by_variant.setdefault(run["variant"], []).append(run["result"])
    return compare_runs(pairs, by_variant)


def replies_of(root: Path, chosen: list[dict], dirs: dict[tuple, Path]) -> dict[tuple, tuple]:
    """By (variant, seed): the greedy replies the archive packs for the run (results/runs/<run>/generations.jsonl)
    and those its rerun wrote (None where either wrote none)."""
    from peftlab.analysis.results.generations import read_generations

    found = {}
    for run in chosen:
        key = (run["variant"], run["seed"])
        rerun_dir = dirs.get(key)
        found[key] = (
            read_generations(root / "results" / "runs" / run["run_id"]),
            read_generations(rerun_dir) if rerun_dir is not None else None,
        )
    return found


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


# --- the sample: which archived runs are rerun ------------------------------------------------------------------


def sample_seed(given: int | str | None) -> int:
    """The seed of the draw: ``given`` (``--sample-seed``) as an integer in [0, 2**63), else a fresh random one."""
    if given is None:
        return secrets.randbits(63)
    try:
        seed = int(given)
    except (TypeError, ValueError):
        raise UserError(f"--sample-seed {given!r} is invalid: expected a whole number from 0 to 2**63-1") from None
    if not 0 <= seed < 2**63:
        raise UserError(f"--sample-seed {given!r} is invalid: expected a whole number from 0 to 2**63-1")
    return seed


def draw(runs: list[dict], which: str, seed: int) -> list[dict]:
    """The completed runs to rerun (``runs``: ``received.archived_runs``' records, in the study's order): ``all``,
    ``one-seed`` (one seed of each configuration, drawn) or a count N (the drawn seed of each configuration first,
    then the other seeds in a drawn order; 0 reruns none). The draw depends on ``seed`` and on the runs' labels
    and seeds only, never on the order of the files."""
    done = [run for run in runs if run["result"].get("status") == "completed"]
    if which == "all":
        return done
    count = rerun_count(which)
    rng = random.Random(seed)
    by_variant: dict[str, list[dict]] = {}
    for run in sorted(done, key=lambda r: (str(r["variant"]), str(r["seed"]))):
        by_variant.setdefault(str(run["variant"]), []).append(run)
    firsts, rest = [], []
    for variant in sorted(by_variant):
        seeds = by_variant[variant][:]
        rng.shuffle(seeds)
        firsts.append(seeds[0])
        rest += seeds[1:]
    rng.shuffle(rest)
    order = {id(run): n for n, run in enumerate(done)}
    firsts.sort(key=lambda run: order[id(run)])  # the study's order, as the reruns print
    if count is None:
        return firsts
    return (firsts + rest)[:count]


def rerun_count(which: str) -> int | None:
    """``--runs``' count of runs (None: ``all`` or ``one-seed``); anything else is one line."""
    if which in ("all", "one-seed"):
        return None
    if not (which.isascii() and which.isdigit()):
        raise UserError(f"--runs {which!r} is invalid: expected all, one-seed or a count of runs (0 reruns none)")
    return int(which)


def trials_need_runs(which: str, trials: bool) -> None:
    """``--trials`` with ``--runs 0`` is refused: the searches are rerun with the final runs they choose."""
    if trials and rerun_count(which) == 0:
        raise UserError(
            "--trials with --runs 0 would rerun nothing: the searches are rerun with the final runs they choose, "
            "so give --runs N, one-seed or all (--runs 0 checks the archive only)"
        )


def products_environment(record: dict) -> dict[str, str]:
    """The pin's products as the archived runs computed them (archive.json's ``environment.arithmetic``): MKL's
    switch (``PRODUCTS_MKL``) where pinned runs recorded no products (MKL's COMPATIBLE branch, the pin before
    2026-11-29), the switch of an earlier pin's products where they recorded those (``PRODUCTS_ONEDNN``, the pin of
    2026-11-29), else nothing (``reproduce`` removes a switch this shell left set, so a rerun of the pin's runs or
    of unpinned ones computes as they did)."""
    arithmetic = (record.get("environment") or {}).get("arithmetic") or {}
    if not arithmetic.get("pinned"):
        return {}
    products = arithmetic.get("products")
    if products in (None, PRODUCTS_MKL):
        return {PRODUCTS_SWITCH: PRODUCTS_MKL}
    switch = products_switch(products)
    return {PRODUCTS_SWITCH: switch} if switch and products != PRODUCTS_PIN else {}
