"""Print the simulation figures of docs/ab-verdicts.md ("The simulations"): the A/B driver's own loop on
the simulated machine of tests/synthetic_ab.py, seeded, so a run prints the same figures again.

    python scripts/ab_simulations.py [aa] [power] [eq] [pairs]     (all four by default: about 70 s)

aa: 24-point A/A suites, with and without threats and the bias floor; power: points with a real
slowdown; eq: latency at a true 1.05x, how often `unchanged`; pairs: pairs spent on identical code.
"""
from __future__ import annotations

import collections
import math
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pruned_perf.analysis import paired  # noqa: E402
from pruned_perf.analysis.ab import ABSettings  # noqa: E402
from pruned_perf.core.ab_schema import HEAD  # noqa: E402
from synthetic_ab import REAL_NOISE, WIDE_NOISE, Machine, machine_pairs, run_point  # noqa: E402

SUITE = 24  # the quick profile's points: the family whose error the suite-wide level controls
BIAS = math.log1p(0.03)
THREATS = dict(bias=BIAS, position=0.05, outliers=0.05)
TIGHT_NOISE = (0.008, 0.02, 0.008)
NO_FLOOR = replace(ABSettings(), bias_floor=0.0)


def aa_suites(machine: Machine, n: int, settings: ABSettings = ABSettings()) -> str:
    """n suites of identical code: how many have a `regressed` point, pairs a point, the statuses' shares."""
    with_alarm, pairs, statuses = 0, [], collections.Counter()
    for seed in range(n):
        rng = random.Random(seed)
        points = [run_point(rng, settings, SUITE, machine) for _ in range(SUITE)]
        with_alarm += any(p.status == paired.REGRESSED for p in points)
        pairs += [len(p.pairs) for p in points]
        statuses.update(p.status for p in points)
    shares = ", ".join(f"{k} {v / (n * SUITE):.1%}" for k, v in statuses.most_common())
    return f"{with_alarm} of {n} suites with a regressed point; {statistics.fmean(pairs):.1f} pairs a point; {shares}"


def points(machine: Machine, n: int, seed: int) -> str:
    """n points of one suite: statuses, and the pairs it took to say `regressed`."""
    rng = random.Random(seed)
    out = [run_point(rng, ABSettings(), SUITE, machine) for _ in range(n)]
    statuses = collections.Counter(p.status for p in out)
    caught = [len(p.pairs) for p in out if p.status == paired.REGRESSED]
    parts = [f"{dict(statuses)} of {n}", f"{statistics.fmean(len(p.pairs) for p in out):.1f} pairs a point"]
    if caught:
        parts.append(f"pairs when regressed: median {statistics.median(caught):g}, mean {statistics.fmean(caught):.1f}")
    return "; ".join(parts)


def latency_unchanged(machine: Machine, n: int, seed: int) -> str:
    """Latency alone, judged at every look as the driver does: how often it ends `unchanged`."""
    settings = ABSettings()
    tail = paired.decide_tail(settings, SUITE)
    rng = random.Random(seed)
    said = 0
    for _ in range(n):
        pairs = machine_pairs(rng, settings.max_pairs, machine)
        for k in paired.look_sizes(settings, SUITE):
            d, second = paired.log_ratios(pairs[:k], "latency_s")
            eq_tail = paired.equivalence_tail(settings, SUITE, k)
            verdict = paired.timing_verdict("latency_s", d, second, settings, tail, eq_tail).verdict
            if verdict in (paired.UNCHANGED, paired.REGRESSED):
                said += verdict == paired.UNCHANGED
                break
    return f"unchanged in {said} of {n} ({said / n:.1%})"


def main(parts: list[str]) -> None:
    start = time.monotonic()

    def say(what: str, result: str) -> None:
        print(f"[{time.monotonic() - start:5.0f} s] {what}: {result}", flush=True)

    noises = (("real", REAL_NOISE), ("wide", WIDE_NOISE))
    if "aa" in parts:
        say("A/A, real noise, no threat", aa_suites(Machine(), 100))
        say("A/A, real noise, threats", aa_suites(Machine(**THREATS), 200))
        say("A/A, wide noise, threats", aa_suites(Machine(noise=WIDE_NOISE, **THREATS), 100))
        say("A/A, real noise, outside load on 15% of the new side's rounds",
            aa_suites(Machine(load_side=HEAD, load_share=0.15, load_slow=0.5), 100))
        say("A/A, real noise, threats, no bias floor", aa_suites(Machine(**THREATS), 30, NO_FLOOR))
        say("A/A, wide noise, threats, no bias floor", aa_suites(Machine(noise=WIDE_NOISE, **THREATS), 30, NO_FLOOR))
    if "power" in parts:
        for name, noise in noises:
            say(f"1.10x, {name} noise, position", points(Machine(ratio=1.10, noise=noise, position=0.05), 400, 10))
            say(f"1.10x, {name} noise, threats", points(Machine(ratio=1.10, noise=noise, **THREATS), 400, 11))
            say(f"1.10x, {name} noise, threats with the bias at -3%",
                points(Machine(ratio=1.10, noise=noise, **{**THREATS, "bias": -BIAS}), 400, 12))
        for name, threats in (("bias +3% and position", dict(bias=BIAS, position=0.05)),
                              ("bias -3% and position", dict(bias=-BIAS, position=0.05)),
                              ("outliers and position", dict(outliers=0.05, position=0.05))):
            say(f"1.10x, real noise, {name}", points(Machine(ratio=1.10, **threats), 400, 21))
        say("1.20x, real noise, threats", points(Machine(ratio=1.20, **THREATS), 200, 37))
        say("1.35x, real noise, position", points(Machine(ratio=1.35, position=0.05), 200, 35))
        say("1.35x, real noise, threats", points(Machine(ratio=1.35, **THREATS), 200, 36))
    if "eq" in parts:
        for name, noise in (("real", REAL_NOISE), ("tight", TIGHT_NOISE), ("wide", WIDE_NOISE)):
            say(f"latency at 1.05x, {name} noise, position",
                latency_unchanged(Machine(ratio=1.05, noise=noise, position=0.05), 3000, 105))
    if "pairs" in parts:
        for name, noise in (("real", REAL_NOISE), ("tight", TIGHT_NOISE), ("wide", WIDE_NOISE)):
            say(f"A/A point, {name} noise", points(Machine(noise=noise), 400, 3))


if __name__ == "__main__":
    main(sys.argv[1:] or ["aa", "power", "eq", "pairs"])
