"""Compiling the paper: latexmk and pdflatex, with one-line errors naming what is missing or wrong."""

from __future__ import annotations

import collections
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from peftlab.utils.errors import UserError
from peftlab.utils.files import one_line, read_json, read_text, refuse_link, write_atomic, write_json_atomic
from peftlab.utils.programs import run_program

# What compiling needs, and the Debian package that has it (scripts/install-latex.sh installs them).
LATEX_TOOLS = {"latexmk": "latexmk", "pdflatex": "texlive-latex-base", "bibtex": "texlive-latex-base"}
LATEX_STYLES = {
    "booktabs.sty": "texlive-latex-recommended",
    "subcaption.sty": "texlive-latex-recommended",
    "algorithm.sty": "texlive-science",
    "algpseudocode.sty": "texlive-science",
}


# latexmk reads rc files (Perl it runs) from the working directory, $HOME, XDG_CONFIG_HOME and LATEXMKRCSYS:
# the paper's folder may come from someone else's archive, so -norc reads none of them and every setting the
# build needs is on this line. -no-shell-escape turns pdflatex's \write18 off altogether (Debian allows a
# restricted list of commands by default).
LATEXMK = [
    "latexmk",
    "-norc",
    "-pdf",
    "-no-shell-escape",
    "-interaction=nonstopmode",
    "-halt-on-error",
    "-file-line-error",
]


# A paper compiles in seconds to a minute; TeX in a loop (a macro that calls itself) would run forever.
LATEXMK_SECONDS = 600
KPSEWHICH_FIX = "check the TeX installation (scripts/install-latex.sh)"


def latex_env() -> dict[str, str]:
    """The environment latexmk runs in: TeX may read and write only below the paper's folder (no absolute
    paths, no "..", no dot files: kpathsea's paranoid mode) and runs no shell command. The PDF's dates and
    identifier are fixed (SOURCE_DATE_EPOCH, which pdfTeX reads with FORCE_SOURCE_DATE), so that one pdfTeX makes
    the same bytes of the same sources, which ``compare_compiled`` compares."""
    env = {key: value for key, value in os.environ.items() if key != "LATEXMKRCSYS"}
    env.update(openin_any="p", openout_any="p", shell_escape="f", SOURCE_DATE_EPOCH="0", FORCE_SOURCE_DATE="1")
    return env


def missing_latex() -> list[str]:
    """The Debian packages whose tools or styles are missing ([] when the paper can compile)."""
    missing = [package for tool, package in LATEX_TOOLS.items() if shutil.which(tool) is None]
    if shutil.which("kpsewhich"):
        for style, package in LATEX_STYLES.items():
            found = run_program(["kpsewhich", style], seconds=60, fix=KPSEWHICH_FIX).stdout.strip()
            if not found:
                missing.append(package)
    return list(dict.fromkeys(missing))


# What TeX may read of the paper's folder: the files ``write_paper`` writes there. Anything else in the folder
# (a booktabs.sty, a link to a secret, an aux file of someone else's build) never reaches the compile.
PAPER_SOURCES = ("main.tex", "results.tex", "references.bib", "tables/*.tex", "figures/*.pdf", "figures/*.png")


def compile_pdf(main: Path) -> Path:
    """latexmk -pdf of ``main`` in a fresh folder holding copies of the paper's own sources (``PAPER_SOURCES``:
    regular files only, a link is refused), then main.pdf and main.log copied back beside ``main``.
    UserError naming missing packages or the first LaTeX error."""
    missing = missing_latex()
    if missing:
        raise UserError(
            f"cannot compile {main}: missing LaTeX packages {' '.join(missing)} "
            "(Debian: run scripts/install-latex.sh, or apt-get install them); the sources are written"
        )
    refuse_link(main, "paper folder entry")
    log, pdf = main.with_suffix(".log"), main.with_suffix(".pdf")
    with tempfile.TemporaryDirectory(prefix="peftlab-tex-") as tmp:
        build = Path(tmp)
        for source in dict.fromkeys([main.name, *paper_sources(main.parent)]):
            (build / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(main.parent / source, build / source, follow_symlinks=False)
        built_log = build / log.name
        fix = f"TeX may be in a loop (a macro that calls itself): the end of {log} shows where it was"
        try:
            proc = run_program(LATEXMK + [main.name], seconds=LATEXMK_SECONDS, fix=fix, cwd=build, env=latex_env())
        finally:
            if built_log.is_file():
                write_atomic(log, lambda out: copy_tail(built_log, out))
        if proc.returncode != 0:
            raise UserError(
                f"latexmk failed on {main}: {first_latex_error(built_log, proc.stdout + proc.stderr)} (log: {log})"
            )
        problems = unresolved_references(built_log)
        if problems:
            raise UserError(f"{main}: {problems} (log: {log})")
        write_atomic(pdf, lambda out: shutil.copyfile(build / pdf.name, out))
    return pdf


# The most of a log copied back: its end (a TeX in a loop writes without bound until its time is up).
LOG_BYTES = 16 << 20


def copy_tail(source: Path, out: str) -> None:
    """Copy ``source`` to ``out``, only its last ``LOG_BYTES`` where it is longer."""
    with open(source, "rb") as f, open(out, "wb") as g:
        f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_BYTES))
        shutil.copyfileobj(f, g)


