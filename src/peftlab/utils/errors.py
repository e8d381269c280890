"""User-facing errors: the CLI prints each as one line on stderr and exits with status 2.

And interruptions (Ctrl-C, SIGTERM), which stop a run so that the same command resumes it.

And the Python API's manners with them (``peftlab/__init__.py``, at the end of this file): its arguments checked
before anything runs (a wrong type or None is one ``UserError`` naming the parameter), its errors in its own words
(the command's flags named as the function's parameters), an interrupt that says how to resume, and a ``UserError``
shown as its one line: in IPython through ``set_custom_exc``, registered when peftlab is imported there; in a script
as one line naming where the script called peftlab.
"""

import contextlib
import errno
import functools
import inspect
import os
import re
import signal
import sys
import threading
from pathlib import Path

# OSError numbers that are the user's to fix (a full disk, a read-only or forbidden directory, a name longer than
# the file system takes): one line
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}


class UserError(Exception):
    """A problem with the user's input (config, data, files), not a bug in peftlab."""


class ConfigError(UserError):
    """An invalid configuration value; the message names the field, the value and what is allowed."""


class DataError(UserError):
    """Missing, truncated, corrupt or unsafe data files."""


class WeightsError(UserError):
    """A missing or mismatched weights file."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: a clean stop that leaves the run resumable (no result, checkpoint kept)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOPS = (KeyboardInterrupt, SystemExit)


def stop_behind(err: BaseException) -> BaseException | None:
    """The stop that ``err`` stands for: ``err`` itself when it is a Ctrl-C, SIGTERM (``Interrupted``)
    or exit, else the one it was raised while handling; None for an error of its own.

    Python raises a signal handler's exception wherever the main thread is. A library that meets
    it in its own clean-up raises an error of its own instead: transformers' lazy import turns a
    Ctrl-C into a ModuleNotFoundError, numpy's second import attempt into an ImportError, and
    submitit's exit after it requeued a preempted job can land in a file writer's clean-up. Such an
    error is the stop's: it must not be recorded as the run's failure.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, STOPS):
            return err
        seen.add(id(err))
        err = err.__cause__ if err.__cause__ is not None else err.__context__
    return None


@contextlib.contextmanager
def stops_unwrapped():
    """Re-raise, as itself, a stop that a library turned into an error of its own (``stop_behind``),
    or that C code swallowed before the error (``RECEIVED``)."""
    try:
        yield
    except Exception as err:
        stop = stop_behind(err)
        if stop is None and RECEIVED:  # one that C code swallowed before this error
            stop = Interrupted(RECEIVED[-1])
        if stop is None:
            raise
        raise stop from None


def take_stops() -> None:
    """Stop on Ctrl-C, and on SIGTERM (what Slurm sends before it kills) as on Ctrl-C; each is
    remembered in ``RECEIVED`` (``on_stop``)."""
    STOPPING.clear()  # a command taking stops again is not stopping
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)


RECEIVED: list[int] = []  # the Ctrl-C and SIGTERM signals this process took


def on_stop(signum, frame):
    """Raise ``Interrupted`` (a KeyboardInterrupt), and remember the signal: C code can swallow the
    exception (a ``hasattr`` that runs a half-imported module's ``__getattr__`` clears any error),
    and the half-imported module then fails with an error of its own, which is the stop's
    (``stops_unwrapped``)."""
    RECEIVED.append(signum)
    if STOPPING:  # the process is already stopping (ignore_further_stops): remembered, not raised again
        return
    raise Interrupted(signum)


STOPPING: list[bool] = []  # non-empty once ignore_further_stops has begun


