"""Where each macro of results.tex is made from, declared where the paper makes it. A function that defines a
family of macros from other files than the runs' records says so (``made_from``); every other macro is made from
the runs (results/runs/: spec.json and result.json). ``Numbers.add`` holds each macro to its family's source
(``FAMILIES``, by the start of its name), so that what reads a results.tex it did not make (``archive.regenerate``,
which remakes the macros of the sources an archive packs) can tell a macro of an unpacked source from one added by
hand.
"""

from __future__ import annotations

import functools

RUNS = "runs"  # results/runs/: each run's spec.json and result.json
LITERATURE = "literature"  # the published numbers the paper cites (configs/literature.yaml)
PHASE_LOG = "phases"  # phases.jsonl: each call's phases, their wall time and workers (or the trials' records)
COMMANDS = "commands"  # command.json and commands.jsonl: the calls that ran the study
TUNING = "tuning"  # tune/: the searches and their trials
STUDY_FOLDER = "study folder"  # the study folder's runs of another version of the study (superseded)

# the families made from other sources than the runs, by the start of their macros' names
FAMILIES = {
    "lit": LITERATURE,
    "studyWall": PHASE_LOG,
    "studyElapsed": PHASE_LOG,
    "studyWorkers": PHASE_LOG,
    "studyCommand": COMMANDS,
    "tune": TUNING,
    "studySuperseded": STUDY_FOLDER,
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
