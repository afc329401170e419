"""The reference figure: throughput against latency, one panel per (model, input, output).

Rows are models, columns (input, output) pairs; x = latency (s), y = throughput (tokens/s) on a log2
axis; one line per variant (method, size, backend) through its batch sizes, each point labelled M<n>.
Points that ran out of memory are left off their line and listed in the panel. With a baseline, its
medians are drawn dashed in the same colour, its rounds as faint ticks, and regressed points get a
red ring. The figure's title names the hardware, profile and date of the results (and baseline).

Axis limits come from the medians only, so one slow round cannot squash the panel; the y axis is
fitted to the data at power-of-two ticks. Point labels are placed once the layout is fixed, each at
the first free spot around its point, so that no two labels overlap (pruned_perf.analysis.plot_text).

matplotlib is imported inside the functions so that the CLI starts fast, and only through the
object API with the Agg canvas, so no global backend is switched.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from pruned_perf.analysis.comparison import Comparison
from pruned_perf.analysis.verdicts import NEWLY_OOM, REGRESSED
from pruned_perf.analysis.metrics import BY_NAME
from pruned_perf.analysis.plot_text import POINT_SIZE, TITLE_FONTSIZE, PanelMarks, figure_title, place_labels, wrap_title
from pruned_perf.analysis.results import Results, method_rank, method_styles
from pruned_perf.core.atomic import atomic_path
from pruned_perf.core.errors import UserError
from pruned_perf.core.formatting import format_params
from pruned_perf.core.schema import Measurement, MethodStyle

FIGURE_SUFFIXES = (".png", ".svg")
# A method's colour and marker are its own (its module's STYLE, carried by the results: method_styles);
# a method the results do not describe takes the next automatic ones.
_AUTO_COLORS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:red")
_AUTO_MARKERS = ("^", "v", "D", "P", "*", "<", ">")
# A second size of the same method keeps its colour and marker but not its line.
_SIZE_LINESTYLES = ("-", "-.", ":", (0, (5, 1, 1, 1)))
# Marker sizes (points) beside a measured point's (plot_labels.POINT_SIZE).
_BASEPOINT_SIZE, _RING_SIZE = 4.0, math.sqrt(160)
# Powers of two bracket the data with this margin (in octaves) on each side of the log2 axis.
_Y_MARGIN_OCTAVES = 0.25
_MAX_Y_TICKS = 10
_X_MARGIN = 0.08  # of the latency span, each side


def plot(results: Results, out_path: str | os.PathLike, baseline: Results | None = None,
         comparison: Comparison | None = None):
    """Draw the figure and write it to out_path (.png or .svg) atomically; returns the Figure.

    baseline and comparison are optional: without them the figure shows the results alone."""
    figure_format(out_path)
    return save_figure(make_figure(results, baseline, comparison), out_path)


def save_figure(fig, out_path: str | os.PathLike):
    """Write a Figure to out_path (.png or .svg) atomically; returns it."""
    suffix = figure_format(out_path)
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


def make_figure(results: Results, baseline: Results | None = None, comparison: Comparison | None = None,
                top=None):
    """The figure; `top` (rows, draw(ax)), if given, adds a panel of that height in rows across the top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    require_measured_points(results)
    models = sorted({p.model for p in results.points.values()})
    pairs = sorted({(p.input_tokens, p.output_tokens) for p in results.points.values()})
    extra = top[0] if top else 0
    fig = Figure(figsize=(max(4.4 * len(pairs), 9.0 if top else 0), 3.8 * (len(models) + extra) + 0.4),
                 layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(models) + bool(top), len(pairs), height_ratios=[extra] * bool(top) + [1] * len(models))
    if top:
        top[1](fig.add_subplot(grid[0, :]))
    styles, regressed, panels = series_styles(results, baseline), _regressed_ids(comparison), []
    for r, model in enumerate(models):
        axes = [fig.add_subplot(grid[r + bool(top), c]) for c in range(len(pairs))]
        for ax, (inp, out) in zip(axes, pairs):
            panels.append(_panel(ax, results, baseline, model, inp, out, styles[model], regressed))
        # One legend per row: sizes differ between models (4.9B of a 7B model, 9.5B of a 13B one).
        legend(axes[-1], styles[model], baseline is not None, bool(regressed))
    # Wrapped at its " · " where the figure is narrow; wrap=True breaks a part still too long.
    fig.suptitle(wrap_title(figure_title(results, baseline), fig.get_figwidth()), fontsize=TITLE_FONTSIZE,
                 wrap=True)
    place_labels(fig, panels)
    return fig


def require_measured_points(results: Results) -> None:
    """A UserError when no point has a latency and throughput: a figure of empty panels tells nothing."""
    points = list(results.points.values())
    if any(plottable(p) for p in points):
        return
    n, oom = len(points), sum(1 for p in points if p.oom)
    why = "all out of memory" if oom == n else f"{oom} out of memory, none of the others has a latency"
    raise UserError(f"{results.path}: nothing to plot: {n} point{'s' if n != 1 else ''}, {why}")


