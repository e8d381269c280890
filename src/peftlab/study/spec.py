"""Study files: a base run config and axes, expanded into run specs with stable ids.

A study YAML (paths are relative to the study file)::

    name: default
    base: ../downstream.yaml        # the run config every run starts from (its paths: relative to it)
    pretrain: ../pretrain.yaml      # optional: a cached base model trained before the runs
    seeds: 5                        # a count (0..n-1) or a list
    set: {train.epochs: 2}          # dotted overrides for every run
    axes:                           # crossed with every method's own axes
      data.name: [fashion_mnist]
    methods:                        # each method with its own options and axes
      full: {}
      linear: {set: {train.lr: 1.0e-2}}
      lora: {axes: {method.r: [4, 8, 16]}}
    ablations:                      # named groups: the method's set + these axes (its own axes dropped)
      rank: {methods: [lora], axes: {method.r: [2, 4, 8, 16, 32]}}
    exclude:                        # drop runs whose config matches every key of a rule
      - {method.name: full, model.name: deit_small_patch16_224}
    tune:                           # tune each method on validation first (optional; see study.tune)
      axes: {train.lr: {low: 1.0e-4, high: 3.0e-2, log: true}}
      search: random
      trials: 8
    report:                         # how `peftlab report` shows the study (optional)
      interval: t                   # t (Student-t, default) | bca | percentile (bootstrap)
      labels:                       # display names of configurations or methods
        lora r=4: "LoRA ($r{=}4$)"  # text outside $...$ is plain text, inside is LaTeX math
        full: Full fine-tuning      # a method's name also renames its configurations
    executor:                       # what the jobs ask a cluster for (optional; see study.executors.section)
      slurm: {partition: gpu, time: "4:00:00", cpus: 8, gpus: 1, account: proj42}
      ray: {address: 10.0.0.1:6379, cpus: 2}

An axis value is a plain value or ``{value: V, set: {dotted: value}}`` for overrides that go
with that value only. A path value (``data.root``, ``model.pretrained``, ``method.importance_from``,
...) in ``set`` or ``axes`` is relative to the study file; those in the base config to the base.
Order of precedence: base < set < method (name, set) < axis values < seed.
The run id is a hash of the resolved run config, so the same study always yields the same ids
and a run shared by two groups is trained once. Each method's config holds only its own
options: a ``method.*`` key of another method that comes from the base config, ``set`` or the
shared ``axes`` is dropped for that method (``method.r: [4, 8]`` crossed with ``full`` gives
one full run per seed); in the method's own ``set`` or ``axes`` it is an error, and so is a key the
method does not use (``train.lr`` of ``linear`` when ``train.head_lr`` is set: a probe trains only
its head). With ``tune:`` each method's runs here are its configuration before tuning; the runner
searches first (``peftlab.study.search``) and trains the final runs at the chosen values.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftlab.config.checks import MAX_INT, shown
from peftlab.config.methods import method_names
from peftlab.config.paths import resolve_paths, with_base_architecture
from peftlab.config.reading import deep_merge, nest, read_yaml
from peftlab.config.run_ids import seed_hashes
from peftlab.config.schema import (
    RunConfig,
    config_hash,
    flatten,
    from_dict,
    load_config,
    to_dict,
    without_foreign_options,
)
from peftlab.study.exclusions import Excluder, exclude_rules
from peftlab.study.executors.section import executor_section
from peftlab.study.keys import check_key, is_foreign, without_foreign_keys
from peftlab.study.records import SpecRecord, TunedBy
from peftlab.study.report_options import ReportOptions, report_options
from peftlab.study.report_options import section as _mapping  # a study section must be a mapping
from peftlab.study.tuning.configurations import Configuration
from peftlab.study.tuning.tune import Search, check_method_keys, tune_searches
from peftlab.tuners.plugins import method_spec, plugin_names
from peftlab.utils.errors import ConfigError

STUDY_KEYS = ("name", "base", "pretrain", "seeds", "set", "axes", "methods", "ablations", "exclude", "report")
STUDY_KEYS += ("tune", "executor")
ABLATION_KEYS = ("methods", "axes")
MAX_SEEDS = 1000
MAX_RUNS = 10_000  # a study larger than this is refused before it is expanded
SHORT_NAMES = {
    "method.r": "r",
    "method.lora_alpha": "alpha",
    "method.target_modules": "targets",
    "train.lr": "lr",
    "quant.mode": "quant",
    "model.name": "model",
    "data.name": "data",
    "method.lora_dropout": "dropout",
    "method.format": "format",
    "method.group_size": "group",
    "method.schedule": "schedule",
}


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    variant: str  # a readable label of the configuration without the seed
    method: str
    seed: int
    groups: tuple[str, ...]  # "main" and/or ablation names
    axes: dict[str, Any]  # the axis values that made this run
    config: RunConfig = field(repr=False)
    # a final run of a tuned study: {trial, value, metric, params} of its search, and borrowed_from (the
    # configuration whose search it was) where it runs at another configuration's choice (tune.share)
    tuned_by: TunedBy | None = None
    last_epoch: int | None = None  # a job training its run to that epoch's end only (a rung's); not in spec.json

    def record(self) -> SpecRecord:
        """What ``spec.json`` in the run directory holds."""
        record: SpecRecord = {
            "run_id": self.run_id,
            "variant": self.variant,
            "method": self.method,
            "seed": self.seed,
            "groups": list(self.groups),
            "axes": self.axes,
        }
        return {**record, "tuned_by": self.tuned_by} if self.tuned_by is not None else record


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    base: Path
    pretrain: Path | None
    runs: list[RunSpec]
    report: ReportOptions = ReportOptions()
    tune: dict[str, Search] = field(default_factory=dict)  # search name -> its search; {} when untuned
    # executor name -> {ExecutorOptions field: value} of the study file's executor section (section.executor_section)
    executor: dict[str, dict] = field(default_factory=dict)


def run_id(cfg: RunConfig) -> str:
    return config_hash(cfg)


def _axis_values(key: str, values: Any, method: str) -> list[tuple[Any, dict]]:
    """[(value, extra overrides)] of one axis of ``method``."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"study axis '{key}' must be a non-empty list of values, got {shown(values)}")
    out = []
    for value in values:
        if isinstance(value, dict) and "value" in value:
            unknown = set(value) - {"value", "set"}
            if unknown:
                raise ConfigError(
                    f"study axis '{key}' value {shown(value)} has unknown keys {sorted(map(str, unknown))}; "
                    "allowed: value, set"
                )
            extra = _mapping(value.get("set"), f"axis '{key}' set")
            for extra_key in extra:
                check_key(extra_key, f"method '{method}' axis '{key}' set key")
            out.append((value["value"], extra))
        else:
            out.append((value, {}))
    return out


