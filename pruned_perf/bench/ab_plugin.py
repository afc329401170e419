"""The pytest glue of `pytest perf/ --pp-ab BASE` (the driver is pruned_perf.bench.ab): start the A/B
before the session (a base that cannot start is one `error:` line and exit 2, before any timing), hand
each point to the driver, and add the A/B to the results, the terminal and the exit status: 1 for a
regressed or failed point, 130 when Ctrl-C ended the run.
"""
from __future__ import annotations

import sys

import pytest

from pruned_perf.analysis.verdicts import EXIT_INTERRUPTED, EXIT_USAGE
from pruned_perf.core.errors import UserError


def ab_settings_for(options):
    """point id (or None: the suite's) -> ABSettings, from [tool.pruned_perf] and the --pp-ab-* options."""
    from pruned_perf.analysis.ab import ab_settings_from_config
    from pruned_perf.analysis.config import load_config

    config = load_config()
    overrides = {}
    if options.max_pairs is not None:
        overrides["max_pairs"] = options.max_pairs
    if options.pairs_per_look is not None:
        overrides["pairs_per_look"] = options.pairs_per_look
    elif options.max_pairs is not None:  # a cap below the default look: one look at the cap
        overrides["pairs_per_look"] = min(options.max_pairs, 6)
    ab_settings_from_config(config, None, **overrides)  # a bad combination: one error before any worker starts

    def settings_for(point_id: str | None):
        return ab_settings_from_config(config, point_id, **overrides)
    return settings_for


def start_ab(config, session, options) -> int | None:
    """Start both workers for `session` (a PerfSession; `options`: its PerfOptions); None to go on, 2 when
    the base cannot start."""
    from pruned_perf.bench.ab import ABRun

    try:
        settings_for = ab_settings_for(options.ab)
    except UserError as exc:
        raise pytest.UsageError(f"pruned_perf: {exc}") from None
    sweep = session.run.sweep
    run = ABRun(options.ab, options.sweep, options.cache_dir, sweep.device.type, settings_for,
                family=len(sweep.points), log=session.run.log, solo_rounds=sweep.rounds)
    config.add_cleanup(run.close)  # also after Ctrl-C and internal errors
    try:
        run.start()
    except UserError as exc:
        run.close()
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    session.ab = run
    config.pluginmanager.register(ABHooks(session), "pruned_perf_ab")
    return None


class ABHooks:
    """The hooks an A/B session adds (registered once its workers have started)."""

    def __init__(self, session):
        self.session = session
        self.run = session.ab

    @pytest.hookimpl(trylast=True)  # after pytest's header; printed with -q too
    def pytest_sessionstart(self, session):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for role, side in self.run.describe().items():
                reporter.write_line(f"pruned_perf A/B {role}: {side.line()}")
        benchmarks = getattr(session.config, "_benchmarksession", None)
        if benchmarks is not None:
            benchmarks.quiet = True  # its table would show the new side's rounds alone: the A/B's table stands

    @pytest.hookimpl(trylast=True)  # after the plugin's own hook, which writes every extra_info anew
    def pytest_benchmark_update_json(self, config, benchmarks, output_json):
        from pruned_perf.analysis.ab import AB_KEY

        output_json[AB_KEY] = self.run.record().to_dict()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        from pruned_perf.analysis.verdicts import FAILED, is_regression

        self._write_unmeasured(session.config)
        if self.session.run.interrupted:
            return  # 130 (pruned_perf.bench.pytest_plugin.InterruptWatch)
        if any(is_regression(r.ab.status) or r.ab.status == FAILED for r in self.run.results):
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _write_unmeasured(self, config) -> None:
        """pytest-benchmark writes no file when no point was measured (every one busy or failed): the A/B's
        record must not be lost with it."""
        from pruned_perf.analysis.ab import AB_KEY
        from pruned_perf.core.atomic import write_json_atomic

        path = self.session.json_path
        if path is None or path.exists() or not self.run.results:
            return
        write_json_atomic(path, {"machine_info": {"pruned_perf": self.session.run.meta().to_dict()},
                                 "benchmarks": [], AB_KEY: self.run.record().to_dict()})

    @pytest.hookimpl(trylast=True)  # the session ends with the A/B table
    def pytest_terminal_summary(self, terminalreporter, config):
        from pruned_perf.analysis.ab_report import ABJudgement

        if not self.run.results:
            return
        terminalreporter.write_sep("=", "pruned_perf A/B")
        judgement = ABJudgement(self.session.results(), self.run.record())
        terminalreporter.write_line(judgement.render(fmt="plain"))
        if self.session.run.interrupted:
            terminalreporter.write_line(f"pruned_perf A/B: interrupted (Ctrl-C) after {len(self.run.results)} "
                                        f"point(s); exit {EXIT_INTERRUPTED}")
