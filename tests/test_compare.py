"""Verdicts: the Mann-Whitney test, direction, gating, point statuses, config, and the simulated
false-positive and detection rates that the default alpha and min_rounds were chosen for."""
import dataclasses
import itertools
import json
import math
import random
import statistics

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pruned_perf.analysis import compare as cmp
from pruned_perf.analysis import stats
from pruned_perf.analysis.config import (DEFAULT_ALPHA, DEFAULT_MIN_ROUNDS, DEFAULT_THRESHOLDS, Config,
                                         config_from_table, load_config)
from pruned_perf.analysis.baselines import HISTORY_RUNS
from pruned_perf.analysis.summaries import RunSummary, between_run_sd, point_summary
from pruned_perf.analysis.results import results_from_dict
from pruned_perf.core.errors import UserError

try:
    from tests.synthetic_results import make_point, make_results, measurement, noisy, point_id, scale_point, sweep
except ImportError:
    from synthetic_results import make_point, make_results, measurement, noisy, point_id, scale_point, sweep

SIM = settings(max_examples=3, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
NOISE = st.sampled_from(["normal", "lognormal"])


OUT_TOKENS = 128


def _point(rng, cv, noise, speed=1.0, f_rounds=1.0, f_ttft=1.0, mem=None, rounds=5):
    """One point: noisy rounds, first-token and per-token times from the same calls."""
    rounds_s = noisy(rng, 3.0 * speed * f_rounds, cv, rounds, noise)
    ttft_s = [min(t, r) for t, r in zip(noisy(rng, 0.05 * speed * f_ttft, cv, rounds, noise), rounds_s)]
    tpot_s = [(r - t) / (OUT_TOKENS - 1) for r, t in zip(rounds_s, ttft_s)]
    latency_s = statistics.median(rounds_s)
    return measurement(batch_size=8, output_tokens=OUT_TOKENS, rounds_s=rounds_s, ttft_rounds_s=ttft_s,
                       tpot_rounds_s=tpot_s, peak_mem_bytes=mem, latency_s=latency_s,
                       tokens_per_s=8 * OUT_TOKENS / latency_s, ttft_s=statistics.median(ttft_s),
                       tpot_s=statistics.median(tpot_s))


def _runs(rng, cv, noise, drift=0.0, history=1, rounds_factor=1.0, ttft_factor=1.0, mem_factor=None, rounds=5):
    """(baseline point, its history of run summaries, current point). Every run, the current one too,
    runs on a machine whose speed drifts by its own factor exp(N(0, drift))."""
    mem = None if mem_factor is None else 10 * 2**30
    speeds = [math.exp(rng.gauss(0.0, drift)) for _ in range(history + 1)]
    past = [_point(rng, cv, noise, speed, mem=mem, rounds=rounds) for speed in speeds[:-1]]
    current = _point(rng, cv, noise, speeds[-1], rounds_factor, ttft_factor,
                     None if mem is None else int(mem * mem_factor), rounds)
    return past[-1], [point_summary(p) for p in past], current


def _noise(history: list) -> dict:
    """The between-run SD of each metric from the stored runs, as compare() derives it (one point here)."""
    if len(history) < cmp.MIN_HISTORY:
        return {}
    runs = [RunSummary(run_id="run", slug="slug", points={"p": run}) for run in history]
    return between_run_sd(runs, {"p": "model"})["model"]


def _rates(trials, cv, noise, seed, config=None, **run_kwargs):
    """Per-metric and per-point rate of each verdict over `trials` simulated comparisons."""
    rng, config = random.Random(seed), config or Config()
    metric_counts, point_counts = {}, {}
    for _ in range(trials):
        base, history, cur = _runs(rng, cv, noise, **run_kwargs)
        pv = cmp.compare_point(base, cur, config, history, _noise(history))
        point_counts[pv.status] = point_counts.get(pv.status, 0) + 1
        for m in pv.metrics:
            key = (m.metric, m.verdict)
            metric_counts[key] = metric_counts.get(key, 0) + 1
    metric = lambda name, verdict: metric_counts.get((name, verdict), 0) / trials  # noqa: E731
    return metric, {k: v / trials for k, v in point_counts.items()}


TIMES = ("latency_s", "tokens_per_s", "ttft_s", "tpot_s")
# Drift of the machine's speed between runs, as a lognormal sigma: none, and 1%, enough to make step 1
# alone cry wolf (see the test below).
DRIFT = st.sampled_from([0.0, 0.01])


# ---------------------------------------------------------------- acceptance properties (simulated)

# 16000 trials: the true per-metric rate is at most 0.79% (alpha), 3 standard errors below 1%.
@SIM
@given(cv=st.floats(0.05, 0.10), noise=NOISE, seed=st.integers(0, 2**32 - 1), drift=DRIFT)
@example(cv=0.10, noise="lognormal", seed=1, drift=0.01)
def test_identical_code_rarely_regresses_even_when_the_machine_drifts(cv, noise, seed, drift):
    metric, point = _rates(16000, cv, noise, seed, drift=drift, history=HISTORY_RUNS)
    for name in TIMES:
        assert metric(name, "regressed") <= 0.01, (name, metric(name, "regressed"))
        assert metric(name, "improved") <= 0.01, (name, metric(name, "improved"))
    # The simulated first-token times have noise of their own (in the suite they come from the same
    # calls), so a point's status can be a false regression up to about twice as often as one metric.
    assert point.get("regressed", 0) <= 0.02


@SIM
@given(noise=NOISE, seed=st.integers(0, 2**32 - 1), drift=DRIFT)
@example(noise="normal", seed=7, drift=0.01)
def test_twenty_percent_slowdown_at_five_percent_noise_is_caught(noise, seed, drift):
    metric, point = _rates(2000, 0.05, noise, seed, drift=drift, history=HISTORY_RUNS, rounds_factor=1.2)
    assert metric("latency_s", "regressed") >= 0.95
    assert metric("tokens_per_s", "regressed") >= 0.95
    assert point.get("regressed", 0) >= 0.95
    assert metric("ttft_s", "regressed") <= 0.01  # prefill did not change


def test_without_the_between_run_step_drift_reads_as_regression():
    """Why step 2 exists: with the spread between runs ignored (one stored run, no drift allowance),
    a 2% drift of the machine makes identical code `regressed` far more often than alpha allows."""
    no_allowance = config_from_table({"drift_allowance": 0.0})
    _, point = _rates(4000, 0.03, "lognormal", 3, no_allowance, drift=0.02, history=1)
    assert point.get("regressed", 0) > 0.05
    _, point = _rates(4000, 0.03, "lognormal", 3, drift=0.02, history=5)
    assert point.get("regressed", 0) <= 0.02


@settings(max_examples=20, derandomize=True, deadline=None)
@given(factor=st.floats(2.2, 4.0), seed=st.integers(0, 2**32 - 1), noise=NOISE)
def test_direction_is_right_for_every_metric(factor, seed, noise):
    """With one stored run a time counts only beyond the drift allowance (100%): factors from 2.2."""
    rng, config = random.Random(seed), Config()

    def verdicts(**factors):
        base, history, cur = _runs(rng, 0.01, noise, **factors)
        return {m.metric: m.verdict for m in cmp.compare_point(base, cur, config, history).metrics}

    slower = verdicts(rounds_factor=factor, ttft_factor=factor, mem_factor=factor)
    assert slower == dict.fromkeys(["latency_s", "tokens_per_s", "ttft_s", "tpot_s", "peak_mem_bytes"], "regressed")
    faster = verdicts(rounds_factor=1 / factor, ttft_factor=1 / factor, mem_factor=1 / factor)
    assert faster == dict.fromkeys(["latency_s", "tokens_per_s", "ttft_s", "tpot_s", "peak_mem_bytes"], "improved")
    only_prefill = verdicts(ttft_factor=factor)
    assert only_prefill["ttft_s"] == "regressed"
    assert only_prefill["latency_s"] == "unchanged"


@settings(max_examples=40, derandomize=True, deadline=None)
@given(rounds=st.lists(st.floats(0.001, 100.0), min_size=1, max_size=12),
       ttft=st.lists(st.floats(0.0001, 1.0), min_size=1, max_size=12), mem=st.one_of(st.none(), st.integers(1, 2**40)))
def test_identical_samples_never_regress(rounds, ttft, mem):
    point = measurement(batch_size=4, output_tokens=64, rounds_s=rounds, ttft_rounds_s=ttft, peak_mem_bytes=mem)
    pv = cmp.compare_point(point, dataclasses.replace(point), Config())
    assert pv.status in ("unchanged", "inconclusive")
    assert all(m.verdict in ("unchanged", "inconclusive") for m in pv.metrics)
    assert all(m.change == 0 for m in pv.metrics)


# ---------------------------------------------------------------- Mann-Whitney U


def _brute_force_p(baseline, current, alternative):
    pooled = list(baseline) + list(current)
    ranks = stats._mid_ranks_x2(pooled)
    observed = sum(ranks[len(baseline):])
    sums = [sum(ranks[i] for i in idx) for idx in itertools.combinations(range(len(pooled)), len(current))]
    hits = [s >= observed if alternative == "greater" else s <= observed for s in sums]
    return sum(hits) / len(sums)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(a=st.lists(st.integers(0, 5), min_size=1, max_size=6), b=st.lists(st.integers(0, 5), min_size=1, max_size=6),
       alternative=st.sampled_from(["greater", "less"]))
def test_exact_p_equals_enumeration_with_ties(a, b, alternative):
    assert stats.mann_whitney_p(a, b, alternative) == pytest.approx(_brute_force_p(a, b, alternative), abs=1e-12)


def test_exact_p_known_values():
    # Complete separation of 5 and 5: 1 of C(10, 5) = 252 arrangements.
    assert stats.mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], "greater") == pytest.approx(1 / 252)
    assert stats.mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], "less") == 1.0
    # One swapped pair: 2 arrangements are at least as extreme.
    assert stats.mann_whitney_p([1, 2, 3, 4, 6], [5, 7, 8, 9, 10], "greater") == pytest.approx(2 / 252)
    assert stats.mann_whitney_p([3, 3, 3], [3, 3, 3], "greater") == 1.0
    assert stats.min_p_value(5, 5) == pytest.approx(1 / 252)


