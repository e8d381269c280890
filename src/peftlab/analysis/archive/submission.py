"""``peftlab submission STUDY_DIR --study STUDY.yaml``: one archive to check and reproduce a paper.

OUT (default STUDY_DIR/<study>-submission.tar.gz) holds, under <study>-submission/:
  paper/             main.tex, results.tex, references.bib, tables/, figures/ (pdf, png), main.pdf
  results/           results.csv and results.parquet (one row per run, as `peftlab results` writes)
  configs/           the study YAML, its base and pretraining configs, literature.yaml
  requirements.lock  the exact package versions
  REPRODUCE.md       the commands, the git commit, the machine and the measured runtimes
  SHA256SUMS         every other file (check: sha256sum -c SHA256SUMS)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from peftlab.analysis.paper.build import pdf_results_sha256
from peftlab.analysis.paper.macros import TOP1
from peftlab.analysis.paper.study import pretraining_manifest
from peftlab.analysis.report.literature import LITERATURE
from peftlab.analysis.results.load import environment, load_results, results_sha256
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.config.paths import REPO_ROOT
from peftlab.study.report_options import read_study_name
from peftlab.utils.errors import UserError
from peftlab.utils.files import refuse_link, refuse_links_below, refuse_links_in, write_atomic

PAPER_FILES = ("main.tex", "results.tex", "references.bib", "main.pdf")


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
    ran = study_dir / "study.yaml"  # the study file as the runs were made from it (peftlab study copies it)
    refuse_link(ran, "study directory entry")
    if ran.is_file() and study_yaml.is_file() and ran.read_bytes() != study_yaml.read_bytes():
        raise UserError(f"--study {study_yaml} differs from {ran}, the study file the runs were made from")
    study = load_study(study_yaml)
    name = f"{study_dir.name}-submission"
    out = Path(out) if out else study_dir / f"{name}.tar.gz"

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        for file in PAPER_FILES:
            copy(paper_dir / file, root / "paper" / file)
        for sub, patterns in (("tables", ("*.tex",)), ("figures", ("*.pdf", "*.png"))):
            for pattern in patterns:
                for path in sorted((paper_dir / sub).glob(pattern)):
                    copy(path, root / "paper" / sub / path.name)
        (root / "results").mkdir(parents=True)
        df.to_csv(root / "results" / "results.csv", index=False)
        df.to_parquet(root / "results" / "results.parquet", index=False)
        for config in dict.fromkeys(p for p in (study.path, study.base, study.pretrain, LITERATURE) if p):
            copy(Path(config), root / "configs" / Path(config).name)
        copy(REPO_ROOT / "requirements.lock", root / "requirements.lock")
        (root / "REPRODUCE.md").write_text(reproduce_md(df, study_dir, study_yaml, paper_dir, out))
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        (root / "SHA256SUMS").write_text("".join(f"{sha256(root / f)}  {f}\n" for f in files))
        write_atomic(out, lambda tmp: pack(root, name, tmp))  # a fresh temporary name, never a link's target
    return out


def pack(root: Path, name: str, tmp: str) -> None:
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(root, arcname=name, filter=lambda info: _normalized(info))


def paper_results_sha256(paper_dir: Path) -> str | None:
    """The results SHA-256 a paper's results.tex records (\\resultsSha, load.results_sha256); None without it."""
    path = paper_dir / "results.tex"
    text = path.read_text(errors="replace") if path.is_file() else ""
    found = re.search(r"^\\newcommand\{\\resultsSha\}\{([0-9a-f]{64})\}", text, flags=re.MULTILINE)
    return found.group(1) if found else None


def copy(src: Path, dst: Path) -> None:
    refuse_link(src, "file to pack")
    if not src.is_file():
        raise UserError(f"{src} is missing: the submission needs it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=False)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def git_head() -> str:
    try:
        proc = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    except FileNotFoundError:
        return "unknown (git not installed)"
    return proc.stdout.strip() or "unknown (not a git checkout)"


def reproduce_md(df, study_dir: Path, study_yaml: Path, paper_dir: Path, out: Path) -> str:
    done = completed_runs(df)
    env = environment(study_dir)
    versions, hardware = env.get("versions") or {}, env.get("hardware") or {}
    sha = env.get("git_sha") or "unknown"
    wall = done.get("timing.wall_seconds")
    lines = [
        f"# Reproducing {read_study_name(study_dir)}",
        "",
        f"- Runs trained at git commit `{sha}` (uncommitted changes: {env.get('git_dirty')}); "
        f"this archive was packed at commit `{git_head()}`.",
        f"- Machine of the runs: {hardware.get('cpu')}, {hardware.get('cpu_count')} CPUs, device "
        f"{hardware.get('device')}{', GPU ' + str(hardware['gpu']) if hardware.get('gpu') else ''}; "
        f"{env.get('threads')} {'thread' if env.get('threads') == 1 else 'threads'} per run; "
        f"precision {env.get('dtype')}.",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + " (all: requirements.lock).",
        "",
        "## Commands",
        "",
        "From a clone of the repository at that commit, on Debian with Python 3.11:",
        "",
        "```bash",
        f"git checkout {sha}",
    ]
    if study_yaml.as_posix().endswith("configs/studies/default.yaml"):
        lines += [
            "make study        # trains the runs (reuses finished ones, resumes an interrupted one)",
            "make paper        # figures, tables, results.tex, main.tex, main.pdf",
            "make submission   # this archive",
            "```",
            "",
            "`make` creates `.venv` with requirements.lock, installs the offline data and, when apt may "
            "be used, the LaTeX packages (scripts/install-latex.sh). The same steps without make:",
            "",
            "```bash",
        ]
    lines += [
        f".venv/bin/peftlab study {study_yaml.as_posix()} --study-dir {study_dir.as_posix()} --report",
        f".venv/bin/peftlab paper {study_dir.as_posix()} --out {paper_dir.as_posix()}",
        f".venv/bin/peftlab submission {study_dir.as_posix()} --study {study_yaml.as_posix()} "
        f"--paper {paper_dir.as_posix()} --out {out.as_posix()}",
        "```",
        "",
        "## Expected runtime",
        "",
    ]
    if wall is not None and wall.notna().any():
        lines += [
            f"- {len(done)} completed runs; wall time per run {wall.min():.0f} s to {wall.max():.0f} s "
            f"(mean {wall.mean():.0f} s); {wall.sum() / 60:.1f} min summed, which is the study's time "
            "with one worker on the machine above, pretraining excluded."
        ]
    manifest = pretraining_manifest(done)
    if manifest:
        lines.append(
            f"- Pretraining the base model (cached after the first time): "
            f"{manifest.get('train_seconds', float('nan')):.0f} s of training."
        )
    lines += [
        "- Compiling the paper: under a minute; installing the LaTeX packages (once): a few minutes.",
        "",
        "## Expected results",
        "",
        "Test top-1 (%) per configuration over seeds; the same seeds on the same machine give the same numbers.",
        "",
        "| configuration | runs | mean | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant, runs in done.groupby("variant", sort=False):
        top1 = 100 * runs[TOP1]
        lines.append(f"| {variant} | {len(runs)} | {top1.mean():.1f} | {top1.min():.1f} | {top1.max():.1f} |")
    not_done = len(df) - len(done)
    if not_done:
        lines += ["", f"{not_done} runs did not complete (see results/results.csv, columns status and error)."]
    lines += ["", "## Checking the files", "", "```bash", "sha256sum -c SHA256SUMS", "```", ""]
    return "\n".join(lines)
