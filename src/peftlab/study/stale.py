"""Finished runs trained on a base that has changed since: refused before a study reuses them.

A run id hashes ``model.pretrained`` as a path, not the file's bytes, so retraining a cached
base in place (``peftlab pretrain`` after its config changed, another checkout's study writing
the same cache) would let a study count runs trained on the old weights as finished. Every
run's ``result.json`` records the SHA-256 of the base it loaded (``provenance.base_sha256``);
``refuse_stale_runs`` compares it with the file as it is now and stops the study in one line
naming the runs and the way out, before any result is reused or any run is trained.

Pinned runs whose products (``provenance.arithmetic.products``) are not the ones this environment's pin computes
(``utils.cpu.pinned_products``: runs of the pin before 2026-11-29, MKL's products, in a folder the pin of today
would finish) are refused the same way (``refuse_other_products``): reused, they would mix two arithmetics in one
table.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from peftlab.training.run_result import RunResult, read_result
from peftlab.utils.cpu import PRODUCTS_SWITCH, pinned_products, products_switch
from peftlab.utils.errors import UserError

RUN_GLOBS = ("runs/*", "tune/*/runs/*")


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a regular file (what ``provenance.base_sha256`` records), None for anything else.
    Plain hashlib: the study driver must not import torch (peftlab.data does) before it pins the
    CPU arithmetic."""
    try:  # opened once, without blocking, and checked once open: a FIFO or a device there is no file to hash
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_base(result: RunResult) -> tuple[str, str] | None:
    """(weights path, SHA-256) of the local base a finished run loaded; None when it loaded none."""
    provenance, config = result.get("provenance"), result.get("config")
    if not isinstance(provenance, dict) or not isinstance(config, dict):
        return None
    sha, model = provenance.get("base_sha256"), config.get("model")
    path = model.get("pretrained") if isinstance(model, dict) else None
    if not isinstance(sha, str) or not isinstance(path, str) or path in ("none", "hub"):
        return None
    return path, sha


def stale_runs(study_dir: Path) -> dict[str, list[str]]:
    """Weights path -> the run directories (relative to ``study_dir``) whose recorded base SHA-256
    differs from the file's now. A missing base file is left to the runs that need it."""
    current: dict[str, str | None] = {}
    stale: dict[str, list[str]] = {}
    for pattern in RUN_GLOBS:
        for run_dir in sorted(study_dir.glob(pattern)):
            result = read_result(run_dir)
            base = recorded_base(result) if result is not None else None
            if base is None:
                continue
            weights, sha = base
            if weights not in current:
                current[weights] = file_sha256(Path(weights))
            if current[weights] is not None and current[weights] != sha:
                stale.setdefault(weights, []).append(str(run_dir.relative_to(study_dir)))
    return stale


def refuse_stale_runs(study_dir: Path) -> None:
    """UserError when a finished run of ``study_dir`` was trained on other bytes of its base file."""
    stale = stale_runs(study_dir)
    if stale:
        weights, runs = next(iter(stale.items()))
        count = sum(map(len, stale.values()))
        raise UserError(
            f"{weights} changed after {count} finished run(s) of {study_dir} were trained on it "
            f"(first: {runs[0]}): the base was retrained in place; use another --study-dir for the "
            "new base, or delete those runs to train them again"
        )


def recorded_products(result: RunResult | None) -> tuple[bool, str | None]:
    """(whether the finished run was pinned, its recorded products); (False, None) for anything else."""
    provenance = result.get("provenance") if isinstance(result, dict) else None
    arithmetic = provenance.get("arithmetic") if isinstance(provenance, dict) else None
    if not isinstance(arithmetic, dict) or arithmetic.get("pinned") is not True:
        return False, None
    return True, arithmetic.get("products")


def refuse_other_products(study_dir: Path) -> None:
    """UserError when a finished pinned run of ``study_dir`` computed its products otherwise than a pinned run of
    this environment would (``pinned_products``)."""
    here = pinned_products(True)
    others = []
    for pattern in RUN_GLOBS:
        for run_dir in sorted(study_dir.glob(pattern)):
            pinned, products = recorded_products(read_result(run_dir))
            if pinned and products != here:
                others.append((str(run_dir.relative_to(study_dir)), products))
    if others:
        first, products = others[0]
        switch = products_switch(products)
        finish = (
            f"set {PRODUCTS_SWITCH}={switch} to finish the study as they computed"
            if switch
            else f"no value of {PRODUCTS_SWITCH} computes them here"
        )
        raise UserError(
            f"{len(others)} finished pinned run(s) of {study_dir} computed their products with "
            f"{products or 'MKL (the pin before 2026-11-29)'}, not with {here or 'MKL'} as this environment's pin "
            f"does (first: {first}): use another --study-dir, {finish}, or delete those runs"
        )
