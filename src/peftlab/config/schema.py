"""Typed, frozen run configuration: defaults < YAML file < dotted command-line overrides.

Every section is a frozen dataclass that validates itself in ``__post_init__``; a bad value
raises ``ConfigError`` with one line naming the field, the value and what is allowed.
Checks that need the model (does a rank pattern match a module? does a group size divide
the layer width?) live next to the code that builds the model: ``peftlab.tuners.base.check_config``.

The configuration's parts, each importing only those before it (a name is imported from the module
that defines it): ``checks`` (the shared field checks and bounds: a leaf that tuners, backbones and
quant import too), ``sections`` (model, data, method, quant, train), ``reading`` (bounded YAML files and
dotted overrides), ``paths`` (paths, the checkout's REPO_ROOT and a base's manifest), ``methods`` (the
registry of method sections: name -> config class, which the methods fill, and ``method_config_class``),
``run_ids`` (which fields a run id hashes, ``LATE_FIELDS`` and the rest, and ``seed_hashes``). Here:
``RunConfig``, dict <-> dataclass, ``load_config`` and a RunConfig's run id (``config_hash``). None of it
imports torch, so the study expander and analysis use it cheaply.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from peftlab.config.checks import MAX_INT, STRING_VALUES, check_field, closest, fail_field, shown
from peftlab.config.methods import built_by, method_config_class, method_names
from peftlab.config.paths import resolve_paths, with_base_architecture
from peftlab.config.protocol import PRESETS, preset_values
from peftlab.config.reading import deep_merge, nest, parse_overrides, read_yaml
from peftlab.config.run_ids import DUMPER, cached, seed_hashes
from peftlab.config.sections import DataConfig, MethodConfig, ModelConfig, QuantConfig, TrainConfig
from peftlab.utils.errors import ConfigError

TRACKERS = ("tensorboard", "mlflow", "wandb")


def default_method() -> MethodConfig:
    return method_config_class("lora")()


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=default_method)
    quant: QuantConfig = field(default_factory=QuantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # tracking sinks besides metrics.jsonl (peftlab.training.tracking); not part of the run id
    track: tuple[Literal[TRACKERS], ...] = ()
    # the names the sinks get (peftlab.training.tracking.TRACK_NAMES): peftlab's (train/*, adapter/<layer>/*,
    # params/*, merge/*, ...) or lora, the LoRA fine-tuning document's dashboard (lora_adapters/*,
    # lora_rank/*, efficiency/*, verification/*); not part of the run id
    track_names: Literal["peftlab", "lora"] = "peftlab"
    # a published protocol whose settings the run takes and keeps (peftlab.config.protocol.PRESETS): none,
    # petl_vision or vpetl_bench; a key the config sets otherwise is an error
    protocol: Literal["none", "petl_vision", "vpetl_bench"] = "none"

    def __post_init__(self):
        check_field(
            0 < len(self.name) <= 128
            and self.name not in (".", "..")
            and self.name.isprintable()
            and not set(self.name) & set("/\\"),
            "name",
            self.name,
            "1 to 128 printable characters without / or \\ (it names the run directory)",
        )
        check_field(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        if self.quant.mode != "none" and not self.method.quantizable:
            fail_field(
                "quant.mode",
                self.quant.mode,
                f"'none' for method {self.method.name!r}, {self.method.unquantizable_reason}",
            )
        if self.train.early_stop_patience and self.data.val_fraction == 0:
            fail_field(
                "train.early_stop_patience",
                self.train.early_stop_patience,
                "null when data.val_fraction is 0 (early stopping needs a validation split)",
            )
        check_field(
            len(set(self.track)) == len(self.track),
            "track",
            list(self.track),
            "a list of distinct names from " + ", ".join(TRACKERS),
        )
        if self.protocol != "none":
            check_protocol(self)


# ---------------------------------------------------------------------------------------
# dict <-> dataclass, with type checks


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is MethodConfig:  # the method's own config class, chosen by its name
        if not isinstance(value, dict):
            fail_field(where, value, "a mapping with at least 'name'")
        cls = method_config_class(value.get("name", MethodConfig.name))
        return built_by(cls, lambda: _section(cls, value, where), where)  # a plugin's failure: one line naming it
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail_field(where, value, "a mapping of " + ", ".join(f.name for f in dataclasses.fields(tp)))
        return _section(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, where)
            except ConfigError:
                continue
        fail_field(where, value, _type_name(tp))
    if origin is Literal:
        check_field(value in typing.get_args(tp), where, value, _type_name(tp))
        return value
    if origin is tuple:
        check_field(isinstance(value, (list, tuple)), where, value, _type_name(tp))
        return tuple(_convert(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        check_field(isinstance(value, dict), where, value, _type_name(tp))
        key_tp, val_tp = typing.get_args(tp)
        return {_convert(k, key_tp, where): _convert(v, val_tp, f"{where}[{k!r}]") for k, v in value.items()}
    if tp is type(None):
        check_field(value is None, where, value, "null")
        return None
    if tp is bool:
        check_field(isinstance(value, bool), where, value, "true or false")
        return value
    if tp is int:
        check_field(isinstance(value, int) and not isinstance(value, bool), where, value, "an integer")
        check_field(-MAX_INT <= value <= MAX_INT, where, value, f"an integer in [-{MAX_INT}, {MAX_INT}]")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads "3e-4" (no dot) as a string
        check_field(isinstance(value, (int, float)) and not isinstance(value, bool), where, value, "a number")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        check_field(math.isfinite(number), where, value, "a finite number")
        return number
    if tp is str:
        check_field(isinstance(value, str), where, value, STRING_VALUES.get(where, "a string"))
        check_field(
            "\x00" not in value and len(value) <= 4096, where, value, "a string of at most 4096 characters, without NUL"
        )
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


@functools.cache
def _hints_and_names(cls: type) -> tuple[dict, list[str]]:
    """A dataclass's resolved field types and field names: the same for every config built, so resolved
    once (``typing.get_type_hints`` is slow, and a study's dry-run builds every one of its configs)."""
    return typing.get_type_hints(cls), [f.name for f in dataclasses.fields(cls)]


def _section(cls: type, data: dict, where: str):
    """Section ``cls`` of ``data``, built and checked once per distinct ``data`` (sections are frozen
    and their checks read nothing but their fields): a study's 10,000 configs hold a few hundred."""
    try:
        key = (cls, where, repr(data))
    except ValueError:  # an integer of more digits than repr writes: built as it is, and refused there
        return from_dict(cls, data, prefix=where + ".")
    return cached(_SECTIONS, key, lambda: from_dict(cls, data, prefix=where + "."))


# Keyed by repr, which tells apart what YAML and the field checks tell apart: 1, 1.0 and True; -0.0 and 0.0;
# the order of keys (run_ids keys the YAML of its entries alike)
_SECTIONS: dict[tuple, Any] = {}  # (class, where, repr of its dict) -> section


def from_dict(cls: type, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and wrong types. A RunConfig
    naming a ``protocol`` takes that protocol's settings beneath its own (which must then agree)."""
    if cls is RunConfig and isinstance(data.get("protocol"), str) and data["protocol"] in PRESETS:
        dataset = data.get("data", {}).get("name") if isinstance(data.get("data"), dict) else None
        data = deep_merge(nest(preset_values(data["protocol"], dataset)), data)
    hints, names = _hints_and_names(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            if issubclass(cls, MethodConfig):
                raise ConfigError(foreign_method_key(cls, str(key), prefix))
            close = nearest_key(str(key), names, prefix)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; allowed: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], prefix + key)
    return cls(**kwargs)


def nearest_key(key: str, names: list[str], prefix: str) -> str | None:
    """The dotted key that ``key``, unknown under ``prefix``, most likely meant, over every config key: the same name
    (or another tool's name for it, ``KEY_ALIASES``) in another section (``model.lr`` is train.lr), else the nearer
    by edit distance of this section's nearest and every other section's (``data.batch_sise`` is train.batch_size)."""
    import difflib

    from peftlab.config.checks import KEY_ALIASES

    here = closest(key, names, prefix)
    by_name: dict[str, str] = {}
    for dotted in every_key():
        if not (prefix and dotted.startswith(prefix)):
            by_name.setdefault(dotted.rpartition(".")[2], dotted)
    name = KEY_ALIASES.get(key.lower().replace("-", "_"), key)
    if here is None or here != name:
        if name in by_name and name not in names:
            return by_name[name]
    there = closest(key, by_name)
    if here is None or there is None:
        return prefix + here if here else (by_name[there] if there else None)
    ratio = lambda choice: difflib.SequenceMatcher(None, key, choice).ratio()
    return prefix + here if ratio(here) >= ratio(there) else by_name[there]


def every_key() -> list[str]:
    """Every key of a run config, dotted (``train.lr``), the method's options left out (they depend on the method)."""
    hints, names = _hints_and_names(RunConfig)
    keys = []
    for name in names:
        if dataclasses.is_dataclass(hints[name]) and not issubclass(hints[name], MethodConfig):
            keys += [f"{name}.{field}" for field in _hints_and_names(hints[name])[1]]
        elif not dataclasses.is_dataclass(hints[name]):
            keys.append(name)
    return keys


def check_protocol(cfg: RunConfig) -> None:
    """Every setting of ``cfg.protocol`` holds: the run is that protocol's, as far as peftlab reproduces it."""
    for dotted, value in preset_values(cfg.protocol, cfg.data.name).items():
        section, _, name = dotted.partition(".")
        if getattr(getattr(cfg, section), name) != value:
            fail_field(
                dotted,
                getattr(getattr(cfg, section), name),
                f"{shown(value)}, the value of protocol {cfg.protocol} (or protocol: none)",
            )


def method_fields(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(method_config_class(name))]


def foreign_method_key(cls: type[MethodConfig], key: str, prefix: str = "method.") -> str:
    """One line for a key the chosen method does not have: whose it is, and what is allowed."""
    names = [f.name for f in dataclasses.fields(cls)]
    owners = [n for n in method_names() if key in {f.name for f in dataclasses.fields(method_config_class(n))}]
    allowed = f"method {cls.name!r} allows: {', '.join(names)}"
    if owners:
        owned = ", ".join(owners)
        return f"config key '{prefix}{key}' is not an option of method {cls.name!r} (it belongs to {owned}); {allowed}"
    close = closest(key, names, prefix)
    hint = f" (did you mean '{prefix}{close}'?)" if close else ""
    return f"unknown config key '{prefix}{key}'{hint}; {allowed}"


def to_dict(cfg) -> dict:
    """A plain, YAML-safe dict of a config (tuples become lists)."""

    def plain(value):
        if value is None or isinstance(value, (str, int, float)):  # most values: checked first
            return value
        if dataclasses.is_dataclass(value):
            return {name: plain(getattr(value, name)) for name in _hints_and_names(type(value))[1]}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def without_foreign_options(options: dict, name: str) -> dict:
    """A method section without the options of other methods (typos stay, to be refused)."""
    own = set(method_fields(name))
    every = {f.name for n in method_names() for f in dataclasses.fields(method_config_class(n))}
    return {k: v for k, v in options.items() if k in own or k not in every}


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict | None = None, base_dir: str | Path | None = None
) -> RunConfig:
    """Defaults < YAML file < overrides, validated into a frozen ``RunConfig``.

    Relative paths (``PATH_FIELDS``) are resolved against the config file's directory (or
    ``base_dir``), those of the overrides against the current directory; the config holds them
    absolute. Architecture keys left out are taken from a peftlab base's manifest.json
    (``with_base_architecture``). An override that changes ``method.name`` starts the new method from its own
    options: the file's options of another method are dropped (``method.name=full`` on a LoRA config).
    """
    data = read_yaml(path) if path is not None else {}
    if path is not None:
        data = resolve_paths(data, base_dir if base_dir is not None else Path(path).parent)
    return config_of_dict(data, overrides)


