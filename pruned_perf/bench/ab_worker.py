"""One side of an interleaved A/B (pruned_perf.bench.ab): a long-lived process that measures points a
round at a time, on request, with its own side's code.

    python -m pruned_perf.bench.ab_worker --role base|head

The driver starts it with cwd and PYTHONPATH at the side's source tree. It speaks JSON lines: one
request on stdin, one answer on stdout. stdout carries nothing else: whatever the libraries print goes
to stderr. The first line is the worker's hello, before any request:

    {"hello": {"protocol": 1, "describe": {"sha", "dirty", "pruned_perf", "python", "torch", ...}}}

Requests, in the order a point needs them (answers: the fields named, or {"error": ..., "traceback": ...}
for a failure that is not running out of memory; the worker goes on):

    {"op": "setup", "options": {...--pp-* values...}, "cache_dir": DIR}  -> {"points": [ids], "threads": N}
    {"op": "start", "point": ID}       -> {"calls": N, "warmup_s": [...]}, or {"oom": true}
    {"op": "size", "calls": N}         -> {"calls": N}          (the same on both sides: the larger)
    {"op": "round"}                    -> {"round": {latency_s, ttft_s, tpot_s, runqueue_wait_frac,
                                                     others_cpu_frac}}, or {"oom": true}
    {"op": "finish"}                   -> {"measurement": {...}}  (Measurement.to_dict of its rounds)

End of stdin ends the worker. PROTOCOL changes whenever a request or answer changes meaning: the driver
refuses a worker that speaks another.

Tests only: PP_AB_TEST_FAULT=ROLE:KIND:N[:POINT][,...] makes the worker of ROLE die (exit 3), hang, or
run out of memory (KIND = die | hang | oom) at the N-th timed round (0: at the point's start, before its build and warm-up) of every point
whose id contains POINT (of every point without it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

PROTOCOL = 1


def _protocol_stream():
    """The real stdout, for protocol lines only; fd 1 and sys.stdout become stderr, so that a print or a
    C library's output anywhere cannot corrupt the protocol."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def describe(role: str) -> dict:
    """What this side runs: its source (git SHA, whether the tree differs from it), where pruned_perf
    was imported from, and the versions and threads that decide its speed."""
    import platform
    import subprocess

    import torch
    import transformers

    import pruned_perf

    package = os.path.dirname(os.path.abspath(pruned_perf.__file__))

    def git(*args) -> str | None:
        try:
            done = subprocess.run(["git", "-C", package, *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if sha else None
    return {"role": role, "sha": sha, "dirty": bool(status) if status is not None else None,
            "pruned_perf": package, "python": f"{platform.python_version()} ({sys.executable})",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "pid": os.getpid()}


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
        if kind == "hang":
            import time
            time.sleep(3600)
        if kind == "oom":
            import torch
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")


class PointState:
    """The point a worker is measuring: its model, fields, rounds, and whether it ran out of memory."""

    def __init__(self, point, variant, model=None, base=None, skipped=None):
        self.point, self.variant, self.model, self.base = point, variant, model, base
        self.rounds = None  # PointRounds once warmed up
        self.oom = False
        self.skipped = skipped  # the OomGuard's Measurement: a smaller batch of the series ran out


class Worker:
    def __init__(self, role: str):
        from pruned_perf.bench.measure import OomGuard

        self.role = role
        self.sweep = self.pool = None
        self.guard = OomGuard()
        self.current: PointState | None = None
        self.fault = Fault(role, os.environ.get("PP_AB_TEST_FAULT"))  # tests only

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            return {"error": f"unknown op {op!r}; valid choices: setup, start, size, round, finish"}
        return handler(request)

    def op_setup(self, request: dict) -> dict:
        from pruned_perf.bench.session import sweep_from_options
        from pruned_perf.bench.sweep import ModelPool

        import torch

        self.sweep = sweep_from_options(request["options"])
        self.pool = ModelPool(self.sweep.device, self.sweep.dtype, request["cache_dir"])
        # the thread count again, now that the measuring code is imported: code that sets it on import
        # (a change under test may) must show in the description
        return {"points": [p.id for p in self.sweep.points], "threads": torch.get_num_threads()}

    def op_start(self, request: dict) -> dict:
        from pruned_perf.bench.measure import PointRounds, begin_point

        self.current = None
        point = next((p for p in self.sweep.points if p.id == request["point"]), None)
        if point is None:
            return {"error": f"this side does not measure point {request['point']!r}"}
        variant = self.sweep.variant_for(point)
        skipped = self.guard.skip(point)
        if skipped is not None:
            self.current = PointState(point, variant, skipped=skipped)
            return {"oom": True, "skipped": True}
        self.fault.before_round(point.id, 0)
        model = self.pool.get(variant)
        state = self.current = PointState(point, variant, model, begin_point(model, point))
        calls = self._unless_oom(lambda: self._warm_up(state, PointRounds))
        return {"oom": True} if calls is None else {"calls": calls, "warmup_s": state.rounds.warmup_s}

    def _warm_up(self, state: PointState, point_rounds) -> int:
        state.rounds = point_rounds(state.model, state.point)
        calls = state.rounds.warm_up(self.sweep.warmup, self.sweep.min_round_s)
        # the probe before the first round and after the last (PointRounds.fields), not between rounds:
        # a round's time limit (bench/ab.py) then bounds the round alone
        state.rounds.probe()
        return calls

    def op_size(self, request: dict) -> dict:
        rounds = self.current.rounds
        if request["calls"] < rounds.calls:
            return {"error": f"{request['calls']} calls per round is fewer than this side's own {rounds.calls}"}
        rounds.calls = request["calls"]
        return {"calls": rounds.calls}

    def op_round(self, request: dict) -> dict:
        state = self.current
        done = self._unless_oom(lambda: self._timed_round(state))
        return {"oom": True} if done is None else {"round": state.rounds.round_summary(-1)}

    def _timed_round(self, state: PointState) -> float:
        self.fault.before_round(state.point.id, len(state.rounds.rounds_s) + 1)
        return state.rounds.timed_round(probe=False)

    def _unless_oom(self, step):
        """step()'s value, or None when it ran out of memory: the point's result, not a failure."""
        from pruned_perf.bench.measure import is_oom

        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - anything but OOM is re-raised
            if not is_oom(exc):
                raise
        self.current.oom = True  # outside the except block: the frames holding tensors are gone
        return None

    def op_finish(self, request: dict) -> dict:
        from dataclasses import replace

        from pruned_perf.bench.measure import oom_measurement, point_measurement

        state, self.current = self.current, None
        if state.skipped is not None:
            measurement = state.skipped
        elif state.oom:
            measurement = oom_measurement(state.model, state.base)
        else:
            measurement = point_measurement(state.model, state.point, state.base, state.rounds.fields())
        # after the timed rounds: perplexity is scored once per variant, as PerfRun.measure does
        measurement = replace(measurement, **self.pool.fields(state.variant))
        self.guard.record(state.point, measurement)
        return {"measurement": measurement.to_dict()}


def serve(role: str, requests, out) -> None:
    worker = Worker(role)
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