def test_normal_approximation_is_used_for_large_samples_and_matches_exact():
    rng = random.Random(3)
    a = [rng.gauss(1.0, 0.1) for _ in range(14)]
    b = [rng.gauss(1.08, 0.1) for _ in range(14)]
    assert math.comb(28, 14) > stats.EXACT_MAX_PERMUTATIONS
    ranks = stats._mid_ranks_x2(a + b)
    exact = stats._exact_p(ranks, 14, sum(ranks[14:]), "greater")
    assert stats.mann_whitney_p(a, b, "greater") == pytest.approx(exact, abs=0.005)
    tied_a, tied_b = [round(x, 2) for x in a], [round(x, 2) for x in b]  # ties
    ranks = stats._mid_ranks_x2(tied_a + tied_b)
    exact = stats._exact_p(ranks, 14, sum(ranks[14:]), "less")
    assert stats.mann_whitney_p(tied_a, tied_b, "less") == pytest.approx(exact, abs=0.01)
    assert stats.mann_whitney_p([2.0] * 20, [2.0] * 20, "greater") == 1.0


def test_mann_whitney_rejects_bad_input():
    with pytest.raises(ValueError):
        stats.mann_whitney_p([], [1.0], "greater")
    with pytest.raises(ValueError):
        stats.mann_whitney_p([1.0], [1.0], "two-sided")


