"""One benchmark point, measured as the measurement protocol says: its model-level fields, the peak
memory counter reset, warm-up and timed rounds (pruned_perf.bench.rounds), peak memory, and running out
of memory as a result. Knows nothing of pytest: the plugin passes `timed_rounds`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, TypeVar

import torch

from pruned_perf.bench.bandwidth import decode_bw_frac, decode_step_bytes, device_copy_bytes_per_s, head_dim_of
from pruned_perf.bench.calls import forget_static_cache_length, free_memory, is_oom, model_device
from pruned_perf.bench.rounds import PointRounds, TimedRounds, plain_timed_rounds
from pruned_perf.core.schema import Measurement, Point, check_positive_int, check_seconds
from pruned_perf.pruning.sizing import layer_shapes

T = TypeVar("T")


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
    base = begin_point(model, point, layers)
    return point_result(model, point, base, run_rounds(model, point, rounds=rounds, warmup=warmup,
                                                      min_round_s=min_round_s, timed_rounds=timed_rounds))


def run_rounds(model, point: Point, *, rounds: int, warmup: int, min_round_s: float,
               timed_rounds: TimedRounds | None = None) -> dict | None:
    """The warm-up and timed rounds of a point (after begin_point): their Measurement fields, or None when
    the point ran out of memory."""
    _check_counts(rounds, warmup)
    check_seconds("min_round_s", min_round_s)
    return unless_oom(lambda: _run_point(model, point, rounds, warmup, min_round_s,
                                         timed_rounds or plain_timed_rounds))


def unless_oom(step: Callable[[], T]) -> T | None:
    """step()'s value, or None when it ran out of memory: the point's result, not a failure. Anything else
    is raised. It returns outside the `except` block, so the frames holding the failed call's tensors are
    already gone."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - anything but OOM is re-raised
        if not is_oom(exc):
            raise
    return None


def point_result(model, point: Point, base: dict, runs: dict | None) -> Measurement:
    """The point's Measurement from begin_point's fields and its rounds' (None: it ran out of memory)."""
    return oom_measurement(model, base) if runs is None else point_measurement(model, point, base, runs)


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