def _label(method: str, axes: dict[str, Any]) -> str:
    parts = [method]
    for key, value in axes.items():
        if key == "method.name":
            continue
        text = "/".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        parts.append(f"{SHORT_NAMES.get(key, key.rsplit('.', 1)[-1])}={text}")
    return " ".join(str(p) for p in parts)


def _path_value(data: dict, key: str, path: Path, required: bool) -> Path | None:
    """``base`` / ``pretrain``: a file name relative to the study file."""
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ConfigError(
            f"study {path}: {key}={shown(value)} is invalid: expected the path of a run config "
            "(relative to the study file)"
        )
    return (path.parent / value).resolve()


def _seeds(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SEEDS:
        return list(range(value))
    if (
        isinstance(value, list)
        and 0 < len(value) <= MAX_SEEDS
        and len(set(map(repr, value))) == len(value)
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_INT for s in value)
    ):
        return value
    raise ConfigError(
        f"study axis 'seeds' value {shown(value)} is invalid: expected a count in [1, {MAX_SEEDS}] "
        f"or a list of at most {MAX_SEEDS} distinct integers in [0, {MAX_INT}]"
    )


def load_study(path: str | Path) -> Study:
    """Read, validate and expand a study file; any problem is one ConfigError line.

    In steps: the header (name, base and pretraining configs), the groups of runs (each method's
    main configurations and the ablations), the exclude rules and the size bound, the expansion
    into runs, then the report options and the tuning searches."""
    path = Path(path)
    data = read_yaml(path)
    unknown = set(data) - set(STUDY_KEYS)
    if unknown:
        raise ConfigError(
            f"study {path}: unknown key '{sorted(map(str, unknown))[0]}'; allowed: {', '.join(STUDY_KEYS)}"
        )
    header = _header(data, path)
    seeds = _seeds(data.get("seeds", 5))
    methods = _mapping(data.get("methods"), "methods")
    if not methods:
        raise ConfigError(f"study {path}: 'methods' must name at least one of {', '.join(method_names())}")
    groups = _groups(data, methods)
    rules = exclude_rules(data)
    size = sum(
        len(seeds) * math.prod(len(v) if isinstance(v, list) else 1 for v in axes.values()) for _, _, _, axes in groups
    )
    if size > MAX_RUNS:
        raise ConfigError(
            f"study {path} expands to {size:,} runs before exclusions: expected at most {MAX_RUNS:,} "
            "(fewer seeds or axis values, or several studies)"
        )
    specs, configurations = _expand(data, header, groups, methods, seeds, Excluder(rules))
    if not specs:
        raise ConfigError(f"study {path}: the exclude rules drop every run: expected at least one run")
    runs = _unique_variants(list(specs.values()), configurations)
    report = report_options(data.get("report"))
    names = sorted({spec.variant for spec in runs} | {spec.method for spec in runs})
    for option, keys in (("labels", report.labels), ("trainable_share_at_most", report.share_limits)):
        for key in keys:
            if key not in names:
                raise ConfigError(
                    f"study report.{option} key '{key}' names no configuration or method of the study; "
                    f"expected one of: {', '.join(names)}"
                )
    tune = tune_searches(
        data.get("tune"), methods, _templates(runs, methods, configurations), seeds, check_key, is_foreign
    )
    executor = executor_section(data.get("executor"), str(path))
    return Study(header.name, path, header.base, header.pretrain, runs, report, tune, executor)


