"""The A/B driver's point loop (pruned_perf/bench/ab.py) with scripted workers instead of processes: the
device the workers report decides whether host load counts, a contended pair is run again in its order,
a machine busy before a point leaves it unmeasured within seconds, and a side that fails midway keeps the
point with the pairs it had."""
from __future__ import annotations

import math
import random

import pytest

from pruned_perf.analysis.ab import ABSettings
from pruned_perf.analysis.verdicts import FAILED, INCONCLUSIVE, REGRESSED
from pruned_perf.bench import ab as ab_module
from pruned_perf.bench.ab import ABRun
from pruned_perf.bench.ab_process import WorkerFailed
from pruned_perf.bench.options import ABOptions, SweepOptions
from pruned_perf.core.ab_schema import BASE, HEAD, SIDES, SideRound
from pruned_perf.core.schema import Point

try:
    from tests.synthetic_results import make_point
except ImportError:
    from synthetic_results import make_point

POINT = Point("tiny-llama", "dense", 12, 2, 1)


class ScriptedWorker:
    """Answers the driver's requests as a worker would: its rounds `ratio` times a base round, with outside
    load `load(round number)` and a failure at round `fail_at`."""

    def __init__(self, role: str, device: str, ratio: float, load=lambda i: 0.0, fail_at: int | None = None):
        self.role, self.device, self.ratio, self.load, self.fail_at = role, device, ratio, load, fail_at
        self.rounds, self.rng = 0, random.Random(role)
        self.pid = 0

    def request(self, message: dict, timeout_s, what: str) -> dict:
        op = message["op"]
        if op == "start":
            return {"calls": 1, "warmup_s": [0.1], "device": self.device}
        if op == "size":
            return {"calls": message["calls"]}
        if op == "round":
            self.rounds += 1
            if self.rounds == self.fail_at:
                raise WorkerFailed(f"the {self.role} worker (x) was killed by signal 9 before it could {what}")
            latency = self.ratio * math.exp(self.rng.gauss(0, 0.01))
            return {"round": SideRound(latency_s=latency, ttft_s=latency / 10, tpot_s=latency / 20,
                                       others_cpu_frac=self.load(self.rounds), peer_cpu_frac=0.0).to_dict()}
        if op == "finish":
            extra = make_point(model=POINT.model, method=POINT.method, batch_size=1, input_tokens=12, output_tokens=2,
                               rng=self.rng)["extra_info"]
            return {"measurement": {**extra, "device": self.device}}
        raise AssertionError(op)

    def close(self):
        pass


class Log:
    def __init__(self):
        self.pairs = []

    def append_pair(self, pair, point_id, nodeid):
        self.pairs.append(pair)


def _run(workers: dict, quiet_s: float = 0.0) -> ABRun:
    run = ABRun(ABOptions("HEAD", quiet_s=quiet_s), SweepOptions(), "/tmp/pp-ab-driver-test", "cpu",
                lambda pid: ABSettings(), family=1, log=Log())
    run.workers, run.base_points = workers, {POINT.id}
    run.sides = {role: ab_module.Side(role, role, "python", None) for role in SIDES}
    return run


@pytest.fixture
def quiet_machine(monkeypatch):
    monkeypatch.setattr(ab_module.steadiness, "outside_load", lambda pids, window_s: 0.0)


def test_on_a_gpu_the_loop_judges_with_the_device_and_host_load_never_stops_it(quiet_machine):
    loaded = lambda i: 1.0  # noqa: E731 - every round of the base beside a host hog
    run = _run({BASE: ScriptedWorker(BASE, "cuda", 1.0, loaded), HEAD: ScriptedWorker(HEAD, "cuda", 1.4)})
    result = run.measure(POINT, "node")
    assert result.ab.status == REGRESSED and result.ab.busy is None and result.ab.contended == 0
    assert len(result.ab.pairs) < ABSettings().max_pairs and result.ab.others_cpu_frac == 1.0
    on_cpu = _run({BASE: ScriptedWorker(BASE, "cpu", 1.0, loaded), HEAD: ScriptedWorker(HEAD, "cpu", 1.4)})
    busy = on_cpu.measure(POINT, "node")
    assert busy.ab.status == INCONCLUSIVE and busy.ab.busy.startswith("machine busy in 2 of 2 pairs")


def test_a_contended_pair_is_run_again_in_the_same_order(quiet_machine):
    run = _run({BASE: ScriptedWorker(BASE, "cpu", 1.0, lambda i: 0.9 if i == 3 else 0.0),
                HEAD: ScriptedWorker(HEAD, "cpu", 1.0)})
    result = run.measure(POINT, "node")
    firsts = [p.first for p in result.ab.pairs]
    assert result.ab.contended == 1 and firsts[2] == firsts[3] and firsts[1] != firsts[2]
    clean = result.ab.clean_pairs(ABSettings().others_tolerance)
    assert all(a != b for a, b in zip([p.first for p in clean], [p.first for p in clean][1:]))
    assert run.log.pairs == list(result.ab.pairs)


def test_a_machine_busy_before_a_point_leaves_it_unmeasured_after_the_wait(monkeypatch):
    monkeypatch.setattr(ab_module.steadiness, "outside_load", lambda pids, window_s: 1.0)
    workers = {BASE: ScriptedWorker(BASE, "cpu", 1.0), HEAD: ScriptedWorker(HEAD, "cpu", 1.0)}
    result = _run(workers, quiet_s=0.6).measure(POINT, "node")
    assert result.head is None and result.ab.status == INCONCLUSIVE and not result.ab.pairs
    assert result.ab.reason.startswith("machine busy before the point started: work outside the A/B used 1.00 cores")
    assert workers[BASE].rounds == workers[HEAD].rounds == 0  # no start, no round


def test_a_side_that_fails_midway_keeps_the_point_with_its_pairs(quiet_machine):
    run = _run({BASE: ScriptedWorker(BASE, "cpu", 1.0), HEAD: ScriptedWorker(HEAD, "cpu", 1.0, fail_at=4)})
    with pytest.raises(WorkerFailed):
        run.measure(POINT, "node")
    failed = run.results[-1]
    assert failed.ab.status == FAILED and failed.head is None and len(failed.ab.pairs) == 3
    assert "killed by signal 9" in failed.ab.reason and run.record().points[-1].ab == failed.ab
    assert run.workers[HEAD] is None  # restarted before the next point