# ---------------------------------------------------------------- gating


BASE = [1.00, 1.01, 0.99, 1.02, 0.98]


def test_threshold_beyond_but_not_significant_is_inconclusive():
    # Median +20%, but the samples interleave: no evidence strong enough.
    current = [0.97, 1.20, 1.22, 0.99, 1.25]
    v = cmp.sample_verdict("latency_s", BASE, current, 0.05, DEFAULT_ALPHA, DEFAULT_MIN_ROUNDS)
    assert v.change > 0.05 and v.p_value >= DEFAULT_ALPHA
    assert v.verdict == "inconclusive" and "p =" in v.reason


def test_too_few_rounds_is_inconclusive_never_a_pass():
    v = cmp.sample_verdict("latency_s", BASE, [1.0, 1.0, 1.01], 0.05, DEFAULT_ALPHA, DEFAULT_MIN_ROUNDS)
    assert v.verdict == "inconclusive" and "min_rounds" in v.reason
    v = cmp.sample_verdict("latency_s", BASE[:3], [2.0, 2.1, 2.2], 0.05, DEFAULT_ALPHA, 1)
    assert v.verdict == "inconclusive" and "cannot reach" in v.reason  # 1/C(6,3) = 0.05 >= alpha


def test_significant_change_within_threshold_is_unchanged():
    base = [1.05, 1.06, 1.055, 1.07, 1.052]
    current = [x * 1.03 for x in base]  # every round slower: significant, but only 3%
    v = cmp.sample_verdict("latency_s", base, current, 0.05, DEFAULT_ALPHA, DEFAULT_MIN_ROUNDS)
    assert v.p_value < DEFAULT_ALPHA and abs(v.change) < 0.05
    assert v.verdict == "unchanged"


def test_memory_is_threshold_only():
    assert cmp.memory_verdict(100, 103, 0.02).verdict == "regressed"
    assert cmp.memory_verdict(100, 97, 0.02).verdict == "improved"
    v = cmp.memory_verdict(100, 101, 0.02)
    assert v.verdict == "unchanged" and v.p_value is None


