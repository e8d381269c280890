"""A study's ``exclude:`` rules: each a mapping of dotted config keys to a value or a list of values;
a run whose config matches every key of a rule is dropped (``Excluder``)."""

from __future__ import annotations

from typing import Any

from peftlab.config.checks import shown
from peftlab.study.keys import check_key
from peftlab.utils.errors import ConfigError


def exclude_rules(data: dict) -> list[dict]:
    rules = data.get("exclude") or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise ConfigError("study 'exclude' must be a list of mappings of dotted config keys to values")
    for rule in rules:
        for key, value in rule.items():
            check_key(key, "exclude key", method_name=True)
            if isinstance(value, dict):
                raise ConfigError(
                    f"study exclude rule {shown(rule)}: {key}={shown(value)} is a mapping; expected a "
                    "value or a list of values (write nested keys dotted, e.g. method.name: full)"
                )
    return rules


def _frozen(value: Any) -> Any:
    """A hashable stand-in of a config value that is equal where the value is (lists as tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return frozenset((k, _frozen(v)) for k, v in value.items())
    return value


class Excluder:
    """The exclude rules, indexed by each rule's first key and its values: a run is compared with
    the few rules whose first key it matches, not with all of them (5,000 rules x 2,000 runs)."""

    def __init__(self, rules: list[dict]):
        self.index: dict[str, dict[Any, list[dict]]] = {}
        for rule in rules:
            if not rule:  # matches every run
                self.index.setdefault("", {}).setdefault(None, []).append(rule)
                continue
            key, wanted = next(iter(rule.items()))
            for option in wanted if isinstance(wanted, list) else [wanted]:
                self.index.setdefault(key, {}).setdefault(_frozen(option), []).append(rule)

    def excludes(self, flat: dict) -> bool:
        for key, by_value in self.index.items():
            candidates = by_value.get(None, []) if key == "" else by_value.get(_frozen(flat.get(key)), [])
            if any(_matches(rule, flat) for rule in candidates):
                return True
        return False


def _matches(rule: dict, flat: dict) -> bool:
    for key, wanted in rule.items():
        value = flat.get(key)
        options = wanted if isinstance(wanted, list) else [wanted]
        if value not in options and not (isinstance(value, list) and value in options):
            return False
    return True
