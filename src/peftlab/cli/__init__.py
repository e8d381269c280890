"""The ``peftlab`` command: parses arguments and calls the library.

A user error (bad config, missing data, bad weights file) prints one line on stderr and
exits with status 2; a run that fails or diverges exits with status 1.

Each command is an ``add_<command>(subparsers)`` beside its ``cmd_<command>(args)``: the run
commands in ``cli/run.py``, the study commands in ``cli/study.py``, the others in ``cli/tools.py``.
``commands()`` lists them in the order ``peftlab --help`` shows them.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import os
import signal
import sys

from peftlab.cli.terminal import printable
from peftlab.utils.errors import (
    RECEIVED,
    STORAGE_ERRORS,
    Interrupted,
    UserError,
    exit_at_once_on_stops,
    ignore_further_stops,
    stops_unwrapped,
    take_stops,
)
from peftlab.utils.files import shown_path
from peftlab.utils.startup import release_stops


def commands() -> list:
    """The ``add_<command>`` functions, in ``peftlab --help``'s order. Imported when called, inside
    ``run_command``'s handling: a Ctrl-C while they import is one line too."""
    from peftlab.cli import cache, completion, reproduce, run, study, summary, tools

    return [
        run.add_train,
        study.add_study,
        study.add_results,
        study.add_report,
        study.add_paper,
        study.add_submission,
        reproduce.add_reproduce,
        tools.add_bench,
        summary.add_summary,
        run.add_pretrain,
        run.add_export,
        run.add_predict,
        run.add_params,
        tools.add_data,
        run.add_validate,
        cache.add_cache,
        tools.add_config_reference,
        tools.add_methods,
        completion.add_completion,
    ]


def build_parser() -> argparse.ArgumentParser:
    from peftlab.cli.api import __version__
    from peftlab.cli.parsing import Parser

    parser = Parser(
        prog="peftlab",
        description="Parameter-efficient fine-tuning studies of vision transformers and language models "
        "(classifiers and causal LMs): train runs and whole studies (resumable), then compare them with "
        "statistics, figures, LaTeX tables and a paper.",
        epilog="Each command has its own --help, e.g. peftlab study --help.",
    )
    parser.add_argument("--version", action="version", version=f"peftlab {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the libraries' warnings and log records on stderr too (always in a run's library.log)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in commands():
        add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # The first exit handler registered runs last: past it Python tears down its modules and gives
    # SIGINT and SIGTERM their default actions back, under which a late Ctrl-C would kill the
    # process (exit status -2, the command's own lost); from then on they are ignored.
    atexit.register(ignore_further_stops)
    status = run_command(argv)
    try:
        sys.stdout.flush()  # here, not in the interpreter's exit, where a closed pipe is a message and status 120
    except BrokenPipeError:
        status = closed_pipe()
    exit_at_once_on_stops(status)  # a Ctrl-C while the interpreter exits: no traceback, this status
    return status


CLOSED_PIPE = 128 + signal.SIGPIPE  # the status of a command that SIGPIPE ended: a reader went away


def closed_pipe() -> int:
    """The command's end when the reader of its standard output has gone (``peftlab methods --json | head -1``):
    no traceback, status 141 as a shell shows a command that SIGPIPE ended. What is still buffered goes to
    /dev/null, so that the interpreter's last flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # io.UnsupportedOperation (no file descriptor: a test's StringIO) is a ValueError
        pass
    return CLOSED_PIPE


def unreadable_metadata(err: Exception) -> str | None:
    """The line for an error a library raised reading every installed distribution's entry points (torch's
    scan when it is imported fails on one malformed ``entry_points.txt``): the distribution to repair."""
    from peftlab.utils.distributions import raised_reading_metadata, unreadable

    if not raised_reading_metadata(err):
        return None
    broken = unreadable()
    if not broken:
        return None
    where, why = broken[0]
    return (
        f"{where}: the entry points of this installed distribution cannot be read ({why}), and a library "
        "(torch, when it is imported) reads those of every distribution: repair or uninstall it"
    )


def run_command(argv: list[str] | None = None) -> int:
    """The command's exit status; SIGTERM (Slurm's warning) stops it as cleanly as Ctrl-C, and either
    one is a Ctrl-C however a library turned it into an error of its own (``errors.stops_unwrapped``)."""
    sigint = signal.getsignal(signal.SIGINT)
    RECEIVED.clear()
    take_stops()
    try:
        return command_status(argv)
    finally:
        signal.signal(signal.SIGINT, sigint)  # the caller's (a test's process): SIGTERM's stays a stop
        RECEIVED.clear()


def command_status(argv: list[str] | None) -> int:
    try:
        with stops_unwrapped():
            release_stops()  # a Ctrl-C while peftlab was importing (utils/startup.py) lands here, as one line
            from peftlab.cli.completion import complete_if_asked
            from peftlab.cli.parsing import parse_command_line

            parser = build_parser()
            complete_if_asked(parser)  # a shell's completion request (argcomplete's): answered, and the process ends
            args = parse_command_line(parser, argv)
            from peftlab.utils.libraries import quiet_libraries

            quiet_libraries(args.verbose)  # before torch, PEFT or bitsandbytes is imported
            from peftlab.utils.errors import CALLED_BY_COMMAND

            CALLED_BY_COMMAND.append(True)  # the Python API's errors in the command's words: its flags
            try:
                return args.func(args)
            finally:
                CALLED_BY_COMMAND.pop()
    except BrokenPipeError:
        return closed_pipe()
    except UserError as err:
        print(
            f"peftlab: error: {printable(str(err).splitlines()[0]) if str(err) else type(err).__name__}",
            file=sys.stderr,
        )
        return 2
    except OSError as err:  # a full disk, a read-only or forbidden directory: the user's to fix
        if err.errno not in STORAGE_ERRORS:
            raise
        print(
            f"peftlab: error: {shown_path(err.filename) if err.filename is not None else 'a file'}: {err.strerror} "
            f"({errno.errorcode[err.errno]})",
            file=sys.stderr,
        )
        return 2
    except Exception as err:
        broken = unreadable_metadata(err)
        if not broken:
            raise
        print(f"peftlab: error: {printable(broken)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        print(
            f"peftlab: interrupted ({signal.Signals(signum).name}); run the same command again to resume",
            file=sys.stderr,
        )
        return 128 + signum
