"""Names drawn as themselves in a figure, whatever script they are in: a class, a configuration or a dataset
named with emoji, CJK or a bidirectional override reaches every figure intact.

``drawn_intact(fig)`` (``save_figure`` calls it on every figure) gives each text of the figure the font families
``figure_families`` finds on this machine (the default font, then ``FALLBACK_FAMILIES`` that are installed:
matplotlib draws each glyph from the first family that has it), and shows as its code (``\\u732b``, as
report.md and the paper show a control character) every control or format character (a right-to-left override
would draw the rest of the name reversed) and every character no family here has (matplotlib would draw an
empty box). Inline math (``$r$``) is left to mathtext.
"""

from __future__ import annotations

import functools

import matplotlib
import matplotlib.text
import matplotlib.ticker
from matplotlib import font_manager

from peftlab.analysis.results.escape import MATH_DELIMITER, control, control_code

# Families that cover scripts and symbols DejaVu Sans lacks, as Debian and Homebrew install them (fonts-noto-cjk,
# fonts-wqy-zenhei, fonts-noto-core, fonts-symbola, ...); those installed are used, in this order. Colour emoji
# fonts are bitmaps matplotlib cannot scale, and matplotlib's own Last Resort font draws a box: neither is here.
FALLBACK_FAMILIES = (
    "DejaVu Sans",
    "Noto Sans",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Source Han Sans",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Noto Sans Arabic",
    "Noto Sans Hebrew",
    "Noto Sans Devanagari",
    "Noto Sans Symbols",
    "Noto Sans Symbols2",
    "Noto Emoji",
    "Symbola",
    "STIXGeneral",
)


@functools.cache
def figure_families() -> tuple[tuple[str, ...], frozenset[int]]:
    """The families a figure's text is drawn in (the default sans-serif font first, then the installed
    ``FALLBACK_FAMILIES``) and the code points one of them has."""
    families, coverage = font_coverage()
    return families, frozenset().union(*coverage)


@functools.cache
def font_coverage() -> tuple[tuple[str, ...], tuple[frozenset[int], ...]]:
    """``figure_families`` and the code points each has (the first's alone draws mathtext's plain text)."""
    from matplotlib.ft2font import FT2Font

    default = font_manager.FontProperties(family=["sans-serif"])
    installed = {entry.name for entry in font_manager.fontManager.ttflist}
    families = [font_manager.FontProperties(fname=font_manager.findfont(default)).get_name()]
    families += [f for f in FALLBACK_FAMILIES if f in installed and f not in families]
    coverage = []
    for family in families:
        path = font_manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=False)
        coverage.append(frozenset(FT2Font(path).get_charmap()))
    return tuple(families), tuple(coverage)


def drawable(text: str, math: bool = True) -> str:
    """``text`` as a figure draws it intact: a control or format character (a line break excepted), and a
    character no family of ``figure_families`` has, shown as its code (``\\u202e``); with ``math``, the inside
    of paired dollars (mathtext's) is left as it is."""
    if text.isascii() and all(char.isprintable() or char == "\n" for char in text):
        return text
    parts = MATH_DELIMITER.split(text)
    math = math and len(parts) % 2 == 1 and len(parts) > 1
    # mathtext draws the text around the math in the default font alone: no fallback there
    covered = font_coverage()[1][0] if math else figure_families()[1]
    return "$".join(part if math and i % 2 else escaped(part, covered) for i, part in enumerate(parts))


def escaped(text: str, covered: frozenset[int]) -> str:
    return "".join(
        char
        if char == "\n" or (not control(char) and (ord(char) in covered or char.isspace()))
        else "\\" + control_code(char)
        for char in text
    )


def drawn_intact(fig) -> None:
    """Every text of ``fig`` (titles, labels, legends, annotations, tick labels) drawn in ``figure_families`` and
    shown as ``drawable`` makes it, so that no name is drawn reversed or as empty boxes."""
    for text in fig.findobj(matplotlib.text.Text):
        intact(text)
    for ax in fig.axes:  # fixed tick labels are set from their formatter at each draw
        for axis in (ax.xaxis, ax.yaxis):
            ticks = axis.get_major_ticks()
            math = not ticks or ticks[0].label1.get_parse_math()
            for formatter in (axis.get_major_formatter(), axis.get_minor_formatter()):
                if isinstance(formatter, matplotlib.ticker.FixedFormatter):
                    formatter.seq = [drawable(str(label), math) for label in formatter.seq]
                elif isinstance(formatter, matplotlib.ticker.FuncFormatter):  # set_xticks(ticks, labels)'s
                    formatter.func = drawable_labels(formatter.func, math)


def intact(text: matplotlib.text.Text) -> matplotlib.text.Text:
    """``text`` drawn in ``figure_families`` (unless a family was chosen for it) and shown as ``drawable`` makes
    it; a text measured before the figure is saved (a label placed beside its point) is made so first."""
    if text.get_fontfamily() == matplotlib.rcParams["font.family"]:  # not a family chosen on purpose
        text.set_fontfamily(list(figure_families()[0]))
    shown = text.get_text()
    if isinstance(shown, str) and drawable(shown, text.get_parse_math()) != shown:
        text.set_text(drawable(shown, text.get_parse_math()))
    return text


def drawable_labels(func, math: bool):
    """A FuncFormatter's function whose labels are ``drawable``."""
    if getattr(func, "drawable", False):
        return func

    def labels(x, pos=None):
        return drawable(str(func(x, pos)), math)

    labels.drawable = True
    return labels
