"""argparse as peftlab uses it: one-line errors, integer bounds, and the method names of the registry."""

from __future__ import annotations

import argparse

from peftlab.tuners import TUNERS


class Parser(argparse.ArgumentParser):
    """argparse, with a wrong argument as one line (not the usage and a line) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"peftlab: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, where a command's dotted overrides (``key=value``) may also come after its
    options (``peftlab train c.yaml --run-dir d train.max_steps=2``), as other tools of the field take them; they
    keep their order. Anything else left over is argparse's one-line error."""
    args, extra = parser.parse_known_args(argv)
    overrides = [word for word in extra if "=" in word and not word.startswith("-")]
    rest = [word for word in extra if word not in overrides]
    if rest or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(rest or overrides)}")
    if overrides:
        args.overrides = [*(args.overrides or []), *overrides]
    return args


def at_least(least: int):
    """An argparse type: an integer >= ``least``; anything else is argparse's one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is invalid: expected an integer >= {least}")
        return value

    return parse


def between(least: int, most: int):
    """An argparse type: an integer from ``least`` to ``most``; anything else is argparse's one-line usage error,
    which names the flag. For sizes that allocate or write in proportion (the bench's): refused before any is."""

    def parse(text: str) -> int:
        value = at_least(least)(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"{value} is invalid: expected an integer from {least:,} to {most:,}")
        return value

    return parse


def method_names() -> str:
    """ "full, linear, lora, ... or qalora": every method of the TUNERS registry, for help texts."""
    names = list(TUNERS)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)
