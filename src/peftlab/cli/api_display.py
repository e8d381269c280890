"""What a notebook shows of a study: ``peftlab.run_study``'s answer, a ``StudyResult`` (the Python API's, beside
cli/api_results.py): its runs completed, failed, diverged and pending, each failure with its error, and report.md's
main table read from the study folder (each configuration's trainable parameters, runs and mean test scores with their
intervals, in the report's order and labels), as plain text (``repr``) and as HTML (``_repr_html_``) through
utils/files.py's one HTML escaper. The table is read when shown, from the run files (pandas and matplotlib, never
torch): the call has returned its answer whatever the files hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peftlab.study.runner import StudySummary
from peftlab.utils.errors import UserError
from peftlab.utils.files import html_view, plain_view

SHOWN_ERRORS = 5  # failed, diverged or pending runs named with their error; the rest counted


@dataclass
class StudyResult(StudySummary):
    """``run_study``'s answer: the ``StudySummary`` of the call (``ok``, ``completed``, ``failed`` with their errors,
    ``diverged``, ``pending``, ``skipped``: finished before it) and the study's name and folder, which its display
    reads the main table from."""

    name: str = ""
    study_dir: Path | None = None

    @classmethod
    def of(cls, summary: StudySummary, name: str, study_dir: Path) -> StudyResult:
        return cls(**vars(summary), name=name, study_dir=Path(study_dir))

    def facts(self) -> list[tuple[str, str]]:
        """The counts of the study's runs, then each failed, diverged and pending run with its error (the first
        ``SHOWN_ERRORS`` of each kind)."""
        facts = [
            (
                "runs",
                f"{len(self.completed)} of {self.total} completed, {len(self.failed)} failed, {len(self.diverged)} "
                f"diverged, {len(self.pending)} pending ({self.skipped} finished before this call)",
            )
        ]
        kinds = (
            ("failed", [f"{label}: {error}" for label, error in self.failed]),
            ("diverged", self.diverged),
            ("pending", [f"{label}: {why}" for label, why in self.pending]),
        )
        for kind, lines in kinds:
            facts += [(kind, line) for line in lines[:SHOWN_ERRORS]]
            if len(lines) > SHOWN_ERRORS:
                facts.append((kind, f"and {len(lines) - SHOWN_ERRORS} more (.{kind})"))
        return facts

    def main_table(self) -> tuple[list[tuple[str, str]], tuple[list[str], list[list[str]]] | None]:
        """(facts, table): report.md's main table of the study folder as rows of text, with a fact naming its
        intervals; no table where no run completed, and a fact saying why where the folder cannot be read."""
        try:
            return main_table(self.study_dir)
        except UserError as err:  # a damaged or linked study file: the display says so, the call has returned
            return [("main table", f"left out: {err}")], None

    def __repr__(self) -> str:
        facts, table = self.main_table()
        return plain_view(f"study {self.name}: {self.study_dir}", self.facts() + facts, table)

    def _repr_html_(self) -> str:
        facts, table = self.main_table()
        return html_view(f"study {self.name}: {self.study_dir}", self.facts() + facts, table)


def main_table(study_dir: Path) -> tuple[list[tuple[str, str]], tuple[list[str], list[list[str]]] | None]:
    """``StudyResult.main_table`` of ``study_dir``: report.md's main table (``tables.table_content`` of the
    configurations' summaries, without the comparisons), its cells "mean [low, high]" as the report prints them."""
    import pandas as pd

    from peftlab.analysis.figures.style import in_study_order, study_palette
    from peftlab.analysis.report.build import main_columns
    from peftlab.analysis.report.tables import table_content
    from peftlab.analysis.results.load import load_results
    from peftlab.analysis.results.tuning_choices import borrowed_configurations
    from peftlab.analysis.stats.intervals import completed_runs, describe_interval, summarize
    from peftlab.analysis.stats.power import ALPHA
    from peftlab.study.report_options import read_report_options

    df = load_results(study_dir)
    if df.empty or completed_runs(df).empty:
        return [("main table", "no run completed: there is nothing to summarise")], None
    options = read_report_options(Path(study_dir) / "study.yaml")
    columns = main_columns(df)
    summary = pd.concat([summarize(df, metric=m, interval=options.interval) for m in columns], ignore_index=True)
    summary = in_study_order(summary, study_palette(df))
    interval = describe_interval(options.interval)
    table = table_content(
        summary, None, columns, "variant", ALPHA, options.labels, interval, borrowed_configurations(df)
    )
    params = any(row["params"] is not None for row in table["rows"])
    header = ["configuration", *(["trainable params"] if params else []), "n", *table["headers"]]
    rows = [
        [
            row["name"] + (f" (at {row['borrowed']}'s tuned values)" if row["borrowed"] else ""),
            *([row["params"] or "–"] if params else []),
            str(row["n"]),
            *[cell_text(cell) for cell in row["cells"]],
        ]
        for row in table["rows"]
    ]
    return [("main table", f"mean [{table['interval_text']}]")], (header, rows)


def cell_text(cell: dict | None) -> str:
    """A main-table cell as report.md prints its mean and interval: "61.2 [55.0, 67.4]" (one run: its value)."""
    if cell is None:
        return "–"
    if cell["low"] is None or cell["high"] is None:
        return cell["mean"]
    return f"{cell['mean']} [{cell['low']}, {cell['high']}]"
