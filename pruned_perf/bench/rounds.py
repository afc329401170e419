"""A point's timed rounds: the warm-up at the exact shape, rounds of one or more calls sized to last at
least `min_round_s`, the untimed steps before each round (the steadiness probe, a forward of the prompt)
and the machine counters read around it. A perf run hands them to a `timed_rounds` loop
(pytest-benchmark's); an A/B worker (pruned_perf.bench.ab_worker) runs one round per request.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

from pruned_perf.bench import steadiness
from pruned_perf.bench.calls import full_call, make_inputs, model_device, synchronize
from pruned_perf.core.ab_schema import SideRound
from pruned_perf.core.schema import Point, timing_fields

# timed_rounds(fn, rounds, warmup=0, setup=None, calls=1) -> for each of `rounds` rounds of `calls` calls of
# fn, its wall seconds per call; `setup`, if given, runs untimed before each round
TimedRounds = Callable[..., list]


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


class PointRounds:
    """One point's warm-up and timed rounds, kept between rounds: `measure` hands its rounds to a
    `timed_rounds` loop (pytest-benchmark's), an A/B worker (pruned_perf.bench.ab_worker) runs one
    round per request, between the other side's rounds."""

    def __init__(self, model, point: Point, peers: tuple = ()):
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
        self.counters = round_counters(peers)  # peers: an A/B worker's (round_counters)

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

    def round_summary(self, i: int) -> SideRound:
        """Round i alone, as an A/B pairs it: seconds per call, its median call's TTFT, its calls' mean
        TPOT, and the counters per second of the round (None where the OS does not say)."""
        i = range(len(self.rounds_s))[i]  # -1: the last
        calls, seconds = self.calls, self.rounds_s[i]
        timing = timing_fields(self.point, [seconds], self.traces[i * calls:(i + 1) * calls], calls)
        fracs = {counter.field: (counter.rounds_s[i] / (seconds * calls)
                                 if len(counter.rounds_s) == len(self.rounds_s) else None)
                 for counter in self.counters}
        return SideRound(latency_s=seconds, ttft_s=timing["ttft_s"], tpot_s=timing["tpot_s"],
                         runqueue_wait_frac=fracs["runqueue_wait"], others_cpu_frac=fracs["others_cpu"],
                         peer_cpu_frac=fracs.get("peer_cpu"))

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


def round_counters(peers: tuple = ()) -> list[RoundCounter]:
    """How long this process's threads waited for a CPU, and how much CPU went to anything but this
    process and its `peers`; with peers (an A/B worker's: the other side's worker and the driver), how
    much CPU they used."""
    counters = [RoundCounter(steadiness.run_queue_wait_s, "runqueue_wait"),
                RoundCounter(lambda: steadiness.others_cpu_s(peers), "others_cpu")]
    if peers:
        counters.append(RoundCounter(lambda: steadiness.processes_cpu_s(peers), "peer_cpu"))
    return counters
