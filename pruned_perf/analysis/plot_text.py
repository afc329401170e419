"""A figure's text: its title (which hardware, profile and run), and its point labels: each measured point
labelled M<batch size> at the first free spot around it once the layout is fixed, so that no two labels
overlap and none covers a marker where another spot is free."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from pruned_perf.analysis.results import Results

# A measured point's marker size (points): label placement keeps labels off the markers.
POINT_SIZE = 5.0
# Spots for a point label, in points from the point, best first: right-below as in the reference
# figure, then the other corners, then above/below/aside. Each ring repeats them farther out; labels
# beyond the first ring get a thin leader line so that they still point at their marker.
LABEL_SPOTS = ((4, -3, "left", "top"), (4, 3, "left", "bottom"), (-4, -3, "right", "top"),
               (-4, 3, "right", "bottom"), (0, -5, "center", "top"), (0, 5, "center", "bottom"),
               (6, 0, "left", "center"), (-6, 0, "right", "center"))
LABEL_RINGS = (1.0, 2.0, 3.2, 4.6, 6.2)
LABEL_FONTSIZE = 6.5
TITLE_FONTSIZE = 9


@dataclass
class PanelMarks:
    """What label placement needs of one panel, which it can only do once the layout is fixed."""

    ax: object
    labels: list = field(default_factory=list)  # (text, (x, y), colour) of each measured point
    markers: list = field(default_factory=list)  # (x, y, size in points) of each drawn marker and ring
    notes: list = field(default_factory=list)  # Text artists that labels must not cover


def place_labels(fig, panels: list[PanelMarks]) -> None:
    """Label every measured point M<batch size> without two labels overlapping.

    Where a label lands depends on the axes' size in pixels, so the constrained layout is run first
    and then frozen: labels are not part of it, and saving at another dpi scales everything alike."""
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    for marks in panels:
        taken = [note.get_window_extent(renderer) for note in marks.notes]
        markers = [_marker_box(marks.ax, m, fig.dpi) for m in marks.markers]
        for text, xy, color in marks.labels:
            box = _place_label(marks.ax, text, xy, color, taken, markers, renderer)
            if box is not None:
                taken.append(box)


def _marker_box(ax, marker: tuple, dpi: float):
    from matplotlib.transforms import Bbox

    x, y, size = marker
    px, py = ax.transData.transform((x, y))
    half = size / 2 * dpi / 72
    return Bbox.from_extents(px - half, py - half, px + half, py + half)


def _place_label(ax, text, xy, color, taken, markers, renderer):
    """Put the label at the first spot that is inside the axes and clear of every label placed so far,
    preferring one that covers no marker; returns its box, or None (no label) if no spot is free."""
    ann = ax.annotate(text, xy, xytext=(0, 0), textcoords="offset points", fontsize=LABEL_FONTSIZE,
                      color=color, annotation_clip=False)
    ann.set_in_layout(False)
    inside, best = ax.get_window_extent(renderer), None
    for ring, spot in _label_spots():
        box = _move_label(ann, spot, renderer)
        if not _contains(inside, box) or any(box.overlaps(t) for t in taken):
            continue
        covered = sum(box.overlaps(m) for m in markers)
        if best is None or covered < best[0]:
            best = (covered, ring, spot, box)
        if covered == 0:
            break
    if best is None:  # nowhere free: no label beats one on top of another
        ann.remove()
        return None
    _move_label(ann, best[2], renderer)
    if best[1] > LABEL_RINGS[0]:
        _leader_line(ax, xy, best[2], color)
    return best[3]


def _label_spots():
    """(ring, spot) in order of preference: every spot of the nearest ring first."""
    for ring in LABEL_RINGS:
        for dx, dy, ha, va in LABEL_SPOTS:
            yield ring, (dx * ring, dy * ring, ha, va)


def _move_label(ann, spot: tuple, renderer):
    """Move the label to spot (dx, dy in points, ha, va); its box padded by a pixel, so that labels
    placed apart stay apart after the rounding of another renderer or dpi."""
    dx, dy, ha, va = spot
    ann.xyann = (dx, dy)
    ann.set_horizontalalignment(ha)
    ann.set_verticalalignment(va)
    return ann.get_window_extent(renderer).padded(1.0)


def _contains(outer, inner) -> bool:
    return outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0 and inner.y1 <= outer.y1


def _leader_line(ax, xy: tuple, spot: tuple, color) -> None:
    """A thin line from a point to its label set farther out, in data coordinates: the layout is
    frozen, so the label's anchor stays at the same data position at any dpi."""
    dx, dy = spot[0], spot[1]
    px, py = ax.transData.transform(xy)
    scale = ax.figure.dpi / 72
    end = ax.transData.inverted().transform((px + dx * scale, py + dy * scale))
    ax.plot([xy[0], end[0]], [xy[1], end[1]], color=color, linewidth=0.5, alpha=0.6, zorder=2,
            label="_label leader")


# ---------------------------------------------------------------- the title


def figure_title(results: Results, baseline: Results | None = None) -> str:
    """Which hardware, profile and run the numbers are from (and the baseline's, if any)."""
    title = f"{_hardware(results)} · profile {results.profile} · measured {_measured_at(results)}"
    if baseline is None:
        return title
    title += f"\nbaseline measured {_measured_at(baseline)}"
    if baseline.slug != results.slug:  # compared with --allow-mismatch: say so where the figure is seen
        title += f" on {_hardware(baseline)}"
    if baseline.profile != results.profile:
        title += f", profile {baseline.profile}"
    return title


def wrap_title(title: str, width_in: float) -> str:
    """Each line of title broken at " · " into lines that fit width_in inches (average glyph width)."""
    max_chars = max(int(width_in * 72 / (TITLE_FONTSIZE * 0.6)), 20)
    lines = []
    for line in title.split("\n"):
        parts = line.split(" · ")
        current = parts[0]
        for part in parts[1:]:
            if len(current) + 3 + len(part) > max_chars:
                lines.append(current)
                current = part
            else:
                current += " · " + part
        lines.append(current)
    return "\n".join(lines)


def _hardware(results: Results) -> str:
    name = results.fingerprint.name
    return f"{name} ({results.slug})" if name else results.slug


def _measured_at(results: Results) -> str:
    """The results' datetime in minutes (UTC where the file says the zone); as written if not ISO."""
    written = results.datetime
    if not written:
        return "date unknown"
    try:
        when = datetime.fromisoformat(written)
    except ValueError:
        return written
    if when.tzinfo is None:
        return when.strftime("%Y-%m-%d %H:%M")
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------- series and styles
