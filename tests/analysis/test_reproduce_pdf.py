"""Issue 86, item 3: a packed main.pdf is compiled again from the packed paper sources and its text compared word for
word, then its bytes, where LaTeX and poppler are installed (``latex.compare_compiled``, ``regenerate.compare_pdf``);
a PDF another pdfTeX made is compared by its words and named as not checked where they agree; one poppler cannot read
(cut short, emptied) is a difference, never compiled, and without LaTeX or poppler here every main.pdf is named as not
checked with why.
Tiny documents: each compile is about a second of pdflatex."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from peftlab.analysis.archive.regenerate import PDF_UNCHECKED, Regenerated, compare_pdf
from peftlab.analysis.paper import latex
from peftlab.analysis.paper.latex import PDF_TEXT_TOOLS, compare_compiled, compile_pdf, missing_latex

pytestmark = pytest.mark.skipif(
    bool(missing_latex()) or not all(shutil.which(tool) for tool in PDF_TEXT_TOOLS),
    reason="LaTeX or poppler-utils is not installed (scripts/install-latex.sh)",
)
DOCUMENT = "\\documentclass{article}\n\\begin{document}\nLoRA reaches %s\\%% on Fashion-MNIST.\n\\end{document}\n"
SAME = ", compiled again from the packed sources"


def paper(folder: Path, number: str, pdf_of: str | None = None) -> Path:
    """A paper folder whose main.tex says ``number`` and whose main.pdf is compiled from a main.tex saying
    ``pdf_of`` (the same number where None)."""
    (folder / "paper").mkdir(parents=True)
    built = folder / "built"
    built.mkdir()
    (built / "main.tex").write_text(DOCUMENT % (pdf_of or number))
    shutil.copyfile(compile_pdf(built / "main.tex"), folder / "paper" / "main.pdf")
    (folder / "paper" / "main.tex").write_text(DOCUMENT % number)
    return folder / "paper"


def test_a_pdf_its_sources_compile_to_is_compared_and_a_forged_number_is_named(tmp_path):
    state, said = compare_compiled(paper(tmp_path / "a", "72.3"))
    assert state == "same" and said.startswith("byte for byte (") and said.endswith(f" bytes){SAME}"), said
    state, said = compare_compiled(paper(tmp_path / "b", "72.3", pdf_of="99.9"))
    assert (
        state == "differs"
        and said == "word 3: '99.9% on Fashion-MNIST. 1' (its sources give '72.3% on Fashion-MNIST. 1')"
    )


def test_the_verdict_line_moves_from_not_checked_to_compared_or_to_differs(tmp_path):
    out = Regenerated(skipped=[f"paper/main.pdf ({PDF_UNCHECKED})", "5 macros of paper/results.tex (...)"])
    compare_pdf(paper(tmp_path / "a", "72.3").parent, out)
    assert out.skipped == ["5 macros of paper/results.tex (...)"] and "paper/main.pdf" in out.compared, out
    forged = Regenerated(skipped=[f"paper/main.pdf ({PDF_UNCHECKED})"])
    compare_pdf(paper(tmp_path / "b", "72.3", pdf_of="72.4").parent, forged)
    assert forged.skipped == [] and forged.differ == [
        "paper/main.pdf is not what its packed sources compile to: word 3: '72.4% on Fashion-MNIST. 1' "
        "(its sources give '72.3% on Fashion-MNIST. 1')"
    ], forged


def test_a_pdf_of_another_pdftex_is_compared_by_its_words(tmp_path, monkeypatch):
    """A Producer is a string anyone can write: a forger who renames it gets the words compared, not the check
    skipped (a real archive's main.pdf, pdflatex-compiled, renamed and forged, passed as intact before). The
    words are counted layout-free, so another pdfTeX's line and page breaks are no difference."""
    monkeypatch.setattr(latex, "pdftex_here", lambda: "pdfTeX-9.99.99")
    state, said = compare_compiled(paper(tmp_path / "a", "72.3"))  # its words agree, its bytes cannot be compared
    assert state == "unchecked" and said.startswith("its words (5) are what pdfTeX-9.99.99 compiles its sources to")
    assert "made by pdfTeX-1." in said and said.endswith("so its images and fonts were not compared"), said
    state, said = compare_compiled(paper(tmp_path / "b", "72.3", pdf_of="99.9"))
    assert state == "differs" and said.startswith("made by pdfTeX-1."), said
    assert said.endswith("compile of its sources: holds '99.9%'; lacks '72.3%'"), said


def test_a_pdf_whose_words_are_its_sources_but_not_its_bytes_differs(tmp_path):
    """An image of the paper redrawn (here a black box's height) leaves its words as they were: the same pdfTeX makes
    the same bytes of the same sources (its dates fixed), so the bytes are compared too."""
    box = "\\documentclass{article}\n\\begin{document}\nLoRA reaches 72.3\\%%.\\rule{1cm}{%s}\n\\end{document}\n"
    folder = tmp_path / "paper"
    (tmp_path / "built").mkdir()
    (tmp_path / "built" / "main.tex").write_text(box % "2cm")
    folder.mkdir()
    shutil.copyfile(compile_pdf(tmp_path / "built" / "main.tex"), folder / "main.pdf")
    (folder / "main.tex").write_text(box % "1cm")
    state, said = compare_compiled(folder)
    assert state == "differs" and said.startswith("its words are its sources' (4), its bytes are not: byte "), said
    assert said.endswith("an image, a font or the PDF's structure was changed"), said


def test_a_pdf_poppler_cannot_read_is_a_difference_without_a_compile(tmp_path, monkeypatch):
    """A forger who cuts the paper short, empties it or puts garbage in its place keeps no "intact": pdflatex writes
    no PDF poppler cannot read, so no compile is needed to say it is not what the packed sources compile to."""
    folder = paper(tmp_path / "a", "72.3")
    whole = (folder / "main.pdf").read_bytes()
    monkeypatch.setattr(latex, "compile_pdf", lambda main: pytest.fail("compiled for a PDF poppler cannot read"))
    for garbage in (whole[:200], b"", b"%PDF-1.5 stand-in\n"):
        (folder / "main.pdf").write_bytes(garbage)
        out = Regenerated(skipped=[f"paper/main.pdf ({PDF_UNCHECKED})"])
        compare_pdf(folder.parent, out)
        assert out.skipped == [] and out.differ == [
            "paper/main.pdf is not what its packed sources compile to: it is not a PDF poppler can read "
            "(truncated, emptied or not a PDF)"
        ], (garbage, out)


def test_layout_free_words_join_broken_words_and_drop_page_numbers():
    """Two layouts of one text: another line break (a word hyphenated at a line's end, a compound broken at its
    own hyphen), another page break (its page number), a float moved: the same words."""
    one = "LoRA fine-tuning reaches 72.3% on\nFashion-MNIST with rank 8.\n1\n\fTable 1: ranks\n2\n\f"
    two = "Table 1: ranks\nLoRA fine-\ntuning reaches 72.3% on Fash-\nion-MNIST with\n1\n\frank 8.\n2\n\f"
    assert latex.layout_free_words(one) == latex.layout_free_words(two)
    assert latex.layout_free_words(one) != latex.layout_free_words(one.replace("72.3%", "99.9%"))
    assert latex.layout_free_words("a\nb c\n3\n\f")["3"] == 0 and latex.layout_free_words("rank 3\n\f")["3"] == 1


def test_without_latex_or_poppler_it_is_named_as_not_installed_readable_or_not(tmp_path, monkeypatch):
    folder = paper(tmp_path / "a", "72.3")
    real = shutil.which
    monkeypatch.setattr(latex.shutil, "which", lambda tool: None if tool == "pdftotext" else real(tool))
    unchecked = ("unchecked", "not compiled again: LaTeX or poppler's pdftotext is not installed here")
    assert compare_compiled(folder) == unchecked
    (folder / "main.pdf").write_bytes(b"")
    assert compare_compiled(folder) == unchecked
    monkeypatch.undo()
    monkeypatch.setattr(latex, "missing_latex", lambda: ["texlive-latex-base"])
    assert compare_compiled(folder) == unchecked
