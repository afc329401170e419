"""The point loop of a perf run, outside pytest: choose the points from the --pp-* options, then for
each point build (or reuse) its model, measure it, append it to the point log, and remember it.

The pytest plugin is glue around this: it turns the options into `sweep_from_options`, lets
pytest-benchmark time the rounds (`timed_rounds`), and writes results and verdicts at the end. Any
other driver (a script, a notebook) can call `PerfRun.measure` the same way.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from pruned_perf.bench.fingerprint import fingerprint, pick_device
from pruned_perf.bench.measure import OomGuard, begin_point, point_result, run_rounds
from pruned_perf.bench.options import SweepOptions
from pruned_perf.bench.rounds import TimedRounds
from pruned_perf.bench.sweep import DEFAULT_MIN_ROUND_S, ModelPool, Sweep, make_points, select_variants, shard
from pruned_perf.core.errors import UserError
from pruned_perf.core.pointlog import PointLog
from pruned_perf.core.schema import SCHEMA_VERSION, Fingerprint, Measurement, MethodStyle, Point, RunMeta, SessionOutcome
from pruned_perf.llama.models import model_config, model_name, parse_dtype
from pruned_perf.pruning.methods import styles as method_styles
from pruned_perf.pruning.variants import Variant, get_profile, saved_plan


@dataclass
class StartedPoint:
    """A point before its rounds: its variant and model, and begin_point's fields; or, where a smaller
    batch of its series ran out of memory, the Measurement that says it was skipped."""

    point: Point
    variant: Variant
    model: object = None
    base: dict | None = None
    skipped: Measurement | None = None


class PointSteps:
    """A point's steps around its rounds, the same for a plain run and for an A/B worker
    (pruned_perf.bench.ab_worker): skip it where a smaller batch of its series ran out of memory; else
    build (or reuse) its model and take its model-level fields; after the rounds, its Measurement with
    the variant's own fields (held-out perplexity), remembered by the OOM guard."""

    def __init__(self, sweep: Sweep, cache_dir: str | Path | None):
        self.sweep = sweep
        self.pool = ModelPool(sweep.device, sweep.dtype, cache_dir)
        self.guard = OomGuard()

    def start(self, point: Point) -> StartedPoint:
        variant = self.sweep.variant_for(point)
        skipped = self.guard.skip(point)
        if skipped is not None:
            return StartedPoint(point, variant, skipped=skipped)
        model = self.pool.get(variant)
        return StartedPoint(point, variant, model, begin_point(model, point))

    def finish(self, started: StartedPoint, runs: dict | None) -> Measurement:
        """The point's Measurement from its rounds' fields (None: it ran out of memory)."""
        if started.skipped is not None:
            return started.skipped
        measurement = point_result(started.model, started.point, started.base, runs)
        # after the timed rounds: perplexity is scored once per variant, not per point
        measurement = replace(measurement, **self.pool.fields(started.variant))
        self.guard.record(started.point, measurement)
        return measurement


class PerfRun:
    """One run of the suite: the sweep, its points' steps, the point log, what was measured."""

    def __init__(self, sweep: Sweep, cache_dir: str | Path, log_path: str | Path):
        self.sweep = sweep
        self.steps = PointSteps(sweep, cache_dir)
        # unique even for runs started in the same second (their logs may be one file)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.log = PointLog(Path(log_path), run=self.run_id, meta=self.meta(outcome=False).to_dict())
        self.measured: list[Measurement] = []
        self.failed: list[str] = []  # what the driver reports as failed: a baseline never comes from such a run
        self.interrupted = False  # Ctrl-C ended the session: its results are what ran before

    def measure(self, point: Point, name: str, timed_rounds: TimedRounds | None = None) -> Measurement:
        """Measure `point` (or skip it: a smaller batch of its series ran out of memory) and log it
        under `name` at once, so that a run that dies later loses nothing measured."""
        started = self.steps.start(point)
        runs = None
        if started.skipped is None:
            sweep = self.sweep
            runs = run_rounds(started.model, point, rounds=sweep.rounds, warmup=sweep.warmup,
                              min_round_s=sweep.min_round_s, timed_rounds=timed_rounds)
        measurement = self.steps.finish(started, runs)
        self.log.append(measurement, name)
        self.measured.append(measurement)
        return measurement

    def meta(self, outcome: bool = True) -> RunMeta:
        """machine_info.pruned_perf; with outcome=False (the log's header) without the run's outcome."""
        return RunMeta(schema=SCHEMA_VERSION, profile=self.sweep.profile.name, run_id=self.run_id,
                       fingerprint=Fingerprint.from_dict(fingerprint(self.sweep.device)),
                       methods={name: MethodStyle.from_dict(style) for name, style in method_styles().items()},
                       session=SessionOutcome(list(self.failed), self.interrupted) if outcome else None)


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


def sweep_from_options(options: SweepOptions) -> Sweep:
    """The sweep the options ask for (None: the profile's value). Every bad value is a UserError before
    any model is built."""
    device = pick_device(options.device)
    profile = get_profile(options.profile or ("smoke" if device.type == "cuda" else "quick"))
    _check_models(options.models or ())
    variants = select_variants(profile, options.models, options.methods)
    points = make_points(variants, options.inputs or profile.inputs, options.outputs or profile.outputs,
                         options.batch or profile.batches, options.backends or profile.backends)
    if options.shard:
        points = shard(points, *options.shard)
    if options.points is not None:
        points = _only(points, options.points)
    if not points:
        raise UserError("nothing to measure: the --pp-* options select no point (an empty --pp-models or "
                        "--pp-methods, or a shard with no series)")
    return Sweep(profile, variants, points, device, parse_dtype(options.dtype or profile.dtype),
                 rounds=options.rounds or 5, warmup=options.warmup or 1,
                 min_round_s=DEFAULT_MIN_ROUND_S if options.min_round_s is None else options.min_round_s)


def _only(points: list[Point], ids) -> list[Point]:
    """The points of these ids, in the sweep's order; an id the other options do not select is one error."""
    known = {p.id for p in points}
    missing = [pid for pid in ids if pid not in known]
    if missing:
        raise UserError(f"--pp-points {missing[0]!r} is not among the points the other options select; valid "
                        f"choices: {', '.join(sorted(known))}")
    return [p for p in points if p.id in set(ids)]


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
