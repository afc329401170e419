"""What an A/B decided, drawn (`pruned-perf plot ab.json`): per point, the new/base ratio of latency and of
TTFT with the interval that decided, against the threshold band and the bias floor, coloured by the
point's verdict; under it the reference figure with the base side dashed. A 5-10% change is plain here
where two near-identical throughput-latency lines hide it.
"""
from __future__ import annotations

import math

from pruned_perf.analysis.ab import ABPoint, ABRecord
from pruned_perf.analysis.verdicts import FAILED, IMPROVED, INCONCLUSIVE, REGRESSED, UNCHANGED

VERDICT_COLORS = {REGRESSED: "tab:red", IMPROVED: "tab:green", UNCHANGED: "tab:blue",
                  INCONCLUSIVE: "tab:orange", FAILED: "black"}
# Latency on the row, TTFT just under it.
_METRICS = (("latency_s", "latency", "o", 0.0), ("ttft_s", "TTFT", "D", 0.28))
ROW_INCHES = 0.26  # the forest's height per point


def forest_rows(record: ABRecord) -> float:
    """The forest's height in the figure's rows (3.8 inches each), for `plot.make_figure(top=...)`."""
    return max(1.2, (len(record.points) + 2) * ROW_INCHES / 3.8)


def draw_forest(ax, record: ABRecord) -> None:
    """One row per point (in the record's order, first at the top): each metric's ratio and interval."""
    points = list(record.points)
    settings = record.settings
    lows, highs = _draw_band(ax, settings.threshold("latency_s"), settings.bias_floor)
    for row, point in enumerate(points):
        y = len(points) - 1 - row
        color = VERDICT_COLORS[point.status]
        for name, label, marker, offset in _METRICS:
            drawn = _draw_metric(ax, point, name, y - offset, color, marker)
            if drawn:
                lows.append(drawn[0])
                highs.append(drawn[1])
        ax.text(1.005, y, f"{point.status} ({len(point.ab.pairs)} pairs)", transform=ax.get_yaxis_transform(),
                va="center", fontsize=7, color=color)
    _ratio_axis(ax, min(lows) / 1.01, max(highs) * 1.01)
    ax.set_ylim(-1, len(points))
    ax.set_yticks(range(len(points)), [p.id for p in reversed(points)], fontsize=7)
    ax.set_xlabel("new / base (latency o, TTFT \u25c7; bars: the interval that decided)")
    ax.set_title("What the A/B decided: shaded, within the threshold; dashed, the bias floor", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)


def _ratio_axis(ax, low: float, high: float) -> None:
    """A log axis of ratios with plain ticks (0.8, 1, 1.25), a few per doubling."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ticks = [t for t in (0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2, 3, 4)
             if low <= t <= high]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))


def _draw_band(ax, threshold: float, floor: float) -> tuple[list, list]:
    ax.axvspan(1 / (1 + threshold), 1 + threshold, color="gray", alpha=0.15, lw=0)
    ax.axvline(1.0, color="gray", lw=0.8)
    for x in (1 / (1 + floor), 1 + floor):
        ax.axvline(x, color="gray", lw=0.8, ls="--")
    return [1 / (1 + threshold)], [1 + threshold]


def _draw_metric(ax, point: ABPoint, name: str, y: float, color: str, marker: str) -> tuple | None:
    m = point.ab.metric(name)
    if m is None or m.ratio is None:
        if name == "latency_s" and point.status == FAILED:
            ax.plot([1.0], [y], marker="x", color=color, ms=7)
        return None
    low, high, _ = m.shown()
    finite = low is not None and high is not None and all(math.isfinite(v) for v in (low, high))
    if finite:
        ax.plot([low, high], [y, y], color=color, lw=1.6 if name == "latency_s" else 0.9, alpha=0.8)
    ax.plot([m.ratio], [y], marker=marker, color=color, ms=5 if name == "latency_s" else 3.5,
            markerfacecolor=color if name == "latency_s" else "white")
    return (low, high) if finite else (m.ratio, m.ratio)
