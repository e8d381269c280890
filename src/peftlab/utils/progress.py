"""Progress where tqdm draws no bar: one plain line at a time on stderr, with the time left.

tqdm disables itself when stderr is not a terminal (a log file, Slurm, CI); a long study or run
would then print nothing until it ends. ``TextProgress`` follows a tqdm bar and, only when the
bar is disabled although progress was asked for, prints a line every ``every`` units.
"""

from __future__ import annotations

import contextlib
import sys
import time

# where progress lines go instead of stderr while ``progress_line`` holds: one line shown in place (a study's cell)
IN_PLACE: list = []


def duration(seconds: float) -> str:
    """37 s, 4.2 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class TextProgress:
    def __init__(self, bar, wanted: bool, label: str, unit: str, every: int = 1):
        self.on = (wanted and bool(bar.disable)) or bool(IN_PLACE)  # a bar on a terminal shows all of this already
        self.label, self.unit, self.every = label, unit, max(1, every)
        self.total, self.start_n = bar.total, bar.n
        self.start = time.perf_counter()

    def update(self, n: int, detail: str = "", force: bool = False) -> None:
        """Print ``n``/total, ``detail`` and the time left, every ``every`` units (or when forced)."""
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
