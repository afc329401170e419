"""The pytest glue of `pytest perf/ --pp-ab BASE` (the driver is pruned_perf.bench.ab): start the A/B
before the session (a base that cannot start is one `error:` line and exit 2, before any timing), hand
each point to the driver, and add the A/B to the results, the terminal and the exit status.
"""
from __future__ import annotations

import sys

import pytest

from pruned_perf.analysis.ab import Worker
from pruned_perf.core.errors import UserError

AB_OPTIONS = ("ab-pairs", "ab-look", "ab-timeout-s")


def ab_settings_for(options: dict):
    """point id (or None: the suite's) -> ABSettings, from [tool.pruned_perf] and the --pp-ab-* options."""
    from pruned_perf.analysis.config import load_config
    from pruned_perf.analysis.paired import ABSettings
    from pruned_perf.bench.sweep import parse_ints

    config = load_config()
    overrides = {}
    pairs = parse_ints(options.get("ab-pairs"), "--pp-ab-pairs")
    look = parse_ints(options.get("ab-look"), "--pp-ab-look")
    if pairs:
        overrides["max_pairs"] = pairs[0]
    if look:
        overrides["pairs_per_look"] = look[0]
    elif pairs:  # a cap below the default look: one look at the cap
        overrides["pairs_per_look"] = min(pairs[0], ABSettings().pairs_per_look)
    ABSettings.from_config(config, None, **overrides)  # a bad combination: one error before any worker starts

    def settings_for(point_id: str | None):
        return ABSettings.from_config(config, point_id, **overrides)
    return settings_for


def start_ab(config, session, options: dict) -> int | None:
    """Start both workers for `session` (a PerfSession); None to go on, 2 when the base cannot start."""
    from pruned_perf.bench.ab import DEFAULT_TIMEOUT_FLOOR_S, ABRun
    from pruned_perf.bench.sweep import parse_seconds

    try:
        settings_for = ab_settings_for(options)
        floor_s = parse_seconds(options.get("ab-timeout-s"), "--pp-ab-timeout-s")
    except UserError as exc:
        raise pytest.UsageError(f"pruned_perf: {exc}") from None
    sweep = session.run.sweep
    run = ABRun(options["ab"], options, options.get("cache-dir") or ".pp-cache", settings_for,
                family=len(sweep.points), log=session.run.log,
                timeout_floor_s=DEFAULT_TIMEOUT_FLOOR_S if floor_s is None else floor_s, solo_rounds=sweep.rounds)
    config.add_cleanup(run.close)  # also after Ctrl-C and internal errors
    try:
        run.start()
    except UserError as exc:
        run.close()
        sys.stderr.write(f"error: {exc}\n")
        return 2
    session.ab = run
    config.pluginmanager.register(ABHooks(session), "pruned_perf_ab")
    return None


def describe_line(described: dict) -> str:
    """One side as the session prints it: what it runs, so a user sees the comparison compared what
    they meant."""
    role = described.get("role")
    return f"pruned_perf A/B {role}: {Worker.from_dict(described, role, 'the A/B worker').describe()}"


class ABHooks:
    """The hooks an A/B session adds (registered once its workers have started)."""

    def __init__(self, session):
        self.session = session
        self.run = session.ab

    @pytest.hookimpl(trylast=True)  # after pytest's header; printed with -q too
    def pytest_sessionstart(self, session):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for role in ("base", "head"):
                reporter.write_line(describe_line(self.run.described[role]))

    @pytest.hookimpl(trylast=True)  # after the plugin's own machine_info
    def pytest_benchmark_update_machine_info(self, config, machine_info):
        machine_info.setdefault("pruned_perf", {})["ab"] = self.run.describe()

    @pytest.hookimpl(trylast=True)  # after the plugin's own hook, which writes machine_info.pruned_perf
    def pytest_benchmark_update_json(self, config, benchmarks, output_json):
        """machine_info.pruned_perf["ab"], and each point's "ab" and "ab_base" (the plugin's hook writes
        every extra_info anew from its typed Measurement, which has neither)."""
        output_json["machine_info"].setdefault("pruned_perf", {})["ab"] = self.run.describe()
        results = {result.id: result.to_dict() for result in self.run.results}
        for bench in output_json["benchmarks"]:
            ab = results.get((bench.get("extra_info") or {}).get("id"))
            if ab is not None:
                bench["extra_info"].update(ab=ab["ab"], ab_base=ab["ab_base"])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if self.regressed() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def regressed(self) -> bool:
        from pruned_perf.analysis.paired import REGRESSED

        return any(result.ab.status == REGRESSED for result in self.run.results)

    @pytest.hookimpl(trylast=True)  # the session ends with the A/B table, after the plugin's own
    def pytest_terminal_summary(self, terminalreporter, config):
        from pruned_perf.analysis.ab_report import render

        if not self.run.results:
            return
        terminalreporter.write_sep("=", "pruned_perf A/B")
        terminalreporter.write_line(render(self.ab_results(), fmt="plain"))

    def ab_results(self):
        """What this session's A/B measured, as ab-stats' ABResults (ab.json reads back the same)."""
        from pruned_perf.analysis.ab import ABPoint, ABResults, Worker

        run = self.run
        workers = {role: Worker.from_dict(run.described.get(role, {}), role, "this session") for role in ("base", "head")}
        points = {r.id: ABPoint(r.id, r.head, r.base, r.ab) for r in run.results}
        return ABResults(self.session.results(), workers, run.settings_for(None), points)
