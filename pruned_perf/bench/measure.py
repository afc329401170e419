"""One benchmark point, measured as the measurement protocol says: warm-up at the exact shape, timed
rounds of one or more calls with a timestamp at every new token (TTFT and inter-token times come from
the timed calls themselves), the steadiness probe before each round and after the last, peak memory,
OOM as a result. Knows nothing of pytest: the plugin passes `timed_rounds`.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time
from typing import Callable

import torch
from transformers.generation.streamers import BaseStreamer

from pruned_perf.bench import steadiness
from pruned_perf.pruning.calibration import deterministic_ids
from pruned_perf.pruning.sizing import layer_shapes
from pruned_perf.core.schema import Measurement, Point, check_positive_int, check_seconds, timing_fields

# timed_rounds(fn, rounds, warmup=0, setup=None, calls=1) -> for each of `rounds` rounds of `calls` calls of
# fn, its wall seconds per call; `setup`, if given, runs untimed before each round
TimedRounds = Callable[..., list]

_OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)


class GenerationLengthError(RuntimeError):
    """generate returned fewer (or more) tokens than the point asks for."""


def make_inputs(point: Point, vocab_size: int, device, seed: int = 0) -> dict:
    """M prompts of exactly `input_tokens` ids, the same for every run with the same seed."""
    shape = (point.batch_size, point.input_tokens)
    input_ids = deterministic_ids(shape, vocab_size, seed).to(device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def generate_kwargs(model, point: Point, new_tokens: int) -> dict:
    """Greedy, exactly `new_tokens` new tokens: min = max so EOS cannot end a sequence early."""
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "pad_token_id": _pad_token_id(model),
        "return_dict_in_generate": False,
        # explicit even for eager: a model's generation_config may preset another cache
        "cache_implementation": "static" if point.backend == "static" else "dynamic",
    }


def _pad_token_id(model) -> int:
    # without a pad id generate warns on every call and picks one itself
    config = model.generation_config
    for candidate in (config.pad_token_id, getattr(model.config, "pad_token_id", None), config.eos_token_id):
        if isinstance(candidate, (list, tuple)):
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return int(candidate)
    return 0


class TokenClock(BaseStreamer):
    """Timestamps every new token as `generate` hands it to the streamer.

    generate copies each step's tokens to the host before `put` (`tokens.cpu()`), so on CUDA the
    timestamp is taken after the step's kernels finished; the loop synchronizes there every step
    anyway to decide whether to stop, so the clock adds only a copy of M token ids per step.
    The first `put` is the prompt, not a new token.
    """

    def __init__(self, start_s: float):
        self.start_s = start_s
        self.token_s: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        now_s = time.perf_counter()
        if self._prompt_seen:
            self.token_s.append(now_s - self.start_s)
        self._prompt_seen = True

    def end(self) -> None:
        pass


def full_call(model, point: Point, inputs: dict, new_tokens: int, traces: list | None = None) -> Callable[[], None]:
    """One synchronized generate call at the point's shape: what the timed rounds time.

    Each call appends to `traces` the times of its new tokens, in seconds from the call's start.
    """
    kwargs = generate_kwargs(model, point, new_tokens)
    expected = (point.batch_size, point.input_tokens + new_tokens)
    device = inputs["input_ids"].device

    def call() -> None:
        synchronize(device)
        clock = TokenClock(time.perf_counter())
        output = model.generate(**inputs, **kwargs, streamer=clock)
        synchronize(device)
        check_length(output, expected, point)
        if len(clock.token_s) != new_tokens:
            raise GenerationLengthError(f"{point.id}: the token clock saw {len(clock.token_s)} new tokens, "
                                        f"expected {new_tokens}")
        if traces is not None:
            traces.append(clock.token_s)

    return call


def check_length(output, expected: tuple, point: Point) -> None:
    sequences = getattr(output, "sequences", output)
    if tuple(sequences.shape) != expected:
        raise GenerationLengthError(
            f"generate returned shape {tuple(sequences.shape)} for {point.id}, expected {expected} "
            "(batch, input + new tokens): a short generation would be a wrong, flattering result")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_timed_rounds(fn: Callable[[], None], rounds: int, warmup: int = 0,
                       setup: Callable[[], None] | None = None, calls: int = 1) -> list:
    """The default `timed_rounds`: a plain loop, one perf_counter reading per round."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        if setup is not None:
            setup()
        times.append(time_once(repeated(fn, calls)) / calls)
    return times


