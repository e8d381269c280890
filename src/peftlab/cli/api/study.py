"""The Python API on a study: ``run_study`` (its pending runs, in worker processes), as ``peftlab study`` runs them
(docs/python-api.md). It imports what it needs when called (no torch at ``import peftlab``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftlab.utils.errors import api, check_bool, check_path

if TYPE_CHECKING:
    from pathlib import Path


@api(trains=True)
def run_study(
    study: str | Path | dict,
    study_dir: str | Path | None = None,
    *,
    workers: int = 1,
    retry_failed: bool = False,
    report: bool = False,
    progress: bool = False,
):
    """Run every pending run of a study, as ``peftlab study STUDY --study-dir DIR --workers N`` does
    (``peftlab.study.runner.run_study``, which the command calls; local worker processes). ``study``: a study file,
    or a dict of its keys whose paths (``base``, ``data.root``, ...) are the current directory's
    (``study.keys.study_file``; STUDY_DIR/study.yaml is then its study file). ``study_dir``: default ``runs/<study
    name>``; a second call resumes it. ``report``: write its report (report/report.md) once the runs are done.
    Returns a ``StudyResult``, the ``StudySummary`` (``.ok``, ``.completed``, ``.failed`` with their errors,
    ``.pending``) that a notebook shows with the report's main table; the results are then ``load_results(study_dir)``.
    The workers are processes of their own, started with the CPU arithmetic pinned where a run asks for it, whatever
    this process imported before."""
    import contextlib
    from pathlib import Path

    from peftlab.study.keys import study_file
    from peftlab.utils.errors import UserError

    if not isinstance(study, dict):
        check_path("study", study, what="a study file (a path) or a dict of its keys")
    check_path("study_dir", study_dir, optional=True)
    for name, value in (("retry_failed", retry_failed), ("report", report), ("progress", progress)):
        check_bool(name, value)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UserError(f"workers={workers!r} is invalid: expected an integer >= 1")
    given = study_file(study, Path.cwd()) if isinstance(study, dict) else contextlib.nullcontext(study)
    with given as path:
        return run_study_file(path, study_dir, workers, retry_failed, report, progress)


def run_study_file(study, study_dir, workers: int, retry_failed: bool, report: bool, progress: bool):
    """``run_study`` of a study file, its arguments checked."""
    import contextlib
    from pathlib import Path

    from peftlab.cli.api.display import StudyResult
    from peftlab.study.runner import run_study as run_study_dir
    from peftlab.study.spec import load_study
    from peftlab.utils import cpu
    from peftlab.utils.progress import progress_line

    loaded = load_study(study)
    pinning = contextlib.nullcontext()
    if any(spec.config.train.reproducible for spec in loaded.runs):
        if cpu.torch_runs_unpinned():  # this process trains nothing: its workers start with the pin
            pinning = cpu.pinned_children()
        else:
            cpu.pin_arithmetic()  # before the workers import torch: they inherit it
    study_dir = Path(study_dir or Path("runs") / loaded.name)
    # without bars, a notebook's cell shows one line: the runs done and the time left
    line = progress_line(f"study {loaded.name}: {len(loaded.runs)} runs") if not progress else contextlib.nullcontext()
    with pinning, line:
        summary = run_study_dir(
            loaded, study_dir, workers=workers, retry_failed=retry_failed, progress=progress, report=report
        )
    if report:
        from peftlab.analysis.report.build import write_report

        write_report(study_dir)
    return StudyResult.of(summary, loaded.name, study_dir)
