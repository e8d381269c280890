"""Strings that come from files (run folders, study files, tuning records, recorded commands) into the languages
peftlab writes, one escaper each: LaTeX (`latex_escape` makes any text print as itself, `latex_text` keeps a
label's inline math only where it is `safe_math`, else escapes the whole label), Markdown (`markdown_text` for
prose, `markdown_code` for a code span, `markdown_block` for a fenced block). BibTeX entries are read by
config/tex.py's `bibtex_entry`, shell words quoted by `shlex.quote`."""

import re
import unicodedata

from peftlab.config.tex import safe_math, typesets

LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "×": r"$\times$",
}


def latex_escape(text):
    """`text` with every character that is special to LaTeX escaped; a control character (a newline, an escape, a
    bidirectional override) and a character pdflatex cannot typeset (an emoji, CJK: ``config.tex.typesets``)
    print as their code, \\x0a, \\u1f642."""
    return "".join(LATEX_SPECIAL.get(char) or latex_control(char) for char in str(text))


def latex_control(char: str) -> str:
    return rf"\textbackslash{{}}{control_code(char)}" if control(char) or not typesets(char) else char


def control(char: str) -> bool:
    """Whether ``char`` is a control or format character (Unicode's Cc and Cf: newline, escape, bidi overrides)."""
    return unicodedata.category(char) in ("Cc", "Cf")


def control_code(char: str) -> str:
    return f"x{ord(char):02x}" if ord(char) < 0x100 else f"u{ord(char):04x}"


# "$" not preceded by a backslash: the edges of inline math.
MATH_DELIMITER = re.compile(r"(?<!\\)\$")


def latex_text(text):
    """Plain text with inline math: escaped outside $...$, kept as written inside when it is `safe_math`.

    "LoRA ($r{=}4$), 50%" -> "LoRA ($r{=}4$), 50\\%". "\\$" is a literal dollar. Text whose
    dollar signs do not pair up, or whose math holds anything but symbols, is all plain text.
    """
    parts = MATH_DELIMITER.split(str(text))
    if len(parts) % 2 == 0 or not all(safe_math(part) for part in parts[1::2]):
        return latex_escape(str(text).replace("\\$", "$"))
    return "".join(f"${part}$" if i % 2 else latex_escape(part.replace("\\$", "$")) for i, part in enumerate(parts))


# What starts markup inside a line of Markdown (GitHub's included): emphasis, code, links and images (from their
# "["), HTML and autolinks, table cells, entities, strikethrough, a heading's closing #. CommonMark lets a backslash
# escape any of them; a line's start (a list, a heading) is the writer's, never the text's. An underscore inside a
# word (fashion_mnist) starts no emphasis and stays as it is.
MARKDOWN_MARKUP = re.compile(r"[\\`*\[\]<>|&~#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def markdown_text(text) -> str:
    """`text` as Markdown prose inside a line that prints as itself: ``MARKDOWN_MARKUP`` (an underscore only at
    a word's edge) backslash-escaped, a control character (a newline would start a heading or close a fence) shown
    as its code, \\x0a."""
    text = "".join("\\" + control_code(char) if control(char) else char for char in str(text))
    return MARKDOWN_MARKUP.sub(lambda m: "\\" + m.group(0), text)


def markdown_code(text) -> str:
    """`text` as a Markdown code span: delimited by more backticks than any run inside it, control characters shown
    as their codes."""
    text = "".join("\\" + control_code(char) if control(char) else char for char in str(text))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or text.startswith(" ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_block(lines: list[str], info: str = "") -> list[str]:
    """A fenced code block of `lines`, its fence longer than any run of backticks inside, so no line closes it.
    A line holding a control character is refused by the caller: here it would be a ValueError."""
    if any(control(char) for line in lines for char in line):
        raise ValueError("a code block line holds a control character")
    fence = "`" * max(3, 1 + max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0))
    return [fence + info, *lines, fence]
