"""What a notebook shows of the API's answers: ``train``'s, a ``RunRecord`` (result.json's record and its run folder),
and ``run_study``'s, a ``StudyResult``: its runs completed, failed, diverged and pending, each failure with its error,
and report.md's main table read from the study folder (each configuration's trainable parameters, runs and mean test
scores with their intervals, in the report's order and labels), as plain text (``repr``) and as HTML
(``_repr_html_``) through utils/files.py's one HTML escaper. The table is read when shown, from the run files (pandas
and matplotlib, never torch): the call has returned its answer whatever the files hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peftlab.study.runner import StudySummary
from peftlab.utils.errors import UserError
from peftlab.utils.files import html_view, plain_view

SHOWN_ERRORS = 5  # failed, diverged or pending runs named with their error; the rest counted


class RunRecord(dict):
    """What ``train`` returns: the run's record as its result.json holds it (a dict: ``record["status"]``,
    ``record["metrics"]["test_top1"]``), and ``record.run_dir``, the folder the run is in (an attribute: result.json
    does not record where it lies, so the dict equals the file). A notebook cell that ends with it shows a table of
    its method, scores, parameters, pin and folder (``_repr_html_``; ``repr`` the same as a few lines, ``summary()``),
    not the whole record (``print(record)`` or ``dict(record)`` shows that)."""

    def __init__(self, record: dict, run_dir: str | Path):
        super().__init__(record)
        self.run_dir = run_dir

    def facts(self) -> tuple[str, list[tuple[str, str]]]:
        """(title, facts): the run folder and status, the error of a run that failed, its method, model and data, its
        test scores (top-1 and top-5 in %, a causal LM's perplexity, the others as numbers), its trainable parameters
        and whether its CPU arithmetic was pinned (where the record says)."""
        config, metrics, params = self.get("config") or {}, self.get("metrics") or {}, self.get("params") or {}
        method = config.get("method") or {}
        rank = f" (r={method['r']})" if method.get("r") is not None else ""
        facts = [("error", str(self["error"]))] if self.get("error") else []
        facts.append(("method", f"{method.get('name')}{rank}"))
        facts += [(key, str((config.get(key) or {}).get("name"))) for key in ("model", "data")]
        for name, value in metrics.items():  # test_top1 -> "test top-1", merged_test_top1, test_loss, ...
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "test_" in name:
                shown = f"{value:.2%}" if name.endswith(("_top1", "_top5")) else f"{value:.4g}"
                facts.append((name.replace("_", " ").replace("top1", "top-1").replace("top5", "top-5"), shown))
        if params.get("trainable") is not None and params.get("total"):
            facts.append(("trainable parameters", f"{params['trainable']:,} of {params['total']:,}"))
        pinned = ((self.get("provenance") or {}).get("arithmetic") or {}).get("pinned")
        if isinstance(pinned, bool):
            facts.append(("CPU arithmetic", "pinned" if pinned else "not pinned"))
        return f"run {self.run_dir}: {self.get('status')}", facts

    def summary(self) -> str:
        """A few lines: the run folder and status (the error of a run that failed), its method, model and data, and its
        test top-1 (a causal LM's perplexity) with its trainable parameters and its pin."""
        from peftlab.utils.files import printable

        title, facts = self.facts()
        found = dict(facts)
        error = f": {found['error']}" if "error" in found else ""
        lines = [title + error, f"method {found['method']}, model {found['model']}, data {found['data']}"]
        scores = [f"{name} {found[name]}" for name in ("test top-1", "test perplexity") if name in found]
        if "trainable parameters" in found:
            scores.append(found["trainable parameters"].replace(" of ", " trainable parameters of ", 1))
        if "CPU arithmetic" in found:
            scores.append(f"CPU arithmetic {found['CPU arithmetic']}")
        lines += ["; ".join(scores)] if scores else []
        lines.append('a dict of result.json\'s keys (record["metrics"], ...), record.run_dir: print(record) shows all')
        return "\n".join(printable(line) for line in lines)

    def __repr__(self) -> str:
        return self.summary()

    def __str__(self) -> str:  # print(record): the whole record, as a dict prints
        return dict.__repr__(self)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """IPython's text of the record (a notebook cell's last expression, the IPython prompt): its summary."""
        printer.text(self.summary())

    def _repr_html_(self) -> str:
        """A notebook's view of the record: its title and facts as a table, every text escaped."""
        from peftlab.utils.files import html_view

        return html_view(*self.facts())


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
