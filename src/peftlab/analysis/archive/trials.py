"""``peftlab reproduce --trials``: a tuned study's searches rerun, not taken as recorded.

Without ``--trials`` the reruns train at the values each archived run's spec.json records (``tuned_by``) and the
verdict says the tuning was taken as recorded. With it, the searches of the chosen runs' configurations run again
(their trials in ``OUT/rerun/tune/``, as ``peftlab study`` runs them), the final runs train at the rerun's
choices, and each choice is compared with the archived one: a search that chose other values is named. On the
archive's machine class that is a difference; on another class (another CPU vendor, MKL branch, thread count or
torch) a search may choose otherwise as its numbers move, so it is a note, and the runs at the new choice are
compared with the archived ones by the tolerance, as every run from another class is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


def trial_study(study_file: Path, wanted: list[dict]):
    """(the study with its searches for ``wanted``'s configurations kept and its runs those of ``wanted``, the
    wanted runs it has none for). ``wanted``: ``{"variant", "seed", ...}`` per run."""
    from peftlab.study.spec import load_study
    from peftlab.study.tuning.configurations import search_key

    study = load_study(study_file)
    asked = {(w["variant"], w["seed"]) for w in wanted}
    picked = [spec for spec in study.runs if (spec.variant, spec.seed) in asked]
    keys = {search_key(spec, study.tune) for spec in picked} - {None}
    tune = {key: search for key, search in study.tune.items() if key in keys}
    have = {(spec.variant, spec.seed) for spec in picked}
    missing = [w for w in wanted if (w["variant"], w["seed"]) not in have]
    return dataclasses.replace(study, runs=picked, tune=tune), missing


def rerun_with_trials(study, out_dir: Path, progress: bool = True) -> dict[tuple[str, int], Path]:
    """Train ``study`` (``trial_study``: searches first) in ``out_dir`` as ``peftlab study`` does; each final run's
    folder by (label, seed), read from the runs the study wrote (their ids are the choices' own)."""
    from peftlab.study.runner import run_study
    from peftlab.utils.cpu import pin_arithmetic

    if any(spec.config.train.reproducible for spec in study.runs):
        pin_arithmetic()
    run_study(study, out_dir, progress=progress, retry_failed=True)
    return rerun_dirs(out_dir)


def rerun_dirs(out_dir: Path) -> dict[tuple[str, int], Path]:
    """Each run folder of the reruns in ``out_dir`` by the (label, seed) its spec.json records."""
    from peftlab.utils.files import read_json

    found = {}
    for spec_file in sorted((out_dir / "runs").glob("*/spec.json")):
        spec = read_json(spec_file) or {}
        found[(spec.get("variant"), spec.get("seed"))] = spec_file.parent
    return found


def said_choices(differ: list[str], other_class: bool) -> tuple[list[str], list[str]]:
    """(differences, notes) of ``compare_choices``' lines: on another machine class a choice that moved is a note,
    said with the reason, as the numbers the search compared may move there."""
    if not other_class:
        return differ, []
    return [], [f"{line} (another machine class: its runs are compared by the tolerance)" for line in differ]


def compare_choices(chosen: list[dict], dirs: dict[tuple[str, int], Path]) -> tuple[list[str], list[str]]:
    """(a line per configuration whose rerun search chose other values than the archive records, a phrase per
    one that chose the same): each chosen run's archived ``tuned_by`` against its rerun's spec.json."""
    from peftlab.utils.files import read_json

    differ, same, seen = [], [], set()
    for run in chosen:
        archived = run.get("tuned_by")
        if not archived or run["variant"] in seen:
            continue
        seen.add(run["variant"])
        run_dir = dirs.get((run["variant"], run["seed"]))
        rerun = ((read_json(run_dir / "spec.json") or {}) if run_dir is not None else {}).get("tuned_by") or {}
        old, new = archived.get("params") or {}, rerun.get("params")
        if new is None:
            differ.append(f"tuning of {run['variant']}: the rerun search made no choice")
        elif old != new:
            said = ", ".join(f"{key} {new.get(key)} (archived {old.get(key)})" for key in sorted(set(old) | set(new)))
            differ.append(f"tuning of {run['variant']}: the rerun search chose {said}")
        else:
            same.append(f"{run['variant']}: {', '.join(f'{k} {v}' for k, v in sorted(new.items()))}")
    return differ, same
