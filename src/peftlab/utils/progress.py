"""Progress where tqdm draws no bar: one plain line at a time on stderr, with the time left.

tqdm disables itself when stderr is not a terminal (a log file, Slurm, CI); a long study or run
would then print nothing until it ends. ``TextProgress`` follows a tqdm bar and, only when the
bar is disabled although progress was asked for, prints a line every ``every`` units.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

# where progress lines go instead of stderr while ``progress_line`` holds: one line shown in place (a study's cell)
IN_PLACE: list = []

# A parent that draws a child process's progress as one bar of its own (``RelayedBar``: training.run's pinned child)
# sets RELAY_ENV=1 in the child's environment: the child's TextProgress then writes every update as one line,
# RELAY_PREFIX label TAB unit TAB n TAB total, which the parent reads and never shows.
RELAY_ENV = "PEFTLAB_PROGRESS_RELAY"
RELAY_PREFIX = "peftlab-progress\t"


def duration(seconds: float) -> str:
    """37 s, 4.2 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class TextProgress:
    def __init__(self, bar, wanted: bool, label: str, unit: str, every: int = 1):
        self.relayed = wanted and os.environ.get(RELAY_ENV) == "1"  # every update, to the parent's bar
        self.on = (wanted and bool(bar.disable)) or bool(IN_PLACE) or self.relayed  # a terminal's bar shows it all
        self.label, self.unit, self.every = label, unit, max(1, every)
        self.total, self.start_n = bar.total, bar.n
        self.start = time.perf_counter()

    def update(self, n: int, detail: str = "", force: bool = False) -> None:
        """Print ``n``/total, ``detail`` and the time left, every ``every`` units (or when forced)."""
        if self.relayed:
            print(f"{RELAY_PREFIX}{self.label}\t{self.unit}\t{n}\t{self.total}", file=sys.stderr, flush=True)
            return
        if not self.on or not (force or n % self.every == 0 or n == self.total):
            return
        elapsed, done = time.perf_counter() - self.start, n - self.start_n
        left = (
            f", {duration(elapsed / done * (self.total - n))} left"
            if done > 0 and self.total and n < self.total
            else ""
        )
        share = f" ({100 * n / self.total:.0f}%)" if self.total else ""
        line = (
            f"{self.label}: {self.unit} {n}/{self.total}{share}{', ' + detail if detail else ''}, "
            f"{duration(elapsed)} elapsed{left}"
        )
        if IN_PLACE:
            IN_PLACE[-1](line)
        else:
            print(line, file=sys.stderr, flush=True)


def in_notebook(bar) -> bool:
    """Whether ``bar`` is tqdm's notebook widget (tqdm.auto's in a Jupyter kernel), which no other process can draw
    into: a study's workers then train without bars of their own."""
    return any(cls.__module__ == "tqdm.notebook" for cls in type(bar).__mro__)


@contextlib.contextmanager
def counting_bar(label: str, unit: str, total: int | None, progress: bool):
    """A bar (tqdm.auto) of ``total`` ``unit``s under ``label`` where ``progress`` asks for one, TextProgress's lines
    where none is drawn (a notebook cell's line in place, ``progress_line``); yields ``done(detail)``, to call as
    each unit ends."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=label, unit=unit, position=0, disable=not progress or None)
    lines, count = TextProgress(bar, progress, label, unit), [0]

    def done(detail: str = "") -> None:
        count[0] += 1
        bar.update(1)
        lines.update(count[0], detail)

    try:
        yield done
    finally:
        bar.close()


@contextlib.contextmanager
def progress_line(first: str):
    """In a Jupyter kernel: the progress lines of this process (a study's: a run done, the time left) as one line
    of the cell's output, updated in place (an IPython display), ``first`` until the first update; elsewhere
    nothing."""
    from peftlab.utils.errors import ipython_shell

    shell = ipython_shell()
    if shell is None or getattr(shell, "kernel", None) is None:  # the IPython prompt, a script: no cell to update
        yield
        return
    from IPython.display import display

    handle = display({"text/plain": first}, raw=True, display_id=True)
    IN_PLACE.append(lambda line: handle.update({"text/plain": line}, raw=True))
    try:
        yield
    finally:
        IN_PLACE.pop()


class RelayedBar:
    """A child process's progress (its ``RELAY_PREFIX`` lines, ``take``) drawn as one bar of this process: tqdm.auto's
    (a notebook's widget, a terminal's bar), or TextProgress's lines where no bar is drawn. The first label the child
    reports is the bar's; the lines of any other (an evaluation's) are dropped."""

    def __init__(self):
        self.label, self.bar, self.lines = None, None, None

    def take(self, line: str) -> None:
        try:
            label, unit, n, total = line[len(RELAY_PREFIX) :].rsplit("\t", 3)
            n, total = int(n), (None if total == "None" else int(total))
        except ValueError:  # not a line the child's TextProgress wrote: nothing to draw
            return
        if self.label is None:
            from tqdm.auto import tqdm

            self.label = label
            self.bar = tqdm(total=total, desc=label, unit=unit, disable=None)
            self.lines = TextProgress(self.bar, True, label, unit, every=max(1, (total or 0) // 10))
        if label == self.label:
            self.bar.update(n - self.bar.n)
            self.lines.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
