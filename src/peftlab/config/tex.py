"""What text from outside the code may hand TeX: inline math that only typesets (``safe_math``, for a study's labels
and a plugin's sentences) and a BibTeX entry that only cites (``bibtex_entry``, for a study's ``report.datasets``
and a plugin's ``bibtex``). Both are read by small strict grammars: what they do not know is refused, never passed
on, since TeX executes whatever reaches it (``\\def\\x{\\x}\\x`` loops forever, ``\\input`` reads a file)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from peftlab.utils.errors import ConfigError

# ---- characters pdflatex typesets -------------------------------------------------------------------------------

# What pdflatex typesets from UTF-8 under the paper's preamble (no fontenc: OT1), tried one character at a time:
# printable ASCII, Latin-1 and Latin Extended-A but for 27 characters OT1 has no glyph for, and the punctuation of
# prose. Any other character (Greek, Cyrillic, CJK, an emoji) stops the compile ("Unicode character ... not set up
# for use with LaTeX"): latex_escape shows it as its code, bibtex_entry refuses it.
OT1_MISSING = frozenset(  # guillemets, eth, thorn, ogoneks, stroked D and H, eng, kra, long s, ...
    "\u00ab\u00bb\u00d0\u00de\u00f0\u00fe\u0104\u0105\u0110\u0111\u0118\u0119\u0126\u0127\u012e\u012f\u0138\u013f\u0140\u0149\u014a\u014b\u0166\u0167\u0172\u0173\u017f"
)
PROSE_PUNCTUATION = frozenset("\u2013\u2014\u2018\u2019\u201c\u201d\u2020\u2021\u2022\u2026\u20ac\u2122")


def typesets(char: str) -> bool:
    """Whether pdflatex typesets ``char`` as text in the paper (a printable character it has a glyph for)."""
    code = ord(char)
    if code < 0x80:
        return char.isprintable()
    return (0xA0 <= code <= 0x17F and char not in OT1_MISSING and char != "\u00ad") or char in PROSE_PUNCTUATION


# ---- math: the inside of $...$ ----------------------------------------------------------------------------------

# Commands TeX defines as one math character (\mathchardef): an argument of their own (x^\alpha, \hat\theta).
MATH_SYMBOLS = frozenset(
    """alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi rho sigma
    tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega
    times cdot div pm mp le leq ge geq approx sim simeq equiv propto ll gg in subset subseteq
    infty ell prime partial nabla to rightarrow leftarrow top""".split()
)
# Commands that are macros of several tokens: typeset where they stand, never as a lone argument (x^\log breaks).
MATH_OPERATORS = frozenset("ne neq notin mapsto dots ldots cdots log exp min max sum prod".split())
MATH_ACCENTS = frozenset("hat tilde bar vec".split())  # one argument
MATH_FONTS = frozenset("mathrm mathbf mathit mathsf mathtt mathcal".split())  # one argument, math inside
MATH_TEXTS = frozenset("text textrm textbf textit".split())  # one braced argument of plain text
MATH_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-=*/.,:;!?()[]<>|")
ARGUMENT_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
TEXT_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?'()-+=/*[]")
MATH_DEPTH = 16  # braces inside braces: TeX allows 255 groups, a label needs a few
MATH_TOKEN = re.compile(r"\\([A-Za-z]+)|\\(.)|(\s+)|(.)", re.DOTALL)


class _Refused(Exception):
    pass


def safe_math(math: str) -> bool:
    """Whether ``math`` (the inside of $...$) is math TeX typesets without error: known characters and commands,
    every command with the arguments it takes, at most one superscript and one subscript per atom (a run of primes
    is a superscript), balanced braces; empty math ($$ opens display math) is not."""
    if not math.isprintable():
        return False
    tokens, space = [], False
    for m in MATH_TOKEN.finditer(math):
        command, symbol, white, char = m.groups()
        if white is None and space and char in ("'", "^"):  # a prime looks for the next ' or ^ without a space
            tokens.append(("gap", ""))
        space = white is not None
        if not space:
            tokens.append(("cmd", command) if command else ("ctl", symbol) if symbol is not None else ("char", char))
    if all(kind == "gap" for kind, _ in tokens):
        return False
    try:
        return _math_list(tokens, 0, 0) == len(tokens)
    except (_Refused, IndexError):  # IndexError: the math ended where an argument was due
        return False


def _math_list(tokens: list, i: int, depth: int) -> int:
    """Items up to a closing brace or the end; the index after them."""
    if depth > MATH_DEPTH:
        raise _Refused
    while i < len(tokens) and tokens[i] != ("char", "}"):
        if tokens[i][0] == "gap" or (tokens[i][0] == "ctl" and tokens[i][1] in ", ;!"):  # a space: no nucleus
            i += 1
            continue
        i = _scripts(tokens, _nucleus(tokens, i, depth), depth)
    return i


def _nucleus(tokens: list, i: int, depth: int) -> int:
    kind, value = tokens[i]
    if kind == "char":
        if value in "^_'":  # scripts of an empty nucleus
            return i
        if value == "{":
            return _group(tokens, i, depth)
        if value in MATH_CHARACTERS:
            return i + 1
        raise _Refused
    if kind == "ctl":
        if value in "{}|":
            return i + 1
        raise _Refused
    if value in MATH_SYMBOLS or value in MATH_OPERATORS:
        return i + 1
    if value == "frac":
        return _argument(tokens, _argument(tokens, i + 1, depth), depth)
    if value == "sqrt":
        i += 1
        if tokens[i] == ("char", "["):  # the root's degree: plain characters up to "]"
            i += 1
            while tokens[i] != ("char", "]"):
                if tokens[i][0] != "char" or tokens[i][1] not in ARGUMENT_CHARACTERS:
                    raise _Refused
                i += 1
            i += 1
        return _argument(tokens, i, depth)
    if value in MATH_ACCENTS or value in MATH_FONTS:
        return _argument(tokens, i + 1, depth)
    if value in MATH_TEXTS:
        if tokens[i + 1] != ("char", "{"):
            raise _Refused
        i += 2
        while tokens[i] != ("char", "}"):
            if tokens[i][0] != "char" or tokens[i][1] not in TEXT_CHARACTERS:
                raise _Refused
            i += 1
        return i + 1
    raise _Refused


def _scripts(tokens: list, i: int, depth: int) -> int:
    """At most one subscript and one superscript: ^x, or primes and the ^x right after them (x'^2 is fine;
    x^2', x'_1^2 and x' ^2 are double superscripts: a prime looks ahead for ' or ^ without skipping a space)."""
    sub = sup = False
    while True:
        j = i
        while j < len(tokens) and tokens[j][0] == "gap":
            j += 1
        if j == len(tokens) or tokens[j][0] != "char" or tokens[j][1] not in "^_'":
            return i
        i, mark = j, tokens[j][1]
        if (sub if mark == "_" else sup) is True:
            raise _Refused
        if mark == "_":
            sub, i = True, _argument(tokens, i + 1, depth, script=True)
            continue
        sup = True
        if mark == "'":
            while i < len(tokens) and tokens[i] == ("char", "'"):
                i += 1
            if i < len(tokens) and tokens[i] == ("char", "^"):
                i = _argument(tokens, i + 1, depth, script=True)
        else:
            i = _argument(tokens, i + 1, depth, script=True)


def _argument(tokens: list, i: int, depth: int, script: bool = False) -> int:
    """One argument: a braced group, a letter or digit (a script also takes an operator), a one-character symbol."""
    kind, value = tokens[i]
    if kind == "char":
        if value == "{":
            return _group(tokens, i, depth)
        if value in ARGUMENT_CHARACTERS or (script and value in MATH_CHARACTERS):
            return i + 1
        raise _Refused
    if kind == "cmd" and value in MATH_SYMBOLS:
        return i + 1
    raise _Refused


def _group(tokens: list, i: int, depth: int) -> int:
    end = _math_list(tokens, i + 1, depth + 1)
    if end >= len(tokens):
        raise _Refused
    return end + 1


# ---- BibTeX -----------------------------------------------------------------------------------------------------

# A citation key as \citep{...} and BibTeX read it.
CITE_KEY = re.compile(r"[A-Za-z0-9_:.\-]{1,100}")
ENTRY_BYTES = 20_000
FIELD_CHARACTERS = 4_000
FIELDS = 40
# What a field may hold of LaTeX: accents (with their argument), letters of other alphabets, a few typesetting
# commands (with theirs), escaped specials; $math$ that is ``safe_math``. Nothing that defines, reads or expands.
TEXT_ACCENTS = frozenset("'`^\"~=.") | frozenset("u v H c d b r k t".split())
TEXT_COMMANDS = frozenset("emph textit textbf textsc texttt textrm textsf textup textsuperscript".split())
TEXT_LETTERS = frozenset(
    "i j o O l L ss ae AE oe OE aa AA ldots dots textendash textemdash textquoteleft textquoteright LaTeX TeX".split()
)
TEXT_ESCAPES = frozenset("&%$#_{},- /")
FIELD_TOKEN = re.compile(r"\\([A-Za-z]+)\s*|\\(.)|(.)", re.DOTALL)
BIBTEX_DEPTH = 8


@dataclass(frozen=True)
class BibEntry:
    """A plain BibTeX entry: its type, key and fields; ``text`` is how references.bib writes it."""

    type: str
    key: str
    fields: tuple[tuple[str, str], ...]

    @property
    def text(self) -> str:
        lines = [f"@{self.type}{{{self.key},"] + [f"  {name} = {{{value}}}," for name, value in self.fields]
        return "\n".join(lines) + "\n}"


def cite_key(key, where: str) -> str:
    """``key`` when it is a citation key (letters, digits, _:.-); else one ConfigError line naming ``where``."""
    if not isinstance(key, str) or not CITE_KEY.fullmatch(key):
        raise ConfigError(f"{where}={str(key)[:60]!r} is invalid: expected a BibTeX key (letters, digits, _:.-)")
    return key


def bibtex_entry(text, where: str) -> BibEntry:
    """The one reader of a BibTeX entry from outside the code (a study file, a plugin, a received result.json):
    ``@type{key, name = {value}, ...}`` with braced, quoted or numeric values and nothing around it, each value
    text that typesets only (``field_text``). Anything else is one ConfigError line naming ``where``."""
    if not isinstance(text, str):
        raise ConfigError(f"{where} is invalid: expected one BibTeX entry as text, got {type(text).__name__}")

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{where} is not a plain BibTeX entry ({why}): {text.strip()[:60]!r}")

    if len(text) > ENTRY_BYTES:
        raise refuse(f"longer than {ENTRY_BYTES} characters")
    found = re.match(r"\s*@([A-Za-z]+)\s*\{\s*([^,\s{}]*)\s*,", text)
    if not found:
        raise refuse("expected @type{key, ...}")
    kind, key = found.group(1).lower(), found.group(2)
    if kind in ("string", "preamble", "comment"):
        raise refuse(f"@{kind} is no citation")
    if not CITE_KEY.fullmatch(key):
        raise refuse(f"its key {key[:60]!r} is not letters, digits and _:.-")
    fields: dict[str, str] = {}
    i = found.end()
    while True:
        i = _skip_space(text, i)
        if text.startswith("}", i):
            break
        name = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*").match(text, i)
        if not name:
            raise refuse(f"expected a field name or the closing brace at character {i}")
        field = name.group(0).lower()
        i = _skip_space(text, name.end())
        if not text.startswith("=", i):
            raise refuse(f"expected = after {field}")
        value, i = _field_value(text, _skip_space(text, i + 1), refuse, field)
        if field in fields:
            raise refuse(f"{field} is given twice")
        if len(fields) == FIELDS:
            raise refuse(f"more than {FIELDS} fields")
        fields[field] = field_text(value, f"{where} field {field}")
        i = _skip_space(text, i)
        if text.startswith(",", i):
            i += 1
        elif not text.startswith("}", i):
            raise refuse(f"expected , or }} after the field {field}")
    if text[i + 1 :].strip():
        raise refuse("text after the entry's closing brace")
    return BibEntry(kind, key, tuple(fields.items()))


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _field_value(text: str, i: int, refuse, field: str) -> tuple[str, int]:
    """A field's value at ``i`` ({...}, "..." or digits; no @string names, no # concatenation) and the index after."""
    if i < len(text) and text[i].isdigit():
        end = re.compile(r"[0-9]+").match(text, i).end()
        return text[i:end], end
    if i >= len(text) or text[i] not in '{"':
        raise refuse(f'the value of {field} is not {{...}}, "..." or a number')
    close, depth = ("}" if text[i] == "{" else '"'), 0
    for j in range(i + 1, len(text)):
        char = text[j]  # BibTeX counts every brace, an escaped one (\{) too
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                if close == "}":
                    return text[i + 1 : j], j + 1
                raise refuse(f"the value of {field} closes a brace it did not open")
            depth -= 1
        elif char == '"' and close == '"' and depth == 0:
            return text[i + 1 : j], j + 1
    raise refuse(f"the value of {field} is not closed")


