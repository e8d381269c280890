"""The ``report:`` section of a study file: the interval of the report's means, the display
names of configurations and methods, and the trainable shares that configurations claim. Read
without expanding the study (analysis reads it from the copy a study directory keeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftlab.config.reading import MissingFile, read_yaml
from peftlab.config.tex import bibtex_entry, cite_key
from peftlab.utils.errors import ConfigError

REPORT_KEYS = ("interval", "labels", "trainable_share_at_most", "datasets")
DATASET_KEYS = ("name", "classes", "chance", "cite", "bibtex")
REPORT_INTERVALS = ("t", "bca", "percentile")


@dataclass(frozen=True)
class ReportOptions:
    """The ``report:`` section of a study file."""

    interval: str = "t"
    labels: dict[str, str] = field(default_factory=dict)  # configuration or method -> display name
    # configuration or method -> the largest share of trainable parameters it claims (0.003: 0.3%),
    # checked in the report against every completed run's count
    share_limits: dict[str, float] = field(default_factory=dict)
    # dataset (its data.name, or an image folder's name: data.root's last part) -> how the paper names it:
    # name (its display name), classes, chance (a share; default 1 / classes), cite (a BibTeX key), bibtex (its entry)
    datasets: dict[str, dict] = field(default_factory=dict)


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
        datasets={str(k): dataset_names(k, v) for k, v in section(report.get("datasets"), "report.datasets").items()},
    )


def dataset_names(key, value) -> dict:
    """One entry of ``report.datasets``, checked: a display name, and optionally the number of classes, the
    chance level (a share in (0, 1)), a citation key and its BibTeX entry."""
    where = f"study report.datasets['{key}']"
    entry = section(value, where)
    unknown = set(entry) - set(DATASET_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{sorted(map(str, unknown))[0]}'; allowed: {', '.join(DATASET_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise ConfigError(f"{where}.name={name!r} is invalid: expected the dataset's name, one line of text")
    classes = entry.get("classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 2):
        raise ConfigError(f"{where}.classes={classes!r} is invalid: expected an integer >= 2")
    chance = entry.get("chance")
    if chance is not None and (isinstance(chance, bool) or not isinstance(chance, (int, float)) or not 0 < chance < 1):
        raise ConfigError(f"{where}.chance={chance!r} is invalid: expected a share in (0, 1) (0.25 is 25%)")
    cite, bibtex = entry.get("cite"), entry.get("bibtex")
    if cite is not None:
        cite_key(cite, f"{where}.cite")
    if bibtex is not None:
        entry = bibtex_entry(bibtex, f"{where}.bibtex")  # one entry whose fields only typeset
        if cite is None or entry.key != cite:
            raise ConfigError(f"{where}.bibtex is invalid: expected one BibTeX entry whose key is cite ({cite!r})")
        bibtex = entry.text
    return {
        "name": name.strip(),
        "classes": classes,
        "chance": float(chance) if chance is not None else (1 / classes if classes else None),
        "cite": cite,
        "bibtex": bibtex,
    }


def read_report_options(path: str | Path) -> ReportOptions:
    """The ``report:`` section of a study file, without expanding the study (the copy a
    study directory keeps as study.yaml may no longer find its base config); defaults when
    the file is absent."""
    path = Path(path)
    try:
        return report_options(read_yaml(path).get("report"))
    except MissingFile:  # found absent when opened, not asked first
        return ReportOptions()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def read_study_name(study_dir: str | Path) -> str:
    """The study's ``name:`` in the copy of its study file a study directory keeps (study.yaml), which
    titles its report and paper; the directory's name where that file is absent or names none (a
    study run with ``--study-dir`` lives in a folder of another name)."""
    study_dir = Path(study_dir)
    path = study_dir / "study.yaml"
    try:  # opened once: absent, of another kind or unreadable, it names nothing
        name = read_yaml(path).get("name")
    except ConfigError:
        name = None
    if isinstance(name, str) and name.strip():
        if not name.isprintable():  # a received copy: a newline would start a line of report.md of its own
            raise ConfigError(f"{path}: name={name[:60]!r} is invalid: expected one line of printable text")
        return name.strip()
    return study_dir.name
