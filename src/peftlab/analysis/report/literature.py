"""Published numbers beside the study's own: configs/literature.yaml, read and checked.

The file holds `settings` (one paper, model, dataset and metric each) and `entries` (one
published number each, as printed). `load_literature` validates it and returns a list of
`Citation`s; `literature_table` writes the booktabs table that shows the cited rows and this
study's rows in separate, labelled blocks; `ranking` orders values for the generated prose.

A setting is shown beside a study only where the study ran the dataset it was measured on (``task``: a
named dataset's data.name, several, or a suite that a study ran every task of; ``study_citations``): its
identity is the data.name, never the name of a folder, so an image folder called cifar100 gets no
CIFAR-100 row, and a setting measured on data peftlab does not read (MMLU, MNLI) is shown to no study.

An entry's `peftlab` names the registry method it corresponds to (any name of
``peftlab.tuners.TUNERS``, or null). The orders compared are of the same methods on both sides:
`ranked_citations` keeps a setting's cited rows whose method the study ran, `study_rows` the
study's variants of a method some cited row names.

The file's `vtab1k` blocks (VTAB-1k task by task, with the source's protocol) are read apart, by
`load_vtab_literature`, for the VTAB-1k section of a report (analysis/vtab.py) only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from peftlab.analysis.report.tables import format_count
from peftlab.analysis.results.escape import latex_escape
from peftlab.analysis.results.units import scale
from peftlab.analysis.stats.intervals import completed_runs, summarize
from peftlab.analysis.stats.ties import resolution, tied
from peftlab.config.checks import DATASET_CLASSES, MAX_FILE_BYTES, received_text
from peftlab.config.paths import REPO_ROOT
from peftlab.config.suites import SUITES, VTAB1K_TASKS
from peftlab.training.run_result import lower_is_better
from peftlab.tuners import TUNERS  # the registry's names only: it imports no torch
from peftlab.utils.errors import UserError
from peftlab.utils.files import read_text, shown_path

LITERATURE = REPO_ROOT / "configs" / "literature.yaml"

SETTING_FIELDS = ("paper", "table", "model", "dataset", "metric", "checked")
# a setting's optional fields: what it adapts (a study of another modality leaves it out) and the peftlab
# data.name(s) of the dataset it was measured on (a study that did not run it leaves it out)
MODALITIES = ("vision", "text", "causal-lm")
ENTRY_FIELDS = ("id", "setting", "method", "peftlab", "trainable", "value")
VTAB_FIELDS = ("paper", "table", "model", "metric", "checked", "protocol")  # text fields of a vtab1k block
VTAB_ROW_FIELDS = ("method", "peftlab", "trainable", "mean", "values")
PRINTED_NUMBER = re.compile(r"-?\d+(\.\d+)?")


@dataclass(frozen=True)
class Citation:
    id: str
    setting: str
    paper: str
    table: str
    model: str
    dataset: str
    metric: str
    checked: str
    method: str
    peftlab: str | None
    trainable: str | None
    value: str  # as printed in the source
    modality: str | None = None  # vision, text or causal-lm; None: shown to a study of any
    tasks: tuple[str, ...] = ()  # the data.names it was measured on (a suite: all its tasks); (): no dataset of peftlab

    @property
    def number(self) -> float:
        return float(self.value)


def load_literature(path: str | Path, bib_keys: set[str] | None = None) -> list[Citation]:
    """The entries of a literature YAML, in file order; UserError naming the bad field."""
    path = Path(path)
    data = _read_yaml(path)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("settings"), dict)
        or not isinstance(data.get("entries"), list)
    ):
        raise UserError(f"{path}: expected a mapping with 'settings' (a mapping) and 'entries' (a list)")
    settings = data["settings"]
    for name, setting in settings.items():
        missing = [f for f in SETTING_FIELDS if not isinstance((setting or {}).get(f), str)]
        if missing:
            raise UserError(f"{path}: settings.{name} needs text fields {', '.join(missing)}")
        for field in SETTING_FIELDS:
            received_text(f"{path}: settings.{name}.{field}", setting[field])
        if bib_keys is not None and setting["paper"] not in bib_keys:
            raise UserError(f"{path}: settings.{name}.paper={setting['paper']!r} is not a key of the bibliography")
        if setting.get("modality") is not None and setting["modality"] not in MODALITIES:
            raise UserError(
                f"{path}: settings.{name}.modality={setting['modality']!r}: expected one of {', '.join(MODALITIES)}"
            )
        setting_tasks(setting.get("task"), f"{path}: settings.{name}.task")
    citations, seen = [], set()
    for i, entry in enumerate(data["entries"]):
        where = f"{path}: entries[{i}]"
        if not isinstance(entry, dict) or set(entry) != set(ENTRY_FIELDS):
            raise UserError(f"{where} must have exactly the fields {', '.join(ENTRY_FIELDS)}")
        if not isinstance(entry["id"], str) or not re.fullmatch(r"[A-Z][A-Za-z]*", entry["id"]):
            raise UserError(
                f"{where}.id={entry['id']!r}: expected letters only, starting upper-case (a LaTeX macro name)"
            )
        if entry["id"] in seen:
            raise UserError(f"{where}.id={entry['id']!r} appears twice")
        seen.add(entry["id"])
        received_text(f"{where}.method", entry["method"])
        received_text(f"{where}.trainable", entry["trainable"], optional=True)
        if entry["setting"] not in settings:
            raise UserError(f"{where}.setting={entry['setting']!r}: expected one of {', '.join(settings)}")
        if entry["peftlab"] is not None and entry["peftlab"] not in TUNERS:
            raise UserError(
                f"{where}.peftlab={entry['peftlab']!r}: expected null or a method of peftlab ({', '.join(TUNERS)})"
            )
        value = entry["value"]
        if not isinstance(value, str) or not PRINTED_NUMBER.fullmatch(value):
            raise UserError(f'{where}.value={value!r}: expected the number as printed, quoted (e.g. "89.90")')
        setting = settings[entry["setting"]]
        fields = {k: setting[k] for k in SETTING_FIELDS} | {"modality": setting.get("modality")}
        fields["tasks"] = setting_tasks(setting.get("task"), "")
        citations.append(Citation(**{k: entry[k] for k in ENTRY_FIELDS}, **fields))
    return citations


def setting_tasks(task, where: str) -> tuple[str, ...]:
    """A setting's ``task`` (None, a data.name or a list of them) as a tuple; each the data.name of a named
    dataset (``DATASET_CLASSES``: not imagefolder, filelist or text, whose data is anyone's) or a suite
    (vtab1k: every task of it), else a UserError line starting with ``where``."""
    tasks = () if task is None else tuple(task) if isinstance(task, list) else (task,)
    if not all(isinstance(t, str) and (t in DATASET_CLASSES or t in SUITES) for t in tasks):
        raise UserError(
            f"{where}={task!r}: expected a named dataset's data.name (e.g. cifar100, vtab1k/cifar, glue/mrpc), "
            f"a suite ({', '.join(SUITES)}: every task of it) or a list of them"
        )
    return tasks


def _read_yaml(path: Path):
    text = read_text(path, "literature file", MAX_FILE_BYTES)  # a FIFO would block, a directory is no list
    if text is None:
        raise UserError(f"{shown_path(path)}: literature file not found")
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml's: 8 times faster
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


@dataclass(frozen=True)
class VtabCitation:
    """One method's row of a source's VTAB-1k table: the task columns and the mean of 19 as printed."""

    source: str  # the block's name in the file's vtab1k mapping
    paper: str
    table: str
    model: str
    metric: str
    checked: str
    protocol: str  # how the source's protocol differs from peftlab's
    method: str
    peftlab: str | None
    trainable: str | None
    mean: str  # the printed mean of the 19 tasks
    values: dict[str, str]  # task name (peftlab.config.suites) -> the value as printed

    def numbers(self) -> dict[str, float]:
        return {task: float(value) for task, value in self.values.items()}


def load_vtab_literature(path: str | Path, bib_keys: set[str] | None = None) -> list[VtabCitation]:
    """The rows of every `vtab1k` block of a literature YAML, in file order ([] without the key);
    UserError naming the bad field."""
    path = Path(path)
    data = _read_yaml(path)
    blocks = data.get("vtab1k", {}) if isinstance(data, dict) else None
    if not isinstance(blocks, dict):
        raise UserError(f"{path}: vtab1k must be a mapping of sources")
    rows = []
    for name, block in blocks.items():
        where = f"{path}: vtab1k.{name}"
        tasks = _vtab_block(where, block, bib_keys)
        if not isinstance(block.get("rows"), list) or not block["rows"]:
            raise UserError(f"{where}.rows must be a non-empty list")
        for i, row in enumerate(block["rows"]):
            _vtab_row(f"{where}.rows[{i}]", row, len(tasks))
            rows.append(
                VtabCitation(
                    source=name,
                    **{f: block[f] for f in VTAB_FIELDS},
                    **{f: row[f] for f in VTAB_ROW_FIELDS if f != "values"},
                    values=dict(zip(tasks, row["values"])),
                )
            )
    return rows


def _vtab_block(where: str, block, bib_keys: set[str] | None) -> list[str]:
    """The block's task names, once its text fields and tasks are checked."""
    missing = [f for f in VTAB_FIELDS if not isinstance((block if isinstance(block, dict) else {}).get(f), str)]
    if missing:
        raise UserError(f"{where} needs text fields {', '.join(missing)}")
    for field in VTAB_FIELDS:
        received_text(f"{where}.{field}", block[field])
    if bib_keys is not None and block["paper"] not in bib_keys:
        raise UserError(f"{where}.paper={block['paper']!r} is not a key of the bibliography")
    tasks = block.get("tasks")
    if not isinstance(tasks, list) or sorted(map(str, tasks)) != sorted(VTAB1K_TASKS):
        raise UserError(f"{where}.tasks must name each of VTAB-1k's 19 tasks once ({', '.join(VTAB1K_TASKS)})")
    return tasks


def _vtab_row(where: str, row, n_tasks: int) -> None:
    if not isinstance(row, dict) or set(row) != set(VTAB_ROW_FIELDS):
        raise UserError(f"{where} must have exactly the fields {', '.join(VTAB_ROW_FIELDS)}")
    received_text(f"{where}.method", row["method"])
    received_text(f"{where}.trainable", row["trainable"], optional=True)
    if row["peftlab"] is not None and row["peftlab"] not in TUNERS:
        raise UserError(
            f"{where}.peftlab={row['peftlab']!r}: expected null or a method of peftlab ({', '.join(TUNERS)})"
        )
    values = row["values"]
    if not isinstance(values, list) or len(values) != n_tasks:
        raise UserError(f"{where}.values: expected a list of {n_tasks} numbers, one per task")
    bad = next((v for v in [row["mean"], *values] if not isinstance(v, str) or not PRINTED_NUMBER.fullmatch(v)), None)
    if bad is not None:
        raise UserError(f'{where}: {bad!r} is not a number as printed, quoted (e.g. "72.25")')
    computed = sum(map(float, values)) / n_tasks
    if abs(computed - float(row["mean"])) > 0.05 + 1e-9:  # values printed to 0.1, the mean from unrounded ones
        raise UserError(
            f"{where}.mean={row['mean']} is not the mean of its values ({computed:.2f}): one of them is mistyped"
        )


def study_citations(citations: list[Citation], modality: str, ran: set[str]) -> list[Citation]:
    """The cited rows a study's report and paper show: those of its modality ("vision", "text" or "causal-lm")
    measured on a dataset the study ran (``ran``: its data.name values; a suite counts where it ran every task)."""
    return [c for c in citations if c.modality in (None, modality) and any(measured_on(t, ran) for t in c.tasks)]


def measured_on(task: str, ran: set[str]) -> bool:
    """Whether a study of the data.names ``ran`` ran ``task``: that data.name, or every task of a suite."""
    return all(f"{task}/{name}" in ran for name in SUITES[task]) if task in SUITES else task in ran


def bib_keys(bib_text: str) -> set[str]:
    return set(re.findall(r"^@\w+\{([^,\s]+),", bib_text, flags=re.MULTILINE))


def ranking(items: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Items sorted by value, highest first (ties keep their order)."""
    return sorted(items, key=lambda item: -item[1])


def cited_methods(citations: list[Citation]) -> set[str]:
    """The peftlab methods some cited row corresponds to."""
    return {c.peftlab for c in citations if c.peftlab}


def study_methods(df) -> set[str]:
    """The methods of this study with a completed run."""
    done = completed_runs(df)
    return set(done["method"]) if "method" in done else set()


def ranked_citations(citations: list[Citation], setting: str, methods: set[str]) -> list[Citation]:
    """The cited rows of ``setting`` whose peftlab method is in ``methods``, by published value, highest first."""
    rows = [c for c in citations if c.setting == setting and c.peftlab in methods]
    return [c for c, _ in ranking([(c, c.number) for c in rows])]


def study_rows(df, citations: list[Citation], summary=None, every: bool = False) -> list[dict]:
    """This study's rows for the table: its variants of the methods the cited rows name (``every``: all its
    variants, as the paper's table lists them), by mean test top-1, highest first, or by a perplexity (summary
    of metrics.test_perplexity), lowest first (a method no cited row names has no published order to stand
    beside: the orders compared leave it out).

    Each row: {"method": variant, "trainable": "73.7K", "value": "68.4"} (percent, one decimal; a
    perplexity as it is). summary: `summarize(df)` of metrics.test_top1 when already computed.
    """
    summary = summarize(df) if summary is None else summary
    metric = summary["metric"].iloc[0] if len(summary) else "metrics.test_top1"
    if "method" in summary and not every:
        summary = summary[summary["method"].isin(cited_methods(citations))]
    done = completed_runs(df)
    rows, sign, times = [], 1 if lower_is_better(metric) else -1, scale(metric)
    for variant, mean in sorted(zip(summary["variant"], summary["mean"]), key=lambda item: sign * item[1]):
        trainable = (
            done.loc[done["variant"] == variant, "params.trainable"].mean() if "params.trainable" in done else None
        )
        rows.append(
            {
                "method": str(variant),
                "trainable": format_count(trainable) if trainable else "--",
                "value": f"{times * mean:.1f}",
                "mean": float(mean),
            }
        )
    return rows


def order_line(rows: list[dict], lower: bool, step: float) -> str:
    """``study_rows`` best first, "A (68.4) > B (66.1)", a perplexity's "A (12.1) < B (15.3)", "=" between
    means that tie (less than one test example apart, ``step``: stats.ties)."""
    line = f"{rows[0]['method']} ({rows[0]['value']})"
    for before, row in zip(rows, rows[1:]):
        sign = "=" if tied(before["mean"], row["mean"], step) else "<" if lower else ">"
        line += f" {sign} {row['method']} ({row['value']})"
    return line


def literature_section(
    df, path: str | Path = LITERATURE, metric: str = "metrics.test_top1", modality: str | None = None
) -> list[str]:
    """report.md's section: the published numbers of the methods this study ran beside this study's (``metric``:
    test top-1, or a study of causal LMs' test perplexity), the order of the methods, and how many rows of the
    file are of other methods; with ``modality`` ("vision", "text" or "causal-lm"), of the rows of that modality
    measured on the study's datasets (study_citations) only, as the paper's literature table lists them, and
    nothing where there are none."""
    lines = ["## Published numbers beside this study", ""]
    try:
        citations = load_literature(path)
    except UserError as err:
        return lines + [f"Skipped: {err}", ""]
    if modality is not None:
        names = completed_runs(df).get("config.data.name")
        citations = study_citations(citations, modality, set() if names is None else set(names.dropna().map(str)))
        if not citations:
            return []
    if completed_runs(df).empty:
        return lines + ["No run completed: nothing to put beside the published numbers.", ""]
    ran, where = study_methods(df), _shown_path(path)
    shown = [c for c in citations if c.peftlab in ran]
    ours = study_rows(df, shown, summarize(df, metric))
    lower = lower_is_better(metric)
    if shown:
        lines += [
            f"Cited rows of the methods this study ran, from {where} (each with its paper, table and the source it "
            "was checked against). Their settings (model and dataset in each row) are far larger than this study's, "
            "so only the order of methods is compared, never a number.",
            "",
            literature_markdown(shown, ours, f"this study; {measured_words(metric)}, mean over seeds"),
        ]
    else:
        lines += [f"No row of {where} is of a method this study ran ({', '.join(sorted(ran))}).", ""]
    for setting in dict.fromkeys(c.setting for c in shown):
        rows = ranked_citations(citations, setting, ran)
        if len(rows) > 1:
            order = " > ".join(f"{c.method} ({c.value})" for c in rows)
            lines.append(f"- {rows[0].paper}, {rows[0].dataset}: {order}")
    if ours:
        which = " (test perplexity, lower is better)" if lower else ""
        lines.append(f"- this study{which}: " + order_line(ours, lower, resolution(completed_runs(df), metric)))
    else:
        lines.append("- this study: none of its methods (" + ", ".join(sorted(ran)) + ") is named by a cited row")
    others, unnamed = len(citations) - len(shown), sum(c.peftlab is None for c in citations)
    return lines + [
        f"- not shown: {others} further row{'s' * (others != 1)} of {where} ({others - unnamed} of methods this "
        f"study did not run, {unnamed} naming no peftlab method)"
        + ("" if modality is None else " measured on this study's datasets")
        + "; `peftlab paper`'s literature table lists every row",
        "",
    ]


def _shown_path(path: str | Path) -> str:
    """The literature file as the report names it: relative to the repository when it is there."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def measured_words(metric: str) -> str:
    """This study's score in the table: "test top-1 (%)", or a study of causal LMs' "test perplexity (lower is
    better)"."""
    return "test perplexity (lower is better)" if lower_is_better(metric) else "test top-1 (%)"


def cited_name(c: Citation) -> str:
    """The method as the source names it, with the peftlab method it corresponds to."""
    return f"{c.method} ({c.peftlab})" if c.peftlab else c.method


def literature_table(
    citations: list[Citation], ours: list[dict], ours_setting: str, label: str = "tab:literature"
) -> str:
    """The booktabs table: one block per cited setting, then this study's block. A longtable (the
    paper sets it small): as configs/literature.yaml grows it breaks across pages, where a float would not fit.

    ours: rows {"method": name, "trainable": text, "value": text} in the table's order;
    ours_setting: one line saying model, dataset and metric of this study.
    """
    lines = [
        r"\begin{longtable}{@{}p{0.74\linewidth}rr@{}}",
        r"\caption{Published numbers (cited, upper blocks) beside this study's measurements (last block). "
        r"The published settings use far larger models and datasets than this study, so no number is "
        r"comparable across blocks; only the order of the methods within a block is.}",
        rf"\label{{{label}}} \\",
        r"\toprule",
        r"Method & Trainable & Value \\",
        r"\endfirsthead",
        r"\multicolumn{3}{@{}l@{}}{\emph{Table~\ref*{" + label + r"} (continued)}} \\",
        r"\toprule",
        r"Method & Trainable & Value \\",
        r"\endhead",
        r"\bottomrule",
        r"\endlastfoot",
    ]
    for setting in dict.fromkeys(c.setting for c in citations):
        rows = [c for c in citations if c.setting == setting]
        first = rows[0]
        lines += [
            r"\midrule",
            rf"\multicolumn{{3}}{{@{{}}p{{\linewidth}}@{{}}}}{{\emph{{Cited}} \citep{{{first.paper}}}, "
            rf"{latex_escape(first.table)}. {latex_escape(first.model)}; {latex_escape(first.dataset)}; "
            rf"{latex_escape(first.metric)}}} \\",
        ]
        for c in rows:
            lines.append(rf"{latex_escape(cited_name(c))} & {latex_escape(c.trainable or '--')} & {c.value} \\")
    lines += [
        r"\midrule",
        rf"\multicolumn{{3}}{{@{{}}p{{\linewidth}}@{{}}}}{{\emph{{This study (measured)}}. {ours_setting}}} \\",
    ]
    for row in ours:
        lines.append(rf"{latex_escape(row['method'])} & {latex_escape(row['trainable'])} & {row['value']} \\")
    if not ours:
        lines.append(r"\multicolumn{3}{@{}l@{}}{No configuration of this study completed.} \\")
    lines += [r"\end{longtable}"]
    return "\n".join(lines) + "\n"


def literature_markdown(citations: list[Citation], ours: list[dict], ours_setting: str) -> str:
    """The same table for report.md: cited rows with their source, then this study's rows."""
    lines = ["| source | setting | method | trainable | value |", "|---|---|---|---:|---:|"]
    for c in citations:
        lines.append(
            f"| cited: {c.paper}, {c.table} | {c.model}; {c.dataset}; {c.metric} | {cited_name(c)} | "
            f"{c.trainable or '–'} | {c.value} |"
        )
    for row in ours:
        lines.append(
            f"| this study (measured) | {ours_setting} | {row['method']} | {row['trainable']} | {row['value']} |"
        )
    return "\n".join(lines) + "\n"
