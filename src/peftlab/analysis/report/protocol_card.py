"""How a study was made, as its report says it: the protocol card (how its final runs were made, in one table,
from the ``protocol`` record every result.json holds (peftlab.config.protocol), and what a named protocol preset
does not reproduce; a setting that differs between configurations is listed per configuration), the environment,
and the header's phases.

The phases (pretraining, trials, final runs), as the calls of ``peftlab study`` measured them in
``STUDY_DIR/phases.jsonl`` (``peftlab.study.phases``): each phase's wall time, the runs that ended in it with their
summed training and validation time (result.json's ``timing.train_seconds + val_seconds``) and whole-run time
(``timing.wall_seconds``), and the wall time over each divided by the workers: 1 where every worker trained (or
ran) a run all the time and nothing else took time.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from peftlab.analysis.results.escape import latex_escape, markdown_text
from peftlab.analysis.results.tuning_choices import BORROWED_MARK, borrowed_configurations
from peftlab.analysis.results.units import display_name
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.config.protocol import PRESET_DIFFERENCES
from peftlab.study.phases import PHASES, PHASES_FILE, PhaseRecord, read_phases
from peftlab.training.run_result import read_result

ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^/\s]+/)*([^/\s]+/[^/\s]+)")
ROWS = (  # (record key, what the card calls it)
    ("resolution", "resolution (px)"),
    ("interpolation", "interpolation"),
    ("normalization", "normalization"),
    ("tokens", "tokens"),
    ("pair_join", "sentence pairs joined by"),
    ("augmentation", "augmentation"),
    ("epochs", "epochs"),  # only where they bounded the run
    ("max_steps", "stopped by train.max_steps at"),
    ("steps", "optimizer steps run"),
    ("warmup", "warm-up"),
    ("schedule", "schedule"),
    ("batch_size", "batch size"),
    ("optimizer", "optimizer"),
    ("drop_path", "drop-path rate"),
    ("label_smoothing", "label smoothing"),
    ("clip_grad", "gradient clipping (norm)"),
    ("train_split", "final runs trained on"),
    ("selection_split", "final runs validated on"),
    ("test_split", "tested on (once)"),
)

VISION_ONLY = {"drop_path"}  # timm's stochastic depth: a text model's record of it is no setting it has


def shown_value(value) -> str:
    """A card value as text: a count that pandas turned into a float (a column with nulls) as an integer; a
    setting a configuration does not have (its epochs when train.max_steps stopped it) as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def agreed_value(values: pd.Series, names: dict[str, str], variants: pd.Series) -> str:
    """One value when every configuration agrees, else each configuration's, by its name in ``names``
    (``shown_names``)."""
    distinct = list(dict.fromkeys(shown_value(v) for v in values))
    if len(distinct) == 1:
        return distinct[0]
    per = {names.get(v, v): shown_value(x) for v, x in zip(variants, values)}
    return "; ".join(f"{name}: {value}" for name, value in per.items())


def short_paths(text: str) -> str:
    """Absolute paths cut to their last two parts ("/data/vtab-1k/dtd/test.txt" -> "dtd/test.txt"): the
    card names the task folder and the list; result.json keeps the whole path."""
    return ABSOLUTE_PATH.sub(r"\1", text)


# a split's card row and the config key of the subset taken of it (data.train_subset: class-stratified)
SUBSETS = {
    "final runs trained on": ("train", "a class-stratified subset of"),
    "final runs validated on": ("val", "a subset of"),
    "tested on (once)": ("test", "a subset of"),
}


def shown_names(runs: pd.DataFrame, labels: dict[str, str]) -> dict[str, str]:
    """Each configuration's name as every table shows it: its display name (``report.labels``), with
    BORROWED_MARK where it ran at another's tuned values (tune.share)."""
    borrowed = borrowed_configurations(runs)
    methods = runs["method"] if "method" in runs else pd.Series([None] * len(runs), index=runs.index)
    return {
        v: display_name(v, m, labels) + (f" {BORROWED_MARK}" if v in borrowed else "")
        for v, m in zip(runs["variant"], methods)
    }


def subset_words(runs: pd.DataFrame, row: str, names: dict[str, str]) -> str:
    """What a split row adds where the runs took a subset of the split (data.<split>_subset): "; then a
    class-stratified subset of 600 examples"; "" where none did."""
    if row not in SUBSETS:
        return ""
    split, words = SUBSETS[row]
    column = f"config.data.{split}_subset"
    if column not in runs or not runs[column].notna().any():
        return ""
    return f"; then {words} {agreed_value(runs[column], names, runs['variant'])} examples (data.{split}_subset)"


