"""The speedup of each pruned point over the dense point of the same shape in the same run: the ratio
the suite exists to show, and one the machine's drift between runs cancels out of."""
from __future__ import annotations

import statistics
from typing import Iterable

from pruned_perf.core.schema import Measurement


def add_speedups(points: Iterable[Measurement]) -> None:
    """Set `speedup_vs_dense` (and its per-round samples) on every pruned point whose dense point of
    the same shape was measured in the same run. In place; dense and OOM points get None."""
    points = list(points)
    dense = {_shape(p): p for p in points if p.method == "dense" and not p.oom and p.rounds_s}
    for p in points:
        base = dense.get(_shape(p))
        if p.method == "dense" or p.oom or base is None or not p.rounds_s:
            p.speedup_vs_dense, p.speedup_rounds, p.dense_probe_s = None, [], None
            continue
        base_latency = statistics.median(base.rounds_s)
        p.speedup_vs_dense = base_latency / statistics.median(p.rounds_s)
        p.speedup_rounds = [base_latency / r for r in p.rounds_s]
        # how fast the machine was during the dense point: the speedup's denominator was timed then
        p.dense_probe_s = base.probe_s


def add_speedups_to_benchmarks(benchmarks: list[dict]) -> None:
    """add_speedups over the points of pytest-benchmark JSON (its `benchmarks`), in place: each
    extra_info is written anew from its typed point."""
    measured = [b for b in benchmarks if b.get("extra_info")]
    points = [Measurement.from_dict(b["extra_info"]) for b in measured]
    add_speedups(points)
    for bench, point in zip(measured, points):
        bench["extra_info"] = point.to_dict()


def _shape(p: Measurement) -> tuple:
    return (p.model, p.input_tokens, p.output_tokens, p.batch_size, p.backend)