def ignore_further_stops() -> None:
    """Once a process is stopping, let a second Ctrl-C or SIGTERM not interrupt its clean-up.

    A study stops its workers with SIGTERM right after the terminal's SIGINT reached them; without
    this, the second signal lands in multiprocessing's exit finalizers and prints a traceback. The
    mark comes first: a stop whose handler runs while the handlers are being replaced (CI caught a
    SIGTERM inside ``signal.signal`` here) is remembered, not raised.
    """
    STOPPING.append(True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class EpochStop(BaseException):
    """A run trained to the end of the epoch its job ends at (``trained_to``: a study's rung, ``tune.rungs``) stops
    there, its checkpoint written and no result, resumable as after a stop; not an ``Exception``, which a run
    records as its failure."""


LAST_EPOCH: list[int] = []  # the epoch at whose end this process's run stops (``trained_to``); empty: its last


@contextlib.contextmanager
def trained_to(epoch: int | None):
    """Within the block a run stops at the end of ``epoch`` (counted from 1), or where it is past it, raising
    ``EpochStop`` before it trains another step (``stop_at_epoch``); None: the run trains to its end."""
    LAST_EPOCH[:] = [] if epoch is None else [epoch]
    try:
        yield
    finally:
        LAST_EPOCH.clear()


def stop_at_epoch(epochs_done: int) -> None:
    """At an epoch's start, with ``epochs_done`` epochs trained and checkpointed: ``EpochStop`` where ``trained_to``
    ends the run there."""
    if LAST_EPOCH and epochs_done >= LAST_EPOCH[0]:
        raise EpochStop(f"stopped at the end of epoch {epochs_done}")


@contextlib.contextmanager
def deferred_stops():
    """Hold a Ctrl-C or SIGTERM back until the block ends, then deliver it as it would have been.

    For a step whose outcome must be known to clean up after it: jobs submitted to Slurm
    (``sbatch`` has run, its job ids not yet returned) are cancelled only once their ids are
    known. A second stop inside the block is delivered at once: the user insists. Outside the
    main thread, where handlers cannot be set, the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}  # None: not Python's

    def hold(signum, frame):
        if held:  # the second: delivered now, and the first with it
            held.clear()
            restore()
            signal.raise_signal(signum)
        else:
            held.append(signum)

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        restore()
        if held:
            signal.raise_signal(held[0])


def exit_at_once_on_stops(status: int) -> None:
    """Once a command has done its work: a Ctrl-C or SIGTERM that arrives while the interpreter
    exits (torch's and multiprocessing's atexit finalizers) ends the process at once with the
    command's ``status``, instead of a KeyboardInterrupt traceback and exit status 0. Everything
    is written by then; standard output and error are flushed first."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass

    def handler(signum, frame):
        os._exit(status)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class CheckpointError(UserError):
    """A run's checkpoint that cannot be resumed from: corrupt, malicious, from another run."""

    def __init__(self, path, reason: str):
        super().__init__(
            f"checkpoint {path} is unusable: {reason}; to start the run over, move it aside "
            f"(mv {path} {path}.bad) or delete it"
        )
        self.path = path


# The Python API's manners

PACKAGE = Path(__file__).resolve().parents[1]  # src/peftlab: frames inside it are peftlab's, not the caller's
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
FLAG_WORDS = {"quiet": "progress=False", "replace": "replace=True"}  # a flag said otherwise as a parameter
# set by the command (cli.command_status), which calls the API and speaks of its own flags and interrupts
CALLED_BY_COMMAND = []


class Resumable(KeyboardInterrupt):
    """A Ctrl-C (a kernel's interrupt) that stopped an API call which trains: its message says how to resume."""


def shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_path(name: str, value, *, optional: bool = False, what: str = "a path") -> None:
    """``value`` is a path (a non-empty string or an ``os.PathLike``), or None where ``optional``."""
    if value is None and optional:
        return
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip()):
        return
    raise UserError(f"{name}={shown(value)} is invalid: expected {what}{' or None' if optional else ''}")