def test_samples_are_the_rounds_of_the_same_calls():
    s = cmp.metric_samples(measurement(batch_size=2, output_tokens=11, rounds_s=[1.1, 2.1], ttft_rounds_s=[0.1, 0.2],
                                       tpot_rounds_s=[0.1, 0.19], speedup_rounds=[1.5, 1.4]))
    assert s["tpot_s"] == [0.1, 0.19] and s["ttft_s"] == [0.1, 0.2] and s["speedup_vs_dense"] == [1.5, 1.4]
    assert s["tokens_per_s"] == pytest.approx([22 / 1.1, 22 / 2.1])
    assert "tpot_s" not in cmp.metric_samples(measurement(batch_size=2, output_tokens=1, rounds_s=[1.0],
                                                          ttft_rounds_s=[0.5], tpot_rounds_s=[]))


# ---------------------------------------------------------------- whole comparisons


def _results(benchmarks, path="r.json", **kw):
    return results_from_dict(make_results(benchmarks, **kw), path)


def test_self_comparison_is_all_unchanged():
    raw = make_results(sweep(batch_sizes=(1, 8, 64), oom_from={("llama-7b", "dense"): 64}))
    r = results_from_dict(raw, "r.json")
    c = cmp.compare(r, r)
    assert not c.has_regression
    assert {p.status for p in c.points} == {"unchanged"}
    saved = json.loads(json.dumps(c.to_dict()))  # serialisable as it is
    assert saved["baseline_fingerprint"]["slug"] == r.slug and saved["has_regression"] is False
    assert [p["id"] for p in saved["points"]] == list(r.points)


def test_one_slower_point_and_only_it_regresses():
    raw = make_results(sweep(batch_sizes=(1, 8, 64)))
    slow = point_id("llama-7b", "flap", 8, 12, 128)
    # one stored run: only a change beyond the drift allowance (100%) counts
    c = cmp.compare(results_from_dict(scale_point(raw, slow, 2.5), "cur.json"), results_from_dict(raw, "base.json"))
    assert c.has_regression
    assert [p.id for p in c.points if p.status == "regressed"] == [slow]
    assert c.by_id()[slow].metric("latency_s").change == pytest.approx(1.5)


def _history_file(raw, runs: int, seed: int = 11) -> dict:
    """raw as a baseline with `runs` stored runs: earlier runs are re-drawn with other noise."""
    from pruned_perf.analysis.results import run_summary
    from pruned_perf.analysis.results import HISTORY_KEY

    summaries = []
    for i in range(runs - 1):
        other = make_results(sweep(batch_sizes=(1, 8, 64), seed=seed + i), run_id=f"old-{i}")
        summaries.append(run_summary(results_from_dict(other, "old.json")))
    raw = json.loads(json.dumps(raw))
    raw[HISTORY_KEY] = [s.to_dict() for s in summaries + [run_summary(results_from_dict(raw, "base.json"))]]
    return raw


def test_one_stored_run_reads_a_like_slowdown_of_every_point_as_drift():
    """The whole machine 30% slower (every point alike): with one stored run that is within the drift
    allowance, so nothing regressed; the verdict says why."""
    raw = make_results(sweep(batch_sizes=(1, 8, 64)))
    slower = raw
    for pid in [b["extra_info"]["id"] for b in raw["benchmarks"]]:
        slower = scale_point(slower, pid, 1.3, ttft_factor=1.3)
    c = cmp.compare(results_from_dict(slower, "cur.json"), results_from_dict(raw, "base.json"))
    assert not c.has_regression and c.history_runs == 1
    latency = c.by_id()[point_id("llama-7b", "flap", 8, 12, 128)].metric("latency_s")
    assert latency.verdict == "noisy" and "spread between runs unknown, allowing 100%" in latency.reason


def test_with_a_history_a_slowdown_beyond_every_stored_run_regresses():
    raw = make_results(sweep(batch_sizes=(1, 8, 64)))
    slow = point_id("llama-7b", "dense", 8, 12, 128)
    base = results_from_dict(_history_file(raw, runs=4), "base.json")
    c = cmp.compare(results_from_dict(scale_point(raw, slow, 1.3, ttft_factor=1.3), "cur.json"), base)
    assert c.history_runs == 4
    assert [p.id for p in c.points if p.status == "regressed"] == [slow]
    assert c.by_id()[slow].metric("latency_s").verdict == "regressed"


def _drifting_history(raw, runs: int, spread: float, seed: int = 5) -> dict:
    """raw as a baseline whose `runs` stored runs each moved every point by its own factor exp(N(0, spread)),
    as single points do on a shared CPU (measured A/A: latency SD 8-34% per model)."""
    from pruned_perf.analysis.results import run_summary
    from pruned_perf.analysis.results import HISTORY_KEY

    rng = random.Random(seed)
    summaries = []
    for i in range(runs):
        moved = raw
        for pid in [b["extra_info"]["id"] for b in raw["benchmarks"] if not b["extra_info"]["oom"]]:
            factor = math.exp(rng.gauss(0.0, spread))
            moved = scale_point(moved, pid, factor, ttft_factor=factor)
        summaries.append(run_summary(results_from_dict(moved, f"run-{i}.json")))
    raw = json.loads(json.dumps(raw))
    raw[HISTORY_KEY] = [s.to_dict() for s in summaries]
    return raw


