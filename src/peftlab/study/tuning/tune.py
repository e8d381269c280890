"""The ``tune:`` section of a study: what each method's hyper-parameter search looks like.

A study with ``tune:`` tunes every method on validation before its seeds meet the test set::

    tune:
      axes:                                   # dotted config keys: a list, or a range of numbers
        train.lr: {low: 1.0e-4, high: 3.0e-2, log: true}
        train.weight_decay: [0.0, 0.01, 0.1]
      search: random                          # grid | random | halving (random + successive halving)
      trials: 8                               # every method's budget (grid: its number of points)
      follow_edge: false                      # grid: trials beyond its size go past the best's edge
      metric: val_top1                        # val_top1 | best_val_top1 | val_f1 | val_matthews | val_perplexity
      seeds: [1000]                           # the seeds trials train with (default: see below)
      sampler_seed: 0                         # random / halving: the draws
      reduction_factor: 3                     # halving, rungs: a third of the trials go on at each rung
      rungs: [1]                              # grid: compare trials at these epochs' ends, prune the rest
    methods:
      linear:
        tune: {axes: {train.head_lr: [1.0e-3, 1.0e-2]}}   # a method's own axes (over the shared ones)
      lora:
        tune: {axes: {method.r: [4, 8]}, trials: 4}       # its own budget: says the study differs on purpose

With ``search: grid`` and ``follow_edge: true``, ``trials`` is every method's budget and may exceed
its grid: the grid's points run first, then points added one at a time where the best trial sits
(beyond an end of a numeric axis, or between the best and its better neighbour: ``peftlab.study.tuning.edge``),
so every method gets the same number of trials whatever the size of its grid.

A shared axis a method does not use is dropped for it (``method.r`` for ``full``; ``train.lr``
for ``linear`` when ``train.head_lr`` is set, since a probe trains only its head); in a
method's own ``tune:`` it is an error. Every method gets the same number of trials unless a
method's own ``tune:`` sets ``trials``. The default tuning seed is one seed, the first integer
from 1000 up that is not one of the study's seeds: trials never train a run the test set judges.

``metric`` is a validation metric of result.json, never a test one (``peftlab.study.tuning.metric``: top-1 of
the final weights or its best over training, F1, Matthews, a causal LM's perplexity, which the search minimizes);
one the method's runs do not report is refused when the study is read.

Every configuration is tuned: a method with several configurations (its axes, an ablation's values, on
each dataset) gets one search per configuration, each under the same budget, named by the configuration's
label (``lora r=16``); a method with one configuration per dataset keeps the method's name (``lora``, or
``lora@<dataset>`` where it runs on several datasets). ``share`` makes borrowing explicit::

    tune:
      share: {from: [lora r=8]}     # only lora r=8 is searched; lora's other configurations on its
                                    # dataset run at its choice, and the report marks them borrowed

Each trial is an ordinary peftlab run of the configuration with the trial's values (``tune/<search>/runs/<run_id>/``);
``peftlab.study.search`` drives them, and the final runs (``runs/<run_id>/``) start when each search is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from peftlab.config.checks import MAX_INT, shown
from peftlab.config.reading import deep_merge, nest
from peftlab.config.schema import RunConfig, config_hash, flatten, from_dict, to_dict
from peftlab.study.tuning.axes import Axis, read_axis
from peftlab.study.tuning.configurations import Configuration, lending, read_share, search_keys
from peftlab.study.tuning.edge import numeric_axes
from peftlab.study.tuning.metric import check_reported, read_metric, search_direction
from peftlab.study.tuning.rungs import check_rungs, read_rungs
from peftlab.utils.errors import ConfigError

TUNE_KEYS = (
    "axes",
    "search",
    "trials",
    "metric",
    "seeds",
    "sampler_seed",
    "reduction_factor",
    "final_trainval",
    "follow_edge",
    "share",
    "rungs",
)
METHOD_TUNE_KEYS = ("axes", "trials")
SEARCHES = ("grid", "random", "halving")
MAX_TRIALS = 10_000
FIRST_TUNING_SEED = 1000
NOT_TUNABLE = ("seed", "name")
# a linear probe trains only the head: these body settings are unused when the head's own is set
HEAD_ONLY = {"train.lr": "train.head_lr", "train.weight_decay": "train.head_weight_decay"}


@dataclass(frozen=True)
class Search:
    """One method's search: its space, budget, selection metric and the configuration trials start from."""

    method: str
    axes: tuple[Axis, ...]
    search: str
    trials: int
    metric: str
    seeds: tuple[int, ...]
    sampler_seed: int = 0
    reduction_factor: int = 3
    template: RunConfig = field(default_factory=RunConfig, repr=False)  # the method's configuration
    # the study's final runs of this method train on train + val (data.trainval); trials never do
    final_trainval: bool = False
    # the name of the search: the method, or "<method>@<dataset>" where a method runs on several datasets
    key: str = ""
    # grid: the trials beyond the grid's points follow the best's edge (peftlab.study.tuning.edge)
    follow_edge: bool = False
    # the configurations (RunSpec.variant) whose final runs take this search's choice: the one it was
    # searched on first, then those borrowing it (tune.share); not part of the record or fingerprint
    configurations: tuple[str, ...] = ()
    rungs: tuple[int, ...] = ()  # grid: the epochs whose ends compare its trials (peftlab.study.tuning.rungs)

    @property
    def stops_trials(self) -> bool:
        """Whether the search stops trial runs while they train (halving's pruner, a grid's rungs)."""
        return self.search == "halving" or bool(self.rungs)

    @property
    def label(self) -> str:
        """The configuration the search ran on."""
        return self.configurations[0] if self.configurations else self.name

    @property
    def borrowers(self) -> tuple[str, ...]:
        """The configurations that run at this search's choice without a search of their own."""
        return self.configurations[1:]

    def trial_config(self, params: dict[str, Any], seed: int) -> RunConfig:
        """A trial's config: never tested, and evaluating inside an epoch only where its search reads that (halving's
        pruner, a best_* metric); a grid or random search reads epoch ends (its last, a rung's), no choice moves."""
        values = {**params, "seed": seed, "train.test": False}
        if self.search != "halving" and not self.metric.startswith("best_"):
            values["train.eval_every"] = None
        return apply_values(self.template, values)

    @property
    def name(self) -> str:
        return self.key or self.method

    @property
    def direction(self) -> str:
        """Optuna's: "minimize" for a metric where lower is better (perplexity), else "maximize"."""
        return search_direction(self.metric)

    def proposals(self) -> list[dict[str, Any]]:
        """The values of trial 0, 1, ... N-1, the same on every call: a grid in its product order,
        random draws from Optuna's RandomSampler seeded with ``sampler_seed``. The search enqueues
        them in this order, so a search resumed after a kill proposes what it would have. With
        ``follow_edge`` these are the grid's points only; the points added after them depend on
        the grid's scores (``peftlab.study.tuning.edge``)."""
        if self.search == "grid":
            keys = [a.key for a in self.axes]
            return [dict(zip(keys, combo)) for combo in itertools.product(*(a.values for a in self.axes))]
        import optuna

        draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=self.sampler_seed))
        distributions = {a.key: a.distribution() for a in self.axes}
        return [draws.ask(distributions).params for _ in range(self.trials)]

    def fingerprint(self) -> str:
        """Names the search's Optuna storage: a changed study file starts a new search (whose
        trials still reuse every run whose configuration is unchanged)."""
        record = {**self.record(), "template": config_hash(dataclasses.replace(self.template, seed=0))}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]

    def record(self) -> dict:
        record = {
            "method": self.method,
            "axes": [a.record() for a in self.axes],
            "search": self.search,
            "trials": self.trials,
            "metric": self.metric,
            "seeds": list(self.seeds),
            "sampler_seed": self.sampler_seed,
            "reduction_factor": self.reduction_factor,
        }
        # only when set: a plain grid's record, and so its journal's fingerprint, stay what they were
        record = {**record, "follow_edge": True} if self.follow_edge else record
        return {**record, "rungs": list(self.rungs)} if self.rungs else record


