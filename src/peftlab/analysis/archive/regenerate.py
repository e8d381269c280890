"""The paper of a received archive made again from its packed runs (``results/runs/``) with the same analysis code
that wrote it, and compared with what the archive holds: results.csv, results.parquet, results.tex's macros, every
table (the protocol card too), references.bib, main.tex whole and, where this machine's drawing packages are
environment.lock's, every figure byte for byte. An edit anywhere is then named even where every hash was
recomputed (runs.sha256, ``\\resultsSha``, archive.json, SHA256SUMS): an edited result.json makes the table, the CSV
and the macros it feeds differ from the archived ones; an edited number, sentence or BibTeX entry differs from the
one the runs give. Reads files only (pandas and matplotlib, no torch).

What a paper draws from files an archive does not pack (each run's curves, the tuning searches, the phases' times
and the commands) is not made again: each macro's source is declared where the paper makes it
(``paper.macro_text``), and the macros of the sources the archive packs (``PACKED_SOURCES``) are compared; the
others, main.pdf, the tables ``NOT_FROM_RUNS_TABLES`` and the figures ``NOT_FROM_RUNS_FIGURES`` name are named as
not checked (``not_regenerable``): the verdict says so, beside what was compared.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.analysis.archive.pack import PDF_NOT_PACKED
from peftlab.analysis.archive.received import lock_versions
from peftlab.analysis.paper.latex import compare_compiled
from peftlab.analysis.paper.macro_text import LITERATURE, RUNS, TUNING, source_of
from peftlab.analysis.results.load import OPTIONAL_FILES, RESULT_FILES
from peftlab.utils.files import one_line, read_regular_file

# tables and figures made from files other than the packed runs (tune/, each run's curves): not regenerated
NOT_FROM_RUNS_TABLES = ("tuning.tex", "tuning_document.tex")
NOT_FROM_RUNS_FIGURES = {"convergence": "each run's metrics.jsonl", "tuning": "tune/"}
# the figures in the order ``paper.figures.draw_figures`` draws them (main.tex places them so)
DRAW_ORDER = (
    "accuracy_vs_params",
    "seed_boxplots",
    "convergence",
    "cost",
    "quantization_tradeoff",
    "ablation",
    "tuning",
)
# what draws a figure's bytes beside peftlab's code: the figures are compared where these are environment.lock's
FIGURE_VERSIONS = ("matplotlib", "pillow", "numpy", "pandas", "scipy")
PACKED_SOURCES = (RUNS, LITERATURE)  # the macros' sources an archive packs (results/runs, configs/literature.yaml)
MACRO = re.compile(r"^\\newcommand\{\\([A-Za-z]+)\}")
SHOWN = 3  # differing cells or macros named per file
PDF_UNCHECKED = "its text is compared with a compile of the packed sources where LaTeX and pdftotext are installed"


@dataclass
class Regenerated:
    differ: list[str] = field(default_factory=list)  # a line per file whose numbers are not the runs'
    compared: dict[str, str] = field(default_factory=dict)  # archive file -> what was compared ("12 macros", ...)
    skipped: list[str] = field(default_factory=list)  # what could not be regenerated, and why


def study_folder(root: Path, record: dict, into: Path) -> Path:
    """A study folder made of the archive's packed runs (``runs/<run>/``: spec.json, result.json and generations.jsonl
    as packed) and its study file (the report options: labels, the datasets' names), named as the study was."""
    name = str(record.get("name") or "study")
    folder = into / (name if re.fullmatch(r"[\w.-]+", name) and name not in (".", "..") else "study")
    for run in sorted((root / "results" / "runs").iterdir()):
        if run.is_dir() and not run.is_symlink():
            (folder / "runs" / run.name).mkdir(parents=True)
            for file in RESULT_FILES + OPTIONAL_FILES:
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


@dataclass
class Paper:
    """What ``peftlab paper`` writes from the packed runs (``paper_outputs``), in a folder of the check's own."""

    macros: dict[str, str]  # results.tex's lines by macro name
    folder: Path  # tables/ and figures/ as the paper writes them
    drawn: list[str] | None  # the figures drawn from the runs (None: not drawn, the archive differs already)
    bib: str  # references.bib
    main: str | None  # main.tex, where the archive holds what it is made from
    main_error: str = ""  # why main.tex could not be made (a macro it names that results.tex lacks)


def paper_outputs(root: Path, study_dir: Path, into: Path, draw: bool = True) -> Paper:
    """The paper's files as ``peftlab paper`` writes them from the runs (its own steps: the study, its baseline, the
    literature it cites, the tables, the figures, the macros, references.bib and main.tex). main.tex is made with
    the archived values of the macros the archive cannot remake (``PACKED_SOURCES``: it names them, and says what
    they are only where they are defined), except for a tuned study: it tells of the searches, which are not packed.
    Without ``draw`` (the archive differs already) no figure is drawn: main.tex places the archive's own."""
    from peftlab.analysis.paper.build import REFERENCES, dataset_bibtex, main_tex
    from peftlab.analysis.paper.figures import draw_figures
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
    write_tables(study, citations, into / "tables")
    drawn = draw_figures(study, into / "figures") if draw else None
    lines = {found.group(1): line for line in numbers.tex().splitlines() if (found := MACRO.match(line))}
    paper = Paper(lines, into, drawn, bib, None)
    if any(source_of(name) == TUNING for name in archived):  # it tells of the searches: named (not_regenerable)
        return paper
    numbers.macros = {name: value for name, value in numbers.macros.items() if source_of(name) in PACKED_SOURCES}
    numbers.macros |= {
        name: (macro_text(line), "") for name, line in archived.items() if source_of(name) not in PACKED_SOURCES
    }
    figures, archived_figures = into / "figures", root / "paper" / "figures"
    if drawn is None:  # the archive's figures, as they lie
        shown, figures = [path.stem for path in archived_figures.glob("*.pdf")], archived_figures
    else:  # and those drawn from files not packed, placed as the archive holds them
        shown = drawn + [
            n for n in NOT_FROM_RUNS_FIGURES if (archived_figures / f"{n}.pdf").is_file() and n not in drawn
        ]
        for name in set(shown) - set(drawn):
            figures.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archived_figures / f"{name}.pdf", figures / f"{name}.pdf")
    shown.sort(key=lambda n: next((i for i, start in enumerate(DRAW_ORDER) if n.startswith(start)), len(DRAW_ORDER)))
    try:
        paper.main = main_tex(study, citations, numbers, shown, figures)
    except KeyError as err:  # Numbers.ref: a macro main.tex names, of a source not packed, that results.tex lacks
        paper.main_error = f"paper/main.tex cannot be made again: {err.args[0] if err.args else err}"
    return paper


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