def data_notes(study_dir: Path, run_ids: list[str]) -> list[str]:
    """The lossy-copy notes of the runs' data (a JPEG copy of a lossless task), each once."""
    notes: dict[str, None] = {}
    for run_id in run_ids:
        result = read_result(study_dir / "runs" / run_id) or {}
        for note in ((result.get("provenance") or {}).get("data") or {}).get("notes") or []:
            if isinstance(note, str) and note.startswith("lossy copy"):
                notes[note] = None
    return list(notes)


def card(study_dir: Path, done: pd.DataFrame, labels: dict[str, str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(rows, notes) of the card: (setting, value) of the completed runs, then what a named preset does not
    reproduce and the data's warnings; ([], []) for runs without a protocol record."""
    if done.empty or "protocol.resolution" not in done:
        return [], []
    runs = done.drop_duplicates("variant")
    names = shown_names(runs, labels)
    rows = [
        (name, short_paths(agreed_value(runs[f"protocol.{key}"], names, runs["variant"])))
        for key, name in ROWS
        if f"protocol.{key}" in runs
        and runs[f"protocol.{key}"].notna().any()  # text runs: no resolution
        and (key not in VISION_ONLY or runs["protocol.resolution"].notna().any())  # a transformers model has none
    ]
    rows = [(name, value + subset_words(runs, name, names)) for name, value in rows]
    if runs["protocol.resolution"].notna().any():  # an image study: the published counts it is set beside
        rows.append(
            (
                "parameter counts",
                "the tables count trainable parameters with the head; the published VTAB-1k "
                "counts (PETL_Vision) leave it out",
            )
        )
    seeds = sorted(set(int(s) for s in done["seed"]))
    rows.append(("seeds", f"{len(seeds)} ({', '.join(map(str, seeds))})"))
    rows.append(("hyper-parameters selected on", "validation only (tune: trials never meet the test set)"))
    notes = []
    for preset in sorted(set(runs.get("config.protocol", pd.Series(dtype=str)).dropna()) - {"none"}):
        notes += [
            f"Protocol preset {preset}: the settings above are its own; peftlab does not reproduce that {difference}."
            for difference in PRESET_DIFFERENCES.get(preset, [])
        ]
        cut = runs[(runs["config.protocol"] == preset) & runs.get("protocol.max_steps", pd.Series(dtype=float)).notna()]
        if not cut.empty:
            steps, epochs = shown_value(cut["protocol.steps"].max()), shown_value(cut["config.train.epochs"].iloc[0])
            notes.append(
                f"Protocol preset {preset}: train.max_steps stopped its runs ({steps} optimizer steps at most) "
                f"before the preset's {epochs} epochs."
            )
    notes += [f"Warning: {note}." for note in data_notes(study_dir, list(done["run_id"]))]
    return rows, notes


def report_section(study_dir: Path, done: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """## Protocol card: the settings of the completed runs, the preset and its differences, the data's warnings."""
    rows, notes = card(study_dir, done, labels)
    if not rows:
        return []
    lines = ["## Protocol card", "", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {markdown_text(value)} |" for name, value in rows] + [""]  # a "|" would split the cell
    return lines + [f"- {markdown_text(note)}" for note in notes] + ([""] if notes else [])


def latex_card(study_dir: Path, done: pd.DataFrame, labels: dict[str, str]) -> str | None:
    """tables/protocol.tex of the paper: the card as a booktabs table, its notes under it."""
    rows, notes = card(study_dir, done, labels)
    if not rows:
        return None
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\caption{Protocol card: how the final runs were made.}",
        r"\label{tab:protocol}",
        r"\begin{tabularx}{\linewidth}{@{}l>{\raggedright\arraybackslash}X@{}}",
        r"\toprule",
        r"Setting & Value \\",
        r"\midrule",
    ]
    lines += [f"{latex_escape(name)} & {latex_marked(value)} \\\\" for name, value in rows]
    lines += [r"\bottomrule", r"\end{tabularx}"]
    if any(f" {BORROWED_MARK}" in value for _, value in rows):
        notes = [
            *notes,
            f"{BORROWED_MARK}: not tuned itself; ran at the values tuned for another configuration (tune.share).",
        ]
    if notes:
        lines += [r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize " + latex_marked(" ".join(notes)) + "}"]
    return "\n".join(lines + [r"\end{table}"]) + "\n"


def environment_section(provenance: dict) -> list[str]:
    """The report's "Environment" section: git, versions, hardware, threads, precision and CPU arithmetic. Every
    recorded word is Markdown text (``markdown_text``): a received result.json's CPU name starts no heading, link
    or HTML here, as in REPRODUCE.md; the names a machine records print as themselves."""
    if not provenance:
        return ["## Environment", "", "No completed run recorded its environment.", ""]
    versions = provenance.get("versions") or {}
    hardware = provenance.get("hardware") or {}
    said = {key: markdown_text(value) for key, value in hardware.items() if key != "cpu_flags"}
    flags = markdown_text(" ".join(map(str, hardware.get("cpu_flags") or []))) or "none known"
    return [
        "## Environment",
        "",
        f"- git: {markdown_text(provenance.get('git_sha'))} (dirty: {markdown_text(provenance.get('git_dirty'))})",
        "- versions: " + ", ".join(f"{markdown_text(k)} {markdown_text(v)}" for k, v in versions.items() if v),
        f"- hardware: {said.get('cpu', 'None')}"
        + (f" ({said['cpu_generation']})" if hardware.get("cpu_generation") else "")
        + f", {said.get('cpu_count', 'None')} CPUs, device {said.get('device', 'None')}"
        + (f", CPU flags {flags}" if "cpu_flags" in hardware else "")
        + (f", GPU {said['gpu']}" if hardware.get("gpu") else ""),
        f"- threads per run: {markdown_text(provenance.get('threads'))}; "
        f"precision: {markdown_text(provenance.get('dtype'))}",
        *arithmetic_line(provenance.get("arithmetic")),
        "",
    ]


def arithmetic_line(arithmetic: dict | None) -> list[str]:
    """Whether the CPU arithmetic was pinned (train.reproducible): it decides if another CPU gives the same numbers."""
    if not arithmetic:
        return []
    if arithmetic.get("pinned"):
        cpu = ", ".join(
            f"{name} {markdown_text(arithmetic[key])}"
            for key, name in (("cpu_vendor", "CPU vendor"), ("mkl_branch", "MKL branch"))
            if arithmetic.get(key)
        )
        products = (
            f"every Linear's products through {markdown_text(arithmetic['products'])}, the rest in MKL's COMPATIBLE "
            "branch"
            if arithmetic.get("products")
            else "MKL's COMPATIBLE branch (the pin before 2026-11-29)"
        )
        return [
            f"- CPU arithmetic: pinned (train.reproducible: {products}, oneDNN and ATen capped to AVX2, fused AdamW), "
            "the same bits on Intel and AMD x86 CPUs in every entry of benchmarks/step_probe.py's records"
            + (f" ({cpu})" if cpu else "")
        ]
    return [
        "- CPU arithmetic: the CPU's own (train.reproducible off): an AVX2 and an AVX-512 CPU give other numbers "
        "for the same seeds"
    ]


def mixed_arithmetic_warning(done: pd.DataFrame) -> list[str]:
    """One line when the pinned runs compared here came from CPUs whose pinned arithmetic is recorded
    differently (vendor or MKL branch; ``provenance.pinned_arithmetic``): the pin was measured to agree
    between one Intel and one AMD CPU (benchmarks/arith_hashes.py), not proven for every pair."""
    if "provenance.pinned_arithmetic" not in done:
        return []
    counts = done["provenance.pinned_arithmetic"].dropna().value_counts(sort=False)
    if len(counts) < 2:
        return []
    where = "; ".join(f"{markdown_text(name)}: {n} run{'s' if n > 1 else ''}" for name, n in counts.items())
    return [
        f"**Warning: the pinned runs compared here came from CPUs whose arithmetic is recorded differently** "
        f"({where}): their numbers may differ in the last bits.",
        "",
    ]


SUMS = ("train_eval_seconds", "run_seconds")  # what the wall time is set against
NAMES = {"pretrain": "pretraining", "trials": "trials", "final runs": "final runs"}


def phase_lines(study_dir: Path) -> list[str]:
    """The header's lines on the study's phases: one per phase the calls entered and one for them all."""
    records = read_phases(study_dir)
    if not records:
        return [f"- phases: not recorded (this study ran before peftlab recorded them in {PHASES_FILE})"]
    lines = [
        f"- phases, as {calls(records)} of `peftlab study` measured them ({PHASES_FILE}): wall time; the runs that "
        "ended in the phase, their summed training and validation time (result.json's timing.train_seconds + "
        "val_seconds), test passes' time where they were tested (timing.test_seconds, the merged model's and a "
        "causal LM's base alone too) and whole-run time (timing.wall_seconds); the workers; wall time / (each time "
        "/ workers)"
    ]
    for name in PHASES:
        ran = [r for r in records if r["phase"] == name]
        if ran:
            lines.append(f"  - {NAMES[name]}: {phase_summary(ran)}")
    if len({r["phase"] for r in records}) > 1:
        lines.append(f"  - all phases: {phase_summary(records)}")
    return lines


def calls(records: list[PhaseRecord]) -> str:
    starts = len({r["started"] for r in records if r["phase"] == records[0]["phase"]})
    return "1 call" if starts == 1 else f"{starts} calls"


def phase_summary(records: list[PhaseRecord]) -> str:
    """A phase's (or all phases') wall time, runs and their times summed over the calls, and the ratios."""
    wall = sum(r["wall_seconds"] for r in records)
    runs = sum(r["runs"] for r in records)
    parts = [f"{minutes(wall)} wall"]
    if runs == 0:
        cached = all(r["phase"] == "pretrain" for r in records)
        return f"{parts[0]}; no run ended in it" + (" (its base was already trained)" if cached else "")
    totals = [minutes(sum(r[key] for r in records)) for key in SUMS]
    tested = [r.get("test_seconds") for r in records if r["runs"]]  # absent in lines of an earlier version
    testing = f", {minutes(sum(tested))} testing" if None not in tested and sum(tested) > 0 else ""
    parts.append(
        f"{runs} run{'s' if runs != 1 else ''}, {totals[0]} training and validation{testing}, {totals[1]} whole"
    )
    workers = sorted({r["workers"] for r in records if r["runs"]})
    parts.append(f"{' and '.join(map(str, workers))} worker{'s' if workers != [1] else ''}")
    remote = sorted({r["executor"] for r in records if r["executor"] != "local" and r["runs"]})
    if remote:  # Slurm jobs or Ray tasks: no fixed number of them run at once
        return "; ".join(parts) + f"; runs as {' and '.join(remote)} jobs, no worker count to divide by"
    ratios = []
    for key, name in zip(SUMS, ("training and validation", "whole runs")):
        ideal = sum(r[key] / r["workers"] for r in records if r["workers"] > 0)  # every worker busy all along
        if ideal > 0:
            ratios.append(f"{wall / ideal:.2f} to {name}")
    return "; ".join(parts + ([f"ratio {', '.join(ratios)}"] if ratios else []))


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


# --- the trainable shares a study file claims (formerly report/claims.py) ---
# The report's check of the trainable shares a study file claims (``report.trainable_share_at_most``).
#
# A configuration named there (or else a method: all its configurations) claims that at most that
# share of the model's parameters trains (the LoRA fine-tuning document's "at most 0.3%"). Every
# completed run of it is checked against its own count (result.json ``params``: trainable, the head
# included, over total); a run over the limit is named, never averaged away, and a claim that names
# nothing is said.


def share(value: float) -> str:
    """A share of parameters as the papers write it: 0.00123 -> 0.123%."""
    return f"{100 * value:.3g}%"


def claims_section(df: pd.DataFrame, limits: dict[str, float], labels: dict[str, str]) -> list[str]:
    """The "Trainable-share claims" section: one row per configuration a claim covers; [] without claims."""
    if not limits:
        return []
    done = completed_runs(df)
    lines = ["## Trainable-share claims", ""]
    rows, unmatched = [], []
    for key, limit in limits.items():
        named = "variant" if key in set(df["variant"]) else "method"  # a configuration first, else a method's all
        covered = done[done[named] == key]
        if covered.empty:
            unmatched.append(key)
            continue
        for variant, runs in covered.groupby("variant", sort=False):
            ratios = runs["params.trainable"] / runs["params.total"]
            over = runs[ratios > limit]
            rows.append(
                f"| {labels.get(variant, variant)} | {int(runs['params.trainable'].max()):,} | "
                f"{int(runs['params.total'].max()):,} | {share(ratios.max())} | {share(limit)} | "
                f"{'yes' if over.empty else f'**no** ({len(over)} of {len(runs)} runs)'} |"
            )
    if rows:
        lines += [
            "Trainable parameters (the head's included) over all the model's parameters, the largest share "
            "among each configuration's completed runs, against the share the study file claims for it.",
            "",
            "| configuration | trainable | total | share | claimed at most | met |",
            "|---|---:|---:|---:|---:|---|",
            *rows,
            "",
        ]
    if unmatched:
        lines += [f"Claims that name no configuration or method with completed runs: {', '.join(unmatched)}.", ""]
    return lines


def latex_marked(text: str) -> str:
    """``text`` escaped for LaTeX (``latex_escape``), each BORROWED_MARK printed as the tables print it,
    $^{\\ddagger}$."""
    return latex_escape(text).replace(f" {BORROWED_MARK}", r"$^{\ddagger}$").replace(BORROWED_MARK, r"$^{\ddagger}$")
