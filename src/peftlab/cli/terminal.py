"""What reaches the terminal: the one escaper of text the command prints from outside its code."""

from __future__ import annotations


def printable(text: str, lines: bool = False) -> str:
    """``text`` with its control characters escaped: the one escaper of what reaches a terminal. A file name
    or value from the user or a received file (a result.json's status) that holds an escape sequence (ESC [ 2 J
    clears the terminal, OSC 0 sets the window's title) is shown, not sent to the terminal. ``lines``: its
    line breaks kept (a table's rows), each line escaped."""
    if lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)
