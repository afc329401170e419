"""The judgement of an interleaved A/B (`ABJudgement`): its table, its JSON, and its verdicts judged again
from the stored pairs. Torch-free.

A header names both sides (revision, where pruned_perf came from, python, torch, transformers, threads),
how the pairs were judged and the count of each status; then a row per point: pairs, the new/base ratio
of latency, TTFT and TPOT with the interval that decided, the status and its reason, regressions and
failures first. Tokens/s is the inverse of latency per pair (its verdict is in the JSON).
"""
from __future__ import annotations

import math
from dataclasses import replace

from tabulate import tabulate

from pruned_perf.analysis import paired
from pruned_perf.analysis.ab import ABPoint, ABRecord, PointAB
from pruned_perf.analysis.results import Results, results_from_dict
from pruned_perf.analysis.verdicts import (FAILED, IMPROVED, INCONCLUSIVE, REGRESSED, UNCHANGED, Judgement,
                                           is_regression)
from pruned_perf.core.errors import choice_error
from pruned_perf.core.schema import Point

FORMATS = {"github": "github", "plain": "simple"}
# Rows in this order: what needs attention first.
STATUS_ORDER = (REGRESSED, FAILED, INCONCLUSIVE, IMPROVED, UNCHANGED)
SHOWN_METRICS = (("latency_s", "latency"), ("ttft_s", "ttft"), ("tpot_s", "tpot"))


class ABJudgement(Judgement):
    """An A/B's verdicts: `results` holds the new side's measured points, `record` the A/B itself."""

    def __init__(self, results: Results, record: ABRecord):
        self.results, self.record = results, record

    @property
    def has_regression(self) -> bool:
        """A regressed point, or one that failed: a gate cannot pass what it could not measure."""
        return any(is_regression(p.status) or p.status == FAILED for p in self.record.points)

    def counts(self) -> dict:
        return {s: sum(p.status == s for p in self.record.points) for s in STATUS_ORDER}

    def render(self, fmt: str = "github", summary: bool = False) -> str:
        if fmt not in FORMATS:
            raise choice_error("report format", fmt, FORMATS)
        return _header(self, fmt) + "\n\n" + _table(self.record, fmt) + "\n"

    def to_dict(self) -> dict:
        """What `compare --json` writes: every point's verdict, metrics and reason (not the raw pairs)."""
        return {"has_regression": self.has_regression, "interrupted": self.results.interrupted,
                "settings": self.record.settings.to_dict(),
                "points": {p.id: {k: v for k, v in p.ab.to_dict().items() if k != "pairs"} | {"pairs": len(p.ab.pairs)}
                           for p in self.record.points}}

    def rederived(self, settings_for=None) -> "ABJudgement":
        """Every verdict judged again from the stored pairs, as final, with the stored settings or
        `settings_for(point_id)`. A point that got no verdict (failed, or busy before its start) stays."""
        points = tuple(_rejudged(p, self.results.points.get(p.id), self.record, settings_for)
                       for p in self.record.points)
        return ABJudgement(self.results, replace(self.record, points=points))

    def plot(self, out_path, quality: bool = False):
        """The forest of what the A/B decided over the reference figure, the base side dashed."""
        from pruned_perf.analysis.ab_plot import draw_forest, forest_rows
        from pruned_perf.analysis.plot import make_figure, save_figure

        if quality:
            from pruned_perf.analysis.plot_quality import make_quality_figure

            return save_figure(make_quality_figure(self.results), out_path)
        top = (forest_rows(self.record), lambda ax: draw_forest(ax, self.record))
        return save_figure(make_figure(self.results, self.base_results(), top=top), out_path)

    def base_results(self) -> Results | None:
        """The base side's measurements as Results of their own (a figure's baseline overlay), or None if
        no point has one."""
        bases = [p.base for p in self.record.points if p.base is not None]
        if not bases:
            return None
        raw = {"machine_info": {"pruned_perf": self.results.meta.to_dict()}, "datetime": self.results.datetime,
               "benchmarks": [{"name": m.id, "extra_info": m.to_dict()} for m in bases]}
        return results_from_dict(raw, f"{self.results.path} (base side)")


def _rejudged(point: ABPoint, head, record: ABRecord, settings_for) -> ABPoint:
    if point.status == FAILED or (not point.ab.pairs and point.ab.busy):
        return point
    settings = settings_for(point.id) if settings_for else record.settings
    device = next((m.device for m in (head, point.base) if m is not None), "cpu")
    # a busy machine the driver saw outside the pairs (waiting for quiet) is not in them: it stays
    from_pairs = paired.busy_reason(point.ab.pairs, record.settings, device == "cpu")
    outside = point.ab.busy if point.ab.busy and not from_pairs else None
    ab = paired.judge(point.ab.pairs, point.base, head, settings=settings, family=point.ab.family, final=True,
                      device=device, busy=outside)
    return replace(point, ab=ab)