def paper_sources(folder: Path) -> list[str]:
    """The paper's sources in ``folder`` (``PAPER_SOURCES``), relative to it; a symbolic link among them, or
    in place of tables/ or figures/, is one UserError line."""
    sources = []
    for pattern in PAPER_SOURCES:
        if "/" in pattern:
            refuse_link(folder / pattern.split("/")[0], "paper folder entry")
        for path in sorted(folder.glob(pattern)):
            refuse_link(path, "paper folder entry")
            if path.is_file():
                sources.append(path.relative_to(folder).as_posix())
    return sources


def first_latex_error(log: Path, output: str) -> str:
    text = read_text(log, "LaTeX log") or output  # opened once: None where latexmk wrote none
    for line in text.splitlines():
        if re.match(r"^(!|\S+:\d+:)", line):
            return line.strip()
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def unresolved_references(log: Path) -> str:
    """A sentence naming undefined references or citations in the final log, or ""."""
    text = read_text(log, "LaTeX log") or ""
    undefined = sorted(set(re.findall(r"(?:Reference|Citation) `([^']+)' .*undefined", text)))
    return f"undefined references or citations: {', '.join(undefined)}" if undefined else ""


# Written beside main.pdf after a compile succeeds, and removed when a paper build starts: which results the PDF
# shows, the PDF's own hash and those of the sources it was compiled from. ``peftlab submission`` packs main.pdf
# only when all of them agree with what it packs.
PDF_RECORD = "main.pdf.json"


def record_pdf(paper_dir: Path, results_sha256: str) -> None:
    """Record that main.pdf in ``paper_dir``, as it is now, shows the results of that hash and was compiled from
    the sources there as they are now."""
    record = {
        "results_sha256": results_sha256,
        "pdf_sha256": file_sha256(paper_dir / "main.pdf"),
        "sources": sources_sha256(paper_dir),
    }
    write_json_atomic(paper_dir / PDF_RECORD, record)


def sources_sha256(paper_dir: Path) -> dict[str, str]:
    """The SHA-256 of each of the paper's sources (``PAPER_SOURCES``), by its path in ``paper_dir``."""
    return {source: file_sha256(paper_dir / source) for source in paper_sources(paper_dir)}


def changed_source(paper_dir: Path) -> str | None:
    """The first source of the paper in ``paper_dir`` that is not as main.pdf was compiled from it (edited, added or
    removed since), or None when all are."""
    recorded = (read_json(paper_dir / PDF_RECORD) or {}).get("sources")
    if not isinstance(recorded, dict):
        return PDF_RECORD  # a record of no sources: a compile of an older peftlab
    now = sources_sha256(paper_dir)
    return next(
        (source for source in sorted(set(now) | set(recorded)) if now.get(source) != recorded.get(source)), None
    )


def pdf_results_sha256(paper_dir: Path) -> str | None:
    """The results SHA-256 main.pdf in ``paper_dir`` was compiled from, or None when no compile of these
    sources succeeded or main.pdf is not the file that compile wrote."""
    record = read_json(paper_dir / PDF_RECORD) or {}
    pdf = paper_dir / "main.pdf"
    if not isinstance(record.get("results_sha256"), str) or not pdf.is_file() or pdf.is_symlink():
        return None
    return record["results_sha256"] if record.get("pdf_sha256") == file_sha256(pdf) else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# A packed main.pdf against what its sources compile to here (``peftlab reproduce``): poppler's tools read the text.
PDF_TEXT_TOOLS = ("pdftotext", "pdfinfo")  # Debian: poppler-utils
PDF_TEXT_SECONDS = 120
SHOWN_WORDS = 6
PDF_UNREADABLE = "it is not a PDF poppler can read (truncated, emptied or not a PDF)"


def pdf_text(pdf: Path) -> tuple[str, str] | None:
    """``pdf``'s text (pdftotext: pages end in a form feed) and the program that made it (pdfinfo's Producer,
    "pdfTeX-1.40.24"; "" where it names none); None where poppler cannot read it (truncated, emptied or not a PDF).
    A PDF from someone else's archive is only read by poppler's tools, each for at most ``PDF_TEXT_SECONDS``."""
    fix = f"{pdf} may be malformed"
    info = run_program(["pdfinfo", pdf], seconds=PDF_TEXT_SECONDS, fix=fix)
    if info.returncode != 0:
        return None
    text = run_program(["pdftotext", "-q", "-enc", "UTF-8", pdf, "-"], seconds=PDF_TEXT_SECONDS, fix=fix).stdout
    producer = next((line.split(":", 1)[1].strip() for line in info.stdout.splitlines() if "Producer:" in line), "")
    return text, producer


