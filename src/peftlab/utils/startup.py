"""The ``peftlab`` command's first moments: its Ctrl-C and SIGTERM are held (blocked) from the first line
``import peftlab`` runs until the command takes them (``cli.command_status``), so a Ctrl-C while the
registry of methods, ``importlib.metadata`` or argparse are still importing is the command's one line, not a
KeyboardInterrupt traceback from an import. Only the command's process holds them (its script,
``python -m peftlab``, ``python -m peftlab.cli``: ``sys.orig_argv`` says which it is); ``import peftlab``
elsewhere (a notebook, a test, a spawned worker) takes a Ctrl-C at once, as any import does.

Imports nothing but the standard library's signal and sys: it runs before anything heavy.
"""

from __future__ import annotations

import signal
import sys

STOPS = {signal.SIGINT, signal.SIGTERM}
MODULES = ("peftlab", "peftlab.cli")  # python -m MODULE runs the command
VALUED = ("-X", "-W", "-Q")  # the interpreter's options that take the next argument as their value
HELD: list[bool] = []  # non-empty while this process holds its stops for the command


def started_as_the_command(argv: list[str] | None = None) -> bool:
    """True in the process of the ``peftlab`` command: its console script, or ``-m peftlab[.cli]``."""
    if argv is None:
        argv = getattr(sys, "orig_argv", [])
    options = iter(argv[1:])
    for arg in options:
        if arg == "-m":
            return next(options, None) in MODULES
        if arg.startswith("-m"):
            return arg[2:] in MODULES
        if arg in VALUED:
            next(options, None)
        elif arg == "-c" or not arg.startswith("-"):  # code, or a script: the console script's name is peftlab
            return arg != "-c" and arg.replace("\\", "/").rsplit("/", 1)[-1] in ("peftlab", "peftlab-script.py")
    return False


def hold_stops_for_the_command() -> None:
    """In the command's process, block SIGINT and SIGTERM until ``release_stops``: one that arrives meanwhile
    waits in the kernel and reaches the handler the command installs."""
    if HELD or not hasattr(signal, "pthread_sigmask") or not started_as_the_command():
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    HELD.append(True)


def release_stops() -> None:
    """Unblock what ``hold_stops_for_the_command`` held: a Ctrl-C held back is delivered now, to the handler
    installed by then."""
    if HELD:
        HELD.clear()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
