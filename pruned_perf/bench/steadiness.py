"""The steadiness probe: a short fixed workload timed before every timed round of a point and after the
last (untimed: pytest-benchmark's `setup` hook).

Its time says how fast the machine was while the point ran. Between two runs of the same code, a
point that got slower while the probe got slower by a like amount tells of a busier machine, not of
a slower code path, and the comparison says `noisy` instead of `regressed` (pruned_perf.analysis.compare).

The probe runs on the point's device with as many threads as the process may use cores, whatever the
timed code was configured with (OMP_NUM_THREADS, torch.set_num_threads): the thread count is part
of the code path under test, while the probe measures the machine. A run with half the threads is a
genuinely slower code path on a steady machine and must still be caught.
"""
from __future__ import annotations

import contextlib
import time

import torch

from pruned_perf.bench.fingerprint import cpu_cores

# About 15-30 ms on a 2-core CPU: long enough to average over scheduler ticks, short enough that six
# samples per point cost little next to a point's warm-up and rounds.
PROBE_STEPS = 200
PROBE_ROWS, PROBE_WIDTH = 64, 384


def probe(device, samples: int = 3) -> list[float]:
    """Wall seconds of `samples` runs of the fixed workload on `device`."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(PROBE_ROWS, PROBE_WIDTH, generator=generator).to(device)
    w = (torch.randn(PROBE_WIDTH, PROBE_WIDTH, generator=generator) / PROBE_WIDTH**0.5).to(device)
    with _machine_threads(device):
        _run(x, w, device)  # first call: allocation and kernel selection are not the machine's speed
        return [_run(x, w, device) for _ in range(samples)]


def _run(x: torch.Tensor, w: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    start_s = time.perf_counter()
    for _ in range(PROBE_STEPS):
        x = torch.tanh(x @ w)
    _sync(device)
    return time.perf_counter() - start_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _machine_threads(device: torch.device):
    """On the CPU, the probe uses every core the process may run on; the setting is restored after."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(cpu_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)
