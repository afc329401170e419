"""pytest plugin (registered as an entry point): the --pp-* options and the glue between pytest,
pytest-benchmark and the measuring core.

- `pp_point` is parametrized over the selected points, with stable ids like
  `llama-7b-flap-in12-out128-M64-eager`;
- `pp_session.measure(point, benchmark)` times the rounds through `benchmark.pedantic`, stores the
  measurement in `benchmark.extra_info` and appends it to the JSON-lines log;
- points that ran out of memory are added to the JSON (pytest-benchmark drops benchmarks that raised);
- every measured point gets its speedup over the dense point of the same shape in the run, and
  `machine_info` the hardware fingerprint, a unique run id and the tests that failed (a baseline is
  never taken from a run with failures);
- the session ends with the report table in the terminal and, with `--pp-compare`, a comparison.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pruned_perf.analysis.verdicts import EXIT_INTERRUPTED
from pruned_perf.bench.options import DEFAULT_CACHE_DIR, NAMES, OPTIONS, PerfOptions, from_environment
from pruned_perf.bench.perf_session import PerfSession
from pruned_perf.core.atomic import check_append_file, check_output_file, check_writable_dir

def pytest_addoption(parser):
    group = parser.getgroup("pruned_perf", "pruned_perf perf suite")
    for name, env, text in OPTIONS:
        group.addoption(f"--pp-{name}", dest=f"pp_{name.replace('-', '_')}", default=from_environment(name),
                        help=f"{text} [env {env}]")


def _option(config, name: str):
    return config.getoption(f"pp_{name.replace('-', '_')}")


def perf_options(config) -> PerfOptions:
    """The session's --pp-* options, parsed (a bad value: a UserError naming it)."""
    return PerfOptions.parse({name: _option(config, name) for name in NAMES})


def plan_cache_dir(config) -> str:
    """Where the session caches pruning plans (and their perplexities): --pp-cache-dir, or .pp-cache."""
    return _option(config, "cache-dir") or DEFAULT_CACHE_DIR


def _check_outputs(config) -> None:
    """The run's own outputs (plan cache, point log): a path that cannot be written fails now, before the
    sweep is set up (torch imported) and long before the first point would be logged."""
    check_writable_dir(plan_cache_dir(config), "--pp-cache-dir")
    check_append_file(_log_path(config), "--pp-log")


def _log_path(config) -> Path:
    explicit = _option(config, "log")
    if explicit:
        return Path(explicit)
    json_path = benchmark_json(config)
    return json_path.with_suffix(".jsonl") if json_path else Path("pruned-perf-points.jsonl")


def benchmark_json(config) -> Path | None:
    """--benchmark-json: a Path in pytest-benchmark 5, an open file (with .name) in older versions."""
    value = config.getoption("benchmark_json", None)
    if value is None:
        return None
    return Path(value) if isinstance(value, (str, os.PathLike)) else Path(value.name)


def _session(config) -> PerfSession:
    from pruned_perf.core.errors import UserError

    state = getattr(config, "_pruned_perf", None)
    if state is None:
        try:
            _check_outputs(config)
            state = PerfSession(config, perf_options(config), _log_path(config), benchmark_json(config))
        except UserError as exc:
            raise pytest.UsageError(f"pruned_perf: {exc}") from None
        config._pruned_perf = state
    return state


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """With --pp-ab, start both A/B workers before the session: a base that cannot be resolved,
    imported or started is one `error:` line and exit 2, before any timing (a UsageError would exit 4)."""
    if not _option(config, "ab") or any(config.getoption(name, False) for name in _ONLY_LISTS):
        return None
    from pruned_perf.bench.ab_plugin import start_ab

    session = _session(config)
    return start_ab(config, session, session.options)


# Runs that only list or explain and time nothing: no A/B workers for them.
_ONLY_LISTS = ("help", "version", "collectonly", "showfixtures", "show_fixtures_per_test", "markers")


def pytest_configure(config):
    config.pluginmanager.register(InterruptWatch(config), "pruned_perf_interrupts")
    if _option(config, "compare") and benchmark_json(config) is None:
        raise pytest.UsageError("--pp-compare needs --benchmark-json FILE (the results it compares)")
    results = _check_results_path(benchmark_json(config))
    if any(_option(config, name) is not None for name in NAMES):
        _session(config)  # a bad --pp-* value is a usage error (exit 4) here, not a collection error (2)
    if results is not None:
        # an old file left there would read as this run's results if the run dies before the end
        results.unlink(missing_ok=True)


def _check_results_path(path: Path | None) -> Path | None:
    """pytest-benchmark writes the results only at the end: a path it cannot write would lose a whole
    sweep, so it is checked now."""
    from pruned_perf.core.errors import UserError

    if path is None:
        return None
    try:
        return check_output_file(path, "--benchmark-json")
    except UserError as exc:
        raise pytest.UsageError(f"pruned_perf: {exc}") from None


