"""The sequential schedule of one point's pairs, torch-free: in which order the sides run, when the verdict
is looked at, and when the point stops. The A/B's driver (pruned_perf.bench.ab) runs it with its workers;
the simulations (tests/synthetic_ab.py) with a simulated machine: both run this one loop.

- The first pair's order is the caller's (drawn at random); after that the order alternates over the clean
  pairs, so that a pair that work outside the A/B contended is run again in the same order and the clean
  pairs stay balanced.
- After a contended pair: the point is busy once the contended ones are too many (paired.busy_reason), or
  when the machine does not come back to quiet (`wait_quiet`); else the pair is run again.
- At each planned look of clean pairs (paired.look_sizes) the verdict is judged; the point stops once it is
  settled (paired.settled): the error control counts exactly these looks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pruned_perf.analysis.ab import ABSettings, contended
from pruned_perf.analysis.paired import busy_reason, judge, look_sizes, settled
from pruned_perf.core.ab_schema import Pair, other_side


@dataclass(frozen=True)
class ScheduleEnd:
    """Why the pairs stopped: settled (both None and False), a busy machine, or a side out of memory."""

    busy: str | None = None
    out_of_memory: bool = False


def run_pairs(pairs: list, next_pair: Callable[[str], Pair | None], first: str, settings: ABSettings, family: int,
              device: str, wait_quiet: Callable[[], str | None] = lambda: None) -> ScheduleEnd:
    """Append pairs to `pairs` until the point settles. `next_pair(first_side)` times one pair (None: a
    side ran out of memory); `wait_quiet()` waits for a quiet machine and says why it is busy, if it is."""
    looks, clean = look_sizes(settings, family), sum(not contended(p, settings.others_tolerance) for p in pairs)
    on_cpu = device == "cpu"
    while True:
        pair = next_pair(first if clean % 2 == 0 else other_side(first))
        if pair is None:
            return ScheduleEnd(out_of_memory=True)
        pairs.append(pair)
        if on_cpu and contended(pair, settings.others_tolerance):
            busy = busy_reason(pairs, settings, on_cpu) or wait_quiet()
            if busy:
                return ScheduleEnd(busy=busy)
            continue
        clean += 1
        if clean in looks:
            ab = judge(pairs, settings=settings, family=family, final=clean >= settings.max_pairs, device=device)
            if settled(ab, settings):
                return ScheduleEnd()
