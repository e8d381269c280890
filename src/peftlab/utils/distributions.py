"""The installed distributions' entry points, read as ``importlib.metadata`` reads them, except that a
distribution whose metadata cannot be parsed (a malformed ``entry_points.txt``) is skipped with one warning
naming its folder, instead of breaking the scan of every distribution.

The libraries' own scans are theirs: torch (``torch.backends``, at import; off with
``TORCH_DEVICE_BACKEND_AUTOLOAD=0``), triton (``TRITON_BACKENDS_IN_TREE=1``), pydantic
(``PYDANTIC_DISABLE_PLUGINS``) and ``torch.distributed.elastic.rendezvous`` (``torchrun.handlers``, imported
with PEFT, no switch) call ``importlib.metadata.entry_points``, which fails on the first malformed file. A
command that fails so is one line naming the distribution (``cli.command_status``: ``unreadable``).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from peftlab.utils.files import one_line

if TYPE_CHECKING:
    import importlib.metadata

WARNED: set[str] = set()  # the folders warned about, once per process


def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    """The entry points of ``group`` of the installed distributions (the first of each name on the path),
    those of a distribution whose metadata cannot be read left out."""
    found = []
    for eps in readable():
        found += [ep for ep in eps if ep.group == group]
    return found


def readable(on_error=None):
    """The entry points of each installed distribution whose entry points can be read; ``on_error(dist,
    err)`` is called for the others (default: ``skipped``, a warning)."""
    import importlib.metadata  # read when entry points are: `import peftlab` stays light

    seen: set[str] = set()
    for dist in importlib.metadata.distributions():  # in sys.path's order: the first of a name is the one used
        try:
            name = re.sub(r"[-_.]+", "-", dist.name or "").lower()
            if name and name in seen:
                continue
            seen.add(name)
            eps = list(dist.entry_points)
        except Exception as err:  # its own files: importlib.metadata's parsers raise what they meet
            (on_error or skipped)(dist, err)
            continue
        yield eps


def folder(dist) -> str:
    return str(getattr(dist, "_path", "")) or "a distribution"  # its dist-info folder, whatever its files hold


def skipped(dist, err: Exception) -> None:
    where = folder(dist)
    if where not in WARNED:
        WARNED.add(where)
        logging.getLogger("peftlab").warning(
            "skipped the entry points of %r, whose metadata cannot be read (%s): its plugins are not found",
            where,
            one_line(err),
        )


def unreadable() -> list[tuple[str, str]]:
    """(folder, the error reading it) of each installed distribution whose entry points cannot be read."""
    found = []
    for _ in readable(on_error=lambda dist, err: found.append((folder(dist), one_line(err)))):
        pass
    return found


def raised_reading_metadata(err: BaseException) -> bool:
    """True when ``err``, or an error it was raised from, came out of importlib.metadata's own code (a
    library's scan of every distribution's entry points: torch's when it is imported)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        tb = err.__traceback__
        while tb is not None:
            if "importlib/metadata" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
                return True
            tb = tb.tb_next
        err = err.__cause__ or err.__context__
    return False
