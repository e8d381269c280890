"""How the study figures look: the palette (a hue per method, a shade and a line style per
configuration), names and labels, axes, units, points at one x drawn side by side, point labels
that avoid each other, and saving as PNG and PDF.

The plots themselves are in figures.py and ablation_figure.py; health_figures.py and adaptive.py draw
with the same style.
"""

import copy
import functools
import logging
import re
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.lines
import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.mathtext import MathTextParser

from peftlab.analysis.figures.glyphs import drawable, drawn_intact, figure_families
from peftlab.analysis.figures.order import varying_values
from peftlab.analysis.figures.ticks import thin_log_labels
from peftlab.analysis.results.units import METRIC_LABELS, display_name, natural_key, scale
from peftlab.analysis.results.units import bounds as metric_bounds
from peftlab.analysis.stats.intervals import INTERVALS
from peftlab.utils.files import write_atomic

logger = logging.getLogger(__name__)


OKABE_ITO = [
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow, last: faint on white
]


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


# A configuration's line style among its method's configurations, in the palette's order: shades of one
# hue are close, and their bands overlap where the curves do; the style tells them apart (in grey too).
# a method's configurations are told apart by shades of its hue and each by a marker of its own too: shades of
# one hue were near-identical pinks in print (issue 82), and the methods study's 22 PEFT types 22 blues
VARIANT_LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2, 2, 2))]


# Methods get their hue in this order (then any other method, alphabetically).
METHOD_ORDER = (
    "full",
    "linear",
    "bitfit",
    "ln",
    "ssf",
    "difffit",
    "houlsby",
    "pfeiffer",
    "adaptformer",
    "convpass",
    "repadapter",
    "vpt",
    "fact_tt",
    "fact_tk",
    "lora",
    "lora_qv",
    "adalora",
    "qalora",
)


AXIS_LABELS = {
    "config.method.r": "Rank r",
    "config.method.lora_alpha": "LoRA alpha",
    "config.method.target_modules": "Target modules",
    "config.train.lr": "Learning rate",
    "config.quant.mode": "Quantization",
    "params.trainable": "Trainable parameters",
}


# Columns that separate the lines of an ablation plot when they vary in the study.
SERIES_COLUMNS = ("method", "config.quant.mode", "config.model.name", "config.data.name")


def study_palette(df):
    """Colours and markers of every method and configuration (variant) in `df`, all rows.

    Returns a dict: "methods" and "variants" (sorted: methods in METHOD_ORDER, then a method's
    configurations by the values of the config keys that differ between them, so "lora r=2" < "lora"
    (r = 8) < "lora r=16", then in natural order of their names),
    "method" {method: hue}, "variant" {variant: shade of its method's hue}, "marker"
    {method: marker}, "variant_marker" {variant: marker} where a method has several configurations (the
    first its method's marker), "method_of" {variant: method}.
    """
    method_of = _methods_of_variants(df)
    known = [m for m in METHOD_ORDER if m in method_of.values()]
    methods = known + sorted(set(method_of.values()) - set(known))
    values = varying_values(df, method_of)
    variants = sorted(method_of, key=lambda v: (methods.index(method_of[v]), values.get(v, ()), natural_key(v)))
    hue = {m: matplotlib.colors.to_hex(OKABE_ITO[i % len(OKABE_ITO)]) for i, m in enumerate(methods)}
    marker = {m: method_marker(i) for i, m in enumerate(methods)}
    shade, style, own_marker = {}, {}, {}
    for method in methods:
        mine = [v for v in variants if method_of[v] == method]
        for i, (variant, t) in enumerate(zip(mine, np.linspace(-1, 1, len(mine)) if len(mine) > 1 else [0.0])):
            shade[variant] = _shade(hue[method], t)
            style[variant] = VARIANT_LINESTYLES[i % len(VARIANT_LINESTYLES)]
            if len(mine) > 1:  # shades of one hue are close (in grey, or printed): a marker of its own tells them apart
                own_marker[variant] = MARKERS[(MARKERS.index(marker[method]) + i) % len(MARKERS)]
    return {
        "methods": methods,
        "variants": variants,
        "method": hue,
        "variant": shade,
        "linestyle": style,
        "marker": marker,
        "variant_marker": own_marker,
        "method_of": method_of,
    }


