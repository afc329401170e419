"""Synthetic interleaved A/B runs: pairs of rounds on a simulated drifting machine, and whole A/B results
files (ab.json, docs/ab-verdicts.md) built from them, for tests of the verdicts, report, compare and plot.

The machine: its speed is a random walk in log space (`STEP` per round) times per-round lognormal
noise (`NOISE`); each round of a pair sees the machine at its own time, and pairs run in counterbalanced
order (base first, head first, ...). Latency, TTFT and TPOT share the machine, each with noise of its own.
"""
from __future__ import annotations

import math
import random

from pruned_perf.analysis import paired
from pruned_perf.analysis.paired import ABSettings, Pair, SideRound
from pruned_perf.core.schema import Measurement

try:
    from tests.synthetic_results import make_point, make_results
except ImportError:
    from synthetic_results import make_point, make_results

NOISE = 0.07  # per-round lognormal noise: single pairs spread by ~10%, as on the real 2-core CPU
STEP = 0.03  # the machine's random walk per round


def machine_pairs(rng: random.Random, n: int, ratio: float = 1.0, noise: float = NOISE, step: float = STEP,
                  position_bias: float = 0.0, order: str = "alternate", load: tuple = (0.0, 0.0),
                  scale: float = 1.0, ttft_noise: float | None = None, ttft_ratio: float | None = None) -> list:
    """n pairs on the drifting machine; the head is `ratio` times slower; the round second in its pair
    is exp(position_bias) slower; `load`: each round's (run-queue wait, others' CPU); `scale`: the
    latency of a base round on the machine at its start. TTFT has noise and a ratio of its own where
    given (a short prefill on a CPU is far noisier than a whole call)."""
    noises = (noise, noise if ttft_noise is None else ttft_noise, noise)
    ratios = (ratio, ratio if ttft_ratio is None else ttft_ratio, ratio)
    w = rng.gauss(0, 0.3)  # where the machine's speed starts
    pairs = []
    for i in range(n):
        first = "base" if order == "fixed" or i % 2 == 0 else "head"
        rounds = {}
        for position, side in enumerate((first, "head" if first == "base" else "base")):
            w += rng.gauss(0, step)
            slow = w + position * position_bias
            latency, ttft, tpot = (
                math.exp(slow + (math.log(r) if side == "head" else 0.0) + rng.gauss(0, sd)) * scale * share
                for share, sd, r in zip((1.0, 0.1, 0.05), noises, ratios))
            rounds[side] = SideRound(latency, ttft, tpot, *load)
        pairs.append(Pair(first, rounds["base"], rounds["head"]))
    return pairs


def run_point(rng, settings: ABSettings, family: int, base: Measurement | None = None,
              head: Measurement | None = None, **machine) -> paired.PointAB:
    """One point as the A/B driver runs it: a look every pairs_per_look pairs until settled or the cap."""
    pairs = machine_pairs(rng, settings.max_pairs, **machine)
    for n in paired.look_sizes(settings):
        ab = paired.judge(pairs[:n], base, head, settings, family, final=n >= settings.max_pairs)
        if paired.settled(ab, settings):
            return ab
    raise AssertionError("the last look is final, so it always settles")


def worker(role: str, **changes) -> dict:
    """A worker's description as the A/B driver records it."""
    described = {"role": role, "spec": "HEAD~1" if role == "base" else "working tree",
                 "sha": ("1" if role == "base" else "2") * 40, "dirty": role == "head",
                 "pruned_perf": f"/cache/{role}/pruned_perf", "python": "3.12.3", "torch": "2.13.0",
                 "transformers": "5.1.0", "threads": 2}
    return {**described, **changes}


def make_ab_results(points: list[dict], settings: ABSettings | None = None, seed: int = 0,
                    base_worker: dict | None = None, head_worker: dict | None = None) -> dict:
    """An ab.json. Each entry of `points`: method, batch_size, ratio (head / base latency), and
    optionally load=(run-queue wait, others' CPU), head_oom, base_oom, device, head_peak_mem."""
    settings = settings or ABSettings()
    rng = random.Random(seed)
    benchmarks, records = [], []
    for spec in points:
        shape = dict(model="smollm2-135m", method=spec["method"], batch_size=spec["batch_size"],
                     input_tokens=16, output_tokens=16)
        base = make_point(**shape, rng=rng, oom=spec.get("base_oom", False), params=1000, peak_mem_bytes=10_000)
        latency = None if spec.get("base_oom") else base["extra_info"]["latency_s"] * spec["ratio"]
        head = make_point(**shape, rng=rng, oom=spec.get("head_oom", False), latency_s=latency, params=1000,
                          peak_mem_bytes=spec.get("head_peak_mem", 10_000))
        for entry in (base, head):
            entry["extra_info"]["device"] = spec.get("device", "cpu")
        base_m, head_m = (Measurement.from_dict(e["extra_info"]) for e in (base, head))
        if base_m.oom or head_m.oom:
            ab = paired.judge((), base_m, head_m, settings, len(points), final=True)
        else:
            ab = run_point(rng, settings, len(points), base_m, head_m, ratio=spec["ratio"],
                           load=spec.get("load", (0.0, 0.0)), scale=base_m.latency_s)
        benchmarks.append(head)
        records.append({"ab": ab.to_dict(), "ab_base": base["extra_info"]})
    results = make_results(benchmarks, profile="quick", device="cpu", slug="cpu-2core")
    for bench, record in zip(results["benchmarks"], records):  # after make_results, which rewrites extra_info
        bench["extra_info"].update(record)
    results["machine_info"]["pruned_perf"]["ab"] = {"base": base_worker or worker("base"),
                                                    "head": head_worker or worker("head"),
                                                    "settings": settings.to_dict()}
    return results