def field_text(value: str, where: str) -> str:
    """A BibTeX field's value as references.bib writes it (runs of white space made one space) when TeX only
    typesets it: characters that print (no control character), braces balanced and at most ``BIBTEX_DEPTH`` deep,
    no unescaped % # & ^ _ (a comment, a parameter, an alignment, math outside $), the commands of ``TEXT_COMMANDS``,
    ``TEXT_LETTERS``, ``TEXT_ACCENTS`` and ``TEXT_ESCAPES`` only, each with its argument, $...$ ``safe_math``.
    Anything else is one ConfigError line naming ``where`` and what was found."""
    text = re.sub(r"[ \t\r\n]+", " ", value).strip()

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{where} holds {why}: expected text that TeX only typesets ({text[:60]!r})")

    if len(text) > FIELD_CHARACTERS:
        raise refuse(f"more than {FIELD_CHARACTERS} characters")
    if not text.isprintable():
        raise refuse("a control character")
    if untypeset := next((char for char in text if not typesets(char)), None):
        raise refuse(f"U+{ord(untypeset):04X}, a character pdflatex cannot typeset (write it as a TeX command)")
    if "^^" in text:
        raise refuse("^^ (TeX's notation for any character)")
    raw = 0  # BibTeX's count of braces, the escaped ones too
    for brace in re.findall(r"[{}]", text):
        raw += 1 if brace == "{" else -1
        if raw < 0:
            break
    if raw:
        raise refuse("braces that do not pair up as BibTeX counts them (\\{ and \\} too)")
    math = [m.start() for m in re.finditer(r"(?<!\\)\$", text)]
    if len(math) % 2:
        raise refuse("a $ that opens math no $ closes")
    for start, end in zip(math[::2], math[1::2]):
        if not safe_math(text[start + 1 : end]):
            raise refuse(f"math {text[start : end + 1][:40]!r} that is not plain symbols")
    outside = "".join(text[a:b] for a, b in zip([0] + [e + 1 for e in math[1::2]], math[::2] + [len(text)]))
    tokens = list(FIELD_TOKEN.finditer(outside))
    depth = 0
    for n, token in enumerate(tokens):
        command, symbol, char = token.groups()
        if char is not None:
            if char in "%#&^_":
                raise refuse(f"an unescaped {char}")
            depth += {"{": 1, "}": -1}.get(char, 0)
            if not 0 <= depth <= BIBTEX_DEPTH:
                raise refuse("unbalanced braces" if depth < 0 else f"braces deeper than {BIBTEX_DEPTH}")
            continue
        name = command or symbol
        if name in TEXT_ACCENTS or name in TEXT_COMMANDS:
            if not _text_argument(tokens, n + 1):
                raise refuse(f"\\{name} without its argument")
        elif not (name in TEXT_LETTERS or (symbol is not None and symbol in TEXT_ESCAPES)):
            raise refuse(f"the command \\{name}")
    if depth:
        raise refuse("unbalanced braces")
    return text


def _text_argument(tokens: list, n: int) -> bool:
    """Whether an accent or a command at ``tokens[n - 1]`` has an argument: a letter or digit, {...}, \\i or \\j."""
    while n < len(tokens) and tokens[n].group(3) == " ":
        n += 1
    if n >= len(tokens):
        return False
    command, _, char = tokens[n].groups()
    return (char is not None and (char.isalnum() or char == "{")) or command in ("i", "j")