def layout_free_words(text: str) -> collections.Counter:
    """The words of a PDF's text whatever another pdfTeX's layout did to them: each page's closing page number
    dropped, a word broken at a line's end joined again, hyphens removed (``fine-`` + ``tuning`` and an unbroken
    ``fine-tuning`` are one word), counted as a multiset (a float or a paragraph moved is no difference; a word
    changed, added or removed is)."""
    words: collections.Counter = collections.Counter()
    for page in text.split("\f"):
        lines = [line.strip() for line in page.splitlines() if line.strip()]
        if lines and lines[-1].isdigit():
            lines.pop()
        joined = re.sub(r"-\n(?=\S)", "", "\n".join(lines))
        words.update(word for word in (w.replace("-", "") for w in joined.split()) if word)
    return words


def word_difference(old: collections.Counter, new: collections.Counter) -> str:
    """The words ``old`` (a packed PDF's) holds beyond ``new`` (its sources' compile) and the words it lacks."""
    extra, lacks = old - new, new - old
    said = [f"{label} {', '.join(repr(w) for w in sorted(words)[:SHOWN_WORDS])}" for label, words in
            (("holds", extra), ("lacks", lacks)) if words]  # fmt: skip
    return "; ".join(said)


def pdftex_here() -> str:
    """The Producer this machine's pdflatex writes into a PDF ("pdfTeX-1.40.24"), from ``pdflatex --version``."""
    said = run_program(["pdflatex", "--version"], seconds=60, fix="pdflatex may be broken").stdout
    version = re.match(r"pdfTeX \S+-(\d+\.\d+\.\d+)", said)
    return f"pdfTeX-{version.group(1)}" if version else "an unknown pdfTeX"


def compare_compiled(paper_dir: Path) -> tuple[str, str]:
    """main.pdf in ``paper_dir`` against a compile of the paper's sources there (copied to a folder of its own):
    ("same", what was compared), ("differs", the first differing word or byte) or ("unchecked", why not: LaTeX or
    poppler missing here, or a PDF of another pdfTeX whose words are its sources'). A main.pdf poppler cannot read
    (cut short, emptied, garbage) differs without a compile: pdflatex writes none such. One this machine's pdfTeX
    made (its Producer says so) is compared word for word, then byte for byte (``latex_env`` fixes its dates), so an
    image or a font changed is a difference too. One another pdfTeX made (a Producer anyone can write) may break and
    hyphenate lines otherwise: ``compare_words``."""
    if missing_latex() or any(shutil.which(tool) is None for tool in PDF_TEXT_TOOLS):
        return "unchecked", "not compiled again: LaTeX or poppler's pdftotext is not installed here"
    packed = pdf_text(paper_dir / "main.pdf")
    if packed is None:
        return "differs", PDF_UNREADABLE
    old_text, made_by = packed
    made_here = pdftex_here()
    with tempfile.TemporaryDirectory(prefix="peftlab-pdf-") as tmp:
        build = Path(tmp)
        for source in paper_sources(paper_dir):
            (build / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paper_dir / source, build / source, follow_symlinks=False)
        try:
            compiled = compile_pdf(build / "main.tex")
            new_text, new_bytes = (pdf_text(compiled) or ("", ""))[0], compiled.read_bytes()  # unread: no words
        except UserError as err:
            return "differs", f"its packed sources do not compile here ({one_line(err)})"
    if made_by != made_here:
        return compare_words(old_text, new_text, made_by or "a program poppler does not name", made_here)
    old, new = old_text.split(), new_text.split()
    at = next((n for n, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    if at != len(old) or at != len(new):
        shown = " ".join(old[at : at + SHOWN_WORDS]) or "(its end)"
        return "differs", f"word {at + 1:,}: {shown!r} (its sources give {' '.join(new[at : at + SHOWN_WORDS])!r})"
    old_bytes = (paper_dir / "main.pdf").read_bytes()
    if old_bytes == new_bytes:
        return "same", f"byte for byte ({len(new_bytes):,} bytes), compiled again from the packed sources"
    byte = next(
        (n for n, (a, b) in enumerate(zip(old_bytes, new_bytes)) if a != b), min(len(old_bytes), len(new_bytes))
    )
    return "differs", (
        f"its words are its sources' ({len(new):,}), its bytes are not: byte {byte + 1:,} differs ({len(old_bytes):,} "
        f"bytes, the compile here {len(new_bytes):,}): an image, a font or the PDF's structure was changed"
    )


def compare_words(old_text: str, new_text: str, made_by: str, made_here: str) -> tuple[str, str]:
    """A PDF another pdfTeX made against this one's compile of its sources: its words, counted layout-free (another
    pdfTeX may break and hyphenate lines otherwise), differ or are the same; its bytes (images, fonts) cannot be
    compared, so where its words are the same it stays named as not checked, with why."""
    old, new = layout_free_words(old_text), layout_free_words(new_text)
    if old != new:
        return "differs", f"made by {made_by}, its words against {made_here}'s compile of its sources: " \
            f"{word_difference(old, new)}"  # fmt: skip
    return "unchecked", (
        f"its words ({sum(new.values()):,}) are what {made_here} compiles its sources to; made by {made_by}, so its "
        "images and fonts were not compared"
    )
