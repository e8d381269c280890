"""The run id's rules: which fields of a config it hashes (``UNHASHED_FIELDS`` are left out, ``LATE_FIELDS`` at
their defaults too, ``HASHED_AS`` changed defaults enter as the old ones) and the hash of a configuration at each
of its seeds (``seed_hashes``), each YAML entry dumped once. ``peftlab.config.schema.config_hash`` is a
``RunConfig``'s id through it. Imports nothing of the config but its registry of methods and its paths.
"""

from __future__ import annotations

import hashlib
import typing
from typing import Any

import yaml

from peftlab.config.methods import method_config_class, plugin_identity
from peftlab.config.pair_joins import decoder_pair_join
from peftlab.config.paths import PATH_FIELDS, hashed_path

# libyaml's emitter writes what PyYAML's does (the representer is the same Python code), faster:
# a study hashes every one of its configs before its first run
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_ENTRY_YAML: dict[tuple[str, str], str] = {}  # (key, repr of its value) -> the entry's YAML lines


def cached(cache: dict, key: tuple, make: typing.Callable[[], Any], limit: int = 4096) -> Any:
    """``cache[key]``, made by ``make()`` the first time (an error is raised, not kept); a full cache
    is emptied first, so a long-lived process holds at most ``limit`` entries. The entries' YAML here, and
    ``schema``'s sections."""
    if key not in cache:
        if len(cache) >= limit:
            cache.clear()
        cache[key] = make()
    return cache[key]


# Fields added after run ids were first handed out, with their defaults: a field at its default
# is left out of the hash, so adding one keeps every existing run id (and its finished results).
# A new field goes here with the default it has in its dataclass (a test checks they agree).
LATE_FIELDS: dict[str, Any] = {
    "train.compile": False,
    "train.compile_mode": "default",
    "train.tf32": True,
    "train.fused_adamw": None,
    "data.num_workers": None,
    "data.cache": False,
    "train.auto_batch": False,
    "data.test_dir": None,
    "quant.cpu_kernel": "reference",
    "train.test": True,
    "train.merged_test": "auto",
    "data.trainval": False,
    "data.train_list": None,
    "data.val_list": None,
    "data.test_list": None,
    "data.trainval_list": None,
    "data.interpolation": "bilinear",
    "data.normalize": "model",
    "train.label_smoothing": 0.0,
    "protocol": "none",
    "data.group": None,
    "data.text_column": "text",
    "model.task": "classification",
    "data.max_length": 128,
    "data.padding": "longest",
    "data.truncation": True,
    "data.text_pair_column": None,
    "data.label_column": "label",
    "data.pair_separator": None,
    "data.prompt_format": "alpaca",
}
# Fields that are not part of the run id: where the numbers are sent (track), and whether the CPU
# arithmetic is pinned to AVX2 code (it decides the last bits on AVX-512 CPUs, as the CPU model
# itself does, which no run id ever named; the run records it in provenance.arithmetic).
UNHASHED_FIELDS = ("track", "track_names", "train.reproducible", "train.malloc")
# Defaults that changed, as (field, new default) -> the old default the hash writes instead: a
# config that leaves the field alone keeps its run id. train.precision 'auto' is fp32 on a CPU,
# where every earlier run trained.
HASHED_AS: dict[tuple[str, Any], Any] = {
    ("train.precision", "auto"): "fp32",
    ("quant.skip", ("head", "classifier", "score", "lm_head", "patch_embed.*")): [
        "head",
        "classifier",
        "patch_embed.*",
    ],
}


def hashed_dict(plain: dict) -> dict:
    """The dict whose YAML a run id hashes, from a config's ``to_dict`` (left as it is): without
    ``UNHASHED_FIELDS``, and without the ``LATE_FIELDS`` left at their defaults; a changed default
    (``HASHED_AS``, a method's ``hashed_as``) enters as the old one. Paths enter as ``hashed_path`` writes them. A
    decoder's sentence pairs joined by its end-of-sequence token add ``data.pair_join`` (``pair_joins``)."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in plain.items()}
    joined = decoder_pair_join(plain)
    if joined is not None:
        data["data"]["pair_join"] = joined
    for dotted in UNHASHED_FIELDS:
        section, _, name = dotted.rpartition(".")
        (data.get(section) if section else data).pop(name, None)
    for dotted in PATH_FIELDS:
        section, _, name = dotted.rpartition(".")
        if isinstance(data[section].get(name), str):
            data[section][name] = hashed_path(data[section][name])
    for dotted, default in LATE_FIELDS.items():
        section, _, name = dotted.rpartition(".")
        fields = data.get(section) if section else data
        if isinstance(fields, dict) and name in fields and fields[name] == default:
            del fields[name]
    for (dotted, value), old in HASHED_AS.items():
        section, _, name = dotted.rpartition(".")
        fields = data.get(section) if section else data
        if isinstance(fields, dict) and fields.get(name) == (list(value) if isinstance(value, tuple) else value):
            fields[name] = old
    for name, (value, old) in method_config_class(data["method"]["name"]).hashed_as.items():
        if data["method"].get(name) == value:
            data["method"][name] = old
    plugin = plugin_identity(data["method"]["name"])
    if plugin is not None:  # a plugin's code is part of its result: another version's runs are other runs
        data["method"]["plugin"] = f"{plugin['distribution']} {plugin['version']} {plugin['code_sha256']}"
    return data


def seed_hashes(plain: dict, seeds: list[int], length: int = 12) -> list[str]:
    """``config_hash`` of a config (its ``to_dict``) at each of ``seeds``, its sections dumped once.

    The YAML of a block mapping is its entries' lines one after another, each entry written alike
    wherever it stands (a test checks this on hostile values): so each entry is dumped once
    (``_entry_yaml``) and a run's text is joined from them, the seed's line swapped for each seed.
    A study's runs share most sections: 10,000 runs cost a few hundred dumps, not 10,000.
    """
    entries = {key: _entry_yaml(key, value) for key, value in hashed_dict(plain).items()}
    texts = ("".join({**entries, "seed": _entry_yaml("seed", seed)}.values()) for seed in seeds)
    return [hashlib.sha256(text.encode()).hexdigest()[:length] for text in texts]


def _entry_yaml(key: str, value: Any) -> str:
    """The lines of ``key: value`` in the YAML of a mapping that holds it, dumped once per distinct entry."""
    return cached(_ENTRY_YAML, (key, repr(value)), lambda: yaml.dump({key: value}, Dumper=DUMPER, sort_keys=False))
