"""Rerun chosen runs of a study from its file, as ``peftlab reproduce`` does with a received archive.

A run is chosen by its configuration's label and its seed (the run ids of the archive name the paths of the
machine that made it, so they are not the ids here). A tuned study's final runs are trained at the values their
spec.json records (``tuned_by``): the searches are not repeated. The runs train as ``peftlab study`` trains them
(``runner.run_study``: the study's pretraining first, then the runs in workers) into their own study folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from peftlab.study.runner import run_dir_of, run_study
from peftlab.study.search import with_choices
from peftlab.study.spec import RunSpec, load_study
from peftlab.study.tuning.configurations import search_key
from peftlab.utils.cpu import pin_arithmetic

CHOSEN_KEYS = ("trial", "value", "metric", "params")


def chosen_runs(study_file: Path, wanted: list[dict]) -> tuple[object, list[RunSpec], list[dict]]:
    """(the study, the runs of it that ``wanted`` names, the wanted runs it has none for). ``wanted``: one
    ``{"variant", "seed", "tuned_by"}`` per run, ``tuned_by`` as its spec.json records it (or None)."""
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
    if any(spec.config.train.reproducible for spec in study.runs):
        pin_arithmetic()
    run_study(study, out_dir, progress=progress, retry_failed=True)  # a failure of an earlier call: trained again
    return {(spec.variant, spec.seed): run_dir_of(out_dir, spec) for spec in study.runs}
