"""The installed distributions' entry points, read as ``importlib.metadata`` reads them, except that a
distribution whose metadata cannot be parsed (a malformed ``entry_points.txt``) is skipped with one warning
naming its folder, instead of breaking the scan of every distribution.

The libraries' own scans are theirs: torch (``torch.backends``, at import; off with
``TORCH_DEVICE_BACKEND_AUTOLOAD=0``), triton (``TRITON_BACKENDS_IN_TREE=1``), pydantic
(``PYDANTIC_DISABLE_PLUGINS``) and ``torch.distributed.elastic.rendezvous`` (``torchrun.handlers``, imported
with PEFT, no switch) call ``importlib.metadata.entry_points``, which fails on the first malformed file.
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


def readable():
    """The entry points of each installed distribution whose entry points can be read."""
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
            skipped(dist, err)
            continue
        yield eps


def skipped(dist, err: Exception) -> None:
    where = str(getattr(dist, "_path", "")) or "a distribution"  # its dist-info folder, whatever its files hold
    if where not in WARNED:
        WARNED.add(where)
        logging.getLogger("peftlab").warning(
            "skipped the entry points of %r, whose metadata cannot be read (%s): its plugins are not found",
            where,
            one_line(err),
        )