def apply_values(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """``cfg`` with dotted values set (validated by the config's own checks)."""
    return from_dict(RunConfig, deep_merge(to_dict(cfg), nest(values)))


def unused_by(method: str, key: str, cfg: RunConfig) -> str | None:
    """Why ``key`` has no effect on ``method`` (None when it has): a linear probe trains only its
    head, so the body's lr or weight decay is unused once the head's own is set."""
    head_key = HEAD_ONLY.get(key)
    if method == "linear" and head_key is not None and flatten(to_dict(cfg)).get(head_key) is not None:
        return (
            f"a linear probe trains only its head, whose rate is {head_key}="
            f"{flatten(to_dict(cfg))[head_key]}: set {head_key} instead"
        )
    return None


def _int(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"study tune.{name}={shown(value)} is invalid: expected an integer in [{low}, {high}]")
    return value


def _tuning_seeds(value: Any, study_seeds: list[int]) -> tuple[int, ...]:
    if value is None:
        return (next(s for s in itertools.count(FIRST_TUNING_SEED) if s not in study_seeds),)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or len(set(map(repr, value))) != len(value)
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_INT for s in value)
    ):
        raise ConfigError(
            f"study tune.seeds={shown(value)} is invalid: expected a list of distinct integers in [0, {MAX_INT}]"
        )
    shared = sorted(set(value) & set(study_seeds))
    if shared:
        raise ConfigError(
            f"study tune.seeds={shown(value)} is invalid: seed {shared[0]} is also a seed of the final "
            "runs; tuning trains on seeds the test set never judges"
        )
    return tuple(value)


