"""One searched key of a ``tune:`` section (``Axis``): a list of values (a grid's, or a categorical
choice) or a range of numbers, as the study file gives it (``read_axis``), and Optuna's distribution
of it. ``peftlab.study.tuning.tune`` makes each method's search of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from peftlab.config.checks import shown
from peftlab.utils.errors import ConfigError

RANGE_KEYS = ("low", "high", "log")


@dataclass(frozen=True)
class Axis:
    """One searched key: a list of values (grid or categorical) or a range of floats or ints."""

    key: str
    values: tuple | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False

    def distribution(self):
        """Optuna's distribution of this axis (optuna is imported only when a search runs)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.values is not None:
            return CategoricalDistribution(self.values)
        if isinstance(self.low, int) and isinstance(self.high, int):
            return IntDistribution(self.low, self.high, log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def describe(self) -> str:
        if self.values is not None:
            return "{" + ", ".join(map(str, self.values)) + "}"
        return f"[{self.low}, {self.high}]" + (" log" if self.log else "")

    def record(self) -> dict:
        if self.values is not None:
            return {"key": self.key, "values": list(self.values)}
        return {"key": self.key, "low": self.low, "high": self.high, "log": self.log}


def read_axis(key: str, value: Any, where: str) -> Axis:
    """The axis ``value`` gives ``key`` in the study file (``where`` names its section): a list of
    distinct values, or a range ``{low, high, log}``."""
    if isinstance(value, list):
        if (
            not value
            or not all(isinstance(v, (bool, int, float, str)) for v in value)
            or len(set(map(json.dumps, value))) != len(value)
        ):
            raise ConfigError(
                f"study {where} '{key}'={shown(value)} is invalid: expected a non-empty list of "
                "distinct numbers, strings or booleans, or a range {low, high, log}"
            )
        return Axis(key, values=tuple(value))
    if isinstance(value, dict):
        unknown = set(value) - set(RANGE_KEYS)
        low, high, log = value.get("low"), value.get("high"), value.get("log", False)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if unknown or not numbers or not low < high or not isinstance(log, bool) or (log and low <= 0):
            raise ConfigError(
                f"study {where} '{key}'={shown(value)} is invalid: expected a range {{low, high, log}} "
                "with numbers low < high (low > 0 when log: true)"
            )
        return Axis(key, low=low, high=high, log=log)
    raise ConfigError(
        f"study {where} '{key}'={shown(value)} is invalid: expected a list of values or a range {{low, high, log}}"
    )
