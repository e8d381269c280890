"""What reaches the terminal: the one escaper of text the command prints from outside its code."""

from __future__ import annotations

# Unicode's bidirectional controls: each reorders the text after it (an override draws "abc" as "cba"), so a
# received name could show another name than it is. Python counts them as unprintable (category Cf); named here so
# that a test holds the escaper to every one of them.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def printable(text: str, lines: bool = False) -> str:
    """``text`` with its control characters (C0, C1, DEL), bidirectional controls and every other character
    Python counts as unprintable (format characters, separators but the space, unassigned code points) shown as
    their code (``\\x1b``, ``\\u202e``): the one escaper of what reaches a terminal. A file name or value from
    the user or a received file (a result.json's status, an archive's recorded version) that holds an escape
    sequence (ESC [ 2 J clears the terminal, OSC 0 sets the window's title) is shown, not sent to the terminal.
    ``lines``: its line breaks kept (a table's rows), each line escaped. Anything but a string is shown as its
    ``str``, escaped alike."""
    if not isinstance(text, str):
        text = str(text)
    if lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)
