"""What a study's own record says of it, as the paper's prose names it: the split sizes its runs recorded,
its datasets (a folder of the user's by its name), how long its runs trained, the command that ran it and
whether its runs loaded pretrained weights. Each returns nothing where the record is silent, so no sentence
is filled with "n/a".
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pandas as pd

from peftlab.study.records import read_command
from peftlab.utils.cpu import PRODUCTS_ONEDNN, PRODUCTS_ONEDNN_QUANTIZED
from peftlab.utils.errors import UserError
from peftlab.utils.files import read_json, read_lines, refuse_link


def study_command(study_dir) -> str | None:
    """The command that last ran the study, as its command.json records it (``peftlab study`` writes it), as a
    shell would read it, its paths made portable (``results.portable``); None for a study without one (a damaged
    one is a ``DamagedFile``)."""
    from peftlab.analysis.results.portable import portable_text

    record = read_command(Path(study_dir))
    return portable_text(shlex.join(record["argv"]), Path(study_dir)) if record else None  # the paper travels


def study_commands(study_dir) -> list[dict]:
    """Every command that ran the study, in order, each once: {"argv": [...], "cwd": ...} as commands.jsonl
    records them (``peftlab study`` appends one per call); command.json's alone for a study of an older
    peftlab. Lines that are no such record are passed over; a command or folder holding a control character (a
    newline would end a line of REPRODUCE.md's shell block and start one of its own) is one UserError line."""
    records = []
    path = Path(study_dir) / "commands.jsonl"
    refuse_link(path, "study directory entry")
    for number, line in enumerate(read_lines(path, "study directory entry") or [], 1):
        try:
            records.append((f"{path} line {number}", json.loads(line)))
        except ValueError:
            continue
    if not records:
        records = [(str(Path(study_dir) / "command.json"), read_json(Path(study_dir) / "command.json") or {})]
    found = {}
    for where, record in records:
        argv, cwd = record.get("argv") if isinstance(record, dict) else None, (record or {}).get("cwd")
        if isinstance(argv, list) and argv and all(isinstance(arg, str) for arg in argv):
            cwd = cwd if isinstance(cwd, str) else None
            for field, value in [("cwd", cwd or ""), *((f"argv[{i}]", arg) for i, arg in enumerate(argv))]:
                if not value.isprintable():
                    raise UserError(
                        f"{where}: {field} holds a control character ({value[:60]!r}); a recorded command is one "
                        "line of printable text: remove that line"
                    )
            found.setdefault(json.dumps([argv, cwd]), {"argv": argv, "cwd": cwd})
    return list(found.values())


FOLDER_DATA = ("imagefolder", "filelist", "text")  # data.name says the format: the folder says which data


def data_names(study) -> list[str]:
    """The datasets of the completed runs as prose names them: data.name, and for a folder of the user's own
    (imagefolder, filelist, text) the folder's name before it: "fashion (imagefolder)"."""
    return sorted(set(run_data_names(study.done).dropna()))


def run_data_names(done: pd.DataFrame) -> pd.Series:
    """Each run's dataset as ``data_names`` names it (None where its config names none)."""
    if "config.data.name" not in done:
        return pd.Series([None] * len(done), index=done.index, dtype=object)
    roots = done.get("config.data.root", pd.Series([None] * len(done), index=done.index))
    names = []
    for name, root in zip(done["config.data.name"], roots):
        if pd.isna(name):
            names.append(None)
            continue
        folder = Path(str(root)).name if name in FOLDER_DATA and isinstance(root, str) and root else ""
        names.append(f"{folder} ({name})" if folder else str(name))
    return pd.Series(names, index=done.index, dtype=object)


def split_sizes(done, split: str) -> list[int]:
    """The distinct sizes of a split among the completed runs, sorted; [] where no run recorded it."""
    column = f"data.{split}_size"
    if column not in done:
        return []
    return sorted({int(size) for size in done[column].dropna()})


def run_lengths(done: pd.DataFrame) -> tuple[list[int], list[int]]:
    """How long the completed runs trained, as they ran: (the epochs of those train.epochs bounded, the optimizer
    steps of those train.max_steps stopped first), each distinct and sorted, from result.json's protocol record
    (``protocol.epochs`` is empty where max_steps stopped a run); a run without the record by its
    config.train.epochs."""
    steps = done.get("protocol.steps", pd.Series(index=done.index, dtype=float))
    recorded, cut = steps.notna(), done.get("protocol.max_steps", pd.Series(index=done.index, dtype=float)).notna()
    epochs = pd.concat(
        [
            done.loc[recorded & ~cut, "protocol.epochs"] if "protocol.epochs" in done else pd.Series(dtype=float),
            done.loc[~recorded, "config.train.epochs"] if "config.train.epochs" in done else pd.Series(dtype=float),
        ]
    )
    return sorted({int(e) for e in epochs.dropna()}), sorted({int(s) for s in steps[recorded & cut]})


def loads_weights(done: pd.DataFrame) -> bool:
    """Whether some completed run started from pretrained weights: a weights file or timm's hub weights
    (config.model.pretrained), or an HF model directory (config.model.path)."""
    pretrained = done.get("config.model.pretrained", pd.Series(dtype=object)).dropna()
    paths = done.get("config.model.path", pd.Series(dtype=object)).dropna()
    return any(value not in (False, "", "none") for value in pretrained) or len(paths) > 0


def trial_seconds(study_dir) -> list[float]:
    """timing.wall_seconds of each tuning trial's result.json (tune/<search>/runs/<trial>/), where recorded."""
    seconds = []
    for path in sorted(Path(study_dir).glob("tune/*/runs/*/result.json")):
        wall = ((read_json(path) or {}).get("timing") or {}).get("wall_seconds")
        if isinstance(wall, (int, float)) and not isinstance(wall, bool) and math.isfinite(wall):
            seconds.append(float(wall))
    return seconds


# the packages whose version can move a pinned run's bits
NUMERIC_PACKAGES = ("python", "torch", "timm", "peft", "transformers", "bitsandbytes", "numpy")


# MKL branches of a pin whose bits no x86 vendor moves, as the records show: in MKL's COMPATIBLE branch (oneDNN
# and ATen capped to AVX2) every entry of the step probe's records (the pretraining and each default-study
# configuration, 1 and 2 threads) is alike on AMD EPYCs (AVX2; AVX-512) and Intel Xeons (AVX-512, AMX)
# (benchmarks/step_probe/, tests/test_step_probe_records.py), and the whole default study, pretraining, 48 trials
# and 40 final runs, gave an Intel Xeon the numbers an AMD EPYC gave its header
# (benchmarks/default-study-intel-xeon/). The former pin, MKL's AVX2 branch, parted the vendors at the first
# biased Linear, so it keeps naming its vendor.
VENDOR_FREE_BRANCHES = frozenset({"COMPATIBLE,STRICT"})
# the products of a pin whose bits no x86 vendor moves: MKL's (None, in a VENDOR_FREE_BRANCHES branch), and
# oneDNN's at AVX2 (the pin of 2026-11-29): every entry of the step probe's records alike on an Intel Xeon
# (AVX-512, AMX) and an AMD EPYC (AVX-512), and the whole default study's 48 trials and 40 final runs alike; with a
# quantized base's backward products through oneDNN too (the pin since 2026-11-30): the step records of an Intel
# Xeon and an AMD EPYC with AVX2 only alike, and the default study's 10 QLoRA final runs, the only runs it moves
VENDOR_FREE_PRODUCTS = frozenset({None, PRODUCTS_ONEDNN, PRODUCTS_ONEDNN_QUANTIZED})
X86_VENDORS = frozenset({"GenuineIntel", "AuthenticAMD"})
X86_EITHER = "Intel or AMD"  # a vendor-free pin's CPU, as a machine class names it


def class_vendor(arithmetic: dict) -> str | None:
    """The CPU vendor a machine class names: "Intel or AMD" for an x86 CPU under a vendor-free pin
    (``VENDOR_FREE_BRANCHES``, ``VENDOR_FREE_PRODUCTS``), else the recorded vendor."""
    vendor = arithmetic.get("cpu_vendor")
    pinned = bool(arithmetic.get("pinned")) and arithmetic.get("mkl_branch") in VENDOR_FREE_BRANCHES
    pinned = pinned and arithmetic.get("products") in VENDOR_FREE_PRODUCTS
    return X86_EITHER if pinned and vendor in X86_VENDORS else vendor


def machine_class(result: dict) -> dict:
    """What decides a pinned run's bits beyond its config: the pin, the CPU vendor where the pin's bits depend on
    it (``class_vendor``), MKL's branch, the threads, the device and the versions of NUMERIC_PACKAGES."""
    provenance = result.get("provenance") or {}
    arithmetic = provenance.get("arithmetic") or {}
    versions = provenance.get("versions") or {}
    return {
        "pinned": bool(arithmetic.get("pinned")),
        "cpu_vendor": class_vendor(arithmetic),
        "mkl_branch": arithmetic.get("mkl_branch"),
        "products": arithmetic.get("products"),  # the pin's or an earlier pin's; None: MKL's (the pin before 11-29)
        "threads": provenance.get("threads"),
        "device": (provenance.get("hardware") or {}).get("device"),
        **{f"version {name}": versions.get(name) for name in NUMERIC_PACKAGES},
    }


def machine_class_text(cls: dict) -> str:
    """A machine class in words, as a study file's header names it: "AMD CPU, arithmetic pinned (MKL AVX2),
    1 thread a run, torch 2.14.1", or "Intel or AMD CPU, arithmetic pinned (MKL COMPATIBLE,STRICT), ..." ."""
    device = str(cls.get("device") or "cpu")
    where = f"{cls.get('cpu_vendor') or 'unknown'} CPU" if device == "cpu" else device
    products = f", products through {cls['products']}" if cls.get("products") else ""
    pin = (
        f"arithmetic pinned (MKL {cls.get('mkl_branch') or 'default'}{products})"
        if cls.get("pinned")
        else "arithmetic not pinned"
    )
    threads = cls.get("threads")
    count = f"{threads} thread{'s' if threads != 1 else ''} a run" if threads else "threads unrecorded"
    return f"{where}, {pin}, {count}, torch {cls.get('version torch') or 'unrecorded'}"
