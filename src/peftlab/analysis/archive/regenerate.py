"""The paper's numbers of a received archive regenerated from its packed runs (``results/runs/``) with the same
analysis code that wrote them, and compared with what the archive holds: results.csv, results.parquet, the
paper's tables and results.tex's macros. An edit anywhere is then named even where every hash was recomputed
(runs.sha256, ``\\resultsSha``, archive.json, SHA256SUMS): an edited result.json makes the table, the CSV and the
macros it feeds differ from the archived ones; an edited number of the paper's table differs from the one the runs
give. Reads files only (pandas, no torch).

What a paper draws from files an archive does not pack (each run's curves, the tuning searches, the phases' times
and the commands) is not regenerated: each macro's source is declared where the paper makes it
(``paper.macro_text``), and the macros of the sources the archive packs (``PACKED_SOURCES``) are compared; the
others, and the tables ``NOT_FROM_RUNS_TABLES`` names, the SHA256SUMS check alone covers.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.analysis.paper.macro_text import LITERATURE, RUNS, source_of

# tables made from files other than the packed runs (curves, tune/, the study header): not regenerated from an archive
NOT_FROM_RUNS_TABLES = ("protocol.tex", "tuning.tex", "tuning_document.tex")
PACKED_SOURCES = (RUNS, LITERATURE)  # the macros' sources an archive packs (results/runs, configs/literature.yaml)
MACRO = re.compile(r"^\\newcommand\{\\([A-Za-z]+)\}")
SHOWN = 3  # differing cells or macros named per file


@dataclass
class Regenerated:
    differ: list[str] = field(default_factory=list)  # a line per file whose numbers are not the runs'
    compared: dict[str, str] = field(default_factory=dict)  # archive file -> what was compared ("12 macros", ...)
    skipped: list[str] = field(default_factory=list)  # what could not be regenerated, and why


def study_folder(root: Path, record: dict, into: Path) -> Path:
    """A study folder made of the archive's packed runs (``runs/<run>/``: spec.json and result.json as packed)
    and its study file (the report options: labels, the datasets' names), named as the study was."""
    name = str(record.get("name") or "study")
    folder = into / (name if re.fullmatch(r"[\w.-]+", name) and name not in (".", "..") else "study")
    for run in sorted((root / "results" / "runs").iterdir()):
        if run.is_dir() and not run.is_symlink():
            (folder / "runs" / run.name).mkdir(parents=True)
            for file in ("spec.json", "result.json"):
                if (run / file).is_file() and not (run / file).is_symlink():
                    shutil.copyfile(run / file, folder / "runs" / run.name / file)
    study = root / record["study"]
    if study.is_file() and not study.is_symlink():
        shutil.copyfile(study, folder / "study.yaml")
    return folder


def compare_tables(root: Path, study_dir: Path, out: Regenerated) -> None:
    """results.csv and results.parquet against the table ``peftlab submission`` writes from the runs."""
    import pandas as pd

    from peftlab.analysis.results.load import load_results, typed_frame
    from peftlab.analysis.results.portable import portable_frame

    table = portable_frame(load_results(study_dir), study_dir)
    made = pd.read_csv(io.StringIO(table.to_csv(index=False)))  # as the archived CSV reads back
    for name, read in (("results.csv", pd.read_csv), ("results.parquet", pd.read_parquet)):
        path = root / "results" / name
        if not path.is_file() or path.is_symlink():
            out.differ.append(f"results/{name} is missing: the paper's numbers cannot be compared with the runs")
            continue
        try:
            archived = read(path)
        except Exception as err:  # a damaged file: pandas and pyarrow raise many kinds
            out.differ.append(f"results/{name} is unreadable ({type(err).__name__}): not the table of the runs")
            continue
        ours = made if name == "results.csv" else typed_frame(table)  # as submission writes the parquet
        cells = frame_differences(archived, ours)
        out.compared[f"results/{name}"] = f"{len(ours)} rows x {len(ours.columns)} columns"
        if cells:
            out.differ.append(
                f"results/{name} is not the table of results/runs: "
                + "; ".join(cells[:SHOWN])
                + (f"; and {len(cells) - SHOWN} more" if len(cells) > SHOWN else "")
            )


def frame_differences(archived, made) -> list[str]:
    """A phrase per cell (row by run_id, column) where ``archived`` is not ``made``, or per column or row only
    one of them has."""
    import pandas as pd

    out = []
    if list(archived.columns) != list(made.columns):
        extra = [c for c in archived.columns if c not in made.columns]
        lacking = [c for c in made.columns if c not in archived.columns]
        out += [f"column {c} not from the runs" for c in extra] + [f"column {c} missing" for c in lacking]
    key = "run_id" if "run_id" in archived.columns and "run_id" in made.columns else None
    a = archived.set_index(key, drop=False) if key else archived
    m = made.set_index(key, drop=False) if key else made
    for row in [r for r in a.index if r not in m.index]:
        out.append(f"run {row} not among the runs")
    for row in [r for r in m.index if r not in a.index]:
        out.append(f"run {row} missing")
    for row in [r for r in a.index if r in m.index]:
        for column in [c for c in a.columns if c in m.columns]:
            old, new = a.at[row, column], m.at[row, column]
            if isinstance(old, pd.Series) or isinstance(new, pd.Series):  # a run_id twice
                out.append(f"run {row} listed twice")
                break
            if not same_cell(old, new):
                out.append(f"run {row} {column} {short(old)} (the runs give {short(new)})")
    return out


def same_cell(old, new) -> bool:
    """Equal cells: both missing, equal numbers (bit for bit: a CSV of ``repr`` floats reads back exactly), or the
    same text."""
    import numbers

    import pandas as pd

    if pd.api.types.is_scalar(old) and pd.isna(old):
        return pd.api.types.is_scalar(new) and bool(pd.isna(new))
    if isinstance(old, numbers.Number) and isinstance(new, numbers.Number) and not isinstance(old, bool):
        return bool(old == new)
    return str(old) == str(new)


def short(value) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def paper_outputs(root: Path, study_dir: Path, record: dict, into: Path) -> tuple[dict[str, str], str]:
    """(results.tex's lines by macro name, the tables' folder) as ``peftlab paper`` writes them from the runs
    (its own steps: the study, its baseline, the literature it cites, the tables and the macros)."""
    from peftlab.analysis.paper.build import REFERENCES, dataset_bibtex
    from peftlab.analysis.paper.macros import Numbers, define_numbers
    from peftlab.analysis.paper.methods import plugin_bibtex
    from peftlab.analysis.paper.study import Study
    from peftlab.analysis.paper.tables import write_tables
    from peftlab.analysis.report.build import choose_baseline
    from peftlab.analysis.report.literature import bib_keys, load_literature, study_citations
    from peftlab.analysis.results.load import load_results

    df = load_results(study_dir)
    archived = macro_lines(root / "paper" / "results.tex")
    baseline = archived_baseline(df, archived, study_dir) or choose_baseline(df)
    study = Study(study_dir, df, baseline, base_folder=root / "base")  # the archive's base, not the receiver's
    bib = REFERENCES.read_text()
    bib += plugin_bibtex(df, bib)  # as write_paper builds it: the plugins' papers, then the study's datasets'
    literature = root / "configs" / "literature.yaml"  # the file the paper cited from, packed
    citations = load_literature(literature, bib_keys(bib)) if literature.is_file() else []
    bib += dataset_bibtex(study.datasets, bib)
    citations = study_citations(citations, study.modality, {str(n) for n in study.config("data.name")})
    numbers = Numbers()
    define_numbers(numbers, study, citations)
    write_tables(study, citations, into)
    lines = {}
    for line in numbers.tex().splitlines():
        found = MACRO.match(line)
        if found:
            lines[found.group(1)] = line
    return lines, str(into)


def macro_lines(path: Path) -> dict[str, str]:
    """results.tex's lines by macro name (``\\newcommand{\\name}...``)."""
    text = path.read_text(errors="replace") if path.is_file() and not path.is_symlink() else ""
    return {found.group(1): line for line in text.splitlines() if (found := MACRO.match(line))}


def archived_baseline(df, archived: dict[str, str], study_dir: Path) -> str | None:
    """The configuration the archived paper compared with (its ``\\baselineName``), where it names one of the
    runs' configurations: a paper made with ``--baseline`` is regenerated with the same one."""
    from peftlab.analysis.paper.study import Study
    from peftlab.analysis.report.build import choose_baseline

    line = archived.get("baselineName")
    first = choose_baseline(df)
    if line is None or first is None:
        return None
    study = Study(study_dir, df, first)
    for variant in study.variants:
        if line.startswith(f"\\newcommand{{\\baselineName}}{{{study.name(variant)}}}"):
            return variant
    return None


def compare_paper(root: Path, study_dir: Path, record: dict, into: Path, out: Regenerated) -> None:
    """results.tex's macros and the paper's tables against those the runs give."""
    if not (root / "paper" / "results.tex").is_file():
        out.differ.append("paper/results.tex is missing: the paper's numbers cannot be compared with the runs")
        return
    made, tables = paper_outputs(root, study_dir, record, into)
    archived = macro_lines(root / "paper" / "results.tex")
    kept = [name for name in made if source_of(name) in PACKED_SOURCES]
    wrong = [name for name in kept if archived.get(name) != made[name]]
    extra = [name for name in archived if name not in made and source_of(name) in PACKED_SOURCES]
    out.compared["paper/results.tex"] = f"{len(kept)} macros"
    skipped = sorted({name for name in [*made, *archived] if source_of(name) not in PACKED_SOURCES})
    if skipped:
        out.skipped.append(f"paper/results.tex: {', '.join(skipped)} (from files the archive does not pack)")
    if wrong or extra:
        said = [
            f"\\{name} {macro_value(archived.get(name))} (the runs give {macro_value(made[name])})" for name in wrong
        ]
        said += [f"\\{name} not from the runs" for name in extra]
        out.differ.append(
            "paper/results.tex is not what the runs give: "
            + "; ".join(said[:SHOWN])
            + (f"; and {len(said) - SHOWN} more" if len(said) > SHOWN else "")
        )
    for path in sorted(Path(tables).glob("*.tex")):
        if path.name in NOT_FROM_RUNS_TABLES:
            out.skipped.append(f"paper/tables/{path.name} (from files the archive does not pack)")
            continue
        shown = f"paper/tables/{path.name}"
        archived_table = root / "paper" / "tables" / path.name
        if not archived_table.is_file() or archived_table.is_symlink():
            out.differ.append(f"{shown} is missing, though the runs give it")
            continue
        out.compared[shown] = "its text"
        old, new = archived_table.read_text(errors="replace"), path.read_text()
        if old != new:
            out.differ.append(f"{shown} is not what the runs give: {first_difference(old, new)}")
    for path in sorted((root / "paper" / "tables").glob("*.tex")):
        if path.name not in NOT_FROM_RUNS_TABLES and not (Path(tables) / path.name).exists():
            out.differ.append(f"paper/tables/{path.name} is not among the tables the runs give")


def macro_value(line: str | None) -> str:
    if line is None:
        return "(missing)"
    body = line.split("}{", 1)[1] if "}{" in line else line
    return short(body.split("}  % ", 1)[0])


def first_difference(old: str, new: str) -> str:
    """The first line where a table differs, as 'line N: <archived> (the runs give <regenerated>)'."""
    a, b = old.splitlines(), new.splitlines()
    for n, (x, y) in enumerate(zip(a, b), 1):
        if x != y:
            cells = [(p, q) for p, q in zip(x.split("&"), y.split("&")) if p != q]
            if cells and len(x.split("&")) == len(y.split("&")):
                p, q = cells[0]
                return f"line {n}: {p.strip()!r} (the runs give {q.strip()!r})"
            return f"line {n}: {short(x.strip())!r} (the runs give {short(y.strip())!r})"
    return f"{len(a)} lines (the runs give {len(b)})"


def regenerate(root: Path, record: dict) -> Regenerated:
    """The paper's numbers regenerated from results/runs/ and compared (see the module's docstring)."""
    out = Regenerated()
    with tempfile.TemporaryDirectory(prefix="peftlab-regenerate-") as tmp:
        study_dir = study_folder(root, record, Path(tmp))
        compare_tables(root, study_dir, out)
        try:
            compare_paper(root, study_dir, record, Path(tmp) / "tables", out)
        except Exception as err:  # the paper's code refusing these runs is a difference, named, not a traceback
            from peftlab.utils.files import one_line

            out.differ.append(f"the paper's numbers could not be regenerated from results/runs ({one_line(err)})")
    return out