def repeated(fn: Callable[[], None], calls: int) -> Callable[[], None]:
    """One round: `calls` calls of fn in a row."""
    def round_of_calls() -> None:
        for _ in range(calls):
            fn()
    return round_of_calls


def time_once(fn: Callable[[], None]) -> float:
    """Wall seconds of one call of `fn` (which synchronizes the device itself, as full_call does)."""
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


def calls_per_round(call: Callable[[], None], last_warmup_s: float, min_round_s: float) -> int:
    """How many calls make a round last at least `min_round_s` (pyperf's loops, timeit's autorange).

    A round of one short call samples the machine for a moment, so its time swings with whatever else
    ran in that instant; a round of several calls averages over them and narrows the spread of a short
    point's rounds (docs/verdict-trials.md, "Fifth trials: long rounds"). A warm-up call at least
    `min_round_s` long means a round of one call and costs nothing more: a long point (every LLaMA-7B
    point on a GPU) pays no extra call. A shorter one is no guide to the steady time (the first call at
    a shape is slower), so one more call sizes the round. A short point whose first call compiles for
    `min_round_s` or longer (the static backend) keeps rounds of one call.
    """
    if last_warmup_s >= min_round_s:
        return 1
    once_s = time_once(call)
    return max(1, math.ceil(min_round_s / max(once_s, 1e-9)))


