"""Memory bandwidth for the decode step: the measured device-to-device copy bandwidth, the bytes one
decode step must read, and the achieved fraction of that bound (docs/protocol.md, "The physical limit").
"""
from __future__ import annotations

import time

import torch

from pruned_perf.bench.calls import free_memory, is_oom, synchronize
from pruned_perf.core.schema import Point

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
