"""A search's Optuna journal (``tune/<method>/search-<fingerprint>.journal``), opened so that damage
costs a warning, not the study.

The journal is a cache of what the trials' run directories already hold: each trial's values are
its proposal (``Search.proposals()[k]``) and its outcome is its runs' result.json, found by run id.
A journal Optuna cannot replay (a line cut short, a line that is not JSON, a JSON line of another
shape) is therefore set aside under a new name (``search-<fingerprint>.journal.damaged-<n>``) with
one warning line, and the search starts a fresh journal: as after a deleted journal, its trials are
asked again in order and every finished trial's result is read, not trained again.

A journal that replays but whose trials are not the search's (values other than the proposals, a
score other than its runs') is damaged too (``search.journal_disagreement``).

A line cut short is damage even though Optuna skips it when it reads: the next line Optuna appends
would be glued to it, and that journal could never be read again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from peftlab.utils.files import one_line, shown_path

log = logging.getLogger(__name__)  # one "peftlab: warning:" line on stderr
# what replaying a line of the wrong shape raises in Optuna's JournalStorage: a missing key, a value of
# the wrong type, an unknown op_code (an assert), nesting too deep for the JSON reader
REPLAY_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, AssertionError, RecursionError)


def open_journal(path: Path):
    """Optuna's JournalStorage on ``path``; a damaged journal is set aside first (one warning line)
    and a fresh one started."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    why = journal_damage(path)
    if why is not None:
        set_aside_damaged(path, why)
    return JournalStorage(JournalFileBackend(str(path)))


def set_aside_damaged(path: Path, why: str) -> None:
    """Move the damaged journal at ``path`` to a new name, saying so in one warning line."""
    aside = set_aside(path)
    log.warning(
        f"the tuning journal {shown_path(path)} is damaged ({why}): moved to {aside.name}; the search "
        "starts a new journal and reads its finished trials from their run directories"
    )


def journal_damage(path: Path) -> str | None:
    """Why the journal at ``path`` cannot be used (one line); None when it replays or is missing."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    return f"line {number} is cut short"
                if not isinstance(json.loads(line), dict):
                    return f"line {number} is not a JSON object"
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        return f"line {number}: {one_line(err)}"
    try:
        JournalStorage(JournalFileBackend(str(path)))  # replays every line
    except REPLAY_ERRORS as err:
        return f"Optuna cannot replay it: {one_line(err)}"
    return None


def set_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``<name>.damaged-<n>``; returns the new path."""
    number = 1
    while (aside := path.with_name(f"{path.name}.damaged-{number}")).exists() or aside.is_symlink():
        number += 1
    path.rename(aside)
    return aside
