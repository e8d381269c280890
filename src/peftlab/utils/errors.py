"""User-facing errors: the CLI prints each as one line on stderr and exits with status 2.

And interruptions (Ctrl-C, SIGTERM), which stop a run so that the same command resumes it.
"""

import contextlib
import errno
import os
import signal
import sys
import threading

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
