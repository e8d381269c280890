"""The dotted config keys a study may set, and which method's options they are.

Every key in a study's ``set``, ``axes``, ``exclude`` and ``tune:`` names one field of a run config
(``check_key``); a ``method.*`` key belongs to the methods that have that option, and is foreign to
the others (``is_foreign``), which drop it where it comes from the shared sections (``without_foreign_keys``).

A study given as a dict (``peftlab.run_study({...})``, ``study_file``) takes the values of its path keys (``base``,
``pretrain`` and each ``PATH_FIELDS`` key in ``set``, ``axes``, the methods', the ablations' and the exclude rules:
``data.root``, ``model.pretrained``, ...) from the caller's working folder: they are resolved there and the dict is
written as a study file in a temporary folder, which ``load_study`` reads with every check a file gets. The runner
keeps its copy as STUDY_DIR/study.yaml, whose absolute paths read the same files from anywhere (it is the study file
``peftlab.submission`` takes). Errors name the dict, not that file.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from pathlib import Path
from typing import Any

import yaml

from peftlab.config.checks import closest, shown
from peftlab.config.methods import method_names
from peftlab.config.paths import PATH_FIELDS, resolve_path
from peftlab.config.schema import RunConfig, flatten, method_fields, plain_paths, to_dict
from peftlab.utils.errors import ConfigError, UserError


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


@contextlib.contextmanager
def study_file(data: dict, folder: Path):
    """The path of a study file holding ``data`` with its paths resolved against ``folder``, while the block runs; a
    UserError raised in the block that names the file names "the study dict" instead."""
    resolved = plain_paths(data)
    for key in ("base", "pretrain"):
        if isinstance(resolved.get(key), str):
            resolved[key] = resolve_path(resolved[key], folder)
    try:
        text = yaml.safe_dump(path_values_resolved(resolved, folder), sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as err:  # a value no YAML file holds (an object, a numpy number)
        value = err.args[1] if len(err.args) > 1 else None
        raise ConfigError(
            f"study holds {shown(value)}, which a study file cannot hold: expected strings, numbers, true/false, "
            "null, lists and dicts"
        ) from None
    with tempfile.TemporaryDirectory(prefix="peftlab-study-") as scratch:
        path = Path(scratch) / "study.yaml"  # the study's name, where the dict gives none: "study"
        path.write_text(text, encoding="utf-8")
        try:
            yield path
        except UserError as err:
            said = str(err).replace(f"study {path}", "study").replace(str(path), "the study dict")
            if said != str(err):
                err.args = (said, *err.args[1:])
            raise


def path_values_resolved(node, folder: Path):
    """``node`` (a study's keys, or a part of them) with the value of each dotted key of ``PATH_FIELDS`` resolved
    against ``folder``: a string, each string of an axis' list, and an axis value ``{value: V, set: {...}}``."""
    if isinstance(node, list):
        return [path_values_resolved(item, folder) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: resolved_value(value, folder, key) if key in PATH_FIELDS else path_values_resolved(value, folder)
        for key, value in node.items()
    }


def resolved_value(value, folder: Path, dotted: str):
    if isinstance(value, str):
        return resolve_path(value, folder, dotted)
    if isinstance(value, list):
        return [resolved_value(item, folder, dotted) for item in value]
    if isinstance(value, dict) and "value" in value:  # an axis value with the overrides that go with it
        return {**path_values_resolved(value, folder), "value": resolved_value(value["value"], folder, dotted)}
    return value
