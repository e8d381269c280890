"""Compiling the paper: latexmk and pdflatex, with one-line errors naming what is missing or wrong."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from peftlab.utils.errors import UserError

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


def latex_env() -> dict[str, str]:
    """The environment latexmk runs in: TeX may read and write only below the paper's folder (no absolute
    paths, no "..", no dot files: kpathsea's paranoid mode) and runs no shell command."""
    env = {key: value for key, value in os.environ.items() if key != "LATEXMKRCSYS"}
    env.update(openin_any="p", openout_any="p", shell_escape="f")
    return env


def missing_latex() -> list[str]:
    """The Debian packages whose tools or styles are missing ([] when the paper can compile)."""
    missing = [package for tool, package in LATEX_TOOLS.items() if shutil.which(tool) is None]
    if shutil.which("kpsewhich"):
        for style, package in LATEX_STYLES.items():
            found = subprocess.run(["kpsewhich", style], capture_output=True, text=True).stdout.strip()
            if not found:
                missing.append(package)
    return list(dict.fromkeys(missing))


def compile_pdf(main: Path) -> Path:
    """latexmk -pdf in main's directory; UserError naming missing packages or the first LaTeX error."""
    missing = missing_latex()
    if missing:
        raise UserError(
            f"cannot compile {main}: missing LaTeX packages {' '.join(missing)} "
            "(Debian: run scripts/install-latex.sh, or apt-get install them); the sources are written"
        )
    proc = subprocess.run(LATEXMK + [main.name], cwd=main.parent, env=latex_env(), capture_output=True, text=True)
    log = main.with_suffix(".log")
    if proc.returncode != 0:
        raise UserError(f"latexmk failed on {main}: {first_latex_error(log, proc.stdout + proc.stderr)} (log: {log})")
    problems = unresolved_references(log)
    if problems:
        raise UserError(f"{main}: {problems} (log: {log})")
    return main.with_suffix(".pdf")


def first_latex_error(log: Path, output: str) -> str:
    text = log.read_text(errors="replace") if log.is_file() else output
    for line in text.splitlines():
        if re.match(r"^(!|\S+:\d+:)", line):
            return line.strip()
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def unresolved_references(log: Path) -> str:
    """A sentence naming undefined references or citations in the final log, or ""."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    undefined = sorted(set(re.findall(r"(?:Reference|Citation) `([^']+)' .*undefined", text)))
    return f"undefined references or citations: {', '.join(undefined)}" if undefined else ""