def config_of_dict(data: dict, overrides: list[str] | dict | None = None) -> RunConfig:
    """A run config file's keys (``data``, a nested dict) < ``overrides``, validated as ``load_config`` validates a
    file. Relative paths, the dict's and the overrides', are resolved against the current directory (a file's were
    resolved against its folder before): the config holds them absolute, so a process started elsewhere (the
    pinned child of ``peftlab.train``) reads the same files."""
    data = resolve_paths(plain_paths(data), Path.cwd())
    if overrides:
        extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        extra = resolve_paths(plain_paths(extra), Path.cwd())
        name = extra.get("method", {}).get("name") if isinstance(extra.get("method"), dict) else None
        if name is not None and isinstance(data.get("method"), dict):
            data = {**data, "method": without_foreign_options(data["method"], name)}
        data = deep_merge(data, extra)
    return from_dict(RunConfig, with_base_architecture(data))


def run_config(config: str | Path | dict | RunConfig, overrides: list[str] | dict | None = None) -> RunConfig:
    """The RunConfig of what the Python API takes as a config: a run config file (a path), a dict of a file's keys
    (``{"method": {"name": "lora", "r": 8}, "data": {"root": "images"}}``) or a RunConfig, with ``overrides``. A
    dict's and a RunConfig's relative paths are the current directory's, as an override's (``config_of_dict``)."""
    if isinstance(config, RunConfig):
        data = to_dict(config)
        if not overrides and resolve_paths(data, Path.cwd()) == data:
            return config  # nothing to resolve: the same object
        return config_of_dict(data, overrides)
    if isinstance(config, dict):
        return config_of_dict(config, overrides)
    return load_config(config, overrides)


def plain_paths(data):
    """``data`` with each ``os.PathLike`` value (a ``pathlib.Path`` in a dict written in Python) as its text, as a
    file would hold it; the rest as it is, for the fields' checks."""
    if isinstance(data, dict):
        return {key: plain_paths(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(plain_paths(value) for value in data)
    return os.fspath(data) if isinstance(data, os.PathLike) else data


def dump_config(cfg: RunConfig) -> str:
    return yaml.dump(to_dict(cfg), Dumper=DUMPER, sort_keys=False)


def config_hash(cfg: RunConfig, length: int = 12) -> str:
    """A stable id of a resolved config: the first ``length`` hex digits of the SHA-256 of the YAML
    of ``run_ids.hashed_dict(to_dict(cfg))``."""
    return seed_hashes(to_dict(cfg), [cfg.seed], length)[0]


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; rank/alpha patterns stay whole mappings."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key not in ("rank_pattern", "alpha_pattern"):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(dump_config(cfg))
