"""A received study folder never reaches outside itself (issue 60): links placed where peftlab writes or reads.

Each case plants a symbolic link in a study folder someone else made (a colleague's runs, an archive, a shared
drive), then runs the command that would write or read through it, in this process (``cli.run_command``): the
command ends in one line with exit 2 naming the link, the link's target is unchanged and nothing is read from it.
The studies are studyfiles' runs (result.json files, no training); the paper is written without compiling except
in the one test that proves TeX reads only the paper's own sources.
"""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from testkit import REPO, command_in_process

sys.path.insert(0, str(Path(__file__).parent / "analysis"))  # studyfiles: the analysis tests' study folders
from studyfiles import write_study_dir

from peftlab.analysis.paper import build as paper
from peftlab.analysis.paper.latex import compile_pdf, missing_latex, pdf_results_sha256, record_pdf
from peftlab.analysis.results.load import results_sha256
from peftlab.utils.errors import UserError
from peftlab.utils.files import write_atomic, write_text_atomic

FIGURES_DRAWN = ()  # text and files read, no figure drawn (conftest.py)

SECRET = "the outside file's own words\n"
STUDY_YAML = REPO / "configs" / "studies" / "default.yaml"


peftlab = command_in_process  # (exit status, stderr) of ``peftlab ARGS`` in this process


def assert_refused(result: tuple[int, str], *needles: str) -> None:
    status, stderr = result
    assert status == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr, result
    assert "symbolic link" in stderr, stderr
    for needle in needles:
        assert needle in stderr, stderr


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder outside the study with a file of its own, which no command may change or read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET)
    return folder


def unchanged(outside: Path) -> bool:
    return (
        sorted(p.name for p in outside.iterdir()) == ["secret.txt"] and (outside / "secret.txt").read_text() == SECRET
    )


@pytest.fixture
def study(tmp_path) -> Path:
    return write_study_dir(tmp_path / "default", with_failure=False, variants=["full", "linear"])


# --- writes: report, paper, submission --------------------------------------------------------------------------

REPORT_LINKS = ["report/report.md", "report/results.csv", "report/tables/main_table.tex", "report/figures/cost.png"]


@pytest.mark.parametrize("where", REPORT_LINKS)
def test_report_writes_through_no_link_to_a_file(study, outside, where):
    link = study / where
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside / "secret.txt")
    assert_refused(peftlab("report", str(study)), where.split("/")[-1])
    assert unchanged(outside) and link.is_symlink()


@pytest.mark.parametrize("where", ["report", "report/tables", "report/figures"])
def test_report_writes_into_no_linked_folder(study, outside, where):
    (study / where).parent.mkdir(parents=True, exist_ok=True)
    (study / where).symlink_to(outside, target_is_directory=True)
    assert_refused(peftlab("report", str(study)), where.split("/")[-1])
    assert unchanged(outside)


@pytest.mark.parametrize("where", ["paper/main.tex", "paper/results.tex", "paper/tables/main_table.tex", "paper"])
def test_paper_writes_through_no_link(study, outside, where):
    link = study / where
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside / "secret.txt" if "." in link.name else outside)
    assert_refused(peftlab("paper", str(study), "--no-compile"), link.name)
    assert unchanged(outside)


def test_a_label_with_a_newline_is_refused_and_nothing_is_written_outside(study, outside):
    """The red team's line of its choosing: a label with a newline (an authorized_keys line after it) is refused in
    one line naming the label, and a linked report.md is refused besides: the outside file is untouched."""
    labels = {"full": "ok\nssh-ed25519 AAAA attacker"}
    (study / "study.yaml").write_text(yaml.safe_dump({"name": "default", "report": {"labels": labels}}))
    status, stderr = peftlab("report", str(study))
    assert status == 2 and stderr.count("\n") == 1 and "report.labels['full']" in stderr and "one line" in stderr
    (study / "study.yaml").write_text(yaml.safe_dump({"name": "default", "report": {"labels": {"full": "ok"}}}))
    (study / "report").mkdir()
    (study / "report" / "report.md").symlink_to(outside / "secret.txt")
    assert_refused(peftlab("report", str(study)), "report.md")
    assert unchanged(outside)


def compiled_paper(study: Path) -> Path:
    """The study's paper written without compiling, with a stand-in main.pdf recorded as a compile records it."""
    out = study / "paper"
    paper.write_paper(study, out, compile=False)
    (out / "main.pdf").write_bytes(b"%PDF-1.5 stand-in\n")
    record_pdf(out, results_sha256(study))
    return out