def check_method_keys(method: str, keys: dict[str, Any], cfg: RunConfig, where: str) -> None:
    """A method's own ``set``, ``axes`` or ``tune`` key that it does not use is an error."""
    for key in keys:
        reason = unused_by(method, key, cfg)
        if reason:
            raise ConfigError(f"study method '{method}' {where} {key}: {reason}")


def tune_searches(
    tune: Any,
    methods: dict[str, dict],
    templates: dict[str, list[Configuration]],
    study_seeds: list[int],
    check_key,
    is_foreign,
) -> dict[str, Search]:
    """Every configuration's search from the ``tune:`` section and the methods' own ``tune:``; {} without one.

    ``templates``: each method's configurations (seed aside), main ones first; ``check_key`` the study's
    dotted-key check, ``is_foreign(method, key)`` whether a ``method.*`` key belongs to other methods.
    """
    if tune is None:
        own = [m for m, options in methods.items() if "tune" in (options or {})]
        if own:
            raise ConfigError(
                f"study method '{own[0]}' has tune: but the study has no tune: section (search, trials, metric)"
            )
        return {}
    shared = shared_settings(tune, study_seeds)
    lenders = lending(shared["share"], templates)
    searches, explicit = {}, set()
    for method, options in methods.items():
        for key, configuration in search_keys(method, templates[method]).items():
            if lenders.get(configuration.label, configuration.label) != configuration.label:
                continue  # runs at another configuration's choice (tune.share)
            found, own_budget = method_search(
                method, (options or {}).get("tune") or {}, shared, configuration.config, check_key, is_foreign
            )
            borrowers = tuple(b for b, lender in lenders.items() if lender == configuration.label != b)
            searches[key] = dataclasses.replace(found, key=key, configurations=(configuration.label, *borrowers))
            if own_budget:
                explicit.add(key)
    budgets = {m: s.trials for m, s in searches.items() if m not in explicit}
    if len(set(budgets.values())) > 1:
        listed = ", ".join(f"{m} {n}" for m, n in budgets.items())
        raise ConfigError(
            f"study tune: the methods get different budgets ({listed} trials): expected the same "
            "number for every method (set trials in a method's own tune: to differ on purpose)"
        )
    return searches


