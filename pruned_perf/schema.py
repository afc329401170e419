"""What a measured point is, torch-free: the point (`Point`), its measurement (`Measurement`, exactly
the `extra_info` fields of docs/results-schema.md), the schema version, and the summary fields a point's
timed rounds give. The measuring side (bench/) builds these; the analysis side reads them back.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field

from pruned_perf.errors import UserError, choice_error

@dataclass(frozen=True)
class Point:
    """One benchmark point: a model variant at one shape. Its id names it in results, logs and baselines."""

    model: str
    method: str
    input_tokens: int
    output_tokens: int
    batch_size: int
    backend: str = "eager"

    def __post_init__(self):
        for name in ("model", "method"):
            _check_name(name, getattr(self, name))
        for name in ("input_tokens", "output_tokens", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if self.backend not in BACKENDS:
            raise choice_error("backend", self.backend, BACKENDS)

    @property
    def id(self) -> str:
        return (f"{self.model}-{self.method}-in{self.input_tokens}-out{self.output_tokens}"
                f"-M{self.batch_size}-{self.backend}")

    @property
    def series(self) -> tuple:
        """Points that differ only in batch size: one line of the figure."""
        return (self.model, self.method, self.input_tokens, self.output_tokens, self.backend)


# Version of the results schema: every point's extra_info and machine_info.pruned_perf carry it.
SCHEMA_VERSION = 2
# How the KV cache is kept: grown per step (eager, transformers' dynamic cache) or preallocated (static).
BACKENDS = ("eager", "static")


def _check_name(what: str, value) -> None:
    if not isinstance(value, str) or not value:
        raise UserError(f"{what} must be a non-empty string, got {value!r}")


def check_positive_int(what: str, value) -> None:
    # bool is an int subclass; True as a batch size is a bug, not a 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what} must be a positive integer, got {value!r}")


def check_seconds(what: str, value) -> None:
    """A duration setting: a finite number of seconds, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UserError(f"{what} must be a finite number of seconds >= 0, got {value!r}")


@dataclass
class Measurement:
    """Exactly the `extra_info` fields of docs/results-schema.md (schema and id are added by to_dict).

    An OOM point has null timings and empty round lists.
    """
    model: str
    method: str
    params: int
    weight_bytes: int
    batch_size: int
    input_tokens: int
    output_tokens: int
    backend: str
    dtype: str
    device: str
    oom: bool = False
    oom_skipped: bool = False
    latency_s: float | None = None
    latency_iqr_s: float | None = None
    latency_min_s: float | None = None
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    itl_p50_s: float | None = None
    itl_p90_s: float | None = None
    itl_max_s: float | None = None
    peak_mem_bytes: int | None = None
    # generate calls per timed round (pruned_perf.bench.measure.calls_per_round); every *_rounds_s time
    # is per call: the round's mean
    calls_per_round: int = 1
    rounds_s: list = field(default_factory=list)
    ttft_rounds_s: list = field(default_factory=list)
    tpot_rounds_s: list = field(default_factory=list)
    warmup_s: list = field(default_factory=list)
    probe_s: float | None = None
    probe_rounds_s: list = field(default_factory=list)
    # seconds this process's threads waited for a CPU during each round, and the median per second of
    # round (pruned_perf.bench.steadiness.run_queue_wait_s); empty / None where the OS does not say
    runqueue_wait_rounds_s: list = field(default_factory=list)
    runqueue_wait_frac: float | None = None
    # CPU seconds that went to anything but this process during each round (other processes, and the
    # hypervisor's other guests: steal), and the median per second of round, in cores
    # (pruned_perf.bench.steadiness.others_cpu_s); empty / None where the OS does not say
    others_cpu_rounds_s: list = field(default_factory=list)
    others_cpu_frac: float | None = None
    # filled in over a whole run (pruned_perf.analysis.results.add_speedups): the dense point is another point
    speedup_vs_dense: float | None = None
    speedup_rounds: list = field(default_factory=list)
    dense_probe_s: float | None = None
    decode_bw_frac: float | None = None
    device_copy_bytes_per_s: float | None = None
    layers: list = field(default_factory=list)
    # one per variant, the same for all its points (pruned_perf.pruning.variants.variant_fields): held-out
    # perplexity of the timed model (null without a tokenizer), the dtype its plan was scored in (null
    # for dense), and whether FLAP chose its per-layer widths on random weights
    ppl: float | None = None
    ppl_source: str | None = None
    ppl_tokens: int | None = None
    plan_dtype: str | None = None
    structure_from_random_weights: bool = False

    @property
    def point(self) -> Point:
        return Point(self.model, self.method, self.input_tokens, self.output_tokens, self.batch_size, self.backend)

    @property
    def id(self) -> str:
        return self.point.id

    def to_dict(self) -> dict:
        return {"schema": SCHEMA_VERSION, "id": self.id, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Measurement":
        if data.get("schema") != SCHEMA_VERSION:
            raise UserError(f"measurement schema {data.get('schema')!r} is not supported; valid choices: {SCHEMA_VERSION}")
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise UserError(f"measurement {data.get('id')!r} lacks fields: {', '.join(missing)}")
        measurement = cls(**{name: data[name] for name in names if name in data})
        if "id" in data and data["id"] != measurement.id:
            raise UserError(f"measurement id {data['id']!r} does not match its fields ({measurement.id!r})")
        return measurement


def timing_fields(point: Point, rounds_s: list, traces: list, calls: int = 1) -> dict:
    """The summary fields of a measured point, from each round's wall time per call and the token
    timestamps of the same calls (`calls` traces per round, in order). Every call's first token comes
    before its end, and timestamps only grow, so `ttft_s <= latency_s` and `tpot_s >= 0` hold by
    construction, for a round's mean over its calls too."""
    latency_s = statistics.median(rounds_s)
    rounds = [traces[i:i + calls] for i in range(0, len(traces), calls)]
    ttft_rounds_s = [statistics.fmean(trace[0] for trace in calls_of) for calls_of in rounds]
    # after the first token there are out-1 decode steps; with one token there is no decode to time
    decode = point.output_tokens > 1
    tpot_rounds_s = [statistics.fmean((trace[-1] - trace[0]) / (len(trace) - 1) for trace in calls_of)
                     for calls_of in rounds] if decode else []
    itl_s = sorted(b - a for trace in traces for a, b in zip(trace, trace[1:]))
    return {
        "latency_s": latency_s,
        "latency_iqr_s": _iqr(rounds_s),
        "latency_min_s": min(rounds_s),
        "tokens_per_s": point.batch_size * point.output_tokens / latency_s,
        "ttft_s": statistics.median(ttft_rounds_s),
        "tpot_s": statistics.median(tpot_rounds_s) if decode else None,
        "itl_p50_s": _quantile(itl_s, 0.5),
        "itl_p90_s": _quantile(itl_s, 0.9),
        "itl_max_s": itl_s[-1] if itl_s else None,
        "ttft_rounds_s": ttft_rounds_s,
        "tpot_rounds_s": tpot_rounds_s,
    }


def _quantile(sorted_values: list, q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _iqr(values: list) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1