@pytest.mark.parametrize("name", ["default-submission.tar.gz", "default-submission.tar.gz.partial"])
def test_submission_writes_its_archive_through_no_link(study, outside, name):
    compiled_paper(study)
    (study / name).symlink_to(outside / "secret.txt")
    result = peftlab("submission", str(study), "--study", str(STUDY_YAML))
    if name.endswith(".partial"):  # no such name is written any more: the archive goes to a fresh temporary name
        assert result[0] == 0, result
        assert tarfile.is_tarfile(study / "default-submission.tar.gz")
    else:
        assert_refused(result, name)
    assert unchanged(outside)


@pytest.mark.parametrize(
    "where", ["paper/figures/cost.png", "paper/tables/literature.tex", "paper/main.pdf", "paper/extra.txt"]
)
def test_submission_packs_no_link(study, outside, where):
    compiled_paper(study)
    link = study / where
    link.unlink(missing_ok=True)
    link.symlink_to(outside / "secret.txt")
    assert_refused(peftlab("submission", str(study), "--study", str(STUDY_YAML)), link.name)
    assert not list(study.glob("*.tar.gz")) and unchanged(outside)


def test_submission_reads_no_results_through_a_link(study, outside):
    compiled_paper(study)
    run = sorted((study / "runs").iterdir())[0]
    shutil.move(run, outside / run.name)
    run.symlink_to(outside / run.name, target_is_directory=True)
    assert_refused(peftlab("submission", str(study), "--study", str(STUDY_YAML)), run.name)
    assert not list(study.glob("*.tar.gz"))


# --- the PDF: one archive, one result ------------------------------------------------------------------------------


def test_a_paper_rebuilt_without_compiling_leaves_no_pdf_to_pack(study):
    """`paper --no-compile` (or a LaTeX error, or a kill during latexmk) after a compile: the old main.pdf shows
    other results than the new results.tex, and the submission refuses it whatever results.tex says."""
    out = compiled_paper(study)
    assert pdf_results_sha256(out) == results_sha256(study)
    assert peftlab("paper", str(study), "--no-compile")[0] == 0
    assert (out / "main.pdf").is_file() and pdf_results_sha256(out) is None
    status, stderr = peftlab("submission", str(study), "--study", str(STUDY_YAML))
    assert status == 2 and "main.pdf was built from other results" in stderr and "did not compile" in stderr, stderr


def test_a_pdf_swapped_after_its_compile_is_not_packed(study):
    out = compiled_paper(study)
    (out / "main.pdf").write_bytes(b"%PDF-1.5 another\n")
    assert pdf_results_sha256(out) is None
    assert peftlab("submission", str(study), "--study", str(STUDY_YAML))[0] == 2


@pytest.mark.skipif(bool(missing_latex()), reason="LaTeX is not installed: scripts/install-latex.sh would install it")
def test_tex_reads_only_the_papers_own_sources(tmp_path, outside):
    """A booktabs.sty placed in the paper folder is not loaded, and a file the paper does not write is not
    readable from TeX (paranoid mode checks names, not where a link points: the build folder holds no link)."""
    out = tmp_path / "paper"
    out.mkdir()
    (out / "booktabs.sty").write_text("\\errmessage{a foreign booktabs.sty was loaded}\n")
    (out / "notes.tex").write_text("FOREIGNWORDS\n")
    (out / "main.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\nOwn words.\n"
        "\\IfFileExists{notes.tex}{\\input{notes}}{NOTESABSENT}\n\\end{document}\n"
    )
    pdf = compile_pdf(out / "main.tex")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "Own words." in text and "NOTESABSENT" in text and "FOREIGNWORDS" not in text
    (out / "tables").mkdir()
    (out / "tables" / "secret.tex").symlink_to(outside / "secret.txt")
    with pytest.raises(UserError, match="secret.tex is a symbolic link"):
        compile_pdf(out / "main.tex")


# --- a study that trains: runs/ and its entries ---------------------------------------------------------------------


def write_tiny_study(tmp_path) -> Path:
    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump({"model": {"name": "vit_tiny_patch16_224"}, "data": {"name": "fashion_mnist"}})
    )
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"linear": {}}}))
    return path