def compare_paper(root: Path, study_dir: Path, into: Path, out: Regenerated, draw: bool = True) -> None:
    """results.tex's macros, the tables, references.bib, main.tex and (``draw``) the figures against those the runs
    give."""
    if not (root / "paper" / "results.tex").is_file():
        out.differ.append("paper/results.tex is missing: the paper's numbers cannot be compared with the runs")
        return
    paper = paper_outputs(root, study_dir, into, draw)
    made, archived = paper.macros, macro_lines(root / "paper" / "results.tex")
    kept = [name for name in made if source_of(name) in PACKED_SOURCES]
    wrong = [name for name in kept if archived.get(name) != made[name]]
    extra = [name for name in archived if name not in made and source_of(name) in PACKED_SOURCES]
    out.compared["paper/results.tex"] = f"{len(kept)} macros"
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
    tables = paper.folder / "tables"
    for path in sorted(tables.glob("*.tex")):
        if path.name not in NOT_FROM_RUNS_TABLES:
            compare_text(root, f"paper/tables/{path.name}", path.read_text(), out)
    for path in sorted((root / "paper" / "tables").glob("*.tex")):
        if path.name not in NOT_FROM_RUNS_TABLES and not (tables / path.name).exists():
            out.differ.append(f"paper/tables/{path.name} is not among the tables the runs give")
    compare_text(root, "paper/references.bib", paper.bib, out)
    if paper.main is not None:
        compare_text(root, "paper/main.tex", paper.main, out)
    elif paper.main_error:
        out.differ.append(paper.main_error)
    compare_figures(root, paper, out)


