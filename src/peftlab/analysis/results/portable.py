"""What a submission says of paths: nothing of the machine that packed it.

A study's records hold the absolute paths of the machine it ran on (the data root, split files, the study
folder, the commands as typed). In the archive each is written relative to where the reader will have it:
the checkout (REPRODUCE.md's commands run from a clone's root) as ``./...``, a study folder outside it as
``STUDY/...``, the home folder as ``~/...``; any other absolute path (a dataset's folder elsewhere, a study
file outside the checkout) as ``OUTSIDE/<its last part>``, and REPRODUCE.md says what goes there.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pandas as pd

from peftlab.config.paths import REPO_ROOT


@functools.lru_cache(maxsize=16)
def roots(study_dir: Path) -> tuple[tuple[str, str], ...]:
    """(absolute prefix, what it becomes), the longest first: the study folder may lie in the checkout. Resolved
    once per folder: an archive's table asks for every cell."""
    named = []
    inside = Path(os.path.abspath(study_dir)).is_relative_to(os.path.abspath(REPO_ROOT))
    folders = [(REPO_ROOT, "."), (Path.home(), "~")] + ([] if inside else [(study_dir, "STUDY")])  # ./runs/x if in it
    for path, token in folders:
        for form in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
            if form != os.sep:
                named.append((form.rstrip(os.sep), token))
    return tuple(sorted(named, key=lambda pair: -len(pair[0])))


def portable_text(text: str, study_dir: Path) -> str:
    """``text`` with every absolute path it holds made portable (see the module's docstring)."""
    for prefix, token in roots(Path(os.path.abspath(study_dir))):
        text = re.sub(rf"{re.escape(prefix)}(?=/|\b|$)", token, text)
    return ABSOLUTE.sub(lambda m: f"OUTSIDE/{Path(m.group(0)).name}" if Path(m.group(0)).name else "OUTSIDE", text)


# an absolute path left once the known folders are named: a slash after a start, a space, a quote or a colon
ABSOLUTE = re.compile(r"(?<![\w.~)\]/])/(?:[\w.+@%-]+/?)+")


def portable_frame(df: pd.DataFrame, study_dir: Path) -> pd.DataFrame:
    """``df`` with every string cell made portable."""
    out = df.copy()
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(lambda v: portable_text(v, study_dir) if isinstance(v, str) else v)
    return out
