"""What the perf plugin keeps for one pytest session (`PerfSession`): the run (pruned_perf.bench.session does
the point loop), the A/B's driver with --pp-ab, the points that ran out of memory (pytest-benchmark drops
them), the results JSON and the comparison text for the terminal; and how a point's rounds become
pytest-benchmark's stats."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pruned_perf.bench.options import PerfOptions


class PerfSession:
    """One pytest session of the perf suite."""

    def __init__(self, config, options: PerfOptions, log_path: Path, json_path: Path | None):
        from pruned_perf.bench.session import PerfRun, sweep_from_options

        self.config = config
        self.options, self.json_path = options, json_path
        sweep = sweep_from_options(self.options.sweep)
        self.run = PerfRun(sweep, self.options.cache_dir, log_path)
        self.oom_points: dict[str, object] = {}
        self.results_json: dict | None = None
        self.comparison_text: str | None = None
        self.ab = None  # the A/B driver (pruned_perf.bench.ab.ABRun) with --pp-ab

    def measure(self, point, benchmark):
        from pruned_perf.bench.session import live_line

        if self.ab is not None:
            return self._measure_ab(point, benchmark)
        measurement = self.run.measure(point, benchmark.fullname, _pedantic(benchmark))
        self._say(live_line(measurement, self.run.measured))
        if measurement.oom:
            self.oom_points[benchmark.fullname] = measurement
        else:
            benchmark.extra_info.update(measurement.to_dict())
        return measurement

    def _measure_ab(self, point, benchmark):
        """The A/B of a point: the head's Measurement is the benchmark point, its rounds pytest-benchmark's
        stats; the verdict and the base's measurement go to the results' A/B record. This process builds
        no model. A point the machine was too busy to start is skipped, and in the A/B table."""
        try:
            result = self.ab.measure(point, benchmark.fullname)
        except BaseException:  # a point that failed (Ctrl-C included) is kept by the driver: say it, log it
            if self.ab.results and self.ab.results[-1].point == point:
                self._log_ab(self.ab.results[-1], benchmark.fullname)
            raise
        self._log_ab(result, benchmark.fullname)
        if result.head is None:
            pytest.skip(result.ab.reason)
        self.run.log.append(result.head, benchmark.fullname)
        self.run.measured.append(result.head)
        if result.head.oom:
            self.oom_points[benchmark.fullname] = result.head
        else:
            _record_rounds(benchmark, result.head.rounds_s, result.head.calls_per_round)
            benchmark.extra_info.update(result.head.to_dict())
        return result.head

    def _log_ab(self, result, nodeid: str) -> None:
        from pruned_perf.analysis.ab_report import live_line

        self.run.log.append_ab_point(result.record, nodeid)
        self._say(live_line(result.point, result.ab))

    def _say(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():  # the line is for the terminal, not the test's output
            reporter.write_line(line)

    def results(self):
        """What this session measured, as results (for the closing table; the JSON has the same)."""
        from pruned_perf.analysis.results import Results
        from pruned_perf.analysis.speedups import add_speedups

        points = {m.id: dataclasses.replace(m) for m in self.run.measured}  # copies: the speedups are this table's
        add_speedups(points.values())
        return Results(self.run.meta(), points, path="this session")


def _pedantic(benchmark):
    """Time the rounds through pytest-benchmark, so its stats are the rounds the core measured."""
    from pruned_perf.bench.rounds import repeated

    def timed_rounds(fn, rounds, warmup=0, setup=None, calls=1):
        # pytest-benchmark refuses `iterations` > 1 with a setup (it would run once per round, which is
        # just what the steadiness probe needs), so the round's loop is ours; its stats then get the time
        # per call, as its own `iterations` would have stored them
        benchmark.pedantic(repeated(fn, calls), setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
        metadata = benchmark.stats
        if calls > 1:
            _per_call_stats(metadata, [seconds / calls for seconds in metadata.stats.data], calls)
        return list(metadata.stats.data)
    return timed_rounds


def _per_call_stats(metadata, per_call_s: list, calls: int) -> None:
    from pytest_benchmark.stats import Stats

    per_call = Stats()
    for seconds in per_call_s:
        per_call.update(seconds)
    metadata.stats, metadata.iterations = per_call, calls


def _record_rounds(benchmark, rounds_s: list, calls: int) -> None:
    """Rounds timed elsewhere (an A/B worker) as pytest-benchmark's stats: per call, as _pedantic stores
    them. The pedantic call times nothing of the point; its stats are replaced."""
    benchmark.pedantic(lambda: None, rounds=len(rounds_s), iterations=1)
    if benchmark.stats is not None:  # None with --benchmark-disable
        _per_call_stats(benchmark.stats, rounds_s, calls)
