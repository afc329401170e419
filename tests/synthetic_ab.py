"""Synthetic interleaved A/B runs: pairs of rounds on a simulated machine with the threats a real one
has, the A/B driver's loop over them, and whole A/B results files built from them, for the tests of the
verdicts, report, compare and plot.

The machine (`Machine`): its speed is a random walk in log space (`step` per round); each round adds
noise of its own per metric (latency, TTFT, TPOT: a short prefill is noisier than a whole call). The
threats: a process bias (the head's worker slower for the whole run on identical code), a position
effect (the round second in its pair slower), heavy-tailed outliers (a round the OS interrupted), and
outside load tied to one side (its rounds contended, and slower).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pruned_perf.analysis import paired
from pruned_perf.analysis.ab import ABSettings, PointAB
from pruned_perf.analysis.ab_schedule import run_pairs
from pruned_perf.core.ab_schema import BASE, HEAD, Pair, SideRound
from pruned_perf.core.schema import Measurement

try:
    from tests.synthetic_results import make_point, make_results
except ImportError:
    from synthetic_results import make_point, make_results

# The real 2-core CPU's pairs of identical code (docs/verdict-trials.md, fifth and sixth rounds): the
# per-pair log-ratio spread by 0.006-0.023 for latency and 0.019-0.057 for TTFT; the review of the A/B
# simulated 0.04-0.05. Per round, with a walk of STEP between the rounds of a pair: pair SD =
# sqrt(2 noise^2 + STEP^2).
STEP = 0.01
REAL_NOISE = (0.015, 0.03, 0.015)  # latency, TTFT, TPOT per round: pairs spread by ~0.023, ~0.044, ~0.023
WIDE_NOISE = (0.03, 0.04, 0.03)  # pairs spread by ~0.044, ~0.058, ~0.044


@dataclass(frozen=True)
class Machine:
    ratio: float = 1.0  # the head's true slowdown of every timing metric (TTFT: ttft_ratio where given)
    ttft_ratio: float | None = None
    noise: tuple = REAL_NOISE  # per-round lognormal SD of latency, TTFT, TPOT
    step: float = STEP  # the machine's random walk per round
    bias: float = 0.0  # process bias: the head's worker exp(bias) slower, identical code or not
    position: float = 0.0  # the round second in its pair exp(position) slower
    outliers: float = 0.0  # share of rounds an outlier hits
    outlier_scale: float = 0.3  # an outlier slows its round by exp(|N(0, outlier_scale)|)
    load_side: str | None = None  # outside load on this side's rounds only
    load_share: float = 0.0  # in this share of them
    load_slow: float = 0.5  # slowing such a round by exp(load_slow)
    scale: float = 1.0  # a base round's latency on the machine at its start
    order: str = "alternate"  # or "fixed": base always first

    def round(self, rng: random.Random, side: str, position: int, walk: float) -> SideRound:
        slow = walk + position * self.position + (self.bias if side == HEAD else 0.0)
        if rng.random() < self.outliers:
            slow += abs(rng.gauss(0, self.outlier_scale))
        loaded = side == self.load_side and rng.random() < self.load_share
        slow += self.load_slow if loaded else 0.0
        ratios = (self.ratio, self.ratio if self.ttft_ratio is None else self.ttft_ratio, self.ratio)
        latency, ttft, tpot = (math.exp(slow + (math.log(r) if side == HEAD else 0.0) + rng.gauss(0, sd))
                               * self.scale * share for share, sd, r in zip((1.0, 0.1, 0.05), self.noise, ratios))
        return SideRound(latency_s=latency, ttft_s=ttft, tpot_s=tpot, runqueue_wait_frac=0.0,
                         others_cpu_frac=1.0 if loaded else 0.0, peer_cpu_frac=0.0)


class Run:
    """One point's rounds on the machine, drawn a pair at a time (the walk goes on between pairs)."""

    def __init__(self, rng: random.Random, machine: Machine):
        self.rng, self.machine = rng, machine
        self.walk = rng.gauss(0, 0.3)  # where the machine's speed starts

    def pair(self, first: str) -> Pair:
        rounds = {}
        for position, side in enumerate((first, HEAD if first == BASE else BASE)):
            self.walk += self.rng.gauss(0, self.machine.step)
            rounds[side] = self.machine.round(self.rng, side, position, self.walk)
        return Pair(first, rounds[BASE], rounds[HEAD])


