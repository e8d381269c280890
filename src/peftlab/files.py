"""Files peftlab writes and reads back, without torch: atomic writes, JSON, a run's status.

Every file is written to a temporary name in the same directory and renamed over the
target, so a crash leaves either the old or the new file, never half of one. Analysis,
the study runner and the trainer all read run directories through these helpers.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Callable


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
    """The JSON object in ``path``, or None when the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_status(run_dir: str | Path) -> str:
    """completed | failed | diverged | partial (a checkpoint to resume) | pending."""
    result = read_json(Path(run_dir) / "result.json")
    if result is not None:
        return result.get("status", "failed")
    return "partial" if (Path(run_dir) / "checkpoint").exists() else "pending"


def one_line(err: BaseException) -> str:
    """An exception as one line: "TypeName: message"."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"