def series_key(p: Measurement) -> tuple:
    return (p.method, p.params, p.backend)


def series_styles(results: Results, baseline: Results | None) -> dict[str, dict[tuple, dict]]:
    """Per model: a style and a label per series. Colours and markers follow the method across the
    whole figure; every label names the size, backends only where there is more than one."""
    points = list(results.points.values()) + (list(baseline.points.values()) if baseline else [])
    known = method_styles(results, baseline)
    order = list(known)
    methods = sorted({p.method for p in points}, key=lambda m: method_rank(m, order))
    auto = iter(range(len(methods)))
    method_base = {m: known[m] if m in known else _auto_style(next(auto)) for m in methods}
    backends = {p.backend for p in points}
    random = {(p.model, series_key(p)) for p in points if p.structure_from_random_weights}
    styles: dict[str, dict[tuple, dict]] = {}
    for model in sorted({p.model for p in points}):
        keys = sorted({series_key(p) for p in points if p.model == model},
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
            series.setdefault(series_key(p), []).append(p)
    for points in series.values():
        points.sort(key=lambda p: p.batch_size)
    return series


def plottable(p: Measurement) -> bool:
    return not p.oom and bool(p.latency_s) and bool(p.tokens_per_s)


# ---------------------------------------------------------------- one panel


def _panel(ax, results, baseline, model, inp, out, styles, regressed) -> PanelMarks:
    series = _panel_series(results, model, inp, out)
    base_series = _panel_series(baseline, model, inp, out) if baseline else {}
    marks = PanelMarks(ax)
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
    panel_notes(ax, oom_notes, not marks.labels, marks)
    return marks


def _draw_baseline(ax, points: list[Measurement], style: dict, marks: PanelMarks) -> None:
    """The baseline's medians as a faint dashed line; its rounds as faint ticks at the median's
    throughput, so its spread shows without any round moving a marker or the axis limits."""
    ok = [p for p in points if plottable(p)]
    xs, ys = [p.latency_s for p in ok], [p.tokens_per_s for p in ok]
    ax.plot(xs, ys, color=style["color"], marker=style["marker"], linestyle="--", alpha=0.45,
            markersize=_BASEPOINT_SIZE, linewidth=1, zorder=1)
    rounds = [(r, p.tokens_per_s) for p in ok for r in p.rounds_s if r > 0]
    if rounds:
        ax.plot(*zip(*rounds), color=style["color"], marker="|", linestyle="none", alpha=0.3, markersize=6,
                zorder=1, scalex=False, scaley=False, label="_baseline rounds")
    marks.markers += [(x, y, _BASEPOINT_SIZE) for x, y in zip(xs, ys)]


def _draw_series(ax, points: list[Measurement], style: dict, marks: PanelMarks) -> list[int]:
    """One variant's line through its batch sizes; returns the batch sizes that ran out of memory."""
    ok = [p for p in points if plottable(p)]
    xs, ys = [p.latency_s for p in ok], [p.tokens_per_s for p in ok]
    ax.plot(xs, ys, markersize=POINT_SIZE, linewidth=1.4, zorder=3, **style)
    marks.markers += [(x, y, POINT_SIZE) for x, y in zip(xs, ys)]
    marks.labels += [(f"M{p.batch_size}", (x, y), style["color"]) for p, x, y in zip(ok, xs, ys)]
    return [p.batch_size for p in points if p.oom]


def panel_notes(ax, oom_notes: list[str], nothing_measured: bool, marks: PanelMarks) -> None:
    if oom_notes:
        note = ax.text(0.98, 0.03, "OOM:\n" + "\n".join(oom_notes), transform=ax.transAxes, ha="right",
                       va="bottom", fontsize=6.5, color="dimgray")
        note.set_in_layout(False)
        marks.notes.append(note)
    if nothing_measured:
        marks.notes.append(ax.text(0.5, 0.5, "no measured points", transform=ax.transAxes, ha="center",
                                   va="center", color="gray"))


def _mark_regressions(ax, series, base_series, regressed, marks: PanelMarks) -> None:
    """Red ring on each regressed point; a newly-OOM point is ringed where the baseline had it."""
    xs, ys = [], []
    base_by_id = {p.id: p for points in base_series.values() for p in points}
    for points in series.values():
        for p in points:
            status = regressed.get(p.id)
            if status == REGRESSED and plottable(p):
                xs.append(p.latency_s), ys.append(p.tokens_per_s)
            elif status == NEWLY_OOM and p.id in base_by_id and plottable(base_by_id[p.id]):
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


def legend(ax, styles: dict, with_baseline: bool, with_regressions: bool) -> None:
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