def test_a_change_within_the_spread_the_history_measured_is_noisy_a_larger_one_regresses():
    """With 3 stored runs whose points wandered 25% (SD) from run to run, +30% beyond the slowest of them
    lies within 2 SDs of their mean: noisy, with the reason. 2.5 times that does not."""
    raw = make_results(sweep(batch_sizes=(1, 8, 64)))
    slow = point_id("llama-7b", "dense", 8, 12, 128)
    base = results_from_dict(_drifting_history(raw, runs=3, spread=0.25), "base.json")
    stored = [run.median(slow, "latency_s") for run in base.runs]
    factor = 1.3 * max(stored) / base.points[slow].latency_s  # the current point: 30% beyond the slowest run
    within = cmp.compare(results_from_dict(scale_point(raw, slow, factor, ttft_factor=factor), "cur.json"), base)
    latency = within.by_id()[slow].metric("latency_s")
    assert latency.current_median > 1.25 * max(stored)  # beyond every stored run by far more than the threshold
    assert latency.verdict == "noisy" and "between-run SDs from the mean of 3 stored runs" in latency.reason
    assert not within.has_regression
    # the SD is measured from the history: 15 points x 3 runs drawn with a 25% spread
    assert 0.18 < within.between_run_sd["llama-7b"]["latency_s"] < 0.32
    from pruned_perf.analysis.report import render

    assert "over 2 between-run SDs from their mean (SD of latency: llama-7b 2" in render(
        results_from_dict(raw, "cur.json"), within, fmt="plain")
    beyond = cmp.compare(results_from_dict(scale_point(raw, slow, 2.5 * factor, ttft_factor=2.5 * factor),
                                           "cur.json"), base)
    assert beyond.by_id()[slow].metric("latency_s").verdict == "regressed"
    # the rule can be turned off: then the envelope alone decides
    off = cmp.compare(results_from_dict(scale_point(raw, slow, factor, ttft_factor=factor), "cur.json"), base,
                      config_from_table({"history_sigmas": 0}))
    assert off.by_id()[slow].metric("latency_s").verdict == "regressed"


def test_a_slowdown_while_the_probe_says_the_machine_was_slower_is_noisy_not_regressed():
    raw = make_results(sweep(batch_sizes=(1, 8, 64)))
    slow = point_id("llama-7b", "dense", 8, 12, 128)
    base = results_from_dict(_history_file(raw, runs=4), "base.json")
    busy = scale_point(raw, slow, 1.3, ttft_factor=1.3, probe_factor=1.4)
    latency = cmp.compare(results_from_dict(busy, "cur.json"), base).by_id()[slow].metric("latency_s")
    assert latency.verdict == "noisy" and "1.40x slower than in the baseline's run (steadiness probe)" in latency.reason
    steady = scale_point(raw, slow, 1.3, ttft_factor=1.3, probe_factor=1.05)  # within the probe's tolerance
    assert cmp.compare(results_from_dict(steady, "cur.json"), base).by_id()[slow].status == "regressed"


def _waited(raw: dict, pid: str, frac: float, counter: str = "runqueue_wait") -> dict:
    """raw with point `pid`'s threads waiting `frac` s for a CPU per second of its rounds (or, with
    counter "others_cpu", anything else using `frac` cores meanwhile)."""
    raw = json.loads(json.dumps(raw))
    for bench in raw["benchmarks"]:
        info = bench["extra_info"]
        if info["id"] == pid:
            info[f"{counter}_rounds_s"] = [frac * r for r in info["rounds_s"]]
            info[f"{counter}_frac"] = frac
    return raw


