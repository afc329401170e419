"""pytest plugin (registered as an entry point): the --pp-* options and the glue between pytest,
pytest-benchmark and the measuring core.

- `pp_point` is parametrized over the selected points, with stable ids like
  `llama-7b-flap-in12-out128-M64-eager`;
- `pp_session.measure(point, benchmark)` times the rounds through `benchmark.pedantic`, stores the
  measurement in `benchmark.extra_info` and appends it to the JSON-lines log;
- points that ran out of memory are added to the JSON (pytest-benchmark drops benchmarks that raised);
- `machine_info` gains the hardware fingerprint; `--pp-compare` ends the session with a comparison.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

# name, environment variable, help. Every option can come from the command line or the environment.
_OPTIONS = [
    ("profile", "PP_PROFILE", "quick (tiny models, CPU) | smoke (llama-7b subset, GPU) | paper (the "
     "reference sweep); default: smoke with a GPU, quick without"),
    ("models", "PP_MODELS", "comma-separated presets or model directories (default: the profile's)"),
    ("methods", "PP_METHODS", "comma-separated methods: dense, depth, llm-pruner, flap"),
    ("batch", "PP_BATCH", "comma-separated batch sizes M"),
    ("in", "PP_IN", "comma-separated input token counts"),
    ("out", "PP_OUT", "comma-separated output token counts"),
    ("backend", "PP_BACKEND", "comma-separated backends: eager (dynamic KV cache) and/or static"),
    ("device", "PP_DEVICE", "auto | cuda | cuda:N | cpu (default auto)"),
    ("dtype", "PP_DTYPE", "float16 | bfloat16 | float32 (default: the profile's)"),
    ("rounds", "PP_ROUNDS", "timed rounds per point (default 5)"),
    ("warmup", "PP_WARMUP", "full warm-up calls at the exact shape per point (default 1)"),
    ("shard", "PP_SHARD", "I/N: run only the I-th of N disjoint parts of the matrix"),
    ("log", "PP_LOG", "JSON-lines file every point is appended to as soon as it is measured "
     "(default: the --benchmark-json path with .jsonl, else pruned-perf-points.jsonl)"),
    ("cache-dir", "PP_CACHE_DIR", "where pruning plans are cached (default .pp-cache)"),
    ("compare", "PP_COMPARE", "auto | FILE | DIR: compare against a baseline at the end; "
     "a regression fails the session"),
    ("baselines-dir", "PP_BASELINES_DIR", "the baseline store for --pp-compare auto (default baselines)"),
]


def pytest_addoption(parser):
    group = parser.getgroup("pruned_perf", "pruned_perf perf suite")
    for name, env, text in _OPTIONS:
        # An empty variable means unset (a workflow passes empty inputs through as "").
        group.addoption(f"--pp-{name}", dest=f"pp_{name.replace('-', '_')}", default=os.environ.get(env) or None,
                        help=f"{text} [env {env}]")


def _option(config, name: str):
    return config.getoption(f"pp_{name.replace('-', '_')}")


class PerfSession:
    """What one pytest session of the perf suite keeps: the sweep, the model pool, OOM memory, log."""

    def __init__(self, config):
        from pruned_perf.measure import OomGuard
        from pruned_perf.sweep import ModelPool, PointLog

        self.config = config
        self.sweep = _make_sweep(config)
        self.pool = ModelPool(self.sweep.device, self.sweep.dtype, _option(config, "cache-dir") or ".pp-cache")
        self.guard = OomGuard()
        self.log = PointLog(_log_path(config), run=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.oom_points: dict[str, object] = {}
        self.results_json: dict | None = None
        self.comparison_text: str | None = None

    def measure(self, point, benchmark):
        from pruned_perf.measure import measure

        measurement = self.guard.skip(point)
        if measurement is None:
            model = self.pool.get(self.sweep.variant_for(point))
            measurement = measure(model, point, rounds=self.sweep.rounds, warmup=self.sweep.warmup,
                                  timed_rounds=_pedantic(benchmark))
            self.guard.record(point, measurement)
        self.log.append(measurement, benchmark.fullname)
        if measurement.oom:
            self.oom_points[benchmark.fullname] = measurement
        else:
            benchmark.extra_info.update(measurement.to_dict())
        return measurement


def _pedantic(benchmark):
    """Time the rounds through pytest-benchmark, so its stats are the rounds the core measured."""
    def timed_rounds(fn, rounds, warmup=0):
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
        return list(benchmark.stats.stats.data)
    return timed_rounds


def _log_path(config) -> Path:
    explicit = _option(config, "log")
    if explicit:
        return Path(explicit)
    json_path = _benchmark_json(config)
    return json_path.with_suffix(".jsonl") if json_path else Path("pruned-perf-points.jsonl")


def _benchmark_json(config) -> Path | None:
    """--benchmark-json: a Path in pytest-benchmark 5, an open file (with .name) in older versions."""
    value = config.getoption("benchmark_json", None)
    if value is None:
        return None
    return Path(value) if isinstance(value, (str, os.PathLike)) else Path(value.name)


def _make_sweep(config):
    from pruned_perf.fingerprint import pick_device
    from pruned_perf.models import parse_dtype
    from pruned_perf.sweep import Sweep, make_points, parse_ints, parse_names, parse_shard, select_variants
    from pruned_perf.sweep import shard as shard_points
    from pruned_perf.variants import get_profile

    device = pick_device(_option(config, "device"))
    profile = get_profile(_option(config, "profile") or ("smoke" if device.type == "cuda" else "quick"))
    variants = select_variants(profile, parse_names(_option(config, "models")),
                               parse_names(_option(config, "methods")))
    points = make_points(
        variants,
        parse_ints(_option(config, "in"), "--pp-in") or profile.inputs,
        parse_ints(_option(config, "out"), "--pp-out") or profile.outputs,
        parse_ints(_option(config, "batch"), "--pp-batch") or profile.batches,
        parse_names(_option(config, "backend")) or profile.backends,
    )
    shard = parse_shard(_option(config, "shard"))
    if shard:
        points = shard_points(points, *shard)
    rounds = parse_ints(_option(config, "rounds"), "--pp-rounds")
    warmup = parse_ints(_option(config, "warmup"), "--pp-warmup")
    return Sweep(profile, variants, points, device, parse_dtype(_option(config, "dtype") or profile.dtype),
                 rounds=rounds[0] if rounds else 5, warmup=warmup[0] if warmup else 1)


def _session(config) -> PerfSession:
    from pruned_perf.errors import UserError

    state = getattr(config, "_pruned_perf", None)
    if state is None:
        try:
            state = PerfSession(config)
        except UserError as exc:
            raise pytest.UsageError(f"pruned_perf: {exc}") from None
        config._pruned_perf = state
    return state


def pytest_configure(config):
    if _option(config, "compare") and _benchmark_json(config) is None:
        raise pytest.UsageError("--pp-compare needs --benchmark-json FILE (the results it compares)")
    if any(_option(config, name) is not None for name, _, _ in _OPTIONS):
        _session(config)  # a bad --pp-* value is a usage error (exit 4) here, not a collection error (2)


def pytest_generate_tests(metafunc):
    if "pp_point" in metafunc.fixturenames:
        points = _session(metafunc.config).sweep.points
        metafunc.parametrize("pp_point", points, ids=[p.id for p in points])


@pytest.fixture(scope="session")
def pp_session(request) -> PerfSession:
    return _session(request.config)


def pytest_benchmark_update_machine_info(config, machine_info):
    state = getattr(config, "_pruned_perf", None)
    if state is None:
        return
    from pruned_perf.fingerprint import fingerprint

    machine_info["pruned_perf"] = {"schema": 1, "profile": state.sweep.profile.name,
                                   "fingerprint": fingerprint(state.sweep.device)}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    state = getattr(config, "_pruned_perf", None)
    if state is None:
        return
    for nodeid, measurement in state.oom_points.items():
        output_json["benchmarks"].append({
            "group": None, "name": nodeid.rsplit("::", 1)[-1], "fullname": nodeid,
            "params": {"pp_point": measurement.id}, "param": measurement.id,
            "extra_info": measurement.to_dict(), "options": {}, "stats": None,
        })
    state.results_json = output_json


@pytest.hookimpl(trylast=True)  # after pytest-benchmark has built the results
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    state = getattr(config, "_pruned_perf", None)
    spec = _option(config, "compare")
    if state is None or not spec or state.results_json is None:
        return
    from pruned_perf.compare import compare_with_baseline
    from pruned_perf.errors import UserError
    from pruned_perf.report import render
    from pruned_perf.results import results_from_dict

    try:
        current = results_from_dict(state.results_json, str(_benchmark_json(config)))
        _, comparison = compare_with_baseline(current, spec, _option(config, "baselines-dir") or "baselines")
        state.comparison_text = render(current, comparison, fmt="plain")
        regressed = comparison.has_regression
    except UserError as exc:
        state.comparison_text = f"pruned_perf: cannot compare: {exc}"
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
        return
    if regressed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    state = getattr(config, "_pruned_perf", None)
    if state is not None and state.comparison_text:
        terminalreporter.write_sep("=", "pruned_perf comparison against the baseline")
        terminalreporter.write_line(state.comparison_text)