def is_oom(exc: BaseException | None) -> bool:
    # torch.compile wraps an OOM during compilation or graph capture in its own error: follow the chain
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _is_oom_itself(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _is_oom_itself(exc: BaseException) -> bool:
    if isinstance(exc, _OOM_ERRORS):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def free_memory(device: torch.device) -> None:
    # reference cycles (frames <-> tracebacks) can keep a failed call's tensors alive until collected
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def forget_static_cache_length(model) -> None:
    # transformers reuses the largest static cache it has seen on this model, which would make a shorter
    # point attend over (and pay for) a longer cache than its own. Within one point the length stays, so
    # the one-token TTFT calls run with the same cache as the full call's prefill and do not recompile.
    if hasattr(model, "_previous_max_cache_length"):
        del model._previous_max_cache_length


# --- memory bandwidth -----------------------------------------------------------------------------

_COPY_BYTES_PER_S: dict = {}


def device_copy_bytes_per_s(device) -> float | None:
    """Measured device-to-device copy bandwidth (bytes read + written per second), once per process.

    None when not even a small buffer fits.
    """
    device = _indexed(torch.device(device))
    key = str(device)
    if key not in _COPY_BYTES_PER_S:
        _COPY_BYTES_PER_S[key] = _measure_copy_bandwidth(device)
    return _COPY_BYTES_PER_S[key]


def _indexed(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _measure_copy_bandwidth(device: torch.device) -> float | None:
    # large enough to defeat caches; smaller on CPU, where a copy of 256 MiB already takes ~50 ms
    nbytes = 1 << 30 if device.type == "cuda" else 256 << 20
    copies = 10 if device.type == "cuda" else 1
    while nbytes >= 16 << 20:
        try:
            return _copy_bandwidth(device, nbytes, copies)
        except Exception as exc:  # noqa: BLE001 - only OOM is retried
            if not is_oom(exc):
                raise
        free_memory(device)
        nbytes //= 4
    return None


def _copy_bandwidth(device: torch.device, nbytes: int, copies: int, samples: int = 5) -> float:
    # ones, not empty: untouched host pages all map the zero page and read faster than memory
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch of dst pages is not bandwidth
    best_s = float("inf")
    for _ in range(samples):
        synchronize(device)
        start_s = time.perf_counter()
        for _ in range(copies):
            dst.copy_(src)
        synchronize(device)
        best_s = min(best_s, time.perf_counter() - start_s)
    del src, dst
    free_memory(device)
    # the fastest sample is what the hardware can do; slower ones measured interference
    return 2 * nbytes * copies / best_s


def decode_step_bytes(point: Point, weight_bytes: int, layers: list, head_dim: int, kv_elem_bytes: int) -> float:
    """Bytes one decode step must read: every weight once, plus the KV cache at the mean context.

    kv = sum over layers of 2 (K and V) * kv_heads * head_dim * context * batch_size * kv_elem_bytes,
    context = input_tokens + output_tokens / 2 (the mean over the decode steps).
    Counting the whole embedding table slightly overstates the bytes (a step reads M of its rows).
    """
    context = point.input_tokens + point.output_tokens / 2
    per_kv_head = 2 * head_dim * context * point.batch_size * kv_elem_bytes
    return weight_bytes + sum(layer["kv_heads"] * per_kv_head for layer in layers)


def decode_bw_frac(tpot_s: float | None, step_bytes: float, copy_bytes_per_s: float | None) -> float | None:
    """decode_bw_frac = (decode_step_bytes / tpot_s) / device_copy_bytes_per_s: 1.0 is the copy limit."""
    if tpot_s is None or tpot_s <= 0 or not copy_bytes_per_s:
        return None
    return step_bytes / tpot_s / copy_bytes_per_s


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


# --- the point ------------------------------------------------------------------------------------

def _model_fields(model, point: Point, layers: list | None, copy_bytes_per_s: float | None) -> dict:
    params = list(model.parameters())  # shared (tied) parameters appear once
    first = params[0]
    return {
        "model": point.model,
        "method": point.method,
        "params": sum(p.numel() for p in params),
        "weight_bytes": sum(p.numel() * p.element_size() for p in params),
        "batch_size": point.batch_size,
        "input_tokens": point.input_tokens,
        "output_tokens": point.output_tokens,
        "backend": point.backend,
        "dtype": str(first.dtype).removeprefix("torch."),
        "device": first.device.type,
        "device_copy_bytes_per_s": copy_bytes_per_s,
        "layers": [dict(layer) for layer in (layers if layers is not None else layer_shapes(model))],
    }


def _check_counts(rounds: int, warmup: int) -> None:
    check_positive_int("rounds", rounds)
    # the first call at a shape is ~3x slower (and compiles for static): at least one full warm-up
    check_positive_int("warmup", warmup)


def _run_point(model, point: Point, rounds: int, warmup: int, min_round_s: float,
               timed_rounds: TimedRounds) -> dict:
    state = PointRounds(model, point)
    calls = state.warm_up(warmup, min_round_s)
    rounds_s = [float(s) for s in timed_rounds(state.call, rounds, warmup=0, setup=state.before_round, calls=calls)]
    if len(rounds_s) != rounds or len(state.traces) != rounds * calls:
        raise RuntimeError(f"timed_rounds ran {len(state.traces)} calls and returned {len(rounds_s)} rounds for "
                           f"{point.id}, expected {rounds} rounds of {calls} call(s)")
    state.rounds_s = rounds_s
    return state.fields()


class PointRounds:
    """One point's warm-up and timed rounds, kept between rounds: `measure` hands its rounds to a
    `timed_rounds` loop (pytest-benchmark's), an A/B worker (pruned_perf.bench.ab_worker) runs one
    round per request, between the other side's rounds."""

    def __init__(self, model, point: Point):
        self.point = point
        self.device = model_device(model)
        self.traces: list = []  # the token times of every timed call, in order
        self.model = model
        self.inputs = make_inputs(point, model.config.vocab_size, self.device)
        self.call = full_call(model, point, self.inputs, point.output_tokens, self.traces)
        self.warmup_s: list = []
        self.calls = 1
        self.rounds_s: list = []  # per call: the round's mean
        self.probe_s: list = []
        self.counters = round_counters()

    def warm_up(self, warmup: int, min_round_s: float) -> int:
        """The warm-up calls at the exact shape; returns the calls per round (calls_per_round)."""
        self.warmup_s = [time_once(self.call) for _ in range(warmup)]
        self.calls = calls_per_round(self.call, self.warmup_s[-1], min_round_s)
        del self.traces[:]  # the warm-up and sizing calls are not timed rounds
        return self.calls

    def before_round(self, probe: bool = True) -> None:
        """Untimed, right before each round: how fast the machine is (the probe), one forward of the
        prompt (warm_prompt), and the counters."""
        self.after_round()  # a loop that only calls this hook closes the previous round here
        if probe:
            self.probe()
        self.warm_prompt()
        for counter in self.counters:
            counter.round_starts()

    def probe(self) -> None:
        """One sample of the steadiness probe: how fast the machine is now."""
        self.probe_s.extend(steadiness.probe(self.device, samples=1))

    def warm_prompt(self) -> None:
        """One untimed forward of the prompt, so that a round's first call does not start cold.

        Whatever ran since the last call (the probe; in an A/B, the other side's round) left the
        threads asleep and the caches holding other data; the first call's prefill paid for waking them,
        by a varying amount, and a round of one call has no other. A forward of the prompt costs a
        prefill, keeps no KV cache and, like generate's prefill, takes the logits of the last position
        only, so it cannot raise the point's peak memory."""
        with torch.no_grad():
            self.model(**self.inputs, use_cache=False, logits_to_keep=1)
        synchronize(self.device)

    def after_round(self) -> None:
        for counter in self.counters:
            counter.round_ended()

    def timed_round(self, probe: bool = True) -> float:
        """One round of `calls` calls, its counters closed at once (the other side runs next); its
        seconds per call. probe=False: no probe before it (an A/B probes before its first pair and after
        its last: the pairs cancel the machine's drift themselves, and on a loaded 2-core CPU one probe
        can take longer than many rounds of a tiny model)."""
        self.before_round(probe)
        seconds = time_once(repeated(self.call, self.calls)) / self.calls
        self.after_round()
        self.rounds_s.append(seconds)
        return seconds

    def round_summary(self, i: int) -> dict:
        """Round i alone: seconds per call, its median call's TTFT, its calls' mean TPOT, and the
        counters per second of the round (None where the OS does not say)."""
        i = range(len(self.rounds_s))[i]  # -1: the last
        calls, seconds = self.calls, self.rounds_s[i]
        timing = timing_fields(self.point, [seconds], self.traces[i * calls:(i + 1) * calls], calls)
        fracs = {counter.field: (counter.rounds_s[i] / (seconds * calls)
                                 if len(counter.rounds_s) == len(self.rounds_s) else None)
                 for counter in self.counters}
        return {"latency_s": seconds, "ttft_s": timing["ttft_s"], "tpot_s": timing["tpot_s"],
                "runqueue_wait_frac": fracs["runqueue_wait"], "others_cpu_frac": fracs["others_cpu"]}

    def fields(self) -> dict:
        """The Measurement fields of the rounds so far (at least one); probes once more, after the last."""
        self.after_round()
        self.probe()
        calls, rounds_s = self.calls, self.rounds_s
        # the counters' fractions are per second of round: a round lasted rounds_s * calls
        counted = {k: v for counter in self.counters for k, v in counter.fields([r * calls for r in rounds_s]).items()}
        return {"warmup_s": self.warmup_s, "calls_per_round": calls, "rounds_s": list(rounds_s),
                "probe_rounds_s": self.probe_s, "probe_s": statistics.median(self.probe_s), **counted,
                **timing_fields(self.point, rounds_s, self.traces, calls)}


class RoundCounter:
    """A cumulative machine counter (seconds, pruned_perf.bench.steadiness) read right before and after
    each timed round, in the untimed hooks around it, so it costs the timing nothing."""

    def __init__(self, read, field: str):
        self.read, self.field = read, field
        self.rounds_s: list = []
        self._start_s: float | None = None

    def round_starts(self) -> None:
        self._start_s = self.read()

    def round_ended(self) -> None:
        if self._start_s is None:  # before the first round, or off Linux
            return
        now_s = self.read()
        if now_s is not None:
            self.rounds_s.append(max(now_s - self._start_s, 0.0))
        self._start_s = None

    def fields(self, rounds_s: list) -> dict:
        """Per round the counter's seconds; their median per second of the round (None off Linux)."""
        if len(self.rounds_s) != len(rounds_s):
            return {f"{self.field}_rounds_s": [], f"{self.field}_frac": None}
        return {f"{self.field}_rounds_s": self.rounds_s,
                f"{self.field}_frac": statistics.median(c / r for c, r in zip(self.rounds_s, rounds_s))}


def round_counters() -> list[RoundCounter]:
    """How long this process's threads waited for a CPU, and how much CPU went to anything else."""
    return [RoundCounter(steadiness.run_queue_wait_s, "runqueue_wait"),
            RoundCounter(steadiness.others_cpu_s, "others_cpu")]


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def measure(model, point: Point, *, rounds: int = 5, warmup: int = 1, min_round_s: float = 0.0,
            timed_rounds: TimedRounds | None = None, layers: list | None = None) -> Measurement:
    """Measure one point on the model's device; running out of memory is returned, not raised.

    Each round is as many calls as make it last at least `min_round_s` (0: one call per round); the
    perf suite's default is pruned_perf.bench.sweep.DEFAULT_MIN_ROUND_S.
    """
    _check_counts(rounds, warmup)
    check_seconds("min_round_s", min_round_s)
    base = begin_point(model, point, layers)
    oom = False
    try:
        runs = _run_point(model, point, rounds, warmup, min_round_s, timed_rounds or plain_timed_rounds)
    except Exception as exc:  # noqa: BLE001 - anything but OOM is re-raised
        if not is_oom(exc):
            raise
        oom = True
    # outside the except block, so the traceback and the tensors its frames hold are already gone
    if oom:
        return oom_measurement(model, base)
    return point_measurement(model, point, base, runs)


def begin_point(model, point: Point, layers: list | None = None) -> dict:
    """Before a point's first call: its model-level Measurement fields, and the peak counter reset."""
    device = model_device(model)
    # before the peak counter is reset: the copy buffers are not the point's memory
    copy_bytes_per_s = device_copy_bytes_per_s(device)
    base = _model_fields(model, point, layers, copy_bytes_per_s)
    forget_static_cache_length(model)
    free_memory(device)
    _reset_peak(device)
    return base


def oom_measurement(model, base: dict) -> Measurement:
    """The point ran out of memory: that is its result. Call it outside the `except` block."""
    forget_static_cache_length(model)
    free_memory(model_device(model))
    return Measurement(**base, oom=True)


def point_measurement(model, point: Point, base: dict, runs: dict) -> Measurement:
    """The Measurement of a point from begin_point's fields and its rounds' (PointRounds.fields)."""
    device = model_device(model)
    first = next(model.parameters())
    step_bytes = decode_step_bytes(point, base["weight_bytes"], base["layers"], head_dim_of(model.config),
                                   first.element_size())
    return Measurement(
        **base, **runs,
        peak_mem_bytes=_peak_bytes(device),
        decode_bw_frac=decode_bw_frac(runs["tpot_s"], step_bytes, base["device_copy_bytes_per_s"]),
    )


class OomGuard:
    """Remembers, per series, the smallest batch size that ran out of memory; larger ones are skipped."""

    def __init__(self):
        self._smallest_oom: dict = {}

    def skip(self, point: Point) -> Measurement | None:
        known = self._smallest_oom.get(point.series)
        if known is None or point.batch_size <= known.batch_size:
            return None
        # the model-level fields (params, layers, ...) are the same along a series
        return dataclasses.replace(known, batch_size=point.batch_size, oom=True, oom_skipped=True,
                                   layers=[dict(layer) for layer in known.layers])

    def record(self, point: Point, measurement: Measurement) -> None:
        if not measurement.oom:
            return
        known = self._smallest_oom.get(point.series)
        if known is None or point.batch_size < known.batch_size:
            self._smallest_oom[point.series] = measurement