def check_paths(name: str, value, *, what: str) -> None:
    """A path, or a non-empty list or tuple of them."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise UserError(f"{name}=[] is invalid: expected {what}")
    for item in items:
        if not (isinstance(item, os.PathLike) or (isinstance(item, str) and item.strip())):
            raise UserError(f"{name}={shown(value)} is invalid: expected {what}")


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise UserError(f"{name}={shown(value)} is invalid: expected True or False")


def check_overrides(overrides) -> list[str] | dict:
    """Dotted ``key=value`` strings (a list, a tuple or one string) or a nested dict, as ``load_config`` takes them."""
    if isinstance(overrides, dict):
        if all(isinstance(key, str) for key in overrides):
            return overrides
    elif isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, (list, tuple)) and all(isinstance(item, str) for item in overrides):
        for item in overrides:
            if "=" not in item:
                raise UserError(f"overrides: {item!r} is not a dotted key=value, e.g. method.r=16")
        return list(overrides)
    raise UserError(
        f"overrides={shown(overrides)} is invalid: expected dotted key=value strings (['method.r=16']) or a "
        "nested dict ({'method': {'r': 16}})"
    )


def in_parameters(text: str, parameters) -> str:
    """``text`` with each command-line flag that is one of ``parameters`` named as the parameter
    (``use another --run-dir`` -> ``use another run_dir``)."""

    def name(match: re.Match) -> str:
        flag = match.group(1)
        if flag in FLAG_WORDS:
            return FLAG_WORDS[flag]
        parameter = flag.replace("-", "_")
        return parameter if parameter in parameters else match.group(0)

    return FLAG.sub(name, text)


def api(trains: bool = False):
    """A function of the API: its UserErrors in its parameters' names; where it ``trains``, a Ctrl-C is
    ``Resumable`` and says that the same call resumes."""

    def wrap(function):
        parameters = set(inspect.signature(function).parameters)

        @functools.wraps(function)
        def call(*args, **kwargs):
            if CALLED_BY_COMMAND:
                return function(*args, **kwargs)
            try:
                return function(*args, **kwargs)
            except UserError as err:
                text = in_parameters(str(err), parameters)
                if text != str(err):
                    err.args = (text, *err.args[1:])
                raise
            except KeyboardInterrupt as err:
                if not trains or isinstance(err, Resumable):
                    raise
                raise Resumable(
                    f"peftlab.{function.__name__} was interrupted: call it again with the same arguments to resume "
                    "(finished runs are kept, a run resumes from its checkpoint)"
                ) from None

        return call

    return wrap


def ipython_shell():
    """The running IPython shell (a notebook's kernel, the IPython prompt), None elsewhere."""
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def show_in_ipython(shell, etype, value, tb, tb_offset=None):
    """IPython's handler of a UserError or an interrupt of the API: the one line, no frames of peftlab's internals.
    A handler shows what it returns itself: ``_showtraceback`` is where IPython (and ipykernel, as the cell's error
    output, which nbclient raises) shows a structured traceback."""
    stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def short_excepthook(etype, value, tb) -> None:
    """A script's uncaught UserError (or API interrupt): one line naming where the script called peftlab."""
    if not issubclass(etype, (UserError, Resumable)):
        return sys.__excepthook__(etype, value, tb)
    where = None
    while tb is not None:  # the last frame outside peftlab before its code: the script's call
        filename = tb.tb_frame.f_code.co_filename
        if not Path(filename).resolve().is_relative_to(PACKAGE):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    print(f"{where + ': ' if where else ''}{etype.__name__}: {value}", file=sys.stderr)


def show_errors_short() -> None:
    """Inside IPython: a UserError or API interrupt shows as its one line (``set_custom_exc``; a shell that has a
    custom handler already keeps it). In a script whose excepthook is Python's own: the same, with where the script
    called peftlab."""
    shell = ipython_shell()
    if shell is not None:
        if not getattr(shell, "custom_exceptions", ()):
            shell.set_custom_exc((UserError, Resumable), show_in_ipython)
        return
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = short_excepthook