def compare_text(root: Path, name: str, made: str, out: Regenerated) -> None:
    """The archive's file ``name`` against the text the runs give (``made``): its first differing line named."""
    path = root / name
    if not path.is_file() or path.is_symlink():
        out.differ.append(f"{name} is missing, though the runs give it")
        return
    out.compared[name] = "its text"
    raw = read_regular_file(path, 4 * len(made.encode()) + 4096) or b""  # a text far longer than the runs' is cut
    archived = raw.decode("utf-8", errors="replace")
    if not same_text(archived, made):
        out.differ.append(f"{name} is not what the runs give: {first_difference(archived, made)}")


def same_text(archived: str, made: str) -> bool:
    """Whether ``archived`` is ``made``, line for line, where a path the packed runs hold as ``OUTSIDE/<name>``
    (``results.portable``: a folder of the machine of the runs) may be any one folder's ``<name>`` in the archived
    text (the protocol card names a split as ``pets/train``: the runs' folder, which the archive does not keep)."""
    if archived == made:
        return True
    old, new = archived.splitlines(), made.splitlines()
    return len(old) == len(new) and all(same_line(x, y) for x, y in zip(old, new))


def same_line(x: str, y: str) -> bool:
    return x == y or ("OUTSIDE/" in y and bool(re.fullmatch(re.escape(y).replace("OUTSIDE/", r"[^\s/&\\{}]+/"), x)))


