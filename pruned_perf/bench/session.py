"""The point loop of a perf run, outside pytest: choose the points from the --pp-* options, then for
each point build (or reuse) its model, measure it, append it to the point log, and remember it.

The pytest plugin is glue around this: it turns options into `sweep_from_options`, lets
pytest-benchmark time the rounds (`timed_rounds`), and writes results and verdicts at the end. Any
other driver (a script, a notebook) can call `PerfRun.measure` the same way.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from pruned_perf.bench.fingerprint import fingerprint, pick_device
from pruned_perf.bench.measure import OomGuard, TimedRounds, measure
from pruned_perf.bench.sweep import (DEFAULT_MIN_ROUND_S, ModelPool, Sweep, make_points, parse_ints, parse_names,
                                     parse_seconds, parse_shard, select_variants, shard)
from pruned_perf.core.errors import UserError
from pruned_perf.llama.models import model_config, model_name, parse_dtype
from pruned_perf.core.pointlog import PointLog
from pruned_perf.pruning.methods import styles as method_styles
from pruned_perf.pruning.variants import get_profile, saved_plan
from pruned_perf.core.schema import SCHEMA_VERSION, Fingerprint, Measurement, MethodStyle, Point, RunMeta, SessionOutcome


class PerfRun:
    """One run of the suite: the sweep, the model pool, what ran out of memory, the point log."""

    def __init__(self, sweep: Sweep, cache_dir: str | Path, log_path: str | Path):
        self.sweep = sweep
        self.pool = ModelPool(sweep.device, sweep.dtype, cache_dir)
        self.guard = OomGuard()
        # unique even for runs started in the same second (their logs may be one file)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.log = PointLog(Path(log_path), run=self.run_id, meta=self.meta(outcome=False).to_dict())
        self.measured: list[Measurement] = []
        self.failed: list[str] = []  # what the driver reports as failed: a baseline never comes from such a run

    def measure(self, point: Point, name: str, timed_rounds: TimedRounds | None = None) -> Measurement:
        """Measure `point` (or skip it: a smaller batch of its series ran out of memory) and log it
        under `name` at once, so that a run that dies later loses nothing measured."""
        measurement = self.guard.skip(point)
        if measurement is None:
            variant = self.sweep.variant_for(point)
            model = self.pool.get(variant)
            measurement = measure(model, point, rounds=self.sweep.rounds, warmup=self.sweep.warmup,
                                  min_round_s=self.sweep.min_round_s, timed_rounds=timed_rounds)
            # after the timed rounds: perplexity is scored once per variant, not per point
            measurement = replace(measurement, **self.pool.fields(variant))
            self.guard.record(point, measurement)
        self.log.append(measurement, name)
        self.measured.append(measurement)
        return measurement

    def meta(self, outcome: bool = True) -> RunMeta:
        """machine_info.pruned_perf; with outcome=False (the log's header) without the run's outcome."""
        return RunMeta(schema=SCHEMA_VERSION, profile=self.sweep.profile.name, run_id=self.run_id,
                       fingerprint=Fingerprint.from_dict(fingerprint(self.sweep.device)),
                       methods={name: MethodStyle.from_dict(style) for name, style in method_styles().items()},
                       session=SessionOutcome(list(self.failed)) if outcome else None)


def live_line(measurement: Measurement, measured: list[Measurement]) -> str:
    """One line per finished point, as soon as it is measured: what a watcher wants to know."""
    m = measurement
    head = f"pruned_perf: {m.model} {m.method} in{m.input_tokens} out{m.output_tokens} M{m.batch_size} {m.backend}:"
    if m.oom:
        return f"{head} out of memory" + (" (a smaller batch did)" if m.oom_skipped else "")
    shape = (m.model, m.input_tokens, m.output_tokens, m.batch_size, m.backend)
    dense = next((d for d in measured if d.method == "dense" and not d.oom
                  and (d.model, d.input_tokens, d.output_tokens, d.batch_size, d.backend) == shape), None)
    speedup = f", {dense.latency_s / m.latency_s:.2f}x dense" if dense is not None and m.method != "dense" else ""
    return f"{head} {m.latency_s:.4g} s, {m.tokens_per_s:.1f} tokens/s, ttft {m.ttft_s * 1e3:.1f} ms{speedup}"


def sweep_from_options(options: Mapping[str, str | None]) -> Sweep:
    """The sweep the --pp-* options ask for (keys without the prefix: "profile", "models", "in", ...;
    None or absent: the profile's value). Every bad value is a UserError before any model is built."""
    device = pick_device(options.get("device"))
    profile = get_profile(options.get("profile") or ("smoke" if device.type == "cuda" else "quick"))
    models = parse_names(options.get("models"))
    _check_models(models or ())
    variants = select_variants(profile, models, parse_names(options.get("methods")))
    points = make_points(
        variants,
        parse_ints(options.get("in"), "--pp-in") or profile.inputs,
        parse_ints(options.get("out"), "--pp-out") or profile.outputs,
        parse_ints(options.get("batch"), "--pp-batch") or profile.batches,
        parse_names(options.get("backend")) or profile.backends,
    )
    part = parse_shard(options.get("shard"))
    if part:
        points = shard(points, *part)
    if not points:
        raise UserError("nothing to measure: the --pp-* options select no point (an empty --pp-models or "
                        "--pp-methods, or a shard with no series)")
    rounds = parse_ints(options.get("rounds"), "--pp-rounds")
    warmup = parse_ints(options.get("warmup"), "--pp-warmup")
    min_round_s = parse_seconds(options.get("min-round-s"), "--pp-min-round-s")
    return Sweep(profile, variants, points, device, parse_dtype(options.get("dtype") or profile.dtype),
                 rounds=rounds[0] if rounds else 5, warmup=warmup[0] if warmup else 1,
                 min_round_s=DEFAULT_MIN_ROUND_S if min_round_s is None else min_round_s)


def _check_models(names) -> None:
    """Every model must exist and be a LLaMA before the first point: a typo is one usage error, not a
    traceback per point after minutes of other points."""
    ids = [model_name(n) for n in names]  # what the point ids will say
    twice = sorted({n for n, i in zip(names, ids) if ids.count(i) > 1})
    if twice:
        raise UserError(f"--pp-models {','.join(names)} lists {', '.join(twice)} more than once "
                        f"(a directory goes by its folder's name)")
    for name in names:
        if saved_plan(name) is None:  # a directory saved by `pruned-perf prune` is checked when it loads
            model_config(name)
