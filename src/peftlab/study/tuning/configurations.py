"""Which configuration each search of a ``tune:`` section is (``search_keys``), and ``tune.share``: the
configurations that borrow another's choice (``lending``) instead of a search of their own.

Every configuration of a tuned method (its axes, an ablation's values, on each dataset) is searched on its
own unless ``tune: {share: {from: [<label>, ...]}}`` names the one whose choice the others of its method, on
its dataset, run at. ``peftlab.study.tuning.tune`` builds the searches; ``search_key`` finds a run's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.config.checks import shown
from peftlab.config.schema import RunConfig
from peftlab.utils.errors import ConfigError

SHARE_KEYS = ("from",)


@dataclass(frozen=True)
class Configuration:
    """One configuration of a tuned method, seed aside: its label (``RunSpec.variant``), its config and
    whether it is one of the method's main configurations (else only an ablation's)."""

    label: str
    config: RunConfig
    main: bool


def search_keys(method: str, configurations: list[Configuration]) -> dict[str, Configuration]:
    """A method's configurations by the name of their search. A method whose main configurations are one per
    dataset keeps the names it always had for them, the method or "<method>@<data.name>" (a VTAB study), so
    their searches, and the run ids they choose, stay what they were; every other configuration (a second
    one on a dataset, an ablation's) is named by its label, which the study keeps unique."""
    main = [c for c in configurations if c.main]
    datasets = {c.config.data.name for c in main}
    keys = {}
    if len(datasets) == len(main):
        keys = {(method if len(datasets) == 1 else f"{method}@{c.config.data.name}"): c for c in main}
    kept = {id(c) for c in keys.values()}
    named = {c.label: c for c in configurations if id(c) not in kept}
    if set(named) & set(keys):  # an ablation's label that is a main configuration's search name: labels for all
        return {c.label: c for c in configurations}
    return {**keys, **named}


def lending(share: tuple[str, ...], templates: dict[str, list[Configuration]]) -> dict[str, str]:
    """``tune.share``: each borrowing configuration's label -> the label of the one whose choice it takes
    (the configurations of a ``from`` configuration's method on its dataset); a lender maps to itself."""
    found = {}
    labels = {c.label: (method, c) for method, configurations in templates.items() for c in configurations}
    for label in share:
        if label not in labels:
            raise ConfigError(
                f"study tune.share.from value '{label}' names no configuration of the study: expected one of "
                f"{', '.join(sorted(labels))}"
            )
        method, lender = labels[label]
        for other in templates[method]:
            if other.config.data.name != lender.config.data.name:
                continue
            if other.label in found:
                raise ConfigError(
                    f"study tune.share.from names both '{found[other.label]}' and '{label}', configurations of "
                    f"'{method}' on {lender.config.data.name}: expected one per method and dataset"
                )
            found[other.label] = label
    return found


def search_key(spec, searches: dict) -> str | None:
    """The search whose choice a run (a ``RunSpec``) takes (None: its method is not tuned)."""
    for key, search in searches.items():
        if spec.variant in search.configurations:
            return key
    return None


def read_share(value: Any) -> tuple[str, ...]:
    """``tune.share``: ``{from: <label or list of labels>}``, the configurations whose choice the other
    configurations of their method (on their dataset) borrow; () without it."""
    if value is None:
        return ()
    labels = value.get("from") if isinstance(value, dict) and set(value) == set(SHARE_KEYS) else None
    labels = [labels] if isinstance(labels, str) else labels
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) and v for v in labels):
        raise ConfigError(
            f"study tune.share={shown(value)} is invalid: expected {{from: <a configuration's label, or a list of "
            "them>}}: the configurations whose choice the others of their method borrow"
        )
    return tuple(dict.fromkeys(labels))
