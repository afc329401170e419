"""The reference figure: throughput against latency, one panel per (model, input, output).

Rows are models, columns (input, output) pairs; x = latency (s), y = throughput (tokens/s) on a log2
axis; one line per variant (method, size, backend) through its batch sizes, each point labelled M<n>.
Points that ran out of memory are left off their line and listed in the panel. With a baseline, its
lines are drawn dashed in the same colour and regressed points get a red ring.

matplotlib is imported inside the functions so that the CLI starts fast, and only through the
object API with the Agg canvas, so no global backend is switched.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from pruned_perf.compare import NEWLY_OOM, REGRESSED, Comparison
from pruned_perf.errors import UserError
from pruned_perf.atomic import atomic_path
from pruned_perf.results import Results
from pruned_perf.sizing import format_params

FIGURE_SUFFIXES = (".png", ".svg")
# Reference styling; other methods take the next automatic colour and marker.
METHOD_STYLES = {
    "dense": {"color": "gray", "marker": "x", "linestyle": "-"},
    "llm-pruner": {"color": "black", "marker": "x", "linestyle": "-"},
    "flap": {"color": "green", "marker": "o", "linestyle": "-"},
    "depth": {"color": "blue", "marker": "s", "linestyle": "-"},
}
_AUTO_COLORS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:red")
_AUTO_MARKERS = ("^", "v", "D", "P", "*", "<", ">")
# A second size of the same method keeps its colour and marker but not its line.
_SIZE_LINESTYLES = ("-", "-.", ":", (0, (5, 1, 1, 1)))


def plot(results: Results, out_path: str | os.PathLike, baseline: Results | None = None,
         comparison: Comparison | None = None):
    """Draw the figure and write it to out_path (.png or .svg) atomically; returns the Figure."""
    suffix = figure_format(out_path)
    fig = make_figure(results, baseline, comparison)
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
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    models = sorted({p["model"] for p in results.points.values()})
    pairs = sorted({(p["input_tokens"], p["output_tokens"]) for p in results.points.values()})
    fig = Figure(figsize=(4.4 * len(pairs), 3.8 * len(models)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), len(pairs), squeeze=False)
    styles = _styles(results, baseline)
    regressed = _regressed_ids(comparison)
    for r, model in enumerate(models):
        for c, (inp, out) in enumerate(pairs):
            _panel(axes[r][c], results, baseline, model, inp, out, styles[model], regressed)
        # One legend per row: sizes differ between models (4.9B of a 7B model, 9.5B of a 13B one).
        _legend(axes[r][-1], styles[model], baseline is not None, bool(regressed))
    return fig


# ---------------------------------------------------------------- series and styles


def _series_key(p: dict) -> tuple:
    return (p["method"], p.get("params") or 0, p["backend"])


def _styles(results: Results, baseline: Results | None) -> dict[str, dict[tuple, dict]]:
    """Per model: a style and a label per series. Colours and markers follow the method across the
    whole figure; every label names the size, backends only where there is more than one."""
    points = list(results.points.values()) + (list(baseline.points.values()) if baseline else [])
    methods = sorted({p["method"] for p in points}, key=lambda m: (_method_rank(m), m))
    auto = iter(range(len(methods)))
    method_base = {m: METHOD_STYLES.get(m) or _auto_style(next(auto)) for m in methods}
    backends = {p["backend"] for p in points}
    styles: dict[str, dict[tuple, dict]] = {}
    for model in sorted({p["model"] for p in points}):
        keys = sorted({_series_key(p) for p in points if p["model"] == model},
                      key=lambda k: (_method_rank(k[0]), k))
        styles[model] = {key: _series_style(key, keys, method_base, len(backends) > 1) for key in keys}
    return styles


def _series_style(key: tuple, keys: list[tuple], method_base: dict, many_backends: bool) -> dict:
    method, params, backend = key
    sizes = sorted({k[1] for k in keys if k[0] == method})
    style = dict(method_base[method])
    style["linestyle"] = _SIZE_LINESTYLES[sizes.index(params) % len(_SIZE_LINESTYLES)]
    label = f"{method} {format_params(params)}" if params else method  # as the reference: "Ours 4.9B"
    if many_backends:
        label += f" ({backend})"
        if backend == "static":
            style["markerfacecolor"] = "none"
    style["label"] = label
    return style


def _method_rank(method: str) -> int:
    order = list(METHOD_STYLES)
    return order.index(method) if method in order else len(order)


def _auto_style(i: int) -> dict:
    return {"color": _AUTO_COLORS[i % len(_AUTO_COLORS)], "marker": _AUTO_MARKERS[i % len(_AUTO_MARKERS)],
            "linestyle": "-"}


def _regressed_ids(comparison: Comparison | None) -> dict[str, str]:
    if comparison is None:
        return {}
    return {p.id: p.status for p in comparison.points if p.status in (REGRESSED, NEWLY_OOM)}


def _panel_series(results: Results, model: str, inp: int, out: int) -> dict[tuple, list[dict]]:
    series: dict[tuple, list[dict]] = {}
    for p in results.points.values():
        if (p["model"], p["input_tokens"], p["output_tokens"]) == (model, inp, out):
            series.setdefault(_series_key(p), []).append(p)
    for points in series.values():
        points.sort(key=lambda p: p["batch_size"])
    return series


def _plottable(p: dict) -> bool:
    return not p.get("oom") and bool(p.get("latency_s")) and bool(p.get("tokens_per_s"))


# ---------------------------------------------------------------- one panel


def _panel(ax, results, baseline, model, inp, out, styles, regressed) -> None:
    series = _panel_series(results, model, inp, out)
    base_series = _panel_series(baseline, model, inp, out) if baseline else {}
    ys: list[float] = []
    for key, points in base_series.items():
        ok = [p for p in points if _plottable(p)]
        style = styles[key]
        ax.plot([p["latency_s"] for p in ok], [p["tokens_per_s"] for p in ok], color=style["color"],
                marker=style["marker"], linestyle="--", alpha=0.45, markersize=4, linewidth=1, zorder=1)
        ys += [p["tokens_per_s"] for p in ok]
    oom_notes = []
    for key, points in sorted(series.items(), key=lambda kv: list(styles).index(kv[0])):
        ok = [p for p in points if _plottable(p)]
        style = styles[key]
        ax.plot([p["latency_s"] for p in ok], [p["tokens_per_s"] for p in ok], markersize=5, linewidth=1.4,
                zorder=3, **style)
        for p in ok:
            ax.annotate(f"M{p['batch_size']}", (p["latency_s"], p["tokens_per_s"]), textcoords="offset points",
                        xytext=(4, -9), fontsize=6.5, color=style["color"])
        ys += [p["tokens_per_s"] for p in ok]
        oom = [p["batch_size"] for p in points if p.get("oom")]
        if oom:
            oom_notes.append(f"{style['label']} " + ", ".join(f"M{b}" for b in oom))
    _mark_regressions(ax, series, base_series, regressed)
    _log2_axis(ax, ys)
    ax.set_title(f"{model} in {inp} out {out}", fontsize=10)
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("throughput (tokens/s)")
    ax.grid(True, which="major", alpha=0.3)
    if oom_notes:
        note = ax.text(0.98, 0.03, "OOM:\n" + "\n".join(oom_notes), transform=ax.transAxes, ha="right",
                       va="bottom", fontsize=6.5, color="dimgray")
        note.set_in_layout(False)
    if not series:
        ax.text(0.5, 0.5, "no points", transform=ax.transAxes, ha="center", va="center", color="gray")


def _mark_regressions(ax, series, base_series, regressed) -> None:
    """Red ring on each regressed point; a newly-OOM point is ringed where the baseline had it."""
    xs, ys = [], []
    base_by_id = {p["id"]: p for points in base_series.values() for p in points}
    for points in series.values():
        for p in points:
            status = regressed.get(p["id"])
            if status == REGRESSED and _plottable(p):
                xs.append(p["latency_s"]), ys.append(p["tokens_per_s"])
            elif status == NEWLY_OOM and p["id"] in base_by_id and _plottable(base_by_id[p["id"]]):
                xs.append(base_by_id[p["id"]]["latency_s"]), ys.append(base_by_id[p["id"]]["tokens_per_s"])
    if xs:
        ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="red", linewidths=1.6, zorder=4,
                   label="_regressed")


def _log2_axis(ax, ys: list[float]) -> None:
    """log2 y axis with ticks 32..8192, widened by powers of two to hold every point."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    lo_exp, hi_exp = 5, 13
    positive = [y for y in ys if y > 0]
    if positive:
        lo_exp = min(lo_exp, math.floor(math.log2(min(positive))))
        hi_exp = max(hi_exp, math.ceil(math.log2(max(positive))))
    ticks = [2.0**k for k in range(lo_exp, hi_exp + 1)]
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set_ylim(ticks[0] / 1.15, ticks[-1] * 1.15)


def _legend(ax, styles: dict, with_baseline: bool, with_regressions: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=s["color"], marker=s["marker"], linestyle=s["linestyle"],
                      markerfacecolor=s.get("markerfacecolor", s["color"]), label=s["label"])
               for s in styles.values()]
    if with_baseline:
        handles.append(Line2D([], [], color="gray", linestyle="--", alpha=0.6, label="baseline"))
    if with_regressions:
        handles.append(Line2D([], [], color="red", marker="o", markerfacecolor="none", linestyle="none",
                              markersize=9, label="regressed"))
    # Outside the row's last panel: inside, it would cover the small-batch end of some line.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