def method_marker(i: int) -> str:
    """The marker of the i-th method: the first len(MARKERS) methods as their hue's index, then
    shifted one place per round of hues, so no two of the first 64 methods share hue and marker."""
    return MARKERS[(i + i // len(OKABE_ITO)) % len(MARKERS)]


def _methods_of_variants(df):
    if df is None or df.empty or "variant" not in df.columns:
        return {}
    if "method" in df.columns:
        firsts = df[df["method"].notna()].groupby("variant", sort=False)["method"].first()
        method_of = {str(v): str(m) for v, m in firsts.items()}
    else:
        method_of = {}
    for variant in df["variant"].dropna().unique():
        method_of.setdefault(str(variant), str(variant).split(" ", 1)[0])
    return method_of


def _shade(color, t):
    """`color` lightened (t < 0, towards white) or darkened (t > 0, towards black)."""
    rgb = np.array(matplotlib.colors.to_rgb(color))
    mixed = rgb + (1 - rgb) * 0.45 * -t if t < 0 else rgb * (1 - 0.45 * t)
    return matplotlib.colors.to_hex(np.clip(mixed, 0, 1))


def _palette_for(df, palette):
    return palette if palette is not None else study_palette(df)


def _variant_color(palette, variant):
    return palette["variant"].get(str(variant), "0.5")


def _variant_linestyle(palette, variant):
    return palette["linestyle"].get(str(variant), "-")


def _method_marker(palette, variant):
    """The configuration's marker: its method's, or its own where its method has too many to shade apart."""
    own = palette.get("variant_marker", {}).get(str(variant))
    return own or palette["marker"].get(palette["method_of"].get(str(variant)), "o")


def figure_name(name, method=None, labels=None):
    """``display_name`` as a figure shows it: ``$...$`` through matplotlib's mathtext. Math that
    mathtext cannot parse (``\\textsc``, ``\\num``: LaTeX packages) is shown as written, its
    dollars escaped, rather than failing the figure (the LaTeX tables still typeset it)."""
    text = display_name(name, method, labels)
    # parsed as it will be drawn (drawable), so that the check warns of no glyph the drawing will not use
    return text if "$" not in text or _is_mathtext(drawable(text)) else re.sub(r"(?<!\\)\$", r"\\$", text)


@functools.lru_cache(maxsize=256)
def _is_mathtext(text: str) -> bool:
    try:
        MathTextParser("path").parse(text)
    except ValueError:
        logger.warning("label %r is not matplotlib mathtext: the figures show it as written", text)
        return False
    return True


def _name(palette, variant, labels):
    return figure_name(variant, palette["method_of"].get(str(variant)), labels)


def in_study_order(frame, palette, column="variant", within=None):
    """``frame``'s rows with their configurations in the palette's order, the one order of every table and figure
    (methods in METHOD_ORDER, a method's configurations by what their ablation varies: figures/order.py); rows of
    one configuration keep their order, and so do the groups of ``within`` (a dataset's comparisons)."""
    if frame is None or frame.empty:
        return frame
    order = {v: i for i, v in enumerate(_sorted_variants(palette, frame[column].astype(str)))}
    rank = frame[column].astype(str).map(order).to_numpy()
    if within is not None and within in frame:
        groups = {g: i for i, g in enumerate(dict.fromkeys(frame[within].astype(str)))}
        rank = frame[within].astype(str).map(groups).to_numpy() * (len(order) + 1) + rank
    return frame.iloc[np.argsort(rank, kind="stable")]


def study_order(palette, variants) -> list[str]:
    """``variants`` in the palette's order, the one order of every table and figure (``in_study_order``)."""
    return _sorted_variants(palette, variants)


def _sorted_variants(palette, variants):
    order = {v: i for i, v in enumerate(palette["variants"])}
    return sorted(dict.fromkeys(map(str, variants)), key=lambda v: (order.get(v, len(order)), natural_key(v)))


def interval_label(interval="t", confidence=0.95):
    """Short text for a figure: "mean, 95% Student-t interval"."""
    return f"mean, {100 * confidence:g}% {INTERVALS[interval]} interval"


def save_figure(fig, out_dir, name):
    """Write fig as <name>.png (300 dpi) and <name>.pdf in out_dir; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    thin_log_labels(fig)  # a log axis' tick labels that would run into each other: the later left out
    drawn_intact(fig)  # every name as itself: fallback fonts, control characters and missing glyphs as codes
    families = list(figure_families()[0])  # for the texts the draw makes (new tick labels)
    with matplotlib.rc_context({"pdf.fonttype": 42, "font.family": families}):  # atomic, never through a link
        write_atomic(paths[0], lambda tmp: fig.savefig(tmp, dpi=300, format="png"))
        write_atomic(paths[1], lambda tmp: fig.savefig(tmp, metadata={"CreationDate": None}, format="pdf"))
    return paths


LINESTYLES = ["-", "--", ":", "-."]


# points drawn at one x: a step of SIDE_BY_SIDE apart, all within SIDE_BY_SIDE_WIDTH, as shares of the log span
SIDE_BY_SIDE, SIDE_BY_SIDE_WIDTH = 0.03, 0.1


NEIGHBOUR_SHARE = 0.4  # of the log distance to the nearest other count, that a group spread side by side may take


def side_by_side(values) -> np.ndarray:
    """Where points on a log x axis are drawn: points of equal x side by side around it, in the order given,
    SIDE_BY_SIDE of the points' log span apart (of a decade when they all share one x; closer where many share
    one, so that they spread over at most SIDE_BY_SIDE_WIDTH of it); the others at their x.

    Else one point's marker and interval hide another's. The ticks stay those of the true values: a figure
    that spreads points says so.
    """
    x = np.asarray(values, dtype=float)
    logs = np.log(x)
    span = np.ptp(logs) if x.size and np.ptp(logs) > 0 else np.log(10)
    unique = np.unique(x)
    for value in unique:
        at = np.flatnonzero(x == value)
        # a group keeps within NEIGHBOUR_SHARE of the way to the next count either side: the parameter order holds
        others = np.abs(np.log(unique[unique != value]) - np.log(value))
        room = NEIGHBOUR_SHARE * 2 * others.min() / max(1, at.size - 1) if others.size else np.inf
        step = min(SIDE_BY_SIDE * span, SIDE_BY_SIDE_WIDTH * span / max(1, at.size - 1), room)
        logs[at] += step * (np.arange(at.size) - (at.size - 1) / 2)
    return np.where(np.isin(x, _shared(x)), np.exp(logs), x)  # exp(log(x)) need not give back x


def shared_values(values) -> list[list]:
    """The labels of a Series whose values are equal, in groups of two or more (in order)."""
    return [list(values.index[values == value]) for value in _shared(values.to_numpy(dtype=float))]


def _shared(x):
    unique, counts = np.unique(x, return_counts=True)
    return unique[counts > 1]


def _series_text(value, labels):
    return figure_name(value, None, labels) if isinstance(value, str) else str(value)


# Where a point's name may go, in points from the point: above or below to the right first,
# clear of a line leaving the point horizontally (the Pareto staircase), then to the left.
def _legend_beside(fig, ax, title):
    """The configurations' legend (then the Pareto front's and the chance line's, the lines drawn across them),
    right of the axes or, for long names, below."""
    handles, names = ax.get_legend_handles_labels()
    drawn_across = [i for i, h in enumerate(handles) if isinstance(h, matplotlib.lines.Line2D)]
    order = sorted(range(len(names)), key=lambda i: i in drawn_across)  # configurations first, in order
    long_names = max(len(str(n)) for n in names) > 28
    place = (
        {"loc": "outside lower center", "ncols": 2}
        if long_names
        else {"loc": "outside right upper", "ncols": 1 + (len(names) > 14)}
    )
    fig.legend(
        [handles[i] for i in order], [names[i] for i in order], fontsize=7, title=title, title_fontsize=7, **place
    )


def _new_figure(width, height, ncols=1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _ci_errors(summary, scale=100.0):
    """Error bar lengths (as printed: percent, or ``scale`` times the value) below and above each mean; 0 where
    there is no interval."""
    below = (summary["mean"] - summary["ci_low"]).fillna(0).clip(lower=0)
    above = (summary["ci_high"] - summary["mean"]).fillna(0).clip(lower=0)
    return scale * np.vstack([below.to_numpy(dtype=float), above.to_numpy(dtype=float)])


def _metric_label(metric):
    return METRIC_LABELS.get(metric, metric)


def _axis_label(column):
    return AXIS_LABELS.get(column, column.removeprefix("config."))


def _axis_value(value):
    # target_modules may be a list; show it as "q,v".
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _log_scale(values):
    low, high = values.min(), values.max()
    return bool(low > 0 and high / low >= 8)


def _dodge(positions, i, n, log_x, categories):
    """Series i > 0 of n shifted right by i times 8% of the smallest gap between axis values, so
    that points at the same axis value stay apart (multiplicatively on a log axis). The first
    series, the one with most points, stays on the ticks."""
    if n < 2:
        return positions
    share = 0.08 * i
    if log_x:
        ratios = np.diff(np.log(np.array(categories, dtype=float)))
        return positions * np.exp(share * (ratios.min() if ratios.size else 1.0))
    gaps = np.diff(np.array(categories, dtype=float)) if categories is not None else np.array([1.0])
    return positions + share * (gaps.min() if gaps.size else 1.0)


def _set_numeric_axis(ax, values):
    if _log_scale(values):
        integers = np.all(values == np.round(values))
        ax.set_xscale("log", base=2 if integers else 10)
    if len(values) <= 12:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _pooled_columns(runs, cell_columns):
    candidates = [
        c for c in runs.columns if c.startswith("config.") and c not in cell_columns and not c.endswith("seed")
    ]
    counts = runs[candidates].map(_axis_value).groupby([runs[c] for c in cell_columns], dropna=False).nunique()
    return [c for c in candidates if (counts[c] > 1).any()]


def _seconds_unit(largest):
    if largest >= 2 * 3600:
        return 3600.0, "h"
    if largest >= 120:
        return 60.0, "min"
    return 1.0, "s"


def _bytes_unit(largest):
    return (2.0**30, "GiB") if largest >= 2**30 else (2.0**20, "MiB")


def clip_axis(ax, metric, axis: str = "y") -> None:
    """Keep the axis of a bounded metric (units.bounds: an accuracy) within its printed range, 0 to 100%, and a
    hair beyond it, so that no interval bar ending at the range is cut by the axes' edge."""
    limits = metric_bounds(metric)
    if limits is None:
        return
    get, put = (ax.get_xlim, ax.set_xlim) if axis == "x" else (ax.get_ylim, ax.set_ylim)
    low, high = get()
    times = scale(metric)
    # a hair beyond the range: an interval that reaches 0 or 100% shows its cap inside the axes, not on their edge
    pad = 0.015 * (high - low)
    put(max(low, times * limits[0] - pad), min(high, times * limits[1] + pad))


NEUTRAL = "0.35"  # a legend entry's grey where each panel has its own colour


def neutral_entry(handle, color: str):
    """A copy of a panel's legend ``handle`` with the panel's ``color`` made ``NEUTRAL``: one entry that stands
    for every panel of a figure whose panels each have a colour; the colours all panels share (a black cross, a
    black star, a white fill) are kept."""
    handle, panel = copy.copy(handle), matplotlib.colors.to_rgb(color)

    def recolor(get, put) -> None:
        rgba = np.atleast_2d(matplotlib.colors.to_rgba_array(get()))
        if len(rgba) and rgba[0, 3] > 0 and np.allclose(rgba[0, :3], panel):  # not "none"
            put(NEUTRAL)

    if isinstance(handle, matplotlib.lines.Line2D):
        for name in ("color", "markerfacecolor", "markeredgecolor"):
            recolor(getattr(handle, f"get_{name}"), getattr(handle, f"set_{name}"))
    else:  # a scatter's PathCollection
        recolor(handle.get_facecolor, handle.set_facecolor)
        recolor(handle.get_edgecolor, handle.set_edgecolor)
    return handle


def seed_list(seeds):
    """ "0, 1, 2" or, for many, "0, 1, ..., 9"."""
    shown = list(map(str, seeds))
    return ", ".join(shown if len(shown) <= 6 else shown[:2] + ["...", shown[-1]])
