"""``peftlab submission STUDY_DIR --study STUDY.yaml``: one archive to check and reproduce a paper.

OUT (default STUDY_DIR/<study>-submission.tar.gz) holds, under <study>-submission/:
  paper/             main.tex, results.tex, references.bib, tables/, figures/ (pdf, png), main.pdf (packed without it
                     where LaTeX is absent, archive.json's paper_pdf saying so: reproduce and REPRODUCE.md name it)
  results/           results.csv and results.parquet (one row per run, as `peftlab results` writes, paths made
                     portable: results/portable.py), runs.sha256 (the lines whose SHA-256 the paper prints)
  configs/           the study YAML, its base and pretraining configs, literature.yaml
  requirements.lock  the exact package versions
  REPRODUCE.md       the commands, the git commit, the machine and the measured runtimes, made from the archive
                     alone (archive.json's ``made`` holds what no packed file does), as reproduce makes it again
  SHA256SUMS         every other file (check: sha256sum -c SHA256SUMS)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tarfile
import tempfile
from pathlib import Path

from peftlab.analysis.archive.datasets import data_records
from peftlab.analysis.archive.pack import (
    ARCHIVE_RECORD,
    ARCHIVE_VERSION,
    PDF_NOT_PACKED,
    ArchiveRecord,
    pack_configs,
    pack_plugins,
    pack_runs,
)
from peftlab.analysis.archive.received import ENVIRONMENT_LOCK, archived_runs
from peftlab.analysis.archive.recorded import ENVIRONMENT_KEYS, environment_lock
from peftlab.analysis.archive.regenerate import study_folder
from peftlab.analysis.archive.reproduce_md import reproduce_md
from peftlab.analysis.archive.supplied import SUPPLIED_RECORD, read_paths, write_supplied_sums
from peftlab.analysis.paper.latex import changed_source, file_sha256, pdf_results_sha256
from peftlab.analysis.paper.record_words import superseded_seconds
from peftlab.analysis.paper.study import pretraining_manifest
from peftlab.analysis.report.literature import LITERATURE
from peftlab.analysis.results.load import (
    load_results,
    read_result,
    results_lines,
    results_sha256,
    run_dirs,
    superseded_runs,
    typed_frame,
)
from peftlab.analysis.results.portable import portable_frame, portable_text
from peftlab.analysis.results.record import study_commands
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.config.paths import REPO_ROOT
from peftlab.config.reading import MissingFile, read_yaml
from peftlab.study.phases import read_phases
from peftlab.study.report_options import read_study_name
from peftlab.study.runner import pretrain_dir
from peftlab.utils.errors import UserError
from peftlab.utils.files import (
    check_output,
    read_text,
    refuse_link,
    refuse_links_below,
    refuse_links_in,
    write_atomic,
    write_json_atomic,
)
from peftlab.utils.programs import run_program

PAPER_FILES = ("main.tex", "results.tex", "references.bib", "main.pdf")
RUNS_SHA256 = "runs.sha256"


def write_submission(
    study_dir: str | Path,
    study_yaml: str | Path,
    paper_dir: str | Path | None = None,
    out: str | Path | None = None,
    paper_call: str | None = None,
) -> Path:
    """Pack the archive (the module's docstring); returns its path. Where LaTeX is absent (``latex_absent``) and the
    paper has no main.pdf, the paper is packed without it, as archive.json's ``paper_pdf`` says. ``paper_call``: how
    an error names the paper's build (default the command's, ``peftlab paper STUDY_DIR``; the API's its call)."""
    from peftlab.study.spec import load_study

    study_dir, study_yaml = Path(study_dir), Path(study_yaml)
    paper_dir = Path(paper_dir) if paper_dir else study_dir / "paper"
    if Path(os.path.abspath(paper_dir)).is_relative_to(os.path.abspath(study_dir)):
        refuse_links_below(study_dir, paper_dir, "paper folder entry")
    refuse_links_in(paper_dir, "paper folder entry")  # the archive packs regular files of the paper only
    again = paper_call or f"`peftlab paper {study_dir}`"
    absent = latex_absent()
    with_pdf = (paper_dir / "main.pdf").is_file()
    if not with_pdf and not absent:
        raise UserError(f"{paper_dir} has no main.pdf: run {again} first")
    now = results_sha256(study_dir)
    df = load_results(study_dir)
    if df.empty:
        raise UserError(f"{study_dir} holds no study runs (no runs/*/spec.json)")
    check_paper_built(paper_dir, study_dir, now, again, with_pdf, absent)
    ran = study_dir / "study.yaml"  # the study file as the runs were made from it (peftlab study copies it)
    refuse_link(ran, "study directory entry")
    try:  # opened once, not asked first
        recorded = read_yaml(ran)
    except MissingFile:
        recorded = None
    if recorded is not None and recorded != read_yaml(study_yaml):
        # its comments may differ (a header written after the runs); its settings may not
        raise UserError(f"--study {study_yaml} differs from {ran}, the study file the runs were made from")
    study = load_study(study_yaml)
    name = f"{study_dir.name}-submission"
    out = Path(out) if out else study_dir / f"{name}.tar.gz"
    check_output(out, False, "archive")  # before the archive is made

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        pack_archive(root, (study_dir, study_yaml, paper_dir, out), study, df, now, with_pdf)
        write_atomic(out, lambda tmp: pack(root, name, tmp))  # a fresh temporary name, never a link's target
    return out


def latex_absent() -> list[str]:
    """The tools that compile the paper (latex.compile_pdf) that are not on PATH: [] where it can compile."""
    return [tool for tool in ("latexmk", "pdflatex") if shutil.which(tool) is None]


def check_paper_built(paper_dir: Path, study_dir: Path, now: str, again: str, with_pdf: bool, absent: list) -> None:
    """The paper is of the runs' results (``now``): results.tex, and main.pdf with the sources it was compiled from
    where it is packed (``with_pdf``); ``again``: the call that builds it; ``absent``: LaTeX's missing tools."""
    recorded = {"results.tex": paper_results_sha256(paper_dir)}
    if with_pdf:
        recorded["main.pdf"] = pdf_results_sha256(paper_dir)
    without = f" (LaTeX is not on PATH here: remove {paper_dir / 'main.pdf'} to pack the paper without it)"
    for what, built_from in recorded.items():
        if built_from != now:
            raise UserError(
                f"{paper_dir / what} was built from other results than {study_dir} holds now (results SHA-256 "
                f"{(built_from or 'not recorded')[:12]}, the runs' {now[:12]}"
                f"{'' if built_from or what != 'main.pdf' else '; the last paper build did not compile'}): "
                f"run {again} again{without if absent and what == 'main.pdf' else ''}"
            )
    changed = changed_source(paper_dir) if with_pdf else None
    if changed is not None:
        raise UserError(
            f"{paper_dir / changed} is not as {paper_dir / 'main.pdf'} was compiled from it (changed since, or "
            f"recorded by an older peftlab): run {again} again{without if absent else ''}"
        )


def pack_archive(
    root: Path, places_given: tuple[Path, Path, Path, Path], study, df, now: str, with_pdf: bool = True
) -> None:
    """The archive's files in ``root``: the paper (main.pdf only ``with_pdf``), the results and their runs, the configs
    (the paths the runs read), the plugins, the lock files, archive.json, the supplied files' sums, REPRODUCE.md (made
    from the archive alone, as reproduce makes it again) and SHA256SUMS; ``places_given``: the study folder, the study
    file, the paper folder and the archive's path, as the command was given them."""
    study_dir, study_yaml, paper_dir, out = places_given
    for file in PAPER_FILES if with_pdf else [f for f in PAPER_FILES if f != "main.pdf"]:
        copy(paper_dir / file, root / "paper" / file)
    for sub, patterns in (("tables", ("*.tex",)), ("figures", ("*.pdf", "*.png"))):
        for pattern in patterns:
            for path in sorted((paper_dir / sub).glob(pattern)):
                copy(path, root / "paper" / sub / path.name)
    (root / "results").mkdir(parents=True)
    table = portable_frame(df, study_dir)  # no path of this machine: the data root as OUTSIDE/<name>, ...
    table.to_csv(root / "results" / "results.csv", index=False)
    typed_frame(table).to_parquet(root / "results" / "results.parquet", index=False)  # one type a column
    (root / "results" / RUNS_SHA256).write_text(results_lines(study_dir))  # its SHA-256 is \\resultsSha
    pack_runs(study_dir, root)  # the files those lines hash, so that the hash is checked from the archive
    read = read_paths([read_result(run_dir) for run_dir in run_dirs(study_dir)])  # a path no run reads: unread/
    study_file, places = pack_configs(study, root, pretrain_dir(study) if study.pretrain else None, read)
    copy(LITERATURE, root / "configs" / LITERATURE.name)
    plugins = pack_plugins(study_dir, root)
    copy(REPO_ROOT / "requirements.lock", root / "requirements.lock")
    record = archive_record(study_dir, study, study_file, places, plugins, now, archived_runs(root, checked=False))
    record["made"] = made_record(study_dir, study_yaml, paper_dir, out, completed_runs(df))
    if not with_pdf:
        record["paper_pdf"] = PDF_NOT_PACKED  # REPRODUCE.md and reproduce's verdict name it (regenerate.py)
    (root / ENVIRONMENT_LOCK).write_text(environment_lock(record["environment"].get("versions") or {}))
    write_json_atomic(root / ARCHIVE_RECORD, record)
    write_supplied_sums(root, places.supplied)
    with tempfile.TemporaryDirectory() as tmp:  # the packed runs, as reproduce reads them
        (root / "REPRODUCE.md").write_text(reproduce_md(root, record, study_folder(root, record, Path(tmp))))
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    (root / "SHA256SUMS").write_text("".join(f"{file_sha256(root / f)}  {f}\n" for f in files))


def pack(root: Path, name: str, tmp: str) -> None:
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(root, arcname=name, filter=lambda info: _normalized(info))


def paper_results_sha256(paper_dir: Path) -> str | None:
    """The results SHA-256 a paper's results.tex records (\\resultsSha, load.results_sha256); None without it."""
    path = paper_dir / "results.tex"
    text = read_text(path, "paper file") or ""  # opened once: absent reads as no hash
    found = re.search(r"^\\newcommand\{\\resultsSha\}\{([0-9a-f]{64})\}", text, flags=re.MULTILINE)
    return found.group(1) if found else None


def copy(src: Path, dst: Path) -> None:
    refuse_link(src, "file to pack")
    if not src.is_file():
        raise UserError(f"{src} is missing: the submission needs it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=False)


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def archive_record(
    study_dir: Path, study, study_file: str, places, plugins: list[dict], results_sha: str, packed: list[dict]
) -> ArchiveRecord:
    """archive.json: what ``peftlab reproduce`` reads of the archive (``analysis.archive.received``); its
    environment the first completed packed run's (``packed``: ``received.archived_runs``), as reproduce reads it."""
    completed = [run["result"] for run in packed if run["result"].get("status") == "completed"]
    env = (completed[0].get("provenance") or {}) if completed else {}
    results = [read_result(run_dir) for run_dir in run_dirs(study_dir)]
    pretraining = read_result(places.base_dir / "run") if places.base_dir else {}  # the base's own run
    shas = ((result.get("provenance") or {}).get("base_sha256") for result in results)
    base = next((sha for sha in shas if isinstance(sha, str)), None)
    seconds = (pretraining.get("timing") or {}).get("wall_seconds")  # a base the study found cached took this
    pretrain = f"configs/{Path(study.pretrain).name}" if study.pretrain else None
    return {
        "version": ARCHIVE_VERSION,
        "study": study_file,
        "name": read_study_name(study_dir),
        "results_sha256": results_sha,
        "environment": {key: env.get(key) for key in ENVIRONMENT_KEYS},
        "data": data_records(results + [pretraining], places, study_dir),
        "plugins": plugins,
        "base": {
            "folder": "base",
            "pretrain": pretrain,
            "sha256": base,
            "seconds": seconds if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None,
        }
        if study.pretrain
        else None,
        SUPPLIED_RECORD: places.supplied,
        "repository": git_remote(),
        "superseded": [
            {"run": run_dir.name, "seconds": superseded_seconds(run_dir)} for run_dir in superseded_runs(study_dir)
        ],
        "phases": phase_seconds(study_dir),
    }


# --- what REPRODUCE.md says that no packed file holds (archive.json's ``made``) ---


def git_head() -> str:
    try:
        proc = run_program(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            seconds=60,
            fix="check the checkout (`git status`) or how git is set up, then run `peftlab submission` again",
        )
    except FileNotFoundError:
        return "unknown (git not installed)"
    return proc.stdout.strip() or "unknown (not a git checkout)"


def git_remote() -> str | None:
    """The address of the repository git knows for the checkout (its ``origin``, else its first remote), or None."""
    try:
        names = run_program(["git", "-C", str(REPO_ROOT), "remote"], seconds=60, fix="check how git is set up")
    except FileNotFoundError:
        return None
    remotes = names.stdout.split() if names.returncode == 0 else []
    if not remotes:
        return None
    name = "origin" if "origin" in remotes else remotes[0]
    url = run_program(["git", "-C", str(REPO_ROOT), "remote", "get-url", name], seconds=60, fix="check git")
    address = url.stdout.strip() if url.returncode == 0 else ""
    return address if address.isprintable() and address else None


def made_commands(study_dir: Path) -> list[dict]:
    """Every command that ran the study (commands.jsonl), each ``{argv, cwd}`` as shell words (``shell_word``)."""
    return [
        {
            "argv": [shell_word(arg, study_dir) for arg in command["argv"]],
            "cwd": shell_word(command["cwd"], study_dir) if command["cwd"] else None,
        }
        for command in study_commands(study_dir)
    ]


def shell_word(text: str, study_dir: Path) -> str:
    """``text`` made portable (``portable_text``) as one word of a shell line (``shlex.quote``). A path in the home
    folder, which becomes ``~/...``, keeps its ``~/`` outside the quotes, so that the reader's shell makes it their
    home folder; a ``~`` the record held itself stays a literal ``~``."""
    shown = portable_text(text, study_dir)
    if shown.startswith("~") and not text.startswith("~"):
        if shown == "~":
            return "~"
        if shown.startswith("~/"):
            return "~/" + shlex.quote(shown[2:]) if shown[2:] else "~/"
    return shlex.quote(shown)


def pretrain_cached(study_dir: Path) -> bool:
    """Whether the study's pretraining phase found its base trained (phases.jsonl: no run of its own)."""
    return not any(r["phase"] == "pretrain" and r.get("runs") for r in read_phases(study_dir) or [])


def phase_seconds(study_dir: Path) -> dict[str, float]:
    """Each phase's wall time summed over the calls of ``peftlab study`` (phases.jsonl), in its order."""
    by_phase: dict[str, float] = {}
    for record in read_phases(study_dir) or []:  # None: no phases.jsonl
        by_phase[record["phase"]] = by_phase.get(record["phase"], 0.0) + record["wall_seconds"]
    return by_phase


def made_record(study_dir: Path, study_yaml: Path, paper_dir: Path, out: Path, done) -> dict:
    """archive.json's ``made``: what REPRODUCE.md says that no packed file holds, as it says it (paths portable,
    commands as shell words): the commit that packs the archive, the paths the study's, paper's and submission's
    commands were given, the commands that ran the study, whether its pretraining found the base trained and the
    base's training seconds (its manifest's)."""
    manifest = pretraining_manifest(done)
    seconds = (manifest or {}).get("train_seconds")
    return {
        "packed_at": git_head(),
        "paths": {
            key: shell_word(os.path.abspath(path), study_dir)
            for key, path in (("study", study_yaml), ("dir", study_dir), ("paper", paper_dir), ("out", out))
        },
        "commands": made_commands(study_dir),
        "pretrain_cached": pretrain_cached(study_dir),
        "base_train_seconds": float(seconds) if isinstance(seconds, int | float) and seconds == seconds else None,
    }
