"""How a number or a name is written in a macro of results.tex: macro names from configuration names (letters only,
"lora r=8" -> ``LoraREight``), and a score, a signed difference, a p-value or a count of pairs as LaTeX prints
them. macros.py, tables.py and the paper's other writers share them."""

from __future__ import annotations

import functools
import re

import numpy as np

from peftlab.analysis.paper.names import integer
from peftlab.analysis.results.units import decimal
from peftlab.analysis.results.units import signed as signed_text
from peftlab.analysis.stats.power import MAX_PAIRS

ONES = (
    "Zero One Two Three Four Five Six Seven Eight Nine Ten Eleven Twelve Thirteen Fourteen Fifteen Sixteen "
    "Seventeen Eighteen Nineteen"
).split()
TENS = ["", "", "Twenty", "Thirty", "Forty", "Fifty", "Sixty", "Seventy", "Eighty", "Ninety"]


def number_words(n: int) -> str:
    """16 -> "Sixteen", 64 -> "SixtyFour", 256 -> "TwoHundredFiftySix"; larger: digit by digit."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + (ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return ONES[n // 100] + "Hundred" + (number_words(n % 100) if n % 100 else "")
    return "".join(ONES[int(d)] for d in str(n))


def macro_suffix(name: str) -> str:
    """A variant name as letters for a macro: "lora r=8" -> "LoraREight"."""
    words = re.findall(r"[A-Za-z]+|\d+", str(name))
    return "".join(number_words(int(w)) if w.isdigit() else w.capitalize() for w in words) or "Unnamed"


def variant_suffixes(variants: list[str]) -> dict[str, str]:
    """Distinct macro suffixes for the variants (a clash gets "Alt", "AltAlt", ...)."""
    suffixes: dict[str, str] = {}
    for variant in variants:
        suffix = macro_suffix(variant)
        while suffix in suffixes.values():
            suffix += "Alt"
        suffixes[variant] = suffix
    return suffixes


def pct(x: float, scale: float = 100.0) -> str:
    """A fraction in % to one decimal; with a Score's ``scale`` (1 for a perplexity), its value as printed."""
    return "--" if not np.isfinite(x) else decimal(scale * x)


def signed(x: float) -> str:
    """A difference with its sign, in math mode so the minus is a minus: $-6.2$, $+1.0$."""
    return "--" if not np.isfinite(x) else rf"\ensuremath{{{signed_text(x)}}}"


def points_words(points: float) -> str:
    """A difference in points with its noun, to two significant digits: "1 point", "0.5 points"."""
    shown = f"{points:.2g}"
    return f"{shown} {'point' if shown == '1' else 'points'}"


def pvalue(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    if p >= 0.001:
        return f"{p:.3f}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return rf"\ensuremath{{{mantissa}\times 10^{{{int(exponent)}}}}}"


def pairs_text(count: float) -> str:
    """The pairs a difference needs: "12", "more than 10{,}000", "n/a"."""
    if not np.isfinite(count):
        return "n/a" if np.isnan(count) else f"more than {integer(MAX_PAIRS)}"
    return integer(count)


# --- each macro's source (formerly paper/macro_text.py) ---
# Where each macro of results.tex is made from, declared where the paper makes it. A function that defines a
# family of macros from other files than the runs' records says so (``made_from``); every other macro is made from
# the runs (results/runs/: spec.json and result.json). ``Numbers.add`` holds each macro to its family's source
# (``FAMILIES``, by the start of its name), so that what reads a results.tex it did not make (``archive.regenerate``,
# which remakes the macros of the sources an archive packs) can tell a macro of an unpacked source from one added by
# hand.


RUNS = "runs"  # results/runs/: each run's spec.json and result.json
LITERATURE = "literature"  # the published numbers the paper cites (configs/literature.yaml)
PHASE_LOG = "phases"  # phases.jsonl: each call's phases, their wall time and workers (or the trials' records)
COMMANDS = "commands"  # command.json and commands.jsonl: the calls that ran the study
TUNING = "tuning"  # tune/: the searches and their trials
STUDY_FOLDER = "study folder"  # the study folder's runs of another version of the study (superseded)
BASE = "base manifest"  # the pretraining's manifest.json beside the base (an archive's base/ is the receiver's to fill)

# the families made from other sources than the runs, by the start of their macros' names
FAMILIES = {
    "lit": LITERATURE,
    "studyWall": PHASE_LOG,
    "studyElapsed": PHASE_LOG,
    "studyWorkers": PHASE_LOG,
    "studyCommand": COMMANDS,
    "tune": TUNING,
    "studySuperseded": STUDY_FOLDER,
    **dict.fromkeys(("baseData", "baseSteps", "baseTopOne", "basePerplexity", "baseTrainMinutes"), BASE),
}


def source_of(name: str) -> str:
    """The source of the macro ``name``: its family's (the longest start of ``FAMILIES`` it has), else the runs."""
    starts = [start for start in FAMILIES if name.startswith(start)]
    return FAMILIES[max(starts, key=len)] if starts else RUNS


def made_from(source: str):
    """Decorate a function ``define(numbers, ...)`` whose macros are made from ``source``: ``numbers.add`` then
    refuses a macro of another family (a macro of this source named as the runs', or the reverse)."""

    def decorate(define):
        @functools.wraps(define)
        def defined(numbers, *args, **kwargs):
            outer, numbers.made_from = numbers.made_from, source
            try:
                return define(numbers, *args, **kwargs)
            finally:
                numbers.made_from = outer

        return defined

    return decorate