def test_a_slowdown_while_other_processes_held_the_cores_is_noisy_not_regressed():
    """The probe, timed between rounds, missed such load on the shared CPU (a tiny model 2.5-4.9x slower,
    the probe 1.7-4.3x); the run-queue wait during the rounds themselves shows it."""
    raw = make_results(sweep(batch_sizes=(1, 8, 64)))
    slow = point_id("llama-7b", "dense", 8, 12, 128)
    base = results_from_dict(_history_file(_waited(raw, slow, 0.01), runs=4), "base.json")
    slower = scale_point(raw, slow, 1.5, ttft_factor=1.5)  # the probe as steady as in the baseline's run
    busy = cmp.compare(results_from_dict(_waited(slower, slow, 0.8), "cur.json"), base).by_id()[slow]
    assert busy.status == "noisy"
    assert "its threads waited for a CPU 0.80 s per second of its rounds (baseline's run 0.01)" in \
        busy.metric("latency_s").reason
    # the same slowdown with its threads never kept waiting: a slower code path, caught
    steady = cmp.compare(results_from_dict(_waited(slower, slow, 0.05), "cur.json"), base).by_id()[slow]
    assert steady.status == "regressed"
    # the tolerance is a setting
    strict = config_from_table({"runqueue_tolerance": 1.0})
    assert cmp.compare(results_from_dict(_waited(slower, slow, 0.8), "cur.json"), base, strict) \
        .by_id()[slow].status == "regressed"
    # and an improvement over a baseline whose threads were kept waiting is no improvement
    # (one stored run, no drift allowance: only the wait can say `noisy`)
    busy_base = results_from_dict(_waited(slower, slow, 0.8), "base.json")
    no_drift = config_from_table({"drift_allowance": 0})
    faster = cmp.compare(results_from_dict(_waited(raw, slow, 0.0), "cur.json"), busy_base, no_drift)
    latency = faster.by_id()[slow].metric("latency_s")
    assert latency.verdict == "noisy" and "held the cores in the baseline's run" in latency.reason
    calm_base = results_from_dict(_waited(slower, slow, 0.0), "base.json")
    assert cmp.compare(results_from_dict(_waited(raw, slow, 0.0), "cur.json"), calm_base, no_drift) \
        .by_id()[slow].metric("latency_s").verdict == "improved"


def _on(raw: dict, device: str) -> dict:
    raw = json.loads(json.dumps(raw))
    for bench in raw["benchmarks"]:
        bench["extra_info"]["device"] = device
    return raw


def test_a_slowdown_while_other_work_used_the_cpus_is_noisy_even_if_no_thread_waited():
    """Seen on the 2-core CPU: with OMP_NUM_THREADS=1 and a one-thread hog on the other core, tiny-llama's
    threads waited 0.00 s per second; CPU used by anything else (here 1.0 cores) still shows the hog."""
    raw = _on(make_results(sweep(batch_sizes=(1, 8, 64))), "cpu")
    slow = point_id("llama-7b", "dense", 8, 12, 128)
    base = results_from_dict(_history_file(_waited(raw, slow, 0.01, "others_cpu"), runs=4), "base.json")
    slower = scale_point(raw, slow, 1.5, ttft_factor=1.5)  # probe steady, no wait recorded
    busy = cmp.compare(results_from_dict(_waited(slower, slow, 1.0, "others_cpu"), "cur.json"), base).by_id()[slow]
    assert busy.status == "noisy"
    assert "other processes or guests used the CPUs: 1.00 cores' worth during its rounds (baseline's run 0.01)" \
        in busy.metric("latency_s").reason
    quiet = cmp.compare(results_from_dict(_waited(slower, slow, 0.05, "others_cpu"), "cur.json"), base)
    assert quiet.by_id()[slow].status == "regressed"
    lax = config_from_table({"others_tolerance": 2.0})
    assert cmp.compare(results_from_dict(_waited(slower, slow, 1.0, "others_cpu"), "cur.json"), base, lax) \
        .by_id()[slow].status == "regressed"
    # a GPU run's host thread, alone on one of many cores, does not compete with work that never made it wait
    on_gpu = _on(raw, "cuda")
    gpu_base = results_from_dict(_history_file(_waited(on_gpu, slow, 0.01, "others_cpu"), runs=4), "base.json")
    gpu_slower = _waited(scale_point(on_gpu, slow, 1.5, ttft_factor=1.5), slow, 1.0, "others_cpu")
    assert cmp.compare(results_from_dict(gpu_slower, "cur.json"), gpu_base).by_id()[slow].status == "regressed"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_slower_probe_excuses_a_slowdown_on_every_device_even_if_no_thread_waited(device):
    """A machine can be slower with nothing queueing in it: on a virtual machine, other guests on the
    same physical cores. The probe sees that on the CPU as on a GPU."""
    raw = _on(make_results(sweep(batch_sizes=(1, 8, 64))), device)
    slow = point_id("llama-7b", "dense", 8, 12, 128)
    base = results_from_dict(_history_file(_waited(raw, slow, 0.01), runs=4), "base.json")
    slower = scale_point(raw, slow, 1.5, ttft_factor=1.5, probe_factor=1.5)
    c = cmp.compare(results_from_dict(_waited(slower, slow, 0.01), "cur.json"), base)
    assert c.by_id()[slow].metric("latency_s").verdict == "noisy"


