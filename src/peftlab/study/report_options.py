"""The ``report:`` section of a study file: the interval of the report's means, the display
names of configurations and methods, and the trainable shares that configurations claim. Read
without expanding the study (analysis reads it from the copy a study directory keeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftlab.config.reading import read_yaml
from peftlab.utils.errors import ConfigError

REPORT_KEYS = ("interval", "labels", "trainable_share_at_most")
REPORT_INTERVALS = ("t", "bca", "percentile")


@dataclass(frozen=True)
class ReportOptions:
    """The ``report:`` section of a study file."""

    interval: str = "t"
    labels: dict[str, str] = field(default_factory=dict)  # configuration or method -> display name
    # configuration or method -> the largest share of trainable parameters it claims (0.003: 0.3%),
    # checked in the report against every completed run's count
    share_limits: dict[str, float] = field(default_factory=dict)


def section(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"study {where} must be a mapping, got {type(value).__name__}")
    return value


def report_options(value: Any) -> ReportOptions:
    """The ``report:`` section, checked for its form; any problem is one ConfigError line."""
    report = section(value, "report")
    unknown = set(report) - set(REPORT_KEYS)
    if unknown:
        raise ConfigError(
            f"study report: unknown key '{sorted(map(str, unknown))[0]}'; allowed: {', '.join(REPORT_KEYS)}"
        )
    interval = report.get("interval", "t")
    if interval not in REPORT_INTERVALS:
        raise ConfigError(
            f"study report.interval={interval!r} is invalid: expected one of {', '.join(REPORT_INTERVALS)}"
        )
    labels = section(report.get("labels"), "report.labels")
    for key, label in labels.items():
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(f"study report.labels['{key}']={label!r} is invalid: expected a non-empty string")
        if not label.isprintable():  # a newline would start a line of its own in report.md, main.tex or a table
            raise ConfigError(
                f"study report.labels['{key}']={label!r} is invalid: expected one line of printable characters"
            )
        if label.replace("\\$", "").count("$") % 2:
            raise ConfigError(
                f"study report.labels['{key}']={label!r} is invalid: a $ opens LaTeX math that no $ closes"
            )
    limits = section(report.get("trainable_share_at_most"), "report.trainable_share_at_most")
    for key, limit in limits.items():
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit <= 1:
            raise ConfigError(
                f"study report.trainable_share_at_most['{key}']={limit!r} is invalid: "
                "expected a share in (0, 1] (0.003 is 0.3%)"
            )
    return ReportOptions(
        interval=interval,
        labels={str(k): v for k, v in labels.items()},
        share_limits={str(k): float(v) for k, v in limits.items()},
    )


def read_report_options(path: str | Path) -> ReportOptions:
    """The ``report:`` section of a study file, without expanding the study (the copy a
    study directory keeps as study.yaml may no longer find its base config); defaults when
    the file is absent."""
    path = Path(path)
    if not path.is_file():
        return ReportOptions()
    try:
        return report_options(read_yaml(path).get("report"))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def read_study_name(study_dir: str | Path) -> str:
    """The study's ``name:`` in the copy of its study file a study directory keeps (study.yaml), which
    titles its report and paper; the directory's name where that file is absent or names none (a
    study run with ``--study-dir`` lives in a folder of another name)."""
    study_dir = Path(study_dir)
    path = study_dir / "study.yaml"
    if path.is_file():
        try:
            name = read_yaml(path).get("name")
        except (ConfigError, AttributeError):
            name = None
        if isinstance(name, str) and name.strip():
            return name.strip()
    return study_dir.name