@dataclass(frozen=True)
class Header:
    """What every run of a study starts from."""

    name: str
    path: Path  # the study file
    base: Path  # the base run config
    pretrain: Path | None  # the pretraining config of the base weights
    base_dict: dict  # the base config, its paths resolved
    base_architecture: tuple  # (model section, source) of the pretraining config; () without one


def _header(data: dict, path: Path) -> Header:
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"study {path}: name={shown(name)} is invalid: expected a non-empty string")
    if not name.isprintable():  # it titles report.md and the paper: a newline would start a line of its own
        raise ConfigError(f"study {path}: name={name[:60]!r} is invalid: expected one line of printable text")
    if "base" not in data:
        raise ConfigError(f"study {path}: 'base' (the base run config) is required")
    base = _path_value(data, "base", path, required=True)
    pretrain = _path_value(data, "pretrain", path, required=False)
    base_dict = resolve_paths(read_yaml(base), base.parent)  # the base config's paths: relative to it
    if pretrain is None:
        return Header(name, path, base, None, base_dict, ())
    try:
        pretrain_cfg = load_config(pretrain)
    except ConfigError as err:
        raise ConfigError(f"study {path}: pretrain config: {err}") from None
    if pretrain_cfg.method.name != "full":
        raise ConfigError(
            f"study {path}: pretrain config {pretrain} has method.name={pretrain_cfg.method.name!r}: "
            "expected 'full' (pretraining trains every weight)"
        )
    # the architecture of the base the runs name: the pretraining config's (known before it has
    # trained, so run ids do not change once the base exists), else its manifest's
    return Header(name, path, base, pretrain, base_dict, (to_dict(pretrain_cfg.model), pretrain))


def _groups(data: dict, methods: dict) -> list[tuple[str, str, dict, dict]]:
    """(group, method, method set, axes) of each method's main configurations and of each ablation."""
    for method in methods:  # a plugin's method is read here, before the keys that may be its options
        if not isinstance(method, str) or method_spec(method) is None:
            names = ", ".join(dict.fromkeys([*method_names(), *plugin_names()]))
            raise ConfigError(f"study axis 'methods' value '{method}' is invalid: expected one of {names}")
    common, global_axes = _mapping(data.get("set"), "set"), _mapping(data.get("axes"), "axes")
    for key in list(common) + list(global_axes):
        check_key(key, "set/axes key")
    groups: list[tuple[str, str, dict, dict]] = []
    for method, options in methods.items():
        options = _mapping(options, f"method '{method}'")
        extra = set(options) - {"set", "axes", "tune"}
        if extra:
            raise ConfigError(
                f"study method '{method}' has unknown keys {sorted(map(str, extra))}; allowed: set, axes, tune"
            )
        groups.append(
            (
                "main",
                method,
                _mapping(options.get("set"), f"method '{method}' set"),
                {
                    **without_foreign_keys(method, global_axes),
                    **_mapping(options.get("axes"), f"method '{method}' axes"),
                },
            )
        )
    for group, options in _mapping(data.get("ablations"), "ablations").items():
        options = _mapping(options, f"ablation '{group}'")
        unknown = set(options) - set(ABLATION_KEYS)
        if unknown:
            raise ConfigError(
                f"study ablation '{group}' has unknown keys {sorted(map(str, unknown))}; "
                f"allowed: {', '.join(ABLATION_KEYS)}"
            )
        ablation_methods = options.get("methods") or list(methods)
        if not isinstance(ablation_methods, list) or not all(isinstance(m, str) for m in ablation_methods):
            raise ConfigError(
                f"study ablation '{group}' methods={shown(ablation_methods)} is invalid: expected a "
                "list of method names"
            )
        for method in ablation_methods:
            if method not in methods:
                raise ConfigError(f"study ablation '{group}' names method '{method}', which the study does not list")
            method_set = _mapping(methods[method], f"method '{method}'").get("set") or {}
            groups.append(
                (
                    group,
                    method,
                    method_set,
                    {
                        **without_foreign_keys(method, global_axes),
                        **_mapping(options.get("axes"), f"ablation '{group}' axes"),
                    },
                )
            )
    for _, method, method_set, _ in groups:
        for key in method_set:
            check_key(key, f"method '{method}' set key")
    return groups


