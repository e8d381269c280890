"""Names placed beside the points of a figure (the accuracy-versus-parameters figure's configurations): each at
the first offset, by the renderer's measured text box, that overlaps no other name, point or interval bar."""

from __future__ import annotations

from peftlab.analysis.figures.glyphs import drawn_intact, intact

LABEL_OFFSETS = [(6, 4), (6, -12), (-6, 4), (-6, -12), (6, 12), (6, -20), (-6, -3), (6, -3)]
# where no offset above is free: the same directions further out, up to LABEL_REACH points from the point
LABEL_REACH = 40


CLUSTER_POINTS = 9  # points (1/72 in) within which markers count as one place and share one label


def label_offsets():
    """The offsets tried, nearest first: LABEL_OFFSETS, then rings further out up to LABEL_REACH."""
    yield from LABEL_OFFSETS
    for reach in range(16, LABEL_REACH + 1, 8):
        for dx, dy in ((reach, 4), (reach, -12), (-reach, 4), (-reach, -12), (6, reach), (6, -reach - 8)):
            yield dx, dy
        for dx, dy in ((-6, reach), (-6, -reach - 8)):
            yield dx, dy


def _label_points(ax, xs, ys, labels, fontsize=7, bars=(), lines=()):
    """Name each point beside it, at the nearest offset where the name, measured by the renderer, overlaps no
    other name, point or bar and stays inside the axes (``bars``: (x, low, high) of each vertical interval
    drawn, in data coordinates; ``lines``: (xs, ys) of each line drawn, such as the Pareto front's steps, in data
    coordinates); where none is free within LABEL_REACH, the least crowded. A name placed further
    from its point than the nearest offsets gets a leader line back to it.

    Points drawn on top of each other (within ``CLUSTER_POINTS``) share one label, their names one
    per line, rather than piling names over the markers. Call it last: it lays the figure out to
    know where the points will be drawn, and the names take no part in the layout after it (so the
    points do not move under them when the figure is saved).
    """
    ax.margins(x=0.12, y=0.08)
    ax.autoscale_view()
    figure = ax.figure
    drawn_intact(figure)  # every text measured as it will be drawn
    figure.get_layout_engine().execute(figure)
    renderer = figure.canvas.get_renderer()
    to_pixels = figure.dpi / 72
    points = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    taken = _taken_boxes(ax, points, bars, lines, to_pixels)
    frame = ax.get_window_extent(renderer)
    for (x, y), _, names in _clusters(xs, ys, points, labels, to_pixels):
        text = "\n".join(names)
        note = intact(  # measured as it will be drawn
            ax.annotate(text, (x, y), xytext=(0, 0), textcoords="offset points", va="bottom", fontsize=fontsize)
        )
        note.set_in_layout(False)
        places = []  # (outside the frame, overlaps, rank, dx, dy, box)
        for rank, (dx, dy) in enumerate(label_offsets()):
            note.set_position((dx, dy))
            note.set_horizontalalignment("left" if dx > 0 else "right")
            extent = note.get_window_extent(renderer)
            box = (extent.x0, extent.y0, extent.x1, extent.y1)
            within = frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1
            places.append((not within, sum(_overlaps(box, other) for other in taken), rank, dx, dy, box))
            if places[-1][:2] == (False, 0):
                break
        _, _, rank, dx, dy, box = min(places, key=lambda place: place[:3])
        note.set_position((dx, dy))
        note.set_horizontalalignment("left" if dx > 0 else "right")
        if rank >= len(LABEL_OFFSETS):  # moved away from its point: a leader line back to it
            note.remove()
            note = intact(
                ax.annotate(
                    text,
                    (x, y),
                    xytext=(dx, dy),
                    textcoords="offset points",
                    va="bottom",
                    ha="left" if dx > 0 else "right",
                    fontsize=fontsize,
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.45", "shrinkA": 1, "shrinkB": 4},
                )
            )
            note.set_in_layout(False)
        taken.append(box)


def _taken_boxes(ax, points, bars, lines, to_pixels) -> list[tuple]:
    """The boxes (x0, y0, x1, y1 in pixels) no name may cover: the markers at ``points`` (pixels), each interval
    bar with its caps, and each drawn line, walked in steps of 4 points."""
    half = 6 * to_pixels
    taken = [(px - half, py - half, px + half, py + half) for px, py in points]  # the markers
    for x, low, high in bars:
        (bx, by0), (_, by1) = ax.transData.transform([(x, low), (x, high)])
        taken.append((bx - 2 * to_pixels, by0, bx + 2 * to_pixels, by1))  # a bar and its caps
    for line_xs, line_ys in lines:  # a drawn line (the Pareto front's steps): no name is written over it
        corners = [ax.transData.transform((x, y)) for x, y in zip(line_xs, line_ys)]
        for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
            steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) // (4 * to_pixels)))
            for i in range(steps + 1):
                px, py = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
                taken.append((px - to_pixels, py - to_pixels, px + to_pixels, py + to_pixels))
    return taken


def _clusters(xs, ys, points, labels, to_pixels) -> list[list]:
    """The points drawn on top of each other (within CLUSTER_POINTS): [(x, y), (px, py), [names]] each, at the
    topmost point's place, the clusters topmost first and the names of each in the order given (the study's order,
    as every table lists them), not by height."""
    clusters: list[list] = []
    given = sorted(enumerate(zip(zip(xs, ys), points, labels)), key=lambda p: -p[1][1][1])
    for i, ((x, y), (px, py), label) in given:
        near = next(
            (
                c
                for c in clusters
                if abs(c[1][0] - px) < CLUSTER_POINTS * to_pixels and abs(c[1][1] - py) < CLUSTER_POINTS * to_pixels
            ),
            None,
        )
        if near is None:
            clusters.append([(x, y), (px, py), [(i, str(label))]])
        else:
            near[2].append((i, str(label)))
    return [[place, pixels, [name for _, name in sorted(names)]] for place, pixels, names in clusters]


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
