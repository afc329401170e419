"""The reference figure: throughput against latency, one panel per (model, input, output).

Rows are models, columns (input, output) pairs; x = latency (s), y = throughput (tokens/s) on a log2
axis; one line per variant (method, size, backend) through its batch sizes, each point labelled M<n>.
Points that ran out of memory are left off their line and listed in the panel. With a baseline, its
medians are drawn dashed in the same colour, its rounds as faint ticks, and regressed points get a
red ring. The figure's title names the hardware, profile and date of the results (and baseline).

Axis limits come from the medians only, so one slow round cannot squash the panel; the y axis is
fitted to the data at power-of-two ticks. Point labels are placed once the layout is fixed, each at
the first free spot around its point, so that no two labels overlap.

matplotlib is imported inside the functions so that the CLI starts fast, and only through the
object API with the Agg canvas, so no global backend is switched.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pruned_perf.analysis.compare import NEWLY_OOM, REGRESSED, Comparison
from pruned_perf.analysis.metrics import BY_NAME
from pruned_perf.analysis.results import Results, method_rank, method_styles
from pruned_perf.core.atomic import atomic_path
from pruned_perf.core.errors import UserError
from pruned_perf.core.formatting import format_params
from pruned_perf.core.schema import Measurement, MethodStyle, is_number

FIGURE_SUFFIXES = (".png", ".svg")
# A method's colour and marker are its own (its module's STYLE, carried by the results: method_styles);
# a method the results do not describe takes the next automatic ones.
_AUTO_COLORS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:red")
_AUTO_MARKERS = ("^", "v", "D", "P", "*", "<", ">")
# A second size of the same method keeps its colour and marker but not its line.
_SIZE_LINESTYLES = ("-", "-.", ":", (0, (5, 1, 1, 1)))
# Marker sizes (points): label placement keeps labels off the markers, so it needs them too.
_POINT_SIZE, _BASE_POINT_SIZE, _RING_SIZE = 5.0, 4.0, math.sqrt(160)
# Spots for a point label, in points from the point, best first: right-below as in the reference
# figure, then the other corners, then above/below/aside. Each ring repeats them farther out; labels
# beyond the first ring get a thin leader line so that they still point at their marker.
_LABEL_SPOTS = ((4, -3, "left", "top"), (4, 3, "left", "bottom"), (-4, -3, "right", "top"),
                (-4, 3, "right", "bottom"), (0, -5, "center", "top"), (0, 5, "center", "bottom"),
                (6, 0, "left", "center"), (-6, 0, "right", "center"))
_LABEL_RINGS = (1.0, 2.0, 3.2, 4.6, 6.2)
_LABEL_FONTSIZE = 6.5
_TITLE_FONTSIZE = 9
# Powers of two bracket the data with this margin (in octaves) on each side of the log2 axis.
_Y_MARGIN_OCTAVES = 0.25
_MAX_Y_TICKS = 10
_X_MARGIN = 0.08  # of the latency span, each side


def plot(results: Results, out_path: str | os.PathLike, baseline: Results | None = None,
         comparison: Comparison | None = None, quality: bool = False):
    """Draw the figure and write it to out_path (.png or .svg) atomically; returns the Figure.

    baseline and comparison are optional: without them the figure shows the results alone. With
    `quality`, the figure is held-out perplexity against throughput instead (make_quality_figure)."""
    suffix = figure_format(out_path)
    fig = make_quality_figure(results) if quality else make_figure(results, baseline, comparison)
    with atomic_path(out_path, suffix=suffix) as tmp:
        fig.savefig(tmp, format=suffix[1:], dpi=130)
    return fig


def figure_format(out_path: str | os.PathLike) -> str:
    """The figure's suffix (.png or .svg), or one UserError naming the valid ones."""
    suffix = Path(out_path).suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise UserError(f"unknown figure format {suffix or '(none)'!r} for {os.fspath(out_path)}; "
                        f"valid choices: {', '.join(FIGURE_SUFFIXES)}")
    return suffix