@pytest.mark.parametrize("where", ["runs", "runs/0123abcd", "study.yaml", "phases.jsonl", "library.log", ".lock"])
def test_a_study_trains_into_no_linked_folder_and_writes_through_no_link(tmp_path, outside, where):
    """A runs/<id> that points outside would train there (and --retry-failed delete files there): refused by the
    dry-run and the study alike, before anything is written."""
    path, out = write_tiny_study(tmp_path), tmp_path / "study"
    link = out / where
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside / ("secret.txt" if "." in where else ""), target_is_directory="." not in where)
    for extra in (["--dry-run"], ["--retry-failed"]):
        assert_refused(peftlab("study", str(path), "--study-dir", str(out), "--quiet", *extra), link.name)
    assert unchanged(outside)


@pytest.mark.parametrize("name", ["result.json", "checkpoint", "adapter.safetensors", "library.log"])
def test_a_run_directory_entry_that_is_a_link_is_refused(tmp_path, outside, name):
    path, out = write_tiny_study(tmp_path), tmp_path / "study"
    run = out / "runs" / "0123abcd"
    run.mkdir(parents=True)
    (run / name).symlink_to(outside if name == "checkpoint" else outside / "secret.txt")
    assert_refused(peftlab("study", str(path), "--study-dir", str(out), "--quiet", "--dry-run"), name)
    assert unchanged(outside)


# --- the one helper -----------------------------------------------------------------------------------------------


def test_the_atomic_writer_refuses_a_link_and_writes_beside_no_target(tmp_path, outside):
    link = tmp_path / "file.txt"
    link.symlink_to(outside / "secret.txt")
    with pytest.raises(UserError, match="file.txt is a symbolic link"):
        write_text_atomic(link, "attacker's line\n")
    with pytest.raises(UserError, match="symbolic link"):
        write_atomic(link, lambda tmp: Path(tmp).write_text("x"))
    assert unchanged(outside) and link.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(outside / "new.txt")
    with pytest.raises(UserError, match="dangling is a symbolic link"):
        write_text_atomic(dangling, "x")
    assert not (outside / "new.txt").exists() and os.path.islink(dangling)


# ---- readers open a file once, never asking is_file() first (issue 78 item 9: a race) ----------------------------


def test_readers_open_their_file_once_and_never_ask_first(tmp_path, monkeypatch):
    """Each reader that asked ``is_file()`` and then opened the same path (the file could go, or be swapped for a
    FIFO, in between) opens it once and checks what it opened: with ``Path.is_file`` made to fail, each still
    answers, absent as absent, a FIFO as no file (never blocking), a file as its content."""
    from peftlab.analysis.archive.submission import paper_results_sha256
    from peftlab.analysis.paper.latex import first_latex_error, unresolved_references
    from peftlab.config.paths import base_manifest
    from peftlab.models.backbones import hf_normalisation
    from peftlab.models.hf_config import read_hf_config
    from peftlab.study.report_options import read_report_options, read_study_name
    from peftlab.study.stale import file_sha256
    from peftlab.utils.errors import ConfigError, WeightsError

    def asked(self):
        raise AssertionError(f"is_file() asked of {self}")

    study = tmp_path / "study"
    study.mkdir()
    (tmp_path / "weights.bin").write_bytes(b"abc")
    (tmp_path / "main.log").write_text("! Undefined control sequence.\nCitation `x' on page 1 undefined\n")
    os.mkfifo(tmp_path / "fifo")
    monkeypatch.setattr(Path, "is_file", asked)
    assert read_report_options(study / "study.yaml").labels == {}  # absent: the defaults
    assert read_study_name(study) == "study"
    (study / "study.yaml").write_text("name: received\nbase: base.yaml\n")
    assert read_study_name(study) == "received"
    os.mkfifo(study / "other.yaml")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_report_options(study / "other.yaml")
    assert file_sha256(tmp_path / "weights.bin") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_sha256(tmp_path / "fifo") is None and file_sha256(tmp_path / "nowhere") is None
    assert paper_results_sha256(tmp_path) is None
    assert base_manifest(str(tmp_path / "weights.bin")) is None
    assert hf_normalisation(tmp_path / "preprocessor_config.json", 3) == (None, None)
    with pytest.raises(WeightsError, match="is not an HF model directory"):
        read_hf_config(tmp_path)
    assert first_latex_error(tmp_path / "main.log", "") == "! Undefined control sequence."
    assert first_latex_error(tmp_path / "none.log", "out\nlast line\n") == "last line"
    assert unresolved_references(tmp_path / "main.log") == "undefined references or citations: x"
