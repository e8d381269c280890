"""The dotted config keys a study may set, and which method's options they are.

Every key in a study's ``set``, ``axes``, ``exclude`` and ``tune:`` names one field of a run config
(``check_key``); a ``method.*`` key belongs to the methods that have that option, and is foreign to
the others (``is_foreign``), which drop it where it comes from the shared sections (``without_foreign_keys``).
"""

from __future__ import annotations

import functools
from typing import Any

from peftlab.config.checks import closest, shown
from peftlab.config.methods import method_names
from peftlab.config.schema import RunConfig, flatten, method_fields, to_dict
from peftlab.utils.errors import ConfigError


def is_foreign(method: str, key: str) -> bool:
    """A ``method.*`` key that some other method has and ``method`` has not."""
    if not key.startswith("method.") or key.count(".") != 1:
        return False
    option = key.split(".", 1)[1]
    return option not in method_fields(method) and any(option in method_fields(m) for m in method_names())


def without_foreign_keys(method: str, dotted: dict) -> dict:
    return {k: v for k, v in dotted.items() if not is_foreign(method, k)}


def config_keys() -> frozenset[str]:
    """Every dotted key a study may set: the leaves of a run config, ``method.*`` of every method (and
    of the plugins read so far)."""
    return _config_keys(method_names())


@functools.cache
def _config_keys(methods: tuple[str, ...]) -> frozenset[str]:
    keys = {k for k in flatten(to_dict(RunConfig())) if not k.startswith("method.")}
    return frozenset(keys | {f"method.{option}" for m in methods for option in method_fields(m)})


def check_key(key: Any, where: str, method_name: bool = False) -> None:
    """A dotted key must name one config field (of some method, for ``method.*``), not a section.

    ``method.name`` only where ``method_name`` says so (an exclude rule): in a ``set`` or ``axes``
    it would train another method under the label of the one it is listed under.
    """
    keys = config_keys()
    if key == "method.name" and not method_name:
        raise ConfigError(
            f"study {where} method.name is invalid: a run's method is the methods: entry it is listed "
            "under; expected no method.name here (list the other method under methods:)"
        )
    if isinstance(key, str) and key in keys:
        return
    section, _, name = str(key).rpartition(".")
    close = closest(name, [k.removeprefix(f"{section}.") for k in keys if k.startswith(f"{section}.")], f"{section}.")
    close = f"{section}.{close}" if close and section else closest(str(key), sorted(keys))
    hint = f" (did you mean '{close}'?)" if close else ""
    raise ConfigError(
        f"study {where} {shown(key)} is not a config field{hint}: expected a dotted key such as train.lr or method.r"
    )
