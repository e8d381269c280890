"""``peftlab submission STUDY_DIR --study STUDY.yaml``: one archive to check and reproduce a paper.

OUT (default STUDY_DIR/<study>-submission.tar.gz) holds, under <study>-submission/:
  paper/             main.tex, results.tex, references.bib, tables/, figures/ (pdf, png), main.pdf
  results/           results.csv and results.parquet (one row per run, as `peftlab results` writes, paths made
                     portable: results/portable.py), runs.sha256 (the lines whose SHA-256 the paper prints)
  configs/           the study YAML, its base and pretraining configs, literature.yaml
  requirements.lock  the exact package versions
  REPRODUCE.md       the commands, the git commit, the machine and the measured runtimes
  SHA256SUMS         every other file (check: sha256sum -c SHA256SUMS)
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from peftlab.analysis.archive.pack import (
    ARCHIVE_RECORD,
    ARCHIVE_VERSION,
    ENVIRONMENT_LOCK,
    ArchiveRecord,
    data_records,
    environment_lock,
    pack_configs,
    pack_plugins,
    pack_runs,
)
from peftlab.analysis.archive.reproduce_md import git_remote, phase_seconds, reproduce_md
from peftlab.analysis.archive.supplied import SUPPLIED_RECORD, write_supplied_sums
from peftlab.analysis.paper.latex import changed_source, file_sha256, pdf_results_sha256
from peftlab.analysis.paper.record_words import superseded_seconds
from peftlab.analysis.report.literature import LITERATURE
from peftlab.analysis.results.load import (
    environment,
    load_results,
    read_result,
    results_lines,
    results_sha256,
    run_dirs,
    superseded_runs,
    typed_frame,
)
from peftlab.analysis.results.portable import portable_frame
from peftlab.config.paths import REPO_ROOT
from peftlab.config.reading import MissingFile, read_yaml
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

PAPER_FILES = ("main.tex", "results.tex", "references.bib", "main.pdf")
RUNS_SHA256 = "runs.sha256"


def write_submission(
    study_dir: str | Path, study_yaml: str | Path, paper_dir: str | Path | None = None, out: str | Path | None = None
) -> Path:
    from peftlab.study.spec import load_study

    study_dir, study_yaml = Path(study_dir), Path(study_yaml)
    paper_dir = Path(paper_dir) if paper_dir else study_dir / "paper"
    if Path(os.path.abspath(paper_dir)).is_relative_to(os.path.abspath(study_dir)):
        refuse_links_below(study_dir, paper_dir, "paper folder entry")
    refuse_links_in(paper_dir, "paper folder entry")  # the archive packs regular files of the paper only
    if not (paper_dir / "main.pdf").is_file():
        raise UserError(f"{paper_dir} has no main.pdf: run `peftlab paper {study_dir}` first")
    now = results_sha256(study_dir)
    df = load_results(study_dir)
    if df.empty:
        raise UserError(f"{study_dir} holds no study runs (no runs/*/spec.json)")
    recorded = {"results.tex": paper_results_sha256(paper_dir), "main.pdf": pdf_results_sha256(paper_dir)}
    for what, built_from in recorded.items():
        if built_from != now:
            raise UserError(
                f"{paper_dir / what} was built from other results than {study_dir} holds now (results SHA-256 "
                f"{(built_from or 'not recorded')[:12]}, the runs' {now[:12]}"
                f"{'' if built_from or what != 'main.pdf' else '; the last paper build did not compile'}): "
                f"run `peftlab paper {study_dir}` again"
            )
    changed = changed_source(paper_dir)
    if changed is not None:
        raise UserError(
            f"{paper_dir / changed} is not as {paper_dir / 'main.pdf'} was compiled from it (changed since, or "
            f"recorded by an older peftlab): run `peftlab paper {study_dir}` again"
        )
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
        for file in PAPER_FILES:
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
        study_file, places = pack_configs(study, root, pretrain_dir(study) if study.pretrain else None)
        copy(LITERATURE, root / "configs" / LITERATURE.name)
        plugins = pack_plugins(study_dir, root)
        copy(REPO_ROOT / "requirements.lock", root / "requirements.lock")
        (root / ENVIRONMENT_LOCK).write_text(environment_lock())
        record = archive_record(study_dir, study, study_file, places, plugins, now)
        write_json_atomic(root / ARCHIVE_RECORD, record)
        write_supplied_sums(root, places.supplied)
        (root / "REPRODUCE.md").write_text(reproduce_md(df, study_dir, study_yaml, paper_dir, out, record))
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        (root / "SHA256SUMS").write_text("".join(f"{file_sha256(root / f)}  {f}\n" for f in files))
        write_atomic(out, lambda tmp: pack(root, name, tmp))  # a fresh temporary name, never a link's target
    return out


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
    study_dir: Path, study, study_file: str, places, plugins: list[dict], results_sha: str
) -> ArchiveRecord:
    """archive.json: what ``peftlab reproduce`` reads of the archive (``analysis.archive.received``)."""
    env = environment(study_dir)
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
        "environment": {
            key: env.get(key) for key in ("versions", "hardware", "arithmetic", "threads", "dtype", "git_sha")
        },
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
