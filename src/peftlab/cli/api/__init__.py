"""The Python API, for notebooks and scripts (docs/python-api.md): the functions the ``peftlab`` commands call, which
``peftlab`` re-exports (``peftlab.train`` is ``peftlab.cli.api.train``).

It is a floor of its own, above the library (utils ... analysis, bench) and below the commands' modules of
``peftlab.cli``, which call it: it imports nothing of the commands (tests/test_imports.py reads the imports). Each
function imports what it needs when called, so that ``import peftlab`` stays light (no torch): ``runs`` (train,
validate, params), ``study`` (run_study), ``trained`` (load_trained, predict, export), ``results`` (load_results,
results, report, paper, submission, reproduce) and ``display`` (what a notebook shows of a run record and a study).
"""

from __future__ import annotations

from peftlab.cli.api.results import load_results, paper, report, reproduce, results, submission
from peftlab.cli.api.runs import params, train, validate
from peftlab.cli.api.study import run_study
from peftlab.cli.api.trained import export, load_trained, predict

__version__ = "0.1.0"

__all__ = [
    "train",
    "run_study",
    "load_results",
    "load_trained",
    "predict",
    "export",
    "results",
    "report",
    "paper",
    "submission",
    "reproduce",
    "validate",
    "params",
]


def __dir__() -> list[str]:
    """The API's names alone (tab completion on ``peftlab.cli.api.``), not its modules nor what they import."""
    return sorted(__all__)