def test_a_pruned_model_that_lost_its_speedup_regresses_once_the_history_knows_the_spread():
    raw = make_results(sweep(batch_sizes=(1, 8, 64)))
    slow = point_id("llama-7b", "depth", 1, 12, 128)
    current = results_from_dict(scale_point(raw, slow, 1.3), "cur.json")
    speedup = cmp.compare(current, results_from_dict(_history_file(raw, runs=4), "base.json")).by_id()[slow] \
        .metric("speedup_vs_dense")
    assert speedup.verdict == "regressed" and speedup.change == pytest.approx(1 / 1.3 - 1, rel=0.05)
    # one stored run: on a shared CPU even the ratio to dense drifts between runs (A/A: 0.57x..1.67x)
    one_run = cmp.compare(current, results_from_dict(raw, "base.json")).by_id()[slow].metric("speedup_vs_dense")
    assert one_run.verdict == "noisy"


def test_a_speedup_inflated_by_a_busy_machine_during_the_dense_point_is_not_a_reference():
    """Seen on a shared CPU: the baseline's dense point ran while the machine was busy (its probe 10x
    slower), so every speedup of its shape was inflated; the next run's honest speedup is not a drop."""
    raw = make_results(sweep(batch_sizes=(1,)))
    dense = point_id("llama-7b", "dense", 1, 12, 128)
    busy_baseline = scale_point(raw, dense, 3.0, ttft_factor=3.0, probe_factor=10.0)
    c = cmp.compare(results_from_dict(raw, "cur.json"), results_from_dict(busy_baseline, "base.json"))
    depth = c.by_id()[point_id("llama-7b", "depth", 1, 12, 128)].metric("speedup_vs_dense")
    assert depth.change == pytest.approx(1 / 3 - 1, rel=0.05)
    assert depth.verdict == "noisy" and "during this point than during its dense point" in depth.reason
    assert not c.has_regression


def test_nothing_in_common_is_an_error_not_a_pass():
    base = _results([make_point("a", "dense", 1)], "base.json")
    cur = _results([make_point("b", "dense", 1)], "cur.json")
    with pytest.raises(UserError, match="nothing to compare: none of the 1 points of cur.json is in the baseline"):
        cmp.compare(cur, base)


def test_oom_transitions_new_and_missing():
    a = make_point("m", "dense", 8)
    b = make_point("m", "dense", 16)
    c_ok = make_point("m", "dense", 32)
    gone = make_point("m", "dense", 64)
    base = _results([a, b, c_ok, gone])
    cur = _results([make_point("m", "dense", 8, oom=True), make_point("m", "dense", 16), c_ok,
                    make_point("m", "dense", 128)])
    base.points[point_id("m", "dense", 16, 12, 128)].oom = True
    statuses = {p.id: p.status for p in cmp.compare(cur, base).points}
    assert statuses[point_id("m", "dense", 8, 12, 128)] == "newly-oom"
    assert statuses[point_id("m", "dense", 16, 12, 128)] == "no-longer-oom"
    assert statuses[point_id("m", "dense", 32, 12, 128)] == "unchanged"
    assert statuses[point_id("m", "dense", 128, 12, 128)] == "new"
    assert statuses[point_id("m", "dense", 64, 12, 128)] == "missing"
    assert cmp.compare(cur, base).has_regression  # newly OOM is a regression
    # each verdict carries its point and the measurements it had: a new one only this run's, a missing one
    # only the baseline's (what places it in a table), and the JSON says where each point belongs
    verdicts = cmp.compare(cur, base).by_id()
    new, missing = verdicts[point_id("m", "dense", 128, 12, 128)], verdicts[point_id("m", "dense", 64, 12, 128)]
    assert (new.baseline, new.current) == (None, cur.points[new.id]) and new.point.batch_size == 128
    assert (missing.baseline, missing.current) == (base.points[missing.id], None)
    assert missing.to_dict()["info"] == {"model": "m", "method": "dense", "params": missing.baseline.params,
                                         "batch_size": 64, "input_tokens": 12, "output_tokens": 128,
                                         "backend": "eager", "oom": False}


def test_other_hardware_is_refused_unless_allowed():
    pts = [make_point()]
    base = _results(pts)
    cur = results_from_dict(make_results(pts, slug="nvidia-h100-80gb", torch="2.12.0"), "cur.json")
    with pytest.raises(UserError, match="nvidia-h100-80gb.*nvidia-h200-140gb|nvidia-h200-140gb.*nvidia-h100-80gb"):
        cmp.compare(cur, base)
    c = cmp.compare(cur, base, allow_mismatch=True)
    assert any("hardware differs" in w for w in c.warnings)
    assert any("torch differs" in w for w in c.warnings)


def test_software_versions_are_warnings_not_errors():
    pts = [make_point()]
    c = cmp.compare(results_from_dict(make_results(pts, driver="580.1", cuda="13.0"), "c.json"), _results(pts))
    assert sorted(w.split()[0] for w in c.warnings) == ["cuda", "driver"]
    assert not c.has_regression