def figure_versions(root: Path) -> list[str]:
    """A phrase per package that draws a figure's bytes (``FIGURE_VERSIONS``) whose version here is not
    environment.lock's (the machine that drew the archive's figures): other versions may draw other bytes."""
    import importlib.metadata

    packed, here = lock_versions(root), {}
    for name in FIGURE_VERSIONS:
        try:
            here[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            here[name] = None
    return [
        f"{name} {here.get(name) or 'absent'} here, {packed.get(name) or 'none'} in environment.lock"
        for name in FIGURE_VERSIONS
        if here.get(name) != packed.get(name)
    ]


def compare_figures(root: Path, paper: Paper, out: Regenerated) -> None:
    """Each figure the runs draw against the archive's, byte for byte, where this machine's drawing packages are
    of environment.lock's versions; else they are named as not checked, with the versions that differ."""
    if paper.drawn is None:
        out.skipped.append("paper/figures/ (not drawn again: the checks found that the archive differs already)")
        return
    folder, drawn = root / "paper" / "figures", paper.folder / "figures"
    names = [f"{name}{suffix}" for name in paper.drawn for suffix in (".pdf", ".png")]
    for name in names:
        if not (folder / name).is_file() or (folder / name).is_symlink():
            out.differ.append(f"paper/figures/{name} is missing, though the runs draw it")
    kept = {f"{name}{suffix}" for name in NOT_FROM_RUNS_FIGURES for suffix in (".pdf", ".png")}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name not in names and path.name not in kept:
            out.differ.append(f"paper/figures/{path.name} is not among the figures the runs draw")
    archived = [path.name for path in sorted(folder.glob("*.p[dn][fg]")) if path.name in names]
    if not archived:
        return
    moved = figure_versions(root)
    if moved:
        out.skipped.append(f"paper/figures/ ({len(archived)} files: {'; '.join(moved)}, which may draw other bytes)")
        return
    out.compared["paper/figures/"] = f"{len(archived)} files, byte for byte"
    for name in archived:
        old, new = (folder / name).read_bytes(), (drawn / name).read_bytes()
        if old != new:
            at = next((n for n, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
            out.differ.append(
                f"paper/figures/{name} is not what the runs draw: byte {at:,} differs ({len(old):,} bytes, the runs "
                f"draw {len(new):,})"
            )


def not_regenerable(root: Path, record: dict | None = None) -> list[str]:
    """What of the archive's paper nothing in the archive makes again, each with why (a line of the verdict's "not
    checked", of reproduce.json and of REPRODUCE.md): main.pdf (or that it is not packed: archive.json's
    ``paper_pdf``), the macros of results.tex whose source is not packed, the tuning table, figures drawn from unpacked
    files, and main.tex where it tells of the tuning searches."""
    paper = root / "paper"
    out = [f"paper/main.pdf ({PDF_UNCHECKED})"]
    if not (paper / "main.pdf").is_file():
        said = (record or {}).get("paper_pdf") == PDF_NOT_PACKED  # archive.json's words, never its text
        out = [f"paper/main.pdf ({PDF_NOT_PACKED if said else 'not packed'}; peftlab paper compiles it with LaTeX)"]
    macros = [name for name in macro_lines(paper / "results.tex") if source_of(name) not in PACKED_SOURCES]
    if macros:
        named = ", ".join(f"\\{name}" for name in macros)
        out.append(
            f"{len(macros)} macros of paper/results.tex ({named}: from phases.jsonl, commands.jsonl, tune/, the "
            "study folder or the base's manifest, which the archive does not pack)"
        )
    out += [f"paper/tables/{name} (from tune/)" for name in NOT_FROM_RUNS_TABLES if (paper / "tables" / name).is_file()]
    for name, source in NOT_FROM_RUNS_FIGURES.items():
        out += [
            f"paper/figures/{name}{suffix} (from {source})"
            for suffix in (".pdf", ".png")
            if (paper / "figures" / f"{name}{suffix}").is_file()
        ]
    if any(source_of(name) == TUNING for name in macros):
        out.append("paper/main.tex (it tells of the tuning searches, tune/, which the archive does not pack)")
    return out


def macro_value(line: str | None) -> str:
    return "(missing)" if line is None else short(macro_text(line))


def macro_text(line: str) -> str:
    """The text a results.tex line gives its macro (``Numbers.tex``'s ``\\newcommand{\\name}{text}  % source``)."""
    body = line.split("}{", 1)[1] if "}{" in line else line
    return body.rpartition("}  % ")[0] if "}  % " in body else body.removesuffix("}")


def first_difference(old: str, new: str) -> str:
    """The first line where a text differs (``same_line``), as 'line N: <archived> (the runs give <regenerated>)':
    a table's first differing cell, else the stretch of the line around its first differing character."""
    a, b = old.splitlines(), new.splitlines()
    for n, (x, y) in enumerate(zip(a, b), 1):
        if not same_line(x, y):
            cells = [(p, q) for p, q in zip(x.split("&"), y.split("&")) if p != q]
            if len(cells) and len(x.split("&")) == len(y.split("&")) > 1:
                x, y = cells[0][0].strip(), cells[0][1].strip()
            at = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
            return f"line {n}: {stretch(x, at)!r} (the runs give {stretch(y, at)!r})"
    n = min(len(a), len(b))
    if len(a) > n:  # the first line of what the archive adds that holds something
        k = next((k for k in range(n, len(a)) if a[k].strip()), n)
        return f"line {k + 1}: {stretch(a[k], 0)!r} (the runs give {n} lines)"
    return f"{len(a)} lines (the runs give {len(b)}: line {n + 1} {stretch(b[n], 0)!r})" if len(b) > n else "its bytes"


def stretch(text: str, at: int, width: int = 24) -> str:
    """``text`` around its character ``at``, "..." where it is cut."""
    start = max(0, at - width)
    return ("..." if start else "") + text[start : at + width] + ("..." if at + width < len(text) else "")


def regenerate(root: Path, record: dict, draw: bool = True) -> Regenerated:
    """The paper made again from results/runs/ and compared (see the module's docstring); without ``draw`` (the
    checks found differences already: the verdict is no) the figures are not drawn, which costs most, and are named
    as not checked."""
    out = Regenerated(skipped=not_regenerable(root, record))
    with tempfile.TemporaryDirectory(prefix="peftlab-regenerate-") as tmp:
        study_dir = study_folder(root, record, Path(tmp) / "runs")
        compare_tables(root, study_dir, out)
        try:
            compare_paper(root, study_dir, Path(tmp) / "paper", out, draw)
        except Exception as err:  # the paper's code refusing these runs is a difference, named, not a traceback
            out.differ.append(f"the paper's numbers could not be regenerated from results/runs ({one_line(err)})")
    if draw and not out.differ and (root / "paper" / "main.pdf").is_file():
        compare_pdf(root, out)
    return out


def compare_pdf(root: Path, out: Regenerated) -> None:
    """main.pdf against what the packed sources (compared above) compile to here (``latex.compare_compiled``)."""
    state, said = compare_compiled(root / "paper")
    out.skipped = [line for line in out.skipped if not line.startswith("paper/main.pdf (")]
    if state == "differs":
        out.differ.append(f"paper/main.pdf is not what its packed sources compile to: {said}")
    elif state == "same":
        out.compared["paper/main.pdf"] = said
    else:
        out.skipped.insert(0, f"paper/main.pdf ({said})")
