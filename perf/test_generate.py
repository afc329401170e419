"""The perf suite: generation latency, throughput, TTFT and memory over model x method x tokens x batch.

Run `pytest perf/ --benchmark-json results.json` (options: `pytest perf/ --help`, section pruned_perf).
Each point is one measurement (docs/results-schema.md); the plugin in pruned_perf/pytest_plugin.py
chooses the points and keeps one model on the device at a time.
"""
import pytest


def test_generate(pp_point, pp_session, benchmark):
    measurement = pp_session.measure(pp_point, benchmark)
    if measurement.oom:
        reason = "a smaller batch ran out of memory" if measurement.oom_skipped else "out of memory"
        pytest.skip(f"{reason}: recorded as OOM")
    assert measurement.tokens_per_s == pytest.approx(
        pp_point.batch_size * pp_point.output_tokens / measurement.latency_s)
    assert 0 < measurement.ttft_s < measurement.latency_s
