"""The ``peftlab`` command: parses arguments and calls the library.

A user error (bad config, missing data, bad weights file) prints one line on stderr and
exits with status 2; a run that fails or diverges exits with status 1.

Each command is an ``add_<command>(subparsers)`` beside its ``cmd_<command>(args)``: the run
commands in ``cli/run.py``, the study commands in ``cli/study.py``, the others in ``cli/tools.py``.
``COMMANDS`` lists them in the order ``peftlab --help`` shows them.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys

from peftlab.cli import run, study, tools
from peftlab.cli.parsing import Parser
from peftlab.errors import STORAGE_ERRORS, Interrupted, UserError, exit_at_once_on_stops, stop_on_sigterm
from peftlab.libraries import quiet_libraries

COMMANDS = [
    run.add_train,
    study.add_study,
    study.add_results,
    study.add_report,
    study.add_paper,
    study.add_submission,
    tools.add_bench,
    run.add_summary,
    run.add_pretrain,
    run.add_export,
    run.add_params,
    tools.add_data,
    run.add_validate,
    tools.add_config_reference,
]


def build_parser() -> argparse.ArgumentParser:
    from peftlab import __version__

    parser = Parser(
        prog="peftlab",
        description="Parameter-efficient fine-tuning studies of vision transformers: train runs and "
        "whole studies (resumable), then compare them with statistics, figures, LaTeX tables and a paper.",
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
    for add_command in COMMANDS:
        add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    status = run_command(argv)
    exit_at_once_on_stops(status)  # a Ctrl-C while the interpreter exits: no traceback, this status
    return status


def printable(line: str) -> str:
    """``line`` with its control characters escaped: a file name or value from the user that holds
    an escape sequence (ESC [ 2 J clears the terminal) is shown, not sent to the terminal."""
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in line)


def run_command(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose)  # before torch, PEFT or bitsandbytes is imported
    stop_on_sigterm()  # SIGTERM (Slurm's warning) stops as cleanly as Ctrl-C
    try:
        return args.func(args)
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
            f"peftlab: error: {printable(str(err.filename or 'a file'))}: {err.strerror} "
            f"({errno.errorcode[err.errno]})",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        print(
            f"peftlab: interrupted ({signal.Signals(signum).name}); run the same command again to resume",
            file=sys.stderr,
        )
        return 128 + signum