def pytest_generate_tests(metafunc):
    if "pp_point" in metafunc.fixturenames:
        points = _session(metafunc.config).run.sweep.points
        # by id, with the fixture below giving the Point: pytest-benchmark stores the parameter in its
        # JSON, and a string serialises where a Point would not
        metafunc.parametrize("pp_point", [p.id for p in points], ids=[p.id for p in points], indirect=True)


@pytest.fixture
def pp_point(request):
    return next(p for p in _session(request.config).run.sweep.points if p.id == request.param)


@pytest.fixture(scope="session")
def pp_session(request) -> PerfSession:
    return _session(request.config)


class InterruptWatch:
    """Ctrl-C: the results say so (machine_info.pruned_perf.session.interrupted) and the session exits 130,
    which no other outcome gives."""

    def __init__(self, config):
        self.config = config

    def pytest_keyboard_interrupt(self, excinfo):
        state = getattr(self.config, "_pruned_perf", None)
        if state is not None:
            state.run.interrupted = True

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        state = getattr(self.config, "_pruned_perf", None)
        if state is not None and state.run.interrupted:
            session.exitstatus = EXIT_INTERRUPTED


def pytest_collection_modifyitems(session, config, items):
    """A session of perf points only: each point prints its own line as it ends, so pytest's progress
    (the file's path, a letter per test) would only break those lines apart."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and items and all("pp_point" in getattr(item, "fixturenames", ()) for item in items):
        reporter.showfspath = False
        config._pruned_perf_points_only = True


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report, config):
    """No progress letter for a perf point's call: its own line said how it ended (pytest's summary still
    counts and lists failures and skips)."""
    if getattr(config, "_pruned_perf_points_only", False) and report.when == "call":
        return report.outcome, "", report.outcome.upper()  # the word: -v's line and the short summary
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember every test of the session that failed or errored, in any phase."""
    outcome = yield
    report = outcome.get_result()
    state = getattr(item.config, "_pruned_perf", None)
    if state is not None and report.failed and item.nodeid not in state.run.failed:
        state.run.failed.append(item.nodeid)


def pytest_benchmark_update_machine_info(config, machine_info):
    state = getattr(config, "_pruned_perf", None)
    if state is not None:
        machine_info["pruned_perf"] = state.run.meta().to_dict()


# Keys of this plugin's machine_info that change with every run: left in, pytest-benchmark's
# --benchmark-compare would warn "machine_info is different" against every stored run.
PER_RUN_KEYS = ("run_id", "session")


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own hook compares the two
def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    for info in (machine_info, compared_benchmark.get("machine_info") or {}):
        ours = info.get("pruned_perf")
        if isinstance(ours, dict):
            info["pruned_perf"] = {k: v for k, v in ours.items() if k not in PER_RUN_KEYS}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # called just before pytest-benchmark writes the file, which it does without making its directory
    benchmark_json(config).parent.mkdir(parents=True, exist_ok=True)
    state = getattr(config, "_pruned_perf", None)
    if state is None:
        return
    from pruned_perf.analysis.speedups import add_speedups_to_benchmarks

    for nodeid, measurement in state.oom_points.items():
        output_json["benchmarks"].append({
            "group": None, "name": nodeid.rsplit("::", 1)[-1], "fullname": nodeid,
            "params": {"pp_point": measurement.id}, "param": measurement.id,
            "extra_info": measurement.to_dict(), "options": {}, "stats": None,
        })
    add_speedups_to_benchmarks(output_json["benchmarks"])
    # machine_info is collected before the tests run: the outcome is known only now
    output_json["machine_info"]["pruned_perf"] = state.run.meta().to_dict()
    state.results_json = output_json


@pytest.hookimpl(trylast=True)  # after pytest-benchmark has built the results
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    state = getattr(config, "_pruned_perf", None)
    spec = _option(config, "compare")
    if state is None or not spec or state.results_json is None:
        return
    from pruned_perf.analysis.baselines import compare_with_baseline
    from pruned_perf.analysis.report import render
    from pruned_perf.analysis.results import results_from_dict
    from pruned_perf.core.errors import UserError

    try:
        current = results_from_dict(state.results_json, str(benchmark_json(config)))
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
    if state is None or not state.run.measured:
        return
    if state.comparison_text:
        terminalreporter.write_sep("=", "pruned_perf comparison against the baseline")
        terminalreporter.write_line(state.comparison_text)
    elif state.ab is None:  # an A/B ends with its own table (pruned_perf.bench.ab_plugin)
        from pruned_perf.analysis.report import render

        terminalreporter.write_sep("=", "pruned_perf results")
        terminalreporter.write_line(render(state.results(), fmt="plain"))
    json_path = benchmark_json(config)
    written = f"results {json_path}, " if json_path else ""
    terminalreporter.write_line(f"pruned_perf: {written}point log {state.run.log.path} (run {state.run.run_id})")
