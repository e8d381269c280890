"""External programs (latexmk, git, kpsewhich, Slurm's clients, W&B's reader): each run by ``run_program``, with a
time limit, and ended together with every process it started.

A program that starts children (latexmk runs pdflatex and bibtex) leaves them running when only it is killed,
and they hold its output pipes open, so ``subprocess.run(timeout=...)`` waits for them after the time is up.
``run_program`` starts the program as the leader of a session and process group of its own and kills the whole
group when its time runs out, on any exception while it waits (a Ctrl-C included: the terminal's SIGINT reaches
only the foreground group, which the program has left), and after it exits (a child it left in the background).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from peftlab.utils.errors import UserError

# An upper bound on every program's time limit, in seconds (the tests set it small; unset: each call's own limit).
SECONDS_ENV = "PEFTLAB_PROGRAM_SECONDS"
# What is kept of each output stream: its last bytes (a program's error is at the end; TeX in a loop may print
# without end).
OUTPUT_BYTES = 8 << 20


class ProgramTimeout(UserError):
    """A program ran past its time limit and was stopped with every process it started."""


def time_limit(seconds: float) -> float:
    """``seconds``, or the smaller bound ``PEFTLAB_PROGRAM_SECONDS`` sets."""
    bound = os.environ.get(SECONDS_ENV, "").strip()
    try:
        return min(seconds, float(bound)) if bound and float(bound) > 0 else seconds
    except ValueError:
        raise UserError(f"{SECONDS_ENV}={bound!r} is invalid: expected a number of seconds > 0") from None


def run_program(
    args: Sequence[str],
    *,
    seconds: float,
    fix: str,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    output_bytes: int | None = OUTPUT_BYTES,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` (no shell, stdin empty) for at most ``seconds``; its stdout and stderr as text (the last
    ``output_bytes`` of each; None: all). Past the limit the program and every process of its group are killed
    and ``ProgramTimeout`` says in one line which program and what to do (``fix``). OSError where it cannot start."""
    args = [str(arg) for arg in args]
    limit = time_limit(seconds)
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    streams = [_Reader(proc.stdout, output_bytes), _Reader(proc.stderr, output_bytes)]
    try:
        ended = _exited(proc.pid, time.monotonic() + limit)
    finally:
        # the leader is not reaped yet (a zombie keeps its id), so the group's id cannot name another group here
        _kill_group(proc.pid)
        proc.wait()
        for stream in streams:
            stream.join()
    if not ended:
        raise ProgramTimeout(
            f"{Path(args[0]).name} did not finish in {limit:g} s and was stopped with every process it started: {fix}"
        )
    return subprocess.CompletedProcess(args, proc.returncode, streams[0].text(), streams[1].text())


def _exited(pid: int, deadline: float) -> bool:
    """Wait until process ``pid`` has exited, leaving it unreaped; False when ``deadline`` comes first."""
    delay = 0.0005
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        delay = min(delay * 2, remaining, 0.05)
        time.sleep(delay)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # no process left in it
        pass


class _Reader(threading.Thread):
    """Reads one output pipe to its end, keeping its last ``limit`` bytes."""

    def __init__(self, pipe, limit: int | None):
        super().__init__(daemon=True)
        self.pipe, self.limit, self.data = pipe, limit, bytearray()
        self.start()

    def run(self) -> None:
        with self.pipe:
            for block in iter(lambda: self.pipe.read1(1 << 16), b""):
                self.data += block
                if self.limit is not None and len(self.data) > 2 * self.limit:
                    del self.data[: -self.limit]

    def join(self, timeout: float | None = 5.0) -> None:
        # a process that left the group (its own setsid) may hold the pipe open: what was read until then is kept
        super().join(timeout)

    def text(self) -> str:
        data = bytes(self.data if self.limit is None else self.data[-self.limit :])
        return data.decode(errors="replace")
