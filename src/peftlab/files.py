"""Files peftlab writes and reads back, without torch: atomic writes, JSON, a run's status.

Every file is written to a temporary name in the same directory and renamed over the
target, so a crash leaves either the old or the new file, never half of one. Analysis,
the study runner and the trainer all read run directories through these helpers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
from pathlib import Path
from typing import Callable

KILL_AT = "PEFTLAB_KILL_AT"  # test hook: SIGKILL this process at a named point (see kill_point)
TEMPORARY = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # the names write_atomic writes to first


def kill_point(name: str, step: int | None = None) -> None:
    """SIGKILL this process here when ``$PEFTLAB_KILL_AT`` is ``name`` or ``name:step``.

    A test hook for "kill -9 loses nothing and repeats nothing": the kill tests make a run
    die at exact points (``step:7``, ``checkpoint:4``, ``epoch-record:6``, ``write:last.pt``)
    and check that the resumed run equals an uninterrupted one.
    """
    wanted = os.environ.get(KILL_AT)
    if wanted and wanted in (name, f"{name}:{step}"):
        os.kill(os.getpid(), signal.SIGKILL)


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Delete what interrupted atomic writes left in ``directory`` (``.NAME.<hex>.tmp``).

    Call it only where no other process writes: at the start of a run, in its own directory.
    """
    removed = []
    directory = Path(directory)
    if directory.is_dir():
        for path in directory.iterdir():
            if TEMPORARY.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_atomic(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path``.

    The file gets the permissions of any new file of this process (0666 less the umask),
    not the 0600 of ``tempfile.mkstemp``: results are meant to be read by others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        kill_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")

    write_atomic(path, write)


def read_json(path: str | Path) -> dict | None:
    """The JSON object in ``path``, or None when the file is missing, unreadable, not valid
    JSON or not an object (a corrupt spec.json or result.json reads as absent)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


def run_status(run_dir: str | Path) -> str:
    """completed | failed | diverged | partial (a checkpoint to resume) | pending."""
    result = read_json(Path(run_dir) / "result.json")
    if result is not None:
        return result.get("status", "failed")
    return "partial" if (Path(run_dir) / "checkpoint").exists() else "pending"


def one_line(err: BaseException) -> str:
    """An exception as one line: "TypeName: message"."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"