def _expand(
    data: dict, header: Header, groups: list, methods: dict, seeds: list[int], excluder: Excluder
) -> tuple[dict[str, RunSpec], dict[str, str]]:
    """Every run of every group, by run id (a run in two groups is one run of both), and each run's
    configuration key (``_same_config``, by run id).

    A configuration is built and checked once for all its seeds: the seeds differ only in
    ``seed``, which ``_seeds`` has checked, so they share its validated sections."""
    common, global_axes = _mapping(data.get("set"), "set"), _mapping(data.get("axes"), "axes")
    specs: dict[str, RunSpec] = {}
    configurations: dict[str, str] = {}
    for group, method, method_set, axes in groups:
        for key in axes:
            check_key(key, f"method '{method}' axis" if group == "main" else f"ablation '{group}' axis")
        own_keys = {
            **method_set,
            **_mapping(_mapping(methods[method], f"method '{method}'").get("axes"), f"method '{method}' axes"),
        }
        base = {
            **header.base_dict,
            "method": without_foreign_options(  # without the options of other methods
                _mapping(header.base_dict.get("method"), f"{header.base} method"), method
            ),
        }
        choices = [_axis_values(key, values, method) for key, values in axes.items()]
        for combo in itertools.product(*choices):
            axis_values = {key: value for key, (value, _) in zip(axes, combo)}
            overrides = {**without_foreign_keys(method, common), "method.name": method, **method_set}
            for key, (value, extra) in zip(axes, combo):
                overrides.update(extra)
                overrides[key] = value
            study_values = resolve_paths(nest({**overrides, "seed": seeds[0], "name": header.name}), header.path.parent)
            cfg_dict = with_base_architecture(deep_merge(base, study_values), *header.base_architecture)
            try:
                first = from_dict(RunConfig, cfg_dict)
            except ConfigError as err:
                where = ", ".join(f"{k}={shown(v)}" for k, v in axis_values.items()) or "no axes"
                raise ConfigError(f"study method '{method}' ({where}): {err}") from None
            check_method_keys(method, own_keys, first, "set/axes key")
            plain = to_dict(first)
            configuration = _same_config({**plain, "seed": 0})
            flat = flatten(plain) if excluder.index else None  # no rules, nothing to match
            label_axes = {k: v for k, v in axis_values.items() if len(axes[k]) > 1 or k not in global_axes}
            for seed, rid in zip(seeds, seed_hashes(plain, seeds)):
                if flat is not None and excluder.excludes({**flat, "seed": seed}):
                    continue
                if rid in specs:
                    old = specs[rid]
                    specs[rid] = RunSpec(
                        rid,
                        old.variant,
                        old.method,
                        old.seed,
                        tuple(dict.fromkeys(old.groups + (group,))),
                        old.axes,
                        old.config,
                    )
                    continue
                cfg = dataclasses.replace(first, seed=seed)
                specs[rid] = RunSpec(rid, _label(method, label_axes), method, seed, (group,), axis_values, cfg)
                configurations[rid] = configuration
    return specs, configurations


def _templates(runs: list[RunSpec], methods: dict, configurations: dict[str, str]) -> dict[str, list[Configuration]]:
    """Each method's configurations, seed aside (what its searches start from): its main ones first, then
    those only an ablation runs."""
    templates: dict[str, dict[str, Configuration]] = {m: {} for m in methods}
    for main in (True, False):
        for spec in runs:
            if ("main" in spec.groups) == main and configurations[spec.run_id] not in templates[spec.method]:
                config = dataclasses.replace(spec.config, seed=0)
                templates[spec.method][configurations[spec.run_id]] = Configuration(spec.variant, config, main)
    return {m: list(c.values()) for m, c in templates.items()}


def _same_config(plain: dict) -> str:
    """A key equal for equal configs (``to_dict``): cheaper than ``config_hash`` (a YAML dump), which
    is kept for what a user sees (run ids, label suffixes)."""
    return json.dumps(plain, sort_keys=True, default=str)


def _unique_variants(runs: list[RunSpec], configurations: dict[str, str]) -> list[RunSpec]:
    """Two different configurations must not share a label: suffix a short hash where they do."""
    by_label: dict[str, set[str]] = {}
    for spec in runs:
        by_label.setdefault(spec.variant, set()).add(configurations[spec.run_id])
    out = []
    for spec in runs:
        if len(by_label[spec.variant]) > 1:
            suffix = config_hash(dataclasses.replace(spec.config, seed=0), 6)
            spec = dataclasses.replace(spec, variant=f"{spec.variant} [{suffix}]")
        out.append(spec)
    return out