def shared_settings(tune: Any, study_seeds: list[int]) -> dict[str, Any]:
    """The study's ``tune:`` section, checked: search, metric, trials, seeds, sampler_seed,
    reduction_factor and the shared axes."""
    if not isinstance(tune, dict):
        raise ConfigError(f"study tune must be a mapping, got {type(tune).__name__}")
    unknown = set(tune) - set(TUNE_KEYS)
    if unknown:
        raise ConfigError(f"study tune: unknown key '{sorted(map(str, unknown))[0]}'; allowed: {', '.join(TUNE_KEYS)}")
    search = tune.get("search", "random")
    if search not in SEARCHES:
        raise ConfigError(f"study tune.search={shown(search)} is invalid: expected one of {', '.join(SEARCHES)}")
    metric = read_metric(tune.get("metric", "val_top1"))
    trials = None if tune.get("trials") is None else _int(tune["trials"], "trials", 1, MAX_TRIALS)
    if search != "grid" and trials is None:
        raise ConfigError(f"study tune.trials is required with search: {search} (the budget of every method)")
    seeds = _tuning_seeds(tune.get("seeds"), study_seeds)
    if search == "halving" and len(seeds) > 1:
        raise ConfigError(
            f"study tune.seeds={shown(list(seeds))} is invalid with search: halving: expected one "
            "seed (the pruner compares one run per trial)"
        )
    axes = tune.get("axes") or {}
    if not isinstance(axes, dict):
        raise ConfigError(f"study tune.axes must be a mapping of dotted config keys, got {type(axes).__name__}")
    follow_edge = tune.get("follow_edge", False)
    if not isinstance(follow_edge, bool) or (follow_edge and (search != "grid" or trials is None)):
        raise ConfigError(
            f"study tune.follow_edge={shown(follow_edge)} is invalid with search: {search}"
            f"{'' if trials is None else f' and trials: {trials}'}: expected true only with search: "
            "grid and trials (the budget: the grid's points, then points past the best's edge), or false"
        )
    final_trainval = tune.get("final_trainval", False)
    if not isinstance(final_trainval, bool):
        raise ConfigError(
            f"study tune.final_trainval={shown(final_trainval)} is invalid: expected true (the final "
            "runs train on train + val, the tuned protocol of VTAB-1k) or false"
        )
    return {
        "share": read_share(tune.get("share")),
        "rungs": read_rungs(tune.get("rungs"), search, seeds),
        "final_trainval": final_trainval,
        "follow_edge": follow_edge,
        "search": search,
        "metric": metric,
        "trials": trials,
        "seeds": seeds,
        "axes": axes,
        "sampler_seed": _int(tune.get("sampler_seed", 0), "sampler_seed", 0, MAX_INT),
        "reduction_factor": _int(tune.get("reduction_factor", 3), "reduction_factor", 2, 100),
    }


