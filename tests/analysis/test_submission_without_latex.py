"""An archive without LaTeX (issue 90): where latexmk and pdflatex are not on PATH, ``peftlab.submission`` packs a paper
written with ``paper(compile=False)`` without its main.pdf, archive.json (``paper_pdf``) and REPRODUCE.md say so, and
``peftlab.reproduce`` names the PDF as not packed. Where LaTeX is there, a paper without main.pdf is refused in the
API's words. The study is the image-folder study the archive tests pack (conftest's ``archive``): its study folder and
study file as they were left, the paper copied without its PDF."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
from testkit import extract_all

import peftlab
from peftlab.analysis.archive.pack import PDF_NOT_PACKED
from peftlab.analysis.results.escape import markdown_text
from peftlab.utils.errors import UserError

pytestmark = pytest.mark.e2e


def path_with(tmp_path: Path, *tools: str, fake: tuple[str, ...] = ()) -> str:
    """A PATH of one folder holding links to ``tools`` (found on this PATH) and ``fake`` scripts of those names."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in tools:
        (folder / tool).symlink_to(shutil.which(tool))
    for tool in fake:
        (folder / tool).write_text("#!/bin/sh\nexit 1\n")
        (folder / tool).chmod(0o755)
    return str(folder)


@pytest.fixture
def study(archive, tmp_path):
    """(study folder, study file, the paper's sources copied without main.pdf and its record), the study's plugin
    importable during the test (its site on ``sys.path``), forgotten after it as ``reproduce`` forgets an archive's."""
    from peftlab.cli.api.results import environment_kept

    study_dir = archive.parent
    paper = tmp_path / "paper"
    shutil.copytree(study_dir / "paper", paper, ignore=shutil.ignore_patterns("main.pdf", "main.pdf.json"))
    site = study_dir.parents[2] / "site"  # archivefiles.write_study's
    with environment_kept(site):
        sys.path.insert(0, str(site))
        yield study_dir, study_dir.parents[1] / "configs" / "study.yaml", paper


def test_without_latex_the_paper_is_packed_without_its_pdf_and_reproduce_names_it(study, tmp_path, monkeypatch):
    study_dir, study_file, paper = study
    shell_path = os.environ["PATH"]
    monkeypatch.setenv("PATH", path_with(tmp_path, "git"))  # no latexmk, no pdflatex
    out = peftlab.submission(study_dir, study_file, paper=paper, out=tmp_path / "packed.tar.gz")
    with tarfile.open(out) as tar:
        extract_all(tar, tmp_path / "received")
    root = tmp_path / "received" / "pets-submission"
    assert (root / "paper" / "main.tex").is_file() and not (root / "paper" / "main.pdf").exists()
    assert json.loads((root / "archive.json").read_text())["paper_pdf"] == PDF_NOT_PACKED
    assert "main.pdf" not in (root / "SHA256SUMS").read_text()
    named = f"paper/main.pdf ({PDF_NOT_PACKED}; peftlab paper compiles it with LaTeX)"
    assert markdown_text(named) in (root / "REPRODUCE.md").read_text()  # among what reproduce cannot check

    monkeypatch.setenv("PATH", shell_path)  # the receiver's machine: LaTeX or not, main.pdf is named the same
    record = peftlab.reproduce(root, runs=0, out=tmp_path / "check", data=archive_data(study_dir))
    assert named in record["not_checked"] and record["differences"] == [], record
    # intact: every file made again from the archive (REPRODUCE.md too, naming main.pdf the same) is as packed
    assert (
        record["verdicts"][0].startswith("archive intact: yes")
        and "not checked: paper/main.pdf" in record["verdicts"][0]
    )


def archive_data(study_dir: Path) -> Path:
    """The folder holding the study's dataset (data/pets beside the study's work folder: archivefiles.write_study)."""
    return study_dir.parents[2] / "data"


def test_with_latex_a_paper_without_pdf_is_refused_in_the_apis_words(study, tmp_path, monkeypatch):
    study_dir, study_file, paper = study
    monkeypatch.setenv("PATH", path_with(tmp_path, "git", fake=("latexmk", "pdflatex")))
    with pytest.raises(UserError, match=rf"has no main.pdf: run `peftlab.paper\('{study_dir}'\)` first$"):
        peftlab.submission(study_dir, study_file, paper=paper, out=tmp_path / "packed.tar.gz")
    assert not (tmp_path / "packed.tar.gz").exists()


def test_without_latex_a_stale_pdf_is_refused_saying_how_to_pack_without_it(study, tmp_path, monkeypatch):
    study_dir, study_file, paper = study
    (paper / "main.pdf").write_bytes(b"%PDF-1.5 placed by hand\n")  # no record of a compile: stale
    monkeypatch.setenv("PATH", path_with(tmp_path, "git"))
    with pytest.raises(UserError, match=r"LaTeX is not on PATH here: remove .*main.pdf to pack the paper without it"):
        peftlab.submission(study_dir, study_file, paper=paper, out=tmp_path / "packed.tar.gz")