def machine_pairs(rng: random.Random, n: int, machine: Machine = Machine()) -> list:
    """n pairs in the driver's order (alternating from base first; base always first if order=fixed)."""
    run = Run(rng, machine)
    return [run.pair(BASE if machine.order == "fixed" or i % 2 == 0 else HEAD) for i in range(n)]


def run_point(rng: random.Random, settings: ABSettings, family: int, machine: Machine = Machine(),
              base: Measurement | None = None, head: Measurement | None = None, device: str = "cpu") -> PointAB:
    """One point as the A/B driver runs it (pruned_perf.analysis.ab_schedule, the driver's own loop): the
    first pair's order at random (base always first if the machine's order is fixed), then judged once
    more with no more pairs to come."""
    run, pairs = Run(rng, machine), []
    first = rng.choice((BASE, HEAD)) if machine.order == "alternate" else BASE
    next_pair = run.pair if machine.order == "alternate" else (lambda _first: run.pair(BASE))
    end = run_pairs(pairs, next_pair, first, settings, family, device)
    return paired.judge(pairs, base, head, settings=settings, family=family, final=True, device=device,
                        busy=end.busy)


def worker(role: str, **changes) -> dict:
    """A worker's description as the A/B driver records it."""
    described = {"role": role, "spec": "HEAD~1" if role == BASE else "working tree",
                 "sha": ("1" if role == BASE else "2") * 40, "dirty": role == HEAD,
                 "pruned_perf": f"/cache/{role}/pruned_perf", "python": "3.12.3", "torch": "2.13.0",
                 "transformers": "5.1.0", "threads": 2}
    return {**described, **changes}


def make_ab_results(points: list[dict], settings: ABSettings | None = None, seed: int = 0,
                    base_worker: dict | None = None, head_worker: dict | None = None) -> dict:
    """An ab.json. Each entry of `points`: method, batch_size, ratio (head / base latency), and
    optionally load_share (outside load on the head's rounds), head_oom, base_oom, device, head_peak_mem,
    failed (a reason: the point got no measurement)."""
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
        device = spec.get("device", "cpu")
        for entry in (base, head):
            entry["extra_info"]["device"] = device
        base_m, head_m = (Measurement.from_dict(e["extra_info"]) for e in (base, head))
        pid = head_m.id
        if spec.get("failed"):
            ab = PointAB(pairs=tuple(machine_pairs(rng, 4)), status="failed", reason=spec["failed"],
                         family=len(points))
            records.append({"id": pid, "ab": ab.to_dict(), "base": None})
            continue
        if base_m.oom or head_m.oom:
            ab = paired.judge((), base_m, head_m, settings=settings, family=len(points), final=True, device=device)
        else:
            machine = Machine(ratio=spec["ratio"], scale=base_m.latency_s, load_side=HEAD,
                              load_share=spec.get("load_share", 0.0))
            ab = run_point(rng, settings, len(points), machine, base_m, head_m, device=device)
        benchmarks.append(head)
        records.append({"id": pid, "ab": ab.to_dict(), "base": base["extra_info"]})
    results = make_results(benchmarks, profile="quick", device="cpu", slug="cpu-2core")
    results["pruned_perf_ab"] = {"sides": {BASE: base_worker or worker(BASE), HEAD: head_worker or worker(HEAD)},
                                 "settings": settings.to_dict(), "points": records}
    return results
