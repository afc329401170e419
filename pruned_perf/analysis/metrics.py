"""The gated metrics: one table that compare, config, the baseline history and report read.

Torch-free. A metric's samples are built from a point's raw rounds (`extra_info` of the results
schema), so a verdict can test the rounds and not only their medians. Adding a metric is one entry
here plus the code that measures its rounds.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from pruned_perf.core.schema import Measurement, is_number

LOWER_IS_BETTER = "lower"
HIGHER_IS_BETTER = "higher"


def _rounds(field: str) -> Callable[[Measurement], list]:
    def samples(point: Measurement) -> list:
        values = getattr(point, field)
        return [float(v) for v in values if is_number(v)] if isinstance(values, list) else []
    return samples


def _probe(point: Measurement) -> float | None:
    """How slow the machine was while the point ran (the steadiness probe): a slower machine makes
    every absolute time look worse."""
    value = point.probe_s
    return float(value) if is_number(value) and value > 0 else None


def _probe_vs_dense(point: Measurement) -> float | None:
    """A machine slower during this point than during its dense point makes its speedup look worse."""
    own, dense = _probe(point), point.dense_probe_s
    return own / dense if own is not None and is_number(dense) and dense > 0 else None


def _throughput(point: Measurement) -> list:
    tokens = point.batch_size * point.output_tokens
    rounds = _rounds("rounds_s")(point)
    return [tokens / r for r in rounds] if tokens > 0 and all(r > 0 for r in rounds) else []


@dataclass(frozen=True)
class Metric:
    name: str
    better: str
    # Moves with the machine's state from one run to the next: every time, and on a shared CPU even the
    # speedup over dense measured within one run (its dense and pruned points ran at different moments);
    # not the allocator's peak memory.
    drifts: bool
    threshold: float  # default relative change of the median that counts
    samples: Callable[[Measurement], list] | None  # None: one deterministic number, the summary field itself
    label: str  # in words, as an axis or a reason names it
    # how much the machine's state made this metric look worse during a point; None: it cannot
    machine: Callable[[Measurement], float | None] | None = None
    # how tables show it: the column's header, and the value times `scale` through `fmt`
    unit: str = ""
    column: str = ""
    fmt: str = "{:.4g}"
    scale: float = 1.0

    @property
    def header(self) -> str:
        return self.column or self.name

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def cell(self, value: float | None) -> str:
        return "" if value is None else self.fmt.format(value * self.scale)

    def value(self, point: Measurement) -> float | None:
        """The point's summary value of this metric (its median), or None where it has none. A metric
        without a summary field of its own (a new one, built from rounds already measured) gets the
        median of its samples, so the baseline history keeps it too."""
        value = getattr(point, self.name, None)
        if is_number(value):
            return float(value)
        samples = self.samples(point) if self.samples is not None else []
        return statistics.median(samples) if samples else None


# In the order of the report's columns.
METRICS = (
    Metric("latency_s", LOWER_IS_BETTER, True, 0.05, _rounds("rounds_s"), "latency", _probe,
           unit="s", column="latency (s)"),
    Metric("tokens_per_s", HIGHER_IS_BETTER, True, 0.05, _throughput, "throughput", _probe,
           unit="tokens/s", column="tokens/s", fmt="{:.1f}"),
    Metric("ttft_s", LOWER_IS_BETTER, True, 0.05, _rounds("ttft_rounds_s"), "time to first token", _probe,
           unit="s", column="ttft (ms)", fmt="{:.2f}", scale=1e3),
    Metric("tpot_s", LOWER_IS_BETTER, True, 0.05, _rounds("tpot_rounds_s"), "time per output token", _probe,
           unit="s", column="tpot (ms)", fmt="{:.2f}", scale=1e3),
    Metric("peak_mem_bytes", LOWER_IS_BETTER, False, 0.02, None, "peak memory",
           unit="bytes", column="peak mem (GiB)", fmt="{:.2f}", scale=1 / 1024**3),
    Metric("speedup_vs_dense", HIGHER_IS_BETTER, True, 0.05, _rounds("speedup_rounds"), "speedup vs dense",
           _probe_vs_dense, column="speedup vs dense", fmt="{:.2f}x"),
    # Held-out perplexity of the timed model: a function of the plan and the code that builds the model,
    # not of the machine's speed, so it does not drift; one number per variant, no rounds.
    Metric("ppl", LOWER_IS_BETTER, False, 0.02, None, "held-out perplexity", column="ppl", fmt="{:.2f}"),
)
BY_NAME = {m.name: m for m in METRICS}
DEFAULT_THRESHOLDS = {m.name: m.threshold for m in METRICS}
