"""The perf suite: generation latency, throughput, TTFT and memory over model x method x tokens x batch.

Run `pytest perf/ --benchmark-json results.json` (options: `pytest perf/ --help`, section pruned_perf).
Each point is one measurement (docs/results-schema.md); the plugin in pruned_perf/bench/pytest_plugin.py
chooses the points, and the point loop in pruned_perf/bench/session.py keeps one model on the device at a time.
With `--pp-ab BASE` each point is an interleaved A/B of this tree against BASE (pruned_perf/bench/ab.py):
two worker processes measure it, and the point is the new side's; the results' `pruned_perf_ab` holds the
verdict (docs/results-schema.md).

A point fails only for a real defect: a wrong output length (measure raises), an error other than
running out of memory, or a timing that is not a finite number. It never fails because one timing
exceeded another: on a busy machine any such order can break.
"""
import math

import pytest


def test_generate(pp_point, pp_session, benchmark):
    measurement = pp_session.measure(pp_point, benchmark)
    if measurement.oom:
        reason = "a smaller batch ran out of memory" if measurement.oom_skipped else "out of memory"
        pytest.skip(f"{reason}: recorded as OOM")
    values = [*measurement.rounds_s, *measurement.ttft_rounds_s, *measurement.tpot_rounds_s]
    assert values and all(math.isfinite(v) for v in values), f"{pp_point.id}: a timing is not finite: {values}"