def method_search(
    method: str, own: Any, shared: dict[str, Any], template: RunConfig, check_key, is_foreign
) -> tuple[Search, bool]:
    """The search of one configuration of a method (the shared axes it uses and the method's own), and
    whether the method sets its own budget."""
    if not isinstance(own, dict) or set(own) - set(METHOD_TUNE_KEYS):
        raise ConfigError(
            f"study method '{method}' tune: {shown(own)} is invalid: expected a mapping with "
            f"{', '.join(METHOD_TUNE_KEYS)}"
        )
    search = shared["search"]
    check_reported(shared["metric"], template, method)
    axes = method_axes(method, own, shared["axes"], template, check_key, is_foreign)
    if search == "grid" and any(a.values is None for a in axes.values()):
        key = next(k for k, a in axes.items() if a.values is None)
        raise ConfigError(f"study tune axis '{key}' is a range: search grid needs a list of values")
    explicit_val = template.data.name.startswith(("vtab1k/", "fgvc/")) or template.data.val_list is not None
    if template.data.val_fraction <= 0 and not explicit_val:
        raise ConfigError(
            f"study method '{method}': data.val_fraction={template.data.val_fraction} leaves no "
            "validation split to tune on: expected a value in (0, 1)"
        )
    if template.data.trainval:
        raise ConfigError(
            f"study method '{method}': data.trainval=true leaves no validation split to tune on: "
            "expected false (tune.final_trainval: true trains the final runs on train + val)"
        )
    budget = shared["trials"]
    if own.get("trials") is not None:
        budget = _int(own["trials"], f"trials of method '{method}'", 1, MAX_TRIALS)
    if search == "grid":
        budget = grid_budget(method, axes, budget, shared["follow_edge"])
    seeds = shared["seeds"]
    found = Search(
        method,
        tuple(axes.values()),
        search,
        budget,
        shared["metric"],
        seeds,
        shared["sampler_seed"],
        shared["reduction_factor"],
        dataclasses.replace(template, seed=seeds[0]),
        shared["final_trainval"],
        follow_edge=shared["follow_edge"],
        rungs=shared["rungs"],
    )
    check_rungs(found.rungs, template.train.epochs, method)
    for params in _corners(found):  # every grid point, a range's ends: valid configurations
        try:
            found.trial_config(params, seeds[0])
        except ConfigError as err:
            raise ConfigError(f"study method '{method}' tune values {shown(params)}: {err}") from None
    return found, own.get("trials") is not None


def grid_budget(method: str, axes: dict, budget: int | None, follow_edge: bool) -> int:
    """A grid's number of trials: its points, or with ``follow_edge`` the budget, which its grid must fit
    and whose trials beyond the grid need a numeric axis to follow."""
    grid = math.prod(len(axis.values or ()) for axis in axes.values())
    if not follow_edge:
        if budget is not None and budget != grid:
            raise ConfigError(
                f"study method '{method}' tune.trials={budget} is invalid with search: grid: expected "
                f"its number of grid points, {grid} (or follow_edge: true to add points past the edge)"
            )
        return grid
    if budget < grid:
        raise ConfigError(
            f"study method '{method}' tune.trials={budget} is invalid with follow_edge: its grid has "
            f"{grid} points: expected at least {grid}"
        )
    if budget > grid and not numeric_axes(axes.values()):
        raise ConfigError(
            f"study method '{method}' tune.follow_edge=True is invalid: its grid has no numeric axis of "
            "two or more values to follow past its edge"
        )
    return budget


def method_axes(method: str, own: dict, shared_axes: dict, template: RunConfig, check_key, is_foreign) -> dict:
    """The axes one method searches: the shared ones it uses, then its own."""
    own_axes = own.get("axes") or {}
    if not isinstance(own_axes, dict):
        raise ConfigError(f"study method '{method}' tune.axes must be a mapping of dotted config keys")
    axes, unused = {}, []
    for key, value in shared_axes.items():
        check_key(key, "tune.axes key")
        why = None if is_foreign(method, key) else unused_by(method, key, template)
        if why is not None:
            unused.append(f"{key} has no effect ({why})")
        elif not is_foreign(method, key):
            axes[key] = read_axis(key, value, "tune.axes")
    for key, value in own_axes.items():
        check_key(key, f"method '{method}' tune.axes key")
        check_method_keys(method, {key: value}, template, "tune.axes")
        axes[key] = read_axis(key, value, f"method '{method}' tune.axes")
    for key in axes:
        if key in NOT_TUNABLE:
            raise ConfigError(
                f"study tune axis '{key}' is invalid: seeds and names are not hyper-parameters "
                "(tune.seeds sets the seeds of the trials)"
            )
    if not axes:
        raise ConfigError(
            f"study method '{method}' has no axis to tune: {'; '.join(unused + ['give it its own tune: {axes: ...}'])}"
        )
    return axes


def _corners(search: Search) -> list[dict]:
    if search.search == "grid":
        return search.proposals()
    ends = [a.values if a.values is not None else (a.low, a.high) for a in search.axes]
    return [dict(zip((a.key for a in search.axes), combo)) for combo in itertools.product(*ends)]
