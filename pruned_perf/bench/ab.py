"""The interleaved A/B of a perf run (`pytest perf/ --pp-ab BASE`): two worker processes, one per side
(pruned_perf.bench.ab_worktree says where each runs, pruned_perf.bench.ab_process speaks to them), timed
in pairs of adjacent rounds. Knows nothing of pytest (pruned_perf.bench.ab_plugin is the glue).

Each side plans, builds and measures with its own code. Both read one plan cache: a variant the cache
lacks is planned by a worker of its own before the timing starts, so neither timing worker did work the
other only loaded. Both workers run in directories of the same length, in environments of the same size.

Per point: on a CPU, a wait for a quiet machine (nothing outside the A/B using more than the tolerance);
both sides start (build and warm up) in random order; the same calls per round on both (the larger of
the two sizings); then pairs of rounds, the first pair's order drawn at random and alternating after
that, judged at each planned look (pruned_perf.analysis.paired) until settled. A pair that work outside
the A/B contended is left out and run again in the same order, after another wait for quiet. Every pair
is appended to the point log as it is measured.

Faults: running out of memory is the point's result. A worker that dies or hangs (no answer to a round
within max(timeout floor, 10 x its warm-up round), to any other step within 60 x the floor), or a side that
errs, fails the point: it is kept, `failed`, with the pairs it had, and a dead worker is restarted for the
next point. Ctrl-C keeps the point it interrupted the same way. `close` ends both workers and removes
the worktree, also after Ctrl-C and errors.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pruned_perf.analysis.ab import ABPoint, ABRecord, ABSettings, PointAB
from pruned_perf.analysis.ab_schedule import run_pairs
from pruned_perf.analysis.paired import judge
from pruned_perf.analysis.verdicts import FAILED, INCONCLUSIVE
from pruned_perf.bench import steadiness
from pruned_perf.bench.ab_process import HELLO_TIMEOUT_S, WorkerFailed, WorkerProcess, side_environments
from pruned_perf.bench.ab_worktree import ABError, Side, head_side, remove_worktree, resolve_base
from pruned_perf.bench.options import ABOptions, SweepOptions
from pruned_perf.core.ab_schema import BASE, HEAD, SIDES, Pair, SideDescription, SideRound, other_side
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import Measurement, Point

# A round may take this many times the side's warm-up round before the worker counts as hung.
HANG_FACTOR = 10.0
DEFAULT_TIMEOUT_FLOOR_S = 30.0
# Steps with no warm-up to scale from (a point's start: build, prune, warm up; its finish; rounds of a
# side whose other side ran out of memory) may take this many times the floor: 30 min by default.
SLOW_STEP_FACTOR = 60.0
DEFAULT_QUIET_S = 10.0
QUIET_WINDOW_S = 0.3  # one sample of the outside load: 30 clock ticks of each core


class ABPointError(RuntimeError):
    """A side could not measure a point (an error other than running out of memory)."""


@dataclass
class ABResult:
    """One point's A/B in this session: its verdict, and each side's Measurement (None where that side
    measured nothing: the point failed, or the machine was busy before it started)."""

    point: Point
    ab: PointAB
    head: Measurement | None = None
    base: Measurement | None = None

    @property
    def record(self) -> ABPoint:
        return ABPoint(id=self.point.id, ab=self.ab, base=self.base)


class ABRun:
    """Both workers of one A/B session, and the point schedule."""

    def __init__(self, options: ABOptions, sweep: SweepOptions, cache_dir: str | Path, device: str,
                 settings_for: Callable[[str | None], ABSettings], family: int, log, solo_rounds: int = 5):
        self.options, self.sweep_options = options, sweep.with_absolute_models()
        self.cache_dir = Path(cache_dir).resolve()
        self.on_cpu = device == "cpu"
        self.settings_for, self.family, self.log, self.solo_rounds = settings_for, family, log, solo_rounds
        self.timeout_floor_s = DEFAULT_TIMEOUT_FLOOR_S if options.timeout_s is None else options.timeout_s
        self.quiet_s = DEFAULT_QUIET_S if options.quiet_s is None else options.quiet_s
        self.sides: dict[str, Side] = {}
        self.workers: dict[str, WorkerProcess | None] = {}
        self.described: dict[str, SideDescription] = {}
        self.base_points: set[str] = set()
        self.results: list[ABResult] = []
        self._log_dir = Path(tempfile.mkdtemp(prefix="pp-ab-"))
        self._random = random.Random()
        self._pairs: list[Pair] = []  # the current point's, kept for a point that fails midway

    # ---- starting ----

    def start(self) -> None:
        """Resolve the base, plan what the cache lacks, start both workers; any failure is one ABError
        (the caller closes)."""
        head = head_side()
        self.sides = {BASE: resolve_base(self.options.base, head.tree, self.cache_dir), HEAD: head}
        self._envs = side_environments(self.sides)
        try:
            self._start_workers()
            self._plan()
        except WorkerFailed as exc:
            hint = (" (a revision from before the A/B: it has no worker)"
                    if "No module named pruned_perf.bench.ab_worker" in str(exc) else "")
            raise ABError(f"--pp-ab {self.options.base}: cannot start the A/B: {_one_line(str(exc))}{hint}") from None

    def _cwd(self, role: str) -> Path:
        # the same length for both sides ("base", "head"): a path is on the stack too
        return self.cache_dir / "ab-cwd" / role

    def _start_workers(self) -> None:
        """Both timing workers, each told the other's pid and the driver's (its peers)."""
        started = {role: WorkerProcess(self.sides[role], self._envs[role], self._cwd(role), self._log_dir)
                   for role in SIDES}
        self.workers.update(started)  # registered at once: close() ends them whatever happens next
        try:
            described = {role: worker.hello() for role, worker in started.items()}
            answers = self._setup(started, peers=[os.getpid()] + [w.pid for w in started.values()])
        except WorkerFailed:
            self._end_workers()  # started afresh before the next point
            raise
        for role in SIDES:
            self.described[role] = SideDescription.from_dict(
                {**described[role], "spec": self.sides[role].spec, "threads": answers[role].get("threads")},
                f"the {role} worker's description")
        self.base_points = set(answers[BASE]["points"])

    def _setup(self, workers: dict, peers: list) -> dict:
        for worker in workers.values():
            worker.send({"op": "setup", "options": self.sweep_options.to_dict(), "cache_dir": str(self.cache_dir),
                         "peers": [pid for pid in peers if pid != worker.pid]})
        answers = {}
        for role, worker in workers.items():
            answers[role] = worker.receive(HELLO_TIMEOUT_S, "set up the sweep")
            if "error" in answers[role]:
                raise WorkerFailed(f"{worker.name} cannot measure this selection: {answers[role]['error']}")
        return answers

    def _end_workers(self) -> None:
        for role, worker in list(self.workers.items()):
            if worker is not None:
                worker.close()
            self.workers[role] = None

    def _plan(self) -> None:
        """A planner worker for each side whose cache lacks a variant, one side after the other (the second
        may find what the first planned, when the plan code is the same); both timing workers then only
        read the cache."""
        for role in SIDES:
            if not self._request(role, {"op": "uncached"}, None, "check its cache")["uncached"]:
                continue
            planner = WorkerProcess(self.sides[role], self._envs[role], self._cwd(role), self._log_dir)
            try:
                planner.hello()
                self._setup({role: planner}, peers=[])
                answer = planner.request({"op": "plan"}, None, "plan its variants")
                if "error" in answer:
                    raise WorkerFailed(f"{planner.name} could not plan: {answer['error']}")
            finally:
                planner.close()

    @property
    def slow_step_s(self) -> float:
        """The time limit of a step with no warm-up to scale from (SLOW_STEP_FACTOR)."""
        return SLOW_STEP_FACTOR * self.timeout_floor_s

    def describe(self) -> dict:
        return {role: self.described[role] for role in SIDES if role in self.described}

    def record(self) -> ABRecord:
        """The A/B so far, as its results file keeps it."""
        return ABRecord(sides=self.describe(), settings=self.settings_for(None),
                        points=tuple(r.record for r in self.results))

    # ---- a point ----

    def measure(self, point: Point, nodeid: str) -> ABResult:
        """The A/B of one point. A point that fails (a worker died, hung or erred; Ctrl-C) is kept with
        the pairs it had, `failed`, and the error is raised again."""
        self._pairs = []
        try:
            result = self._measure(point, nodeid)
        except (WorkerFailed, ABPointError, KeyboardInterrupt) as exc:
            reason = ("interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt)
                      else _one_line(str(exc)))
            self.results.append(ABResult(point, PointAB(pairs=tuple(self._pairs), status=FAILED, reason=reason,
                                                        family=self.family)))
            raise
        self.results.append(result)
        return result

    def _measure(self, point: Point, nodeid: str) -> ABResult:
        if any(self.workers.get(role) is None for role in SIDES):
            self._end_workers()  # both anew: each worker's peers are the other's pid
            self._start_workers()
        if point.id not in self.base_points:
            raise ABPointError(f"the base ({self.options.base}) does not measure {point.id} (a method or model it lacks)")
        settings = self.settings_for(point.id)
        busy = self._wait_quiet(settings, "before the point started")
        if busy:
            ab = PointAB(status=INCONCLUSIVE, reason=busy, family=self.family, busy=busy)
            return ABResult(point, ab)
        order = self._random.sample(SIDES, 2)
        started = {role: self._request(role, {"op": "start", "point": point.id}, self.slow_step_s, "warm up")
                   for role in order}
        device = started[HEAD].get("device", "cpu")
        oom = {role for role in SIDES if started[role].get("oom")}
        busy = None
        if not oom:
            oom, busy = self._pair_rounds(point, nodeid, started, settings, device)
        for role in SIDES:  # the other side ran out of memory first: this side's point still gets rounds
            if role not in oom and not self._pairs:
                self._solo_rounds(role)
        finished = {role: self._request(role, {"op": "finish"}, self.slow_step_s, "finish the point")["measurement"]
                    for role in self._random.sample(SIDES, 2)}
        head, base = Measurement.from_dict(finished[HEAD]), _readable(finished[BASE])
        ab = judge(self._pairs, base, head, settings=settings, family=self.family, final=True, device=device,
                   busy=busy)
        return ABResult(point, ab, head, base)

    def _pair_rounds(self, point: Point, nodeid: str, started: dict, settings: ABSettings,
                     device: str) -> tuple[set, str | None]:
        """Pairs of rounds until the verdict settles (pruned_perf.analysis.ab_schedule): (the side that ran
        out of memory, if one did: the pairs stop there; why the machine was busy, if it was)."""
        timeouts = self._size_rounds(started)

        def next_pair(first: str) -> Pair | None:
            pair = self._pair(first, timeouts)
            if pair is not None:
                self.log.append_pair(pair, point.id, nodeid)
            return pair

        end = run_pairs(self._pairs, next_pair, self._random.choice(SIDES), settings, self.family, device,
                        wait_quiet=lambda: self._wait_quiet(settings, "after a contended pair"))
        return ({self._oom_side} if end.out_of_memory else set()), end.busy

    def _size_rounds(self, started: dict) -> dict:
        """The same calls per round on both sides (the larger sizing); each side's round time limit."""
        calls = max(started[role]["calls"] for role in SIDES)
        timeouts = {}
        for role in SIDES:
            self._request(role, {"op": "size", "calls": calls}, self.slow_step_s, "size its rounds")
            timeouts[role] = max(self.timeout_floor_s, HANG_FACTOR * calls * started[role]["warmup_s"][-1])
        return timeouts

    def _pair(self, first: str, timeouts: dict) -> Pair | None:
        """One pair of rounds, `first` first; None when a side ran out of memory (self._oom_side)."""
        rounds = {}
        for role in (first, other_side(first)):
            answer = self._request(role, {"op": "round"}, timeouts[role], "answer a round")
            if answer.get("oom"):
                self._oom_side = role  # the side that went first has one round more than the pairs: it still counts
                return None
            rounds[role] = SideRound.from_dict(answer["round"], f"the {role} worker's round")
        return Pair(first, rounds[BASE], rounds[HEAD])

    def _wait_quiet(self, settings: ABSettings, when: str) -> str | None:
        """None once nothing outside the A/B uses more than the tolerance (sampled while both workers are
        idle), else, after `quiet_s`, why the machine is busy. On a CPU only."""
        if not self.on_cpu:
            return None
        pids = [os.getpid()] + [w.pid for w in self.workers.values() if w is not None]
        waited, load = 0.0, None
        while True:
            load = steadiness.outside_load(pids, QUIET_WINDOW_S)
            if load is None or load <= settings.others_tolerance:
                return None
            waited += QUIET_WINDOW_S
            if waited >= self.quiet_s:
                return (f"machine busy {when}: work outside the A/B used {load:.2f} cores for {waited:.0f} s "
                        f"(tolerance {settings.others_tolerance:g})")

    def _solo_rounds(self, role: str) -> None:
        for _ in range(self.solo_rounds):
            if self._request(role, {"op": "round"}, self.slow_step_s, "answer a round").get("oom"):
                return

    def _request(self, role: str, message: dict, timeout_s: float | None, what: str) -> dict:
        worker = self.workers[role]
        try:
            answer = worker.request(message, timeout_s, what)
        except WorkerFailed:
            self.workers[role] = None  # restarted before the next point
            raise
        if "error" in answer:
            detail = answer.get("traceback") or answer["error"]
            raise ABPointError(f"the {role} side ({self.sides[role].spec}) failed to {what}: {answer['error']}\n{detail}")
        return answer

    def close(self) -> None:
        """End both workers and remove the base's worktree. Safe to call more than once."""
        self._end_workers()
        base = self.sides.get(BASE)
        if base is not None and base.worktree is not None:
            remove_worktree(base.worktree)
        shutil.rmtree(self._log_dir, ignore_errors=True)


def _readable(record: dict) -> Measurement | None:
    """The base's Measurement where this schema can read it (an older base may write another)."""
    try:
        return Measurement.from_dict(record)
    except (UserError, TypeError):
        return None


def _one_line(text: str) -> str:
    """An error for one line: the message and the last line of a worker's stderr."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else text
    return f"{lines[0]} {lines[-1]}"
