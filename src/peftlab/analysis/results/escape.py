"""Strings that come from files (run folders, study files, tuning records) into LaTeX: `latex_escape` makes
any text print as itself, `latex_text` keeps a label's inline math only when it holds symbols and
typesetting commands (no \\input, no catcode tricks), else escapes the whole label."""

import re

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
    """`text` with every character that is special to LaTeX escaped."""
    return "".join(LATEX_SPECIAL.get(char, char) for char in str(text))


# "$" not preceded by a backslash: the edges of inline math.
MATH_DELIMITER = re.compile(r"(?<!\\)\$")
# What math in a label may hold, since labels come from files (a study folder may be someone else's): letters,
# digits, operators, braces, sub- and superscripts ("^^" is TeX's notation for any character, a backslash
# included) and the commands below, which only typeset. Anything else prints the whole label as plain text.
MATH_CHARACTERS = re.compile(r"(?:[A-Za-z0-9 +\-=*/.,:;!?'()\[\]<>|{}_]|\^(?!\^)|\\(?:[A-Za-z]+|[,;! {}|]))*")
MATH_COMMANDS = frozenset(
    """alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi rho sigma
    tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega
    times cdot div pm mp le leq ge geq ne neq approx sim simeq equiv propto ll gg in notin subset subseteq
    infty ell prime partial nabla to rightarrow leftarrow mapsto dots ldots cdots sum prod log exp min max
    mathrm mathbf mathit mathsf mathtt mathcal text textrm textbf textit frac sqrt hat tilde bar vec top""".split()
)


def safe_math(math: str) -> bool:
    """Whether `math` (the inside of $...$) only typesets: allowed characters and commands, balanced braces."""
    if not MATH_CHARACTERS.fullmatch(math):
        return False
    if any(command not in MATH_COMMANDS for command in re.findall(r"\\([A-Za-z]+)", math)):
        return False
    depth = 0
    for brace in re.findall(r"(?<!\\)[{}]", math):
        depth += 1 if brace == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def latex_text(text):
    """Plain text with inline math: escaped outside $...$, kept as written inside when it is `safe_math`.

    "LoRA ($r{=}4$), 50%" -> "LoRA ($r{=}4$), 50\\%". "\\$" is a literal dollar. Text whose
    dollar signs do not pair up, or whose math holds anything but symbols, is all plain text.
    """
    parts = MATH_DELIMITER.split(str(text))
    if len(parts) % 2 == 0 or not all(safe_math(part) for part in parts[1::2]):
        return latex_escape(str(text).replace("\\$", "$"))
    return "".join(f"${part}$" if i % 2 else latex_escape(part.replace("\\$", "$")) for i, part in enumerate(parts))
