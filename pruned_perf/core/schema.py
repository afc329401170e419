"""What a measured run is, torch-free: the point (`Point`), its measurement (`Measurement`, exactly
the `extra_info` fields of docs/results-schema.md), the run's meta (`RunMeta`: `machine_info.pruned_perf`,
with its `Fingerprint` and each method's `MethodStyle`), the schema version, and the summary fields a
point's timed rounds give. The measuring side (bench/) builds these; the analysis side reads them back.

Each record's fields say what a value must be (`checked`: a `Check` in the field's metadata), and
`from_dict` enforces it: a bad file is one error naming the record, the field and the bad value.
"""
from __future__ import annotations

import dataclasses
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Callable

from pruned_perf.core.errors import UserError, choice_error

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
            NAME.require(name, getattr(self, name))
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
SUPPORTED_SCHEMAS = (SCHEMA_VERSION,)
# How the KV cache is kept: grown per step (eager, transformers' dynamic cache) or preallocated (static).
BACKENDS = ("eager", "static")
# Slugs and profiles become path components under baselines/: keep them to one safe name each.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_number(value) -> bool:
    """A real, finite number (bool is an int subclass, but True is no latency)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- field checks


@dataclass(frozen=True)
class Check:
    """What a field's value must be: `ok` says whether it is, `what` says it in words for the error."""

    ok: Callable[[object], bool]
    what: str

    def require(self, name: str, value) -> None:
        if not self.ok(value):
            raise UserError(f"{name} must be {self.what}, got {value!r}")

    def or_null(self) -> "Check":
        return Check(lambda v: v is None or self.ok(v), f"{self.what} or null")


def _int(value) -> bool:
    # bool is an int subclass; True as a batch size is a bug, not a 1
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(ok: Callable[[object], bool], non_empty: bool = False) -> Callable[[object], bool]:
    return lambda v: isinstance(v, list) and (bool(v) or not non_empty) and all(ok(x) for x in v)


def _positive(value) -> bool:
    return is_number(value) and value > 0


def _non_negative(value) -> bool:
    return is_number(value) and value >= 0


NAME = Check(lambda v: isinstance(v, str) and bool(v), "a non-empty string")
SAFE_NAME = Check(lambda v: isinstance(v, str) and bool(_SAFE_NAME.match(v)),
                  "a file-safe name (letters, digits, . _ -)")
