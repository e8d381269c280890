"""Log-axis tick labels of the study figures, as plain numbers."""

from __future__ import annotations

import numpy as np


def log_tick_labels(axis, compact: bool = False) -> None:
    """Log-axis labels as plain numbers (0.1, 2, 30; with ``compact`` 60K, 1M, not 6 x 10^4);
    every minor one when the axis spans less than a decade, those at 2 and 5 times a power of ten
    when it spans less than three (so points below the first decade's tick still sit beside a
    label), none on wider axes, where they would crowd."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def label(value, _):
        for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")) if compact else ():
            if value >= size:
                return f"{value / size:g}{suffix}"
        return f"{value:g}"

    axis.set_major_formatter(FuncFormatter(label))
    low, high = axis.get_view_interval()
    if low > 0 and high / low < 10:
        axis.set_minor_formatter(FuncFormatter(label))
    elif low > 0 and high / low < 1000:
        axis.set_minor_formatter(FuncFormatter(lambda v, p: label(v, p) if _mantissa(v) in (2, 5) else ""))
    else:
        axis.set_minor_formatter(NullFormatter())


def searched_ticks(axis, values) -> None:
    """A log axis of a few searched values (six or fewer) ticked at them alone: matplotlib's own minor
    labels (3 x 10^-3, 4 x 10^-3, 6 x 10^-3, ...) ran into each other in a paper's narrow panel. More
    values (a grid followed past its edge): ``log_tick_labels``' powers of ten, and no minor label, which ran
    into each other there too (0.0005 0.002 0.005 0.02 0.05 between 0.001, 0.01 and 0.1)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    searched = sorted({x for x in values if isinstance(x, (int, float)) and x > 0})
    if len(searched) > 6:
        log_tick_labels(axis)
        axis.set_minor_formatter(NullFormatter())
        return
    axis.set_ticks(searched, [f"{x:g}" for x in searched])
    axis.set_minor_locator(NullLocator())


def _mantissa(value: float) -> int:
    """The leading digit of a positive value (2 for 2,000 and 0.2)."""
    return int(round(value / 10 ** np.floor(np.log10(value)))) if value > 0 else 0


TICK_GAP = 2.0  # points (1/72 in) a tick label keeps from the next one on its axis


def thin_log_labels(fig) -> None:
    """On every log axis of ``fig``, the tick labels that would run into a neighbour left out (minor ones
    first, then the later of two majors), measured by the renderer after layout: "50K100K200K" in a narrow panel
    becomes "50K 100K 200K" or "50K 200K". A dropped label's value prints "" through the axis' formatter. The figure
    is drawn once for all its axes (a draw lays out every panel: one a log axis took 0.3 to 0.45 s of a report's)."""
    from matplotlib.ticker import FuncFormatter

    logs = [(axis, horizontal) for ax in fig.axes for axis, horizontal in ((ax.xaxis, True), (ax.yaxis, False))]
    logs = [(axis, horizontal) for axis, horizontal in logs if axis.get_scale() == "log"]
    if not logs:
        return
    renderer = fig.canvas.get_renderer()
    gap = TICK_GAP * fig.dpi / 72
    fig.canvas.draw()
    for axis, dropped in [(axis, crowded_labels(axis, horizontal, renderer, gap)) for axis, horizontal in logs]:
        if not dropped:
            continue
        for getter, setter in (
            (axis.get_major_formatter, axis.set_major_formatter),
            (axis.get_minor_formatter, axis.set_minor_formatter),
        ):
            shown = getter()

            def label(v, p, shown=shown, dropped=frozenset(dropped)):
                return "" if any(np.isclose(v, d, rtol=1e-9) for d in dropped) else shown(v, p)

            setter(FuncFormatter(label))


def crowded_labels(axis, horizontal: bool, renderer, gap: float) -> set[float]:
    """The values of ``axis``' drawn tick labels that come within ``gap`` pixels of one kept before them (majors
    first, each kind from the lowest value up)."""
    low, high = sorted(axis.get_view_interval())
    labels = []
    for minor, ticks in ((False, axis.get_major_ticks()), (True, axis.get_minor_ticks())):
        for tick in ticks:
            text = tick.label1
            value = tick.get_loc()
            if not text.get_visible() or not text.get_text() or not low <= value <= high:
                continue
            box = text.get_window_extent(renderer)
            labels.append((minor, value, (box.x0, box.x1) if horizontal else (box.y0, box.y1)))
    kept, dropped = [], set()
    for _, value, span in sorted(labels, key=lambda item: (item[0], item[1])):  # majors first
        if any(span[0] < other[1] + gap and other[0] < span[1] + gap for other in kept):
            dropped.add(value)
        else:
            kept.append(span)
    return dropped