def test_group_override_changes_threshold_for_matching_points():
    raw = make_results(sweep(methods=("dense", "flap"), batch_sizes=(1,)))
    slow = point_id("llama-7b", "flap", 1, 12, 128)
    cur, base = results_from_dict(scale_point(raw, slow, 2.5), "c.json"), results_from_dict(raw, "b.json")
    lenient = config_from_table({"groups": [{"match": "llama-7b-flap-*", "latency_s": 2.0, "tokens_per_s": 2.0,
                                             "tpot_s": 2.0, "speedup_vs_dense": 2.0}]})
    assert not cmp.compare(cur, base, lenient).has_regression
    strict_elsewhere = config_from_table({"groups": [{"match": "llama-7b-dense-*", "latency_s": 0.5}]})
    assert cmp.compare(cur, base, strict_elsewhere).has_regression


# ---------------------------------------------------------------- config


def test_config_defaults_match_repository_pyproject():
    assert Config().thresholds == DEFAULT_THRESHOLDS
    repo = load_config(__file__.rsplit("/tests/", 1)[0] + "/pyproject.toml")
    for key, value in repo.thresholds.items():
        assert value == DEFAULT_THRESHOLDS[key]


def test_config_without_pyproject_is_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load_config()
    assert (c.alpha, c.min_rounds, c.thresholds) == (DEFAULT_ALPHA, DEFAULT_MIN_ROUNDS, DEFAULT_THRESHOLDS)


def test_config_reads_groups_in_order(tmp_path):
    py = tmp_path / "pyproject.toml"
    py.write_text("""
[tool.pruned_perf]
alpha = 0.01
[tool.pruned_perf.thresholds]
latency_s = 0.1
[[tool.pruned_perf.groups]]
match = "llama-7b-*"
latency_s = 0.2
min_rounds = 7
[[tool.pruned_perf.groups]]
match = "llama-7b-flap-*"
latency_s = 0.3
alpha = 0.001
""")
    c = load_config(py)
    assert c.settings_for("vicuna-13b-dense-in12-out128-M1-eager") == c.settings_for("x")
    assert c.settings_for("x").thresholds["latency_s"] == 0.1 and c.settings_for("x").alpha == 0.01
    s = c.settings_for("llama-7b-flap-in12-out128-M1-eager")
    assert (s.thresholds["latency_s"], s.alpha, s.min_rounds) == (0.3, 0.001, 7)
    assert c.settings_for("llama-7b-dense-in12-out128-M1-eager").thresholds["latency_s"] == 0.2


@pytest.mark.parametrize("table, message", [
    ({"threshold": {}}, "unknown key.*threshold.*valid keys: thresholds, groups, min_rounds, alpha, drift_allowance"),
    ({"drift_allowance": -0.1}, "drift_allowance.*threshold must be"),
    ({"thresholds": {"latency": 0.1}}, "unknown key.*latency;.*latency_s"),
    ({"thresholds": {"latency_s": -1}}, "threshold must be"),
    ({"alpha": 2}, "alpha must be"),
    ({"history_sigmas": -1}, "history_sigmas must be a number of standard deviations >= 0.*got -1"),
    ({"runqueue_tolerance": "high"}, "runqueue_tolerance must be seconds of waiting per second of rounds.*'high'"),
    ({"others_tolerance": -1}, r"others_tolerance must be cores of CPU used by others per second of rounds >= 0 "
                               r"\(0.25\), got -1"),
    ({"min_rounds": 0}, "min_rounds must be"),
    ({"groups": [{"latency_s": 0.1}]}, "needs match"),
    ({"groups": [{"match": "*", "speed": 1}]}, r"groups\[0\].*unknown key.*speed"),
])
def test_config_errors_name_the_problem(table, message):
    with pytest.raises(UserError, match=message):
        config_from_table(table, source="pyproject.toml")


def test_config_bad_files(tmp_path):
    with pytest.raises(UserError, match="no such pyproject"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[tool.pruned_perf\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)


def test_data_on_one_side_only_is_inconclusive_not_a_pass():
    base = measurement(output_tokens=8, rounds_s=[1.0] * 5, ttft_rounds_s=[0.1] * 5, peak_mem_bytes=100)
    cur = measurement(output_tokens=8, rounds_s=[1.0] * 5, ttft_rounds_s=[], peak_mem_bytes=None)
    pv = cmp.compare_point(base, cur, Config())
    assert pv.status == "inconclusive"
    assert pv.metric("ttft_s").reason == "no ttft_s data in the current"
    assert pv.metric("peak_mem_bytes").verdict == "inconclusive"
    assert pv.metric("latency_s").verdict == "unchanged"
    empty = measurement(output_tokens=8, rounds_s=[])
    assert cmp.compare_point(empty, dataclasses.replace(empty), Config()).status == "inconclusive"
