"""One side of an interleaved A/B (pruned_perf.bench.ab): a long-lived process that measures points a
round at a time, on request, with its own side's code.

    python -m pruned_perf.bench.ab_worker --role base|head

The driver starts it with PYTHONPATH at the side's source tree. It speaks JSON lines: one request on
stdin, one answer on stdout. stdout carries nothing else: whatever the libraries print goes to stderr.
The first line is the worker's hello, before any request:

    {"hello": {"protocol": 2, "describe": {"role", "sha", "dirty", "pruned_perf", "python", "torch", ...}}}

Requests, in the order a point needs them (answers: the fields named, or {"error": ..., "traceback": ...}
for a failure that is not running out of memory; the worker goes on):

    {"op": "setup", "options": {...SweepOptions...}, "cache_dir": DIR, "peers": [PID, ...]}
                                       -> {"points": [ids], "threads": N, "uncached": N}
    {"op": "uncached"}                 -> {"uncached": N}   (variants whose plan or perplexity the cache lacks)
    {"op": "plan"}                     -> {"planned": N}    (builds and scores those into the cache)
    {"op": "start", "point": ID}       -> {"calls": N, "warmup_s": [...], "device": "cpu"}, or {"oom": true, ...}
    {"op": "size", "calls": N}         -> {"calls": N}          (the same on both sides: the larger)
    {"op": "round"}                    -> {"round": SideRound}, or {"oom": true}
    {"op": "finish"}                   -> {"measurement": {...}}  (Measurement.to_dict of its rounds)

`peers` are the other side's worker and the driver: their CPU during a round is the A/B's own, counted
apart from load outside it (pruned_perf.bench.rounds.round_counters). End of stdin ends the worker.
PROTOCOL changes whenever a request or answer changes meaning: the driver refuses a worker that speaks
another.

Tests only: PP_AB_TEST_FAULT=ROLE:KIND:N[:POINT][,...] makes the worker of ROLE die (exit 3), be killed
(SIGKILL), hang, or run out of memory (KIND = die | kill | hang | oom) at the N-th timed round (0: at the point's start, before its
build and warm-up) of every point whose id contains POINT (of every point without it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

PROTOCOL = 2


def _protocol_stream():
    """The real stdout, for protocol lines only; fd 1 and sys.stdout become stderr, so that a print or a
    C library's output anywhere cannot corrupt the protocol."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _git(package: str, *args) -> str | None:
    import subprocess

    try:
        done = subprocess.run(["git", "-C", package, *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def dirty(package: str) -> bool | None:
    """Whether the tree differs from its commit in what the code could import: a tracked file changed, or
    a Python file is new. Untracked results and logs (ab.json beside the checkout) are no change."""
    status = _git(package, "status", "--porcelain", "--untracked-files=all", "--", "..")
    if status is None:
        return None
    return any(not line.startswith("??") or line.rstrip().endswith(".py") for line in status.splitlines())


def describe(role: str) -> dict:
    """What this side runs (a SideDescription without its spec, which the driver adds): its source (git
    SHA, whether the tree differs from it), where pruned_perf was imported from, and the versions and
    threads that decide its speed."""
    import platform

    import torch
    import transformers

    import pruned_perf

    package = os.path.dirname(os.path.abspath(pruned_perf.__file__))
    sha = _git(package, "rev-parse", "HEAD")
    return {"role": role, "sha": sha, "dirty": dirty(package) if sha else None, "pruned_perf": package,
            "python": f"{platform.python_version()} ({sys.executable})", "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads()}


class Fault:
    """The test-only faults of PP_AB_TEST_FAULT (module docstring) for this worker's role."""

    def __init__(self, role: str, spec: str | None):
        self.faults = []  # (kind, round of the point, point id substring)
        for item in filter(None, (spec or "").split(",")):
            parts = item.split(":", 3)
            if len(parts) >= 3 and parts[0] == role:
                self.faults.append((parts[1], int(parts[2]), parts[3] if len(parts) == 4 else ""))

    def before_round(self, point_id: str, round_number: int) -> None:
        kind = next((k for k, at, where in self.faults if at == round_number and where in point_id), None)
        if kind is None:
            return
        print(f"ab_worker: injected fault {kind} at round {round_number} of {point_id}", file=sys.stderr, flush=True)
        if kind == "die":
            os._exit(3)
        if kind == "kill":
            import signal
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "hang":
            import time
            time.sleep(3600)
        if kind == "oom":
            import torch
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")


class SideWorker:
    """The requests of one side: the sweep's points, one at a time, a round per request."""

    def __init__(self, role: str):
        self.role = role
        self.sweep = self.steps = self.cache_dir = None
        self.peers: tuple = ()
        self.started = None  # the point being measured (pruned_perf.bench.session.StartedPoint)
        self.rounds = None  # its PointRounds once warmed up
        self.oom = False
        self.fault = Fault(role, os.environ.get("PP_AB_TEST_FAULT"))  # tests only

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            return {"error": f"unknown op {op!r}; valid choices: setup, uncached, plan, start, size, round, finish"}
        return handler(request)

    def op_setup(self, request: dict) -> dict:
        import torch

        from pruned_perf.bench.options import SweepOptions
        from pruned_perf.bench.session import PointSteps, sweep_from_options

        self.sweep = sweep_from_options(SweepOptions.from_dict(request["options"]))
        self.cache_dir = request["cache_dir"]
        self.steps = PointSteps(self.sweep, self.cache_dir)
        self.peers = tuple(request.get("peers") or ())
        # the thread count again, now that the measuring code is imported: code that sets it on import
        # (a change under test may) must show in the description
        return {"points": [p.id for p in self.sweep.points], "threads": torch.get_num_threads(),
                "uncached": len(self._uncached())}

    def _uncached(self) -> list:
        from pruned_perf.pruning.variants import variant_cached

        return [v for v in self.sweep.variants
                if not variant_cached(v, self.sweep.device, self.sweep.dtype, self.cache_dir)]

    def op_uncached(self, request: dict) -> dict:
        return {"uncached": len(self._uncached())}

    def op_plan(self, request: dict) -> dict:
        """Build and score every variant the cache lacks, so that its plan and perplexity are there before
        any timing: then no timing worker is the one that did that work (a planner is a worker of its
        own, ended before the timing starts)."""
        planned = self._uncached()
        for variant in planned:
            self.steps.pool.fields(variant)
        self.steps.pool.release()
        return {"planned": len(planned)}

    def op_start(self, request: dict) -> dict:
        from pruned_perf.bench.measure import unless_oom

        self.started, self.rounds, self.oom = None, None, False
        point = next((p for p in self.sweep.points if p.id == request["point"]), None)
        if point is None:
            return {"error": f"this side does not measure point {request['point']!r}"}
        device = self.sweep.device.type
        self.fault.before_round(point.id, 0)
        self.started = self.steps.start(point)
        if self.started.skipped is not None:
            return {"oom": True, "skipped": True, "device": device}
        calls = unless_oom(self._warm_up)
        self.oom = calls is None
        return {"oom": True, "device": device} if calls is None else {
            "calls": calls, "warmup_s": self.rounds.warmup_s, "device": device}

    def _warm_up(self) -> int:
        from pruned_perf.bench.rounds import PointRounds

        started = self.started
        self.rounds = PointRounds(started.model, started.point, self.peers)
        calls = self.rounds.warm_up(self.sweep.warmup, self.sweep.min_round_s)
        # the probe before the first round and after the last (PointRounds.fields), not between rounds:
        # a round's time limit (bench/ab.py) then bounds the round alone
        self.rounds.probe()
        return calls

    def op_size(self, request: dict) -> dict:
        if request["calls"] < self.rounds.calls:
            return {"error": f"{request['calls']} calls per round is fewer than this side's own {self.rounds.calls}"}
        self.rounds.calls = request["calls"]
        return {"calls": self.rounds.calls}

    def op_round(self, request: dict) -> dict:
        from pruned_perf.bench.measure import unless_oom

        done = unless_oom(self._timed_round)
        self.oom = done is None
        return {"oom": True} if done is None else {"round": self.rounds.round_summary(-1).to_dict()}

    def _timed_round(self) -> float:
        self.fault.before_round(self.started.point.id, len(self.rounds.rounds_s) + 1)
        return self.rounds.timed_round(probe=False)

    def op_finish(self, request: dict) -> dict:
        started, self.started = self.started, None
        runs = None if self.oom or self.rounds is None else self.rounds.fields()
        measurement = self.steps.finish(started, runs)
        return {"measurement": measurement.to_dict()}


def serve(role: str, requests, out) -> None:
    worker = SideWorker(role)
    for line in requests:
        if not line.strip():
            continue
        try:
            answer = worker.handle(json.loads(line))
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which fails the point
            answer = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("base", "head"), required=True)
    args = parser.parse_args(argv)
    out = _protocol_stream()
    out.write(json.dumps({"hello": {"protocol": PROTOCOL, "describe": describe(args.role)}}) + "\n")
    out.flush()
    serve(args.role, sys.stdin, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