def _header(judgement: ABJudgement, fmt: str) -> str:
    results, record = judgement.results, judgement.record
    settings, family = record.settings, record.family
    counts = judgement.counts()
    busy = sum(p.ab.busy is not None for p in record.points)
    n = len(record.points)
    title = f"pruned_perf A/B: new vs base, profile {results.profile}, {n} point{'' if n == 1 else 's'}"
    lines = [f"## {title}" if fmt == "github" else title, f"Hardware {results.slug}",
             f"base: {record.base.line()}", f"new:  {record.head.line()}"]
    differ = record.base.differences(record.head)
    if differ:
        lines.append("note: the sides differ in " + ", ".join(differ))
    looks = paired.look_sizes(settings, family)
    level = 1 - 2 * paired.decide_tail(settings, family)
    lines.append(f"Pairs of rounds in alternating order (a pair that outside load contended is run again), looks "
                 f"at {', '.join(map(str, looks))} pairs; regressed / improved: the estimate beyond the threshold "
                 f"and the {level:.4%} interval (alpha {settings.alpha:g} over {family} points x "
                 f"{paired.DISTINCT_TESTS} timing tests x the deciding looks) beyond the bias floor of "
                 f"{settings.bias_floor:.0%}; unchanged: the look's equivalence interval within the threshold. "
                 f"Each cell shows the interval that decided.")
    if results.interrupted:
        verdict = "INTERRUPTED (Ctrl-C)"
    elif judgement.has_regression:
        verdict = "REGRESSION" if counts[REGRESSED] else "FAILED"
    else:
        verdict = "no regression"
    listed = ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])
    lines.append(f"{verdict}: {listed or 'no point'}" + (f" ({busy} on a busy machine)" if busy else ""))
    sep = "  \n" if fmt == "github" else "\n"  # two spaces: a markdown line break
    return lines[0] + "\n\n" + sep.join(lines[1:])


def ratio_cell(ab: PointAB, name: str) -> str:
    """`1.190x [1.120, 1.260]`: the estimate and the interval that decided (the equivalence interval of the
    last look unless the metric regressed or improved); `[too few pairs]` where that is infinite."""
    m = ab.metric(name)
    if m is None or m.ratio is None:
        return ""
    low, high, _ = m.shown()
    if low is None or high is None:
        return f"{m.ratio:.3f}x [too few pairs]"
    return f"{m.ratio:.3f}x [{low:.3f}, {high:.3f}]"


def _rank(point: ABPoint) -> tuple:
    latency = point.ab.metric("latency_s")
    ratio = latency.ratio if latency is not None and latency.ratio is not None else 1.0
    return (STATUS_ORDER.index(point.status), -abs(math.log(ratio)), point.id)


def pairs_cell(ab: PointAB) -> str:
    clean = len(ab.pairs) - ab.contended
    return f"{clean} (+{ab.contended} contended)" if ab.contended else str(clean)


def _table(record: ABRecord, fmt: str) -> str:
    headers = ["point", "pairs"] + [f"{label} new/base [CI]" for _, label in SHOWN_METRICS] + ["verdict", "reason"]
    rows = []
    for point in sorted(record.points, key=_rank):
        status = point.status.upper() if point.status in (REGRESSED, FAILED) else point.status
        rows.append([point.id, pairs_cell(point.ab)] + [ratio_cell(point.ab, name) for name, _ in SHOWN_METRICS]
                    + [status, point.ab.reason])
    return tabulate(rows, headers, tablefmt=FORMATS[fmt], disable_numparse=True)


def live_line(point: Point, ab: PointAB) -> str:
    """The line a point prints once its verdict settles:
    `pruned_perf A/B: smollm2-135m dense in12 out32 M8 eager: 18 pairs, new/base 1.19x [1.12, 1.26], regressed (...)`."""
    head = (f"pruned_perf A/B: {point.model} {point.method} in{point.input_tokens} out{point.output_tokens} "
            f"M{point.batch_size} {point.backend}:")
    latency = ab.metric("latency_s")
    if latency is None or latency.ratio is None:
        return f"{head} {ab.status} ({ab.reason})"
    low, high, _ = latency.shown()
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    reason = f" ({ab.reason})" if ab.status != UNCHANGED and ab.reason else ""
    return f"{head} {pairs_cell(ab)} pairs, new/base {latency.ratio:.2f}x{interval}, {ab.status}{reason}"


def settings_from_pyproject(record: ABRecord, pyproject: str):
    """Per point: the stored schedule and alpha, with the thresholds, bias floor and tolerance of
    `pyproject`."""
    from pruned_perf.analysis.ab import ab_settings_from_config
    from pruned_perf.analysis.config import load_config

    config = load_config(pyproject)
    keep = {k: getattr(record.settings, k) for k in ("pairs_per_look", "max_pairs", "alpha")}
    return lambda point_id: ab_settings_from_config(config, point_id, **keep)