TEXT = Check(lambda v: isinstance(v, str), "a string")
FLAG = Check(lambda v: isinstance(v, bool), "true or false")
POSITIVE_INT = Check(lambda v: _int(v) and v >= 1, "a positive integer")
COUNT = Check(lambda v: _int(v) and v >= 0, "an integer >= 0")
POSITIVE = Check(_positive, "a finite positive number")
NON_NEGATIVE = Check(_non_negative, "a finite non-negative number")
SECONDS = Check(_non_negative, "a finite number of seconds >= 0")
ROUNDS = Check(_numbers(_positive), "a list of finite positive seconds")
MEASURED_ROUNDS = Check(_numbers(_positive, non_empty=True), "a non-empty list of finite positive seconds")
SAMPLES = Check(_numbers(_non_negative), "a list of finite non-negative numbers")
LIST = Check(lambda v: isinstance(v, list), "a list")
OBJECT = Check(lambda v: isinstance(v, dict), "an object")
STRINGS = Check(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings")


def checked(check: Check, *, measured: Check | None = None, record: type | None = None,
            records: type | None = None, items: type | None = None, **kwargs):
    """A dataclass field whose value `from_dict` checks: `check` always, `measured` instead on a point that
    did not run out of memory; `record` is a nested record, `records` an object of them by name, `items` a
    list of them (a tuple once read), each built with its own from_dict."""
    return field(metadata={"check": check, "measured": measured, "record": record, "records": records,
                           "items": items}, **kwargs)


def fields_from_dict(cls, data, where: str, measured: bool = True) -> dict:
    """The fields of record class `cls` found in `data`, each checked by its metadata (see `checked`),
    nested records built; one UserError naming `where`, the field and the bad value otherwise. Keys of
    `data` that are not fields are left out."""
    if not isinstance(data, dict):
        raise UserError(f"{where} must be an object, got {data!r}")
    fields = dataclasses.fields(cls)
    missing = [f.name for f in fields
               if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where} lacks fields: {', '.join(missing)}")
    values = {}
    for f in (f for f in fields if f.name in data):
        value = data[f.name]
        check = (measured and f.metadata.get("measured")) or f.metadata["check"]
        check.require(f"{where}: {f.name}", value)
        if f.metadata.get("record") is not None and value is not None:
            value = f.metadata["record"].from_dict(value, f"{where}.{f.name}")
        elif f.metadata.get("records") is not None:
            value = {name: f.metadata["records"].from_dict(item, f"{where}.{f.name}.{name}")
                     for name, item in value.items()}
        elif f.metadata.get("items") is not None:
            value = tuple(f.metadata["items"].from_dict(item, f"{where}.{f.name}[{i}]") for i, item in enumerate(value))
        values[f.name] = value
    return values


def check_fields(record, where: str) -> None:
    """Every plain field of a record built in code (not read) checked as `from_dict` would check it: a
    record's __post_init__ calls this, so that a bad value fails where it is made."""
    for f in dataclasses.fields(record):
        check = f.metadata.get("check")
        if check is not None and not any(f.metadata.get(k) for k in ("record", "records", "items")):
            check.require(f"{where}: {f.name}", getattr(record, f.name))


def check_positive_int(what: str, value) -> None:
    POSITIVE_INT.require(what, value)


def check_seconds(what: str, value) -> None:
    """A duration setting: a finite number of seconds, 0 or more."""
    SECONDS.require(what, value)


# ---------------------------------------------------------------- one measured point


_OPTIONAL_POSITIVE = POSITIVE.or_null()
_OPTIONAL_NON_NEGATIVE = NON_NEGATIVE.or_null()


def _summary(**kwargs):
    """A summary time of a measured point: required and positive; null on a point that ran out of memory."""
    return checked(_OPTIONAL_POSITIVE, measured=POSITIVE, default=None, **kwargs)


def _optional(check: Check = _OPTIONAL_NON_NEGATIVE):
    """A value that may be null (not measured, or not known on this device)."""
    return checked(check, default=None)


def _rounds(check: Check = SAMPLES, measured: Check | None = None):
    return checked(check, measured=measured, default_factory=list)


@dataclass
class Measurement:
    """Exactly the `extra_info` fields of docs/results-schema.md (schema and id are added by to_dict).

    An OOM point has null timings and empty round lists.
    """
    model: str = checked(NAME)
    method: str = checked(NAME)
    params: int = checked(COUNT)
    weight_bytes: int = checked(COUNT)
    batch_size: int = checked(POSITIVE_INT)
    input_tokens: int = checked(POSITIVE_INT)
    output_tokens: int = checked(POSITIVE_INT)
    backend: str = checked(Check(lambda v: v in BACKENDS, f"one of {', '.join(BACKENDS)}"))
    dtype: str = checked(NAME)
    device: str = checked(NAME)
    oom: bool = checked(FLAG, default=False)
    oom_skipped: bool = checked(FLAG, default=False)
    latency_s: float | None = _summary()
    latency_iqr_s: float | None = _optional()
    latency_min_s: float | None = _summary()
    tokens_per_s: float | None = _summary()
    ttft_s: float | None = _optional()
    tpot_s: float | None = _optional()
    itl_p50_s: float | None = _optional()
    itl_p90_s: float | None = _optional()
    itl_max_s: float | None = _optional()
    peak_mem_bytes: int | None = _optional()
    # generate calls per timed round (pruned_perf.bench.rounds.calls_per_round); every *_rounds_s time
    # is per call: the round's mean (TTFT: its median call's, at most the round's time per call)
    calls_per_round: int = checked(POSITIVE_INT, default=1)
    rounds_s: list = _rounds(ROUNDS, measured=MEASURED_ROUNDS)
    ttft_rounds_s: list = _rounds()
    tpot_rounds_s: list = _rounds()
    warmup_s: list = _rounds()
    probe_s: float | None = _optional()
    probe_rounds_s: list = _rounds()
    # seconds this process's threads waited for a CPU during each round, and the median per second of
    # round (pruned_perf.bench.steadiness.run_queue_wait_s); empty / None where the OS does not say
    runqueue_wait_rounds_s: list = _rounds()
    runqueue_wait_frac: float | None = _optional()
    # CPU seconds that went to anything but this process during each round (other processes, and the
    # hypervisor's other guests: steal), and the median per second of round, in cores
    # (pruned_perf.bench.steadiness.others_cpu_s); empty / None where the OS does not say
    others_cpu_rounds_s: list = _rounds()
    others_cpu_frac: float | None = _optional()
    # in an A/B, CPU seconds that the other side's worker and the driver used during each round (what the
    # other side spilled into this one; others_cpu leaves them out), and the median per second of round
    peer_cpu_rounds_s: list = _rounds()
    peer_cpu_frac: float | None = _optional()
    # filled in over a whole run (pruned_perf.analysis.speedups.add_speedups): the dense point is another point
    speedup_vs_dense: float | None = _optional()
    speedup_rounds: list = _rounds()
    dense_probe_s: float | None = _optional()
    decode_bw_frac: float | None = _optional()
    device_copy_bytes_per_s: float | None = _optional()
    layers: list = checked(LIST, default_factory=list)
    # one per variant, the same for all its points (pruned_perf.pruning.variants.variant_fields): held-out
    # perplexity of the timed model (null without a tokenizer), the dtype its plan was scored in (null
    # for dense), and whether FLAP chose its per-layer widths on random weights
    ppl: float | None = _optional()
    ppl_source: str | None = _optional(TEXT.or_null())
    ppl_tokens: int | None = _optional(COUNT.or_null())
    plan_dtype: str | None = _optional(TEXT.or_null())
    structure_from_random_weights: bool = checked(FLAG, default=False)

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
        """A point from its extra_info, every field checked; one that ran out of memory may lack timings."""
        if not isinstance(data, dict):
            raise UserError(f"a measurement must be an object, got {data!r}")
        where = f"measurement {data.get('id')!r}"
        if data.get("schema") != SCHEMA_VERSION:
            raise UserError(f"{where}: schema {data.get('schema')!r} is not supported; valid choices: {SCHEMA_VERSION}")
        measurement = cls(**fields_from_dict(cls, data, where, measured=data.get("oom") is not True))
        if "id" in data and data["id"] != measurement.id:
            raise UserError(f"measurement id {data['id']!r} does not match its fields ({measurement.id!r})")
        return measurement


# ---------------------------------------------------------------- the run: machine_info.pruned_perf


class Record:
    """A dataclass read from JSON: `from_dict` checks every field by its metadata (see `checked`) and
    builds the nested records, naming `where` in any error; `to_dict` is its JSON object."""

    @classmethod
    def from_dict(cls, data, where: str = ""):
        return cls(**fields_from_dict(cls, data, where or cls.__name__))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MethodStyle(Record):
    """How a method is drawn in every figure: a matplotlib colour and marker (its module's STYLE)."""

    color: str = checked(NAME)
    marker: str = checked(NAME)


@dataclass(frozen=True, kw_only=True)
class Fingerprint(Record):
    """Which hardware and software measured a run (pruned_perf.bench.fingerprint). `slug` names the
    hardware alone, file-safe: the directory of its baselines; the rest may be unknown (null)."""

    device: str | None = _optional(TEXT.or_null())
    name: str | None = _optional(TEXT.or_null())
    memory_bytes: int | None = _optional(COUNT.or_null())
    driver: str | None = _optional(TEXT.or_null())
    cuda: str | None = _optional(TEXT.or_null())
    torch: str | None = _optional(TEXT.or_null())
    transformers: str | None = _optional(TEXT.or_null())
    threads: int | None = _optional(COUNT.or_null())  # torch's intra-op threads when the run measured
    slug: str = checked(SAFE_NAME)

    def to_dict(self) -> dict:
        """As the file holds it: `threads` only where it is known (files written before it was recorded
        read back unchanged)."""
        d = dataclasses.asdict(self)
        if d["threads"] is None:
            del d["threads"]
        return d


@dataclass(frozen=True)
class SessionOutcome(Record):
    """How the run's session ended: the node ids of the tests that failed or errored, and whether Ctrl-C
    ended it (its results are then what ran before)."""

    failed: list = checked(STRINGS, default_factory=list)
    interrupted: bool = checked(FLAG, default=False)

    def to_dict(self) -> dict:
        """As the file holds it: `interrupted` only where it is true."""
        return {"failed": list(self.failed), **({"interrupted": True} if self.interrupted else {})}


@dataclass(frozen=True, kw_only=True)
class RunMeta(Record):
    """`machine_info.pruned_perf` of a results file (docs/results-schema.md): the schema, profile and run
    id, who measured (`fingerprint`), how each method is shown (in the registry's order: the order of
    tables and legends) and, once the session has ended, its outcome (`session`; None in a point log's
    header, which is written before the end)."""

    schema: int = checked(Check(lambda v: _int(v) and v in SUPPORTED_SCHEMAS,
                                f"a supported schema ({', '.join(map(str, SUPPORTED_SCHEMAS))})"))
    profile: str = checked(SAFE_NAME)
    fingerprint: Fingerprint = checked(OBJECT, record=Fingerprint)
    run_id: str | None = _optional(TEXT.or_null())
    methods: dict[str, MethodStyle] = checked(
        Check(lambda v: isinstance(v, dict), "an object mapping each method to its style (color, marker)"),
        records=MethodStyle, default_factory=dict)
    session: SessionOutcome | None = checked(OBJECT.or_null(), record=SessionOutcome, default=None)

    @property
    def failed(self) -> list[str]:
        return list(self.session.failed) if self.session is not None else []

    @property
    def interrupted(self) -> bool:
        return self.session is not None and self.session.interrupted

    @classmethod
    def from_dict(cls, data, where: str = "machine_info.pruned_perf") -> "RunMeta":
        return super().from_dict(data, where)

    def to_dict(self) -> dict:
        """As the file holds it: a run id and a session outcome only where known."""
        data = {**super().to_dict(), "fingerprint": self.fingerprint.to_dict(),
                "session": self.session.to_dict() if self.session is not None else None}
        return {k: v for k, v in data.items() if not (k in ("run_id", "session") and v is None)}


def timing_fields(point: Point, rounds_s: list, traces: list, calls: int = 1) -> dict:
    """The summary fields of a measured point, from each round's wall time per call and the token
    timestamps of the same calls (`calls` traces per round, in order). Every call's first token comes
    before its end, and timestamps only grow, so `tpot_s >= 0` holds by construction; `ttft_s <=
    latency_s` too, a round's TTFT being capped at its time per call."""
    latency_s = statistics.median(rounds_s)
    rounds = [traces[i:i + calls] for i in range(0, len(traces), calls)]
    # A round's TTFT is its median call's, not the mean: a prefill is a short span, and the one of a
    # call that the OS interrupted, or of the round's first call, can take several times the rest.
    # Capped at the round's time per call: calls of unequal length could otherwise invert the two.
    ttft_rounds_s = [min(statistics.median(trace[0] for trace in calls_of), round_s)
                     for calls_of, round_s in zip(rounds, rounds_s)]
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