def make_figure(results: Results, baseline: Results | None = None, comparison: Comparison | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    require_measured_points(results)
    models = sorted({p.model for p in results.points.values()})
    pairs = sorted({(p.input_tokens, p.output_tokens) for p in results.points.values()})
    fig = Figure(figsize=(4.4 * len(pairs), 3.8 * len(models) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), len(pairs), squeeze=False)
    styles = _styles(results, baseline)
    regressed = _regressed_ids(comparison)
    panels = []
    for r, model in enumerate(models):
        for c, (inp, out) in enumerate(pairs):
            panels.append(_panel(axes[r][c], results, baseline, model, inp, out, styles[model], regressed))
        # One legend per row: sizes differ between models (4.9B of a 7B model, 9.5B of a 13B one).
        _legend(axes[r][-1], styles[model], baseline is not None, bool(regressed))
    # Wrapped at its " · " where the figure is narrow; wrap=True breaks a part still too long.
    fig.suptitle(_wrap_title(figure_title(results, baseline), fig.get_figwidth()), fontsize=_TITLE_FONTSIZE,
                 wrap=True)
    _place_labels(fig, panels)
    return fig


def require_measured_points(results: Results) -> None:
    """A UserError when no point has a latency and throughput: a figure of empty panels tells nothing."""
    points = list(results.points.values())
    if any(_plottable(p) for p in points):
        return
    n, oom = len(points), sum(1 for p in points if p.oom)
    why = "all out of memory" if oom == n else f"{oom} out of memory, none of the others has a latency"
    raise UserError(f"{results.path}: nothing to plot: {n} point{'s' if n != 1 else ''}, {why}")


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


def _wrap_title(title: str, width_in: float) -> str:
    """Each line of title broken at " · " into lines that fit width_in inches (average glyph width)."""
    max_chars = max(int(width_in * 72 / (_TITLE_FONTSIZE * 0.6)), 20)
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


def _series_key(p: Measurement) -> tuple:
    return (p.method, p.params, p.backend)


def _styles(results: Results, baseline: Results | None) -> dict[str, dict[tuple, dict]]:
    """Per model: a style and a label per series. Colours and markers follow the method across the
    whole figure; every label names the size, backends only where there is more than one."""
    points = list(results.points.values()) + (list(baseline.points.values()) if baseline else [])
    known = method_styles(results, baseline)
    order = list(known)
    methods = sorted({p.method for p in points}, key=lambda m: method_rank(m, order))
    auto = iter(range(len(methods)))
    method_base = {m: known[m] if m in known else _auto_style(next(auto)) for m in methods}
    backends = {p.backend for p in points}
    random = {(p.model, _series_key(p)) for p in points if p.structure_from_random_weights}
    styles: dict[str, dict[tuple, dict]] = {}
    for model in sorted({p.model for p in points}):
        keys = sorted({_series_key(p) for p in points if p.model == model},
                      key=lambda k: (method_rank(k[0], order), k))
        styles[model] = {key: _series_style(key, keys, method_base, len(backends) > 1, (model, key) in random)
                         for key in keys}
    return styles


def _series_style(key: tuple, keys: list[tuple], method_base: dict[str, MethodStyle], many_backends: bool,
                  random_weights: bool = False) -> dict:
    """The matplotlib keywords of one series' line: its method's colour and marker, a line style per size."""
    method, params, backend = key
    sizes = sorted({k[1] for k in keys if k[0] == method})
    style = method_base[method].to_dict()
    style["linestyle"] = _SIZE_LINESTYLES[sizes.index(params) % len(_SIZE_LINESTYLES)]
    label = f"{method} {format_params(params)}" if params else method  # as the reference: "Ours 4.9B"
    if random_weights:  # FLAP's widths, and so its speed, came from random weights' statistics
        label += " (random weights)"
    if many_backends:
        label += f" ({backend})"
        if backend == "static":
            style["markerfacecolor"] = "none"
    style["label"] = label
    return style


def _auto_style(i: int) -> MethodStyle:
    return MethodStyle(_AUTO_COLORS[i % len(_AUTO_COLORS)], _AUTO_MARKERS[i % len(_AUTO_MARKERS)])


def _regressed_ids(comparison: Comparison | None) -> dict[str, str]:
    if comparison is None:
        return {}
    return {p.id: p.status for p in comparison.points if p.status in (REGRESSED, NEWLY_OOM)}


def _panel_series(results: Results, model: str, inp: int, out: int) -> dict[tuple, list[Measurement]]:
    series: dict[tuple, list[Measurement]] = {}
    for p in results.points.values():
        if (p.model, p.input_tokens, p.output_tokens) == (model, inp, out):
            series.setdefault(_series_key(p), []).append(p)
    for points in series.values():
        points.sort(key=lambda p: p.batch_size)
    return series


def _plottable(p: Measurement) -> bool:
    return not p.oom and bool(p.latency_s) and bool(p.tokens_per_s)


# ---------------------------------------------------------------- one panel


@dataclass
class _PanelMarks:
    """What label placement needs of one panel, which it can only do once the layout is fixed."""

    ax: object
    labels: list = field(default_factory=list)  # (text, (x, y), colour) of each measured point
    markers: list = field(default_factory=list)  # (x, y, size in points) of each drawn marker and ring
    notes: list = field(default_factory=list)  # Text artists that labels must not cover


def _panel(ax, results, baseline, model, inp, out, styles, regressed) -> _PanelMarks:
    series = _panel_series(results, model, inp, out)
    base_series = _panel_series(baseline, model, inp, out) if baseline else {}
    marks = _PanelMarks(ax)
    for key, points in base_series.items():
        _draw_baseline(ax, points, styles[key], marks)
    oom_notes = []
    for key, points in sorted(series.items(), key=lambda kv: list(styles).index(kv[0])):
        oom = _draw_series(ax, points, styles[key], marks)
        if oom:
            oom_notes.append(f"{styles[key]['label']} " + ", ".join(f"M{b}" for b in oom))
    _mark_regressions(ax, series, base_series, regressed, marks)
    # Limits from the medians that are drawn (never from rounds), before labels are placed by them.
    _log2_axis(ax, [m[1] for m in marks.markers])
    _latency_axis(ax, [m[0] for m in marks.markers])
    ax.set_title(f"{model} in {inp} out {out}", fontsize=10)
    ax.set_xlabel(BY_NAME["latency_s"].axis_label)
    ax.set_ylabel(BY_NAME["tokens_per_s"].axis_label)
    ax.grid(True, which="major", alpha=0.3)
    _panel_notes(ax, oom_notes, not marks.labels, marks)
    return marks


def _draw_baseline(ax, points: list[Measurement], style: dict, marks: _PanelMarks) -> None:
    """The baseline's medians as a faint dashed line; its rounds as faint ticks at the median's
    throughput, so its spread shows without any round moving a marker or the axis limits."""
    ok = [p for p in points if _plottable(p)]
    xs, ys = [p.latency_s for p in ok], [p.tokens_per_s for p in ok]
    ax.plot(xs, ys, color=style["color"], marker=style["marker"], linestyle="--", alpha=0.45,
            markersize=_BASE_POINT_SIZE, linewidth=1, zorder=1)
    rounds = [(r, p.tokens_per_s) for p in ok for r in p.rounds_s if r > 0]
    if rounds:
        ax.plot(*zip(*rounds), color=style["color"], marker="|", linestyle="none", alpha=0.3, markersize=6,
                zorder=1, scalex=False, scaley=False, label="_baseline rounds")
    marks.markers += [(x, y, _BASE_POINT_SIZE) for x, y in zip(xs, ys)]


def _draw_series(ax, points: list[Measurement], style: dict, marks: _PanelMarks) -> list[int]:
    """One variant's line through its batch sizes; returns the batch sizes that ran out of memory."""
    ok = [p for p in points if _plottable(p)]
    xs, ys = [p.latency_s for p in ok], [p.tokens_per_s for p in ok]
    ax.plot(xs, ys, markersize=_POINT_SIZE, linewidth=1.4, zorder=3, **style)
    marks.markers += [(x, y, _POINT_SIZE) for x, y in zip(xs, ys)]
    marks.labels += [(f"M{p.batch_size}", (x, y), style["color"]) for p, x, y in zip(ok, xs, ys)]
    return [p.batch_size for p in points if p.oom]


def _panel_notes(ax, oom_notes: list[str], nothing_measured: bool, marks: _PanelMarks) -> None:
    if oom_notes:
        note = ax.text(0.98, 0.03, "OOM:\n" + "\n".join(oom_notes), transform=ax.transAxes, ha="right",
                       va="bottom", fontsize=6.5, color="dimgray")
        note.set_in_layout(False)
        marks.notes.append(note)
    if nothing_measured:
        marks.notes.append(ax.text(0.5, 0.5, "no measured points", transform=ax.transAxes, ha="center",
                                   va="center", color="gray"))


def _mark_regressions(ax, series, base_series, regressed, marks: _PanelMarks) -> None:
    """Red ring on each regressed point; a newly-OOM point is ringed where the baseline had it."""
    xs, ys = [], []
    base_by_id = {p.id: p for points in base_series.values() for p in points}
    for points in series.values():
        for p in points:
            status = regressed.get(p.id)
            if status == REGRESSED and _plottable(p):
                xs.append(p.latency_s), ys.append(p.tokens_per_s)
            elif status == NEWLY_OOM and p.id in base_by_id and _plottable(base_by_id[p.id]):
                xs.append(base_by_id[p.id].latency_s), ys.append(base_by_id[p.id].tokens_per_s)
    if xs:
        ax.scatter(xs, ys, s=_RING_SIZE**2, facecolors="none", edgecolors="red", linewidths=1.6, zorder=4,
                   label="_regressed")
        marks.markers += [(x, y, _RING_SIZE) for x, y in zip(xs, ys)]


# ---------------------------------------------------------------- axes


def _log2_axis(ax, ys: list[float]) -> None:
    """log2 y axis fitted to the data: limits a quarter octave beyond it, ticks at powers of two
    (at least two of them, so that the scale can be read)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    positive = [y for y in ys if y > 0] or [2.0**5, 2.0**13]  # a panel without points: a usual range
    lo, hi = math.log2(min(positive)), math.log2(max(positive))
    lo_lim, hi_lim = lo - _Y_MARGIN_OCTAVES, hi + _Y_MARGIN_OCTAVES
    if math.floor(hi_lim) - math.ceil(lo_lim) < 1:  # fewer than two ticks: reach out to the nearest powers
        lo_lim, hi_lim = min(lo_lim, math.floor(lo)), max(hi_lim, math.ceil(hi))
        if math.floor(hi_lim) - math.ceil(lo_lim) < 1:  # the data sit on one power of two
            hi_lim = math.floor(hi_lim) + 1
    exps = list(range(math.ceil(lo_lim), math.floor(hi_lim) + 1))
    step = math.ceil(len(exps) / _MAX_Y_TICKS)  # a very wide range: every other power, so labels fit
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_locator(FixedLocator([2.0**k for k in exps[::step]]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set_ylim(2.0**lo_lim, 2.0**hi_lim)


def _latency_axis(ax, xs: list[float]) -> None:
    """Linear x limits from the medians with a small margin (a single latency gets +-10%), never
    below 0: a latency is positive."""
    if not xs:
        return
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * _X_MARGIN or 0.1 * abs(hi) or 1.0
    ax.set_xlim(max(lo - pad, 0.0), hi + pad)


def _legend(ax, styles: dict, with_baseline: bool, with_regressions: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=s["color"], marker=s["marker"], linestyle=s["linestyle"],
                      markerfacecolor=s.get("markerfacecolor", s["color"]), label=s["label"])
               for s in styles.values()]
    if with_baseline:
        handles.append(Line2D([], [], color="gray", linestyle="--", alpha=0.6, label="baseline median"))
        handles.append(Line2D([], [], color="gray", marker="|", linestyle="none", alpha=0.6,
                              label="baseline rounds"))
    if with_regressions:
        handles.append(Line2D([], [], color="red", marker="o", markerfacecolor="none", linestyle="none",
                              markersize=9, label="regressed"))
    # Outside the row's last panel: inside, it would cover the small-batch end of some line.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)


# ---------------------------------------------------------------- point labels


def _place_labels(fig, panels: list[_PanelMarks]) -> None:
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
    ann = ax.annotate(text, xy, xytext=(0, 0), textcoords="offset points", fontsize=_LABEL_FONTSIZE,
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
    if best[1] > _LABEL_RINGS[0]:
        _leader_line(ax, xy, best[2], color)
    return best[3]


def _label_spots():
    """(ring, spot) in order of preference: every spot of the nearest ring first."""
    for ring in _LABEL_RINGS:
        for dx, dy, ha, va in _LABEL_SPOTS:
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


# ---------------------------------------------------------------- quality against throughput


def make_quality_figure(results: Results):
    """Held-out perplexity (y) against throughput (x, log2), one panel per (model, input, output) of
    the models that have a perplexity. A variant has one perplexity, so its line is level: a marker per
    batch size, labelled M<n>. Pruning that buys speed moves a line right; what it costs in quality,
    up. Same colours, markers and legend labels as make_figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [p for p in results.points.values() if _plottable(p) and is_number(p.ppl)]
    if not points:
        raise UserError(f"{results.path}: no measured point has a held-out perplexity (ppl); only models "
                        f"with a tokenizer get one")
    models = sorted({p.model for p in points})
    pairs = sorted({(p.input_tokens, p.output_tokens) for p in points})
    fig = Figure(figsize=(4.4 * len(pairs), 3.4 * len(models) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), len(pairs), squeeze=False)
    styles = _styles(results, None)
    panels = [_quality_panel(axes[r][c], points, model, inp, out, styles[model])
              for r, model in enumerate(models) for c, (inp, out) in enumerate(pairs)]
    for r, model in enumerate(models):
        used = {_series_key(p) for p in points if p.model == model}
        _legend(axes[r][-1], {k: v for k, v in styles[model].items() if k in used}, False, False)
    title = f"held-out perplexity against throughput · {figure_title(results)}"
    fig.suptitle(_wrap_title(title, fig.get_figwidth()), fontsize=_TITLE_FONTSIZE, wrap=True)
    _place_labels(fig, panels)
    return fig


def _quality_panel(ax, points: list[Measurement], model: str, inp: int, out: int, styles: dict) -> _PanelMarks:
    marks = _PanelMarks(ax)
    mine = [p for p in points if (p.model, p.input_tokens, p.output_tokens) == (model, inp, out)]
    for key in styles:
        series = sorted((p for p in mine if _series_key(p) == key), key=lambda p: p.batch_size)
        xs, ys = [p.tokens_per_s for p in series], [p.ppl for p in series]
        if not series:
            continue
        ax.plot(xs, ys, markersize=_POINT_SIZE, linewidth=1.4, zorder=3, **styles[key])
        marks.markers += [(x, y, _POINT_SIZE) for x, y in zip(xs, ys)]
        marks.labels += [(f"M{p.batch_size}", (x, y), styles[key]["color"]) for p, x, y in zip(series, xs, ys)]
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 64, not 2^6: read as the main figure
    ys = [m[1] for m in marks.markers]
    if ys:  # room above and below the levels, so labels fit beside the markers
        pad = (max(ys) - min(ys)) * 0.15 or 0.1 * max(ys)
        ax.set_ylim(max(min(ys) - pad, 0.0), max(ys) + pad)
    ax.set_title(f"{model} in {inp} out {out}", fontsize=10)
    ax.set_xlabel(BY_NAME["tokens_per_s"].axis_label)
    ax.set_ylabel(BY_NAME["ppl"].axis_label)
    ax.grid(True, which="major", alpha=0.3)
    _panel_notes(ax, [], not marks.labels, marks)
    return marks
