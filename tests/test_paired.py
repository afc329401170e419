"""The A/B verdict (pruned_perf/analysis/paired.py): the statistic, the simulation that chose it and
its defaults (docs/ab-verdicts.md), the busy machine, the deterministic metrics, the records' round trip.

The simulated machine is tests/synthetic_ab.py's: a random walk per round plus per-round noise, pairs
in counterbalanced order. Every simulation is seeded.
"""
from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from dataclasses import replace

import pytest

from pruned_perf.analysis import paired
from pruned_perf.analysis.config import config_from_table
from pruned_perf.analysis.paired import (ABSettings, INCONCLUSIVE, IMPROVED, MetricAB, NEWLY_OOM, Pair, PointAB,
                                         REGRESSED, SideRound, UNCHANGED, family_tail, judge, settled)
from pruned_perf.core.errors import UserError

try:
    from tests.synthetic_ab import NOISE, STEP, machine_pairs, run_point
    from tests.synthetic_results import measurement
except ImportError:
    from synthetic_ab import NOISE, STEP, machine_pairs, run_point
    from synthetic_results import measurement

SUITE = 24  # points of the A/A suite


def machine_log_ratios(rng: random.Random, n: int, ratio: float = 1.0, noise: float = NOISE,
                       step: float = STEP) -> dict:
    """What `machine_pairs` gives through `paired.log_ratios`, drawn directly (fast, for the large
    simulations): the walk up to a pair's first round cancels, the second round saw one more step
    (+ when the head ran second, - when the base did), and each round brings its own noise."""
    out = {metric: [] for metric in ("latency_s", "ttft_s", "tpot_s")}
    spread = math.sqrt(2) * noise
    for i in range(n):
        walk = rng.gauss(0, step) * (1 if i % 2 == 0 else -1) + math.log(ratio)
        for values in out.values():
            values.append(walk + rng.gauss(0, spread))
    return out


# ---- the statistic ----

def test_the_signed_rank_null_is_exact():
    for n in range(1, 9):
        brute = [sum(r for r, s in zip(range(1, n + 1), signs) if s) for signs in itertools.product((0, 1), repeat=n)]
        cdf = paired._signed_rank_cdf(n)
        assert len(cdf) == n * (n + 1) // 2 + 1
        for t, p in enumerate(cdf):
            assert p == pytest.approx(sum(v <= t for v in brute) / 2 ** n)


def test_hodges_lehmann_and_the_exact_interval_by_hand():
    # Walsh averages of 1, 2, 3, 10: 1 1.5 2 2 2.5 3 5.5 6 6.5 10
    assert paired.walsh_averages([1, 2, 3, 10]) == [1, 1.5, 2, 2, 2.5, 3, 5.5, 6, 6.5, 10]
    assert paired.hodges_lehmann([1, 2, 3, 10]) == 2.75
    d = [0.3, -0.1, 0.2, 0.05, 0.4, 0.1]
    # 6 pairs: P(T+ = 0) = 1/64, so at that tail the interval is [min, max], and at less it is infinite
    assert paired.wilcoxon_interval(d, 1 / 64) == (min(d), max(d))
    assert paired.wilcoxon_interval(d, 1 / 65) == (-math.inf, math.inf)
    # P(T+ <= 2) = 3/64: the third smallest and third largest Walsh averages
    walsh = paired.walsh_averages(d)
    assert paired.wilcoxon_interval(d, 3 / 64) == (walsh[2], walsh[-3])


def test_the_family_level_is_alpha_over_points_tests_and_the_looks_that_can_decide():
    settings = ABSettings()  # looks at 6 12 18 24 30
    tail = family_tail(settings, 24)
    # 24 points x 3 distinct tests: at 5 looks 1.4e-5 needs 17 pairs, so only 18, 24, 30 can decide: 3 looks
    assert settings.alpha == 0.005
    assert tail == pytest.approx(0.005 / (24 * 3 * 3))
    assert paired._min_pairs(tail) == 16
    assert sum(n >= paired._min_pairs(tail) for n in paired.look_sizes(settings)) <= 3
    assert family_tail(settings, 1) > family_tail(settings, 24) > family_tail(settings, 500)
    assert paired.look_sizes(ABSettings(pairs_per_look=8, max_pairs=30)) == [8, 16, 24, 30]


def _bootstrap_interval(d: list, tail: float, rng: random.Random, resamples: int = 1000) -> tuple:
    """The candidate not chosen: geometric mean (mean of the log-ratios), percentile bootstrap."""
    means = sorted(statistics.fmean(rng.choices(d, k=len(d))) for _ in range(resamples))
    k = min(int(tail * resamples), resamples - 1)
    return means[k], means[-1 - k]


def test_the_fast_draws_are_the_machine_model():
    rng = random.Random(12)
    slow, fast = [], []
    for _ in range(300):
        pairs = machine_pairs(rng, 6, ratio=1.1)
        slow += paired.log_ratios(pairs, "latency_s")
        fast += machine_log_ratios(rng, 6, ratio=1.1)["latency_s"]
    assert statistics.fmean(fast) == pytest.approx(statistics.fmean(slow), abs=0.01)
    assert statistics.stdev(fast) == pytest.approx(statistics.stdev(slow), rel=0.08)
    assert statistics.stdev(fast) == pytest.approx(math.sqrt(2 * NOISE ** 2 + STEP ** 2), rel=0.08)


def test_simulation_the_exact_interval_holds_its_level_under_drift_and_the_bootstrap_does_not():
    """Why Hodges-Lehmann with the exact Wilcoxon interval: identical code on the drifting machine,
    the share of runs whose interval lies above 0 (what a false `regressed` needs), at a level where
    that share can be measured. The percentile bootstrap misses far more often than it claims with few
    pairs, and a suite-wide level of ~1e-5 is beyond any bootstrap's resamples anyway."""
    rng = random.Random(11)
    tail, runs = 0.025, 1500
    boot_runs = 600
    for n in (6, 12, 30):
        exact_misses = boot_misses = 0
        for _ in range(runs):
            d = machine_log_ratios(rng, n)["latency_s"]
            exact_misses += paired.wilcoxon_interval(d, tail)[0] > 0
            if n == 6 and boot_runs > 0:
                boot_runs -= 1
                boot_misses += _bootstrap_interval(d, tail, rng, resamples=400)[0] > 0
        assert exact_misses / runs <= tail + 0.01, (n, exact_misses)
        if n == 6:
            assert boot_misses / 600 > 2 * tail, boot_misses


def test_simulation_a_24_point_aa_suite_regresses_in_at_most_1_percent_of_runs():
    """At the defaults, each point's three distinct timing tests at every look that can decide, with no
    early stop (which only removes chances): a suite cries wolf if any of them regresses."""
    settings = ABSettings()
    tail = family_tail(settings, SUITE)
    threshold = settings.threshold("latency_s")
    looks = [n for n in paired.look_sizes(settings) if n >= paired._min_pairs(tail)]
    rng = random.Random(2024)
    suites, wolves = 200, 0
    for _ in range(suites):
        cried = False
        for _ in range(SUITE):
            d = machine_log_ratios(rng, settings.max_pairs)
            for metric, n in itertools.product(d, looks):
                cried |= paired.timing_verdict(metric, d[metric][:n], threshold, tail).verdict == REGRESSED
        wolves += cried
    assert wolves <= 0.01 * suites, wolves


def test_simulation_a_15_percent_slowdown_is_caught_in_95_percent_of_points_at_the_defaults():
    settings = ABSettings()
    rng = random.Random(15)
    points = [run_point(rng, settings, SUITE, ratio=1.15) for _ in range(150)]
    caught = sum(ab.status == REGRESSED for ab in points)
    assert caught >= 0.95 * len(points), caught
    assert not any(ab.status in (UNCHANGED, IMPROVED) for ab in points)
    # the schedule stops early once it is settled: on average well before the cap
    assert statistics.fmean(len(ab.pairs) for ab in points) < 0.85 * settings.max_pairs


def test_simulation_identical_code_is_never_regressed_and_its_latency_often_unchanged():
    """A point is `unchanged` only when latency, TTFT and TPOT all are: the rest run to the cap and say
    how many more pairs would settle them."""
    settings = ABSettings()
    rng = random.Random(7)
    points = [run_point(rng, settings, SUITE) for _ in range(100)]
    statuses = [ab.status for ab in points]
    assert statuses.count(REGRESSED) == 0 and statuses.count(IMPROVED) == 0
    assert sum(ab.metric("latency_s").verdict == UNCHANGED for ab in points) >= 40
    assert statuses.count(UNCHANGED) >= 10
    for ab in points:
        if ab.status == INCONCLUSIVE:  # at the cap, or stopped where the cap could not settle it
            assert "more would settle it" in ab.reason or "threshold" in ab.reason
            open_ = [m for m in ab.metrics if m.verdict == INCONCLUSIVE]
            assert ab.final or (len(ab.pairs) >= paired.FUTILITY_FROM_PAIRS
                                and paired.futile(open_, len(ab.pairs), settings))


# The real 2-core CPU's pairs of identical code (docs/verdict-trials.md, "fourth round"): latency and TPOT
# spread by about 0.04, TTFT of a 12-token prompt by 0.1-0.3.
REAL_LATENCY_NOISE, REAL_TTFT_NOISES = 0.03, (0.1, 0.2)


@pytest.mark.parametrize("ttft_noise", REAL_TTFT_NOISES)
def test_simulation_futility_stops_identical_code_whose_ttft_the_cap_cannot_settle(ttft_noise):
    settings = ABSettings()
    rng = random.Random(21)
    points = [run_point(rng, settings, SUITE, noise=REAL_LATENCY_NOISE, ttft_noise=ttft_noise) for _ in range(100)]
    assert not any(ab.status in (REGRESSED, IMPROVED) for ab in points)
    assert sum(ab.metric("latency_s").verdict == UNCHANGED for ab in points) >= 90
    stopped = [ab for ab in points if ab.status == INCONCLUSIVE and len(ab.pairs) < settings.max_pairs]
    assert len(stopped) >= 30
    for ab in stopped:
        ttft = ab.metric("ttft_s")
        assert len(ab.pairs) >= paired.FUTILITY_FROM_PAIRS and ttft.verdict == INCONCLUSIVE
        assert ab.reason.endswith(", beyond 2x the cap: stopped"), ab.reason
        assert ttft.more_pairs is None or ttft.pairs + ttft.more_pairs > paired.FUTILITY_FACTOR * settings.max_pairs
    assert statistics.fmean(len(ab.pairs) for ab in points) < 0.8 * settings.max_pairs


@pytest.mark.parametrize("ttft_noise", REAL_TTFT_NOISES)
def test_simulation_futility_stop_still_catches_what_the_cap_catches(ttft_noise):
    """With the futility stop and without it (a factor no projection exceeds), the same slowdowns are
    caught: a 10% one of everything, and one of TTFT alone (the one-thread commit at M=8)."""
    settings = ABSettings()
    for ratio, ttft_ratio in ((1.1, 1.1), (1.05, 1.45)):
        caught = {}
        for factor in (paired.FUTILITY_FACTOR, math.inf):
            rng = random.Random(22)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(paired, "FUTILITY_FACTOR", factor)
                points = [run_point(rng, settings, SUITE, ratio=ratio, noise=REAL_LATENCY_NOISE, ttft_noise=ttft_noise,
                                    ttft_ratio=ttft_ratio) for _ in range(60)]
            caught[factor] = sum(ab.status == REGRESSED for ab in points)
        assert caught[paired.FUTILITY_FACTOR] == caught[math.inf] >= 57, (ratio, ttft_ratio, caught)


def test_simulation_a_position_bias_cancels_through_the_counterbalanced_order():
    """The round second in its pair 7% slower (identical code): with the order alternating the estimate
    is unbiased; with base always first it would read as a 7% slowdown."""
    bias = math.log(1.07)
    rng = random.Random(3)
    balanced = [paired.hodges_lehmann(paired.log_ratios(machine_pairs(rng, 30, position_bias=bias), "latency_s"))
                for _ in range(300)]
    fixed = [paired.hodges_lehmann(paired.log_ratios(machine_pairs(rng, 30, position_bias=bias, order="fixed"),
                                                     "latency_s"))
             for _ in range(300)]
    assert abs(statistics.fmean(balanced)) < 0.005
    assert statistics.fmean(fixed) == pytest.approx(bias, abs=0.01)
    points = [run_point(rng, ABSettings(), SUITE, position_bias=bias) for _ in range(60)]
    assert not any(ab.status == REGRESSED for ab in points)


def test_inconclusive_says_how_many_more_pairs_would_settle_it():
    rng = random.Random(5)
    # a 20% slowdown after 6 pairs: no interval yet at the suite's level (15 pairs needed)
    ab = judge(machine_pairs(rng, 6, ratio=1.2), None, None, ABSettings(), SUITE, final=False)
    latency = ab.metric("latency_s")
    assert latency.verdict == INCONCLUSIVE and latency.ci_low is None and latency.ci_high is None
    assert latency.more_pairs >= 9 and "more would settle it" in latency.reason
    assert not settled(ab, ABSettings()) and "6 pairs" in ab.reason
    # a 20% slowdown at 30 pairs settles it
    assert judge(machine_pairs(rng, 30, ratio=1.2), None, None, ABSettings(), SUITE, final=True).status == REGRESSED
    # within the threshold: an estimate nearer it needs more pairs to be `unchanged` than one at 1.0
    spread = [-0.1, 0.1, -0.05, 0.05, 0.0, 0.08]
    centered = [x - paired.hodges_lehmann(spread) for x in spread]
    far, near = (paired.timing_verdict("latency_s", [x + shift for x in centered], 0.05, 1e-4) for shift in (0, 0.03))
    assert far.verdict == near.verdict == INCONCLUSIVE and far.ratio == pytest.approx(1)
    assert near.more_pairs > 2 * far.more_pairs


def test_tokens_per_s_is_judged_in_its_own_direction():
    rng = random.Random(9)
    ab = judge(machine_pairs(rng, 30, ratio=1.3), None, None, ABSettings(), 1, final=True)
    latency, tokens = ab.metric("latency_s"), ab.metric("tokens_per_s")
    assert latency.verdict == tokens.verdict == REGRESSED
    assert latency.ratio > 1.2 and tokens.ratio == pytest.approx(1 / latency.ratio)
    assert tokens.ci_high < 1 < latency.ci_low
    faster = judge(machine_pairs(rng, 30, ratio=0.7), None, None, ABSettings(), 1, final=True)
    assert faster.status == IMPROVED and faster.metric("tokens_per_s").verdict == IMPROVED


# ---- machine state ----

@pytest.mark.parametrize("load,named", [((0.6, 0.0), "threads waited up to 0.60 s per s for a CPU"),
                                        ((0.0, 0.9), "others used up to 0.90 cores")])
def test_a_busy_machine_makes_every_timing_inconclusive_never_a_verdict(load, named):
    rng = random.Random(1)
    cpu = measurement(device="cpu", output_tokens=16)
    for ratio in (1.0, 1.4, 0.6):
        ab = judge(machine_pairs(rng, 30, ratio=ratio, load=load), cpu, cpu, ABSettings(), 1, final=True)
        assert ab.status == INCONCLUSIVE and ab.reason.startswith("machine busy in 30 of 30 pairs: ") and named in ab.reason
        for name in paired.TIMING_METRICS:
            assert ab.metric(name).verdict == INCONCLUSIVE and ab.metric(name).reason == ab.busy
        assert settled(ab, ABSettings())
    # the tolerances come from the settings; the load is the most over both sides' rounds
    lenient = ABSettings(runqueue_tolerance=1.0, others_tolerance=1.0)
    ab = judge(machine_pairs(rng, 30, ratio=1.4, load=load), cpu, cpu, lenient, 1, final=True)
    assert ab.status == REGRESSED and ab.busy is None
    assert (ab.runqueue_wait_frac, ab.others_cpu_frac) == load


def _hogged(pairs, hit):
    """The base's rounds of the pairs in `hit` slowed 15x by a hog, as in a trial (12-20x)."""
    return [replace(p, base=replace(p.base, latency_s=p.base.latency_s * 15, runqueue_wait_frac=0.97,
                                    others_cpu_frac=0.97)) if i in hit else p for i, p in enumerate(pairs)]


def test_contended_pairs_are_left_out_and_a_point_with_many_of_them_is_busy():
    rng = random.Random(3)
    cpu = measurement(device="cpu", output_tokens=16)
    quiet = machine_pairs(rng, 30, ratio=1.0, load=(0.02, 0.02))
    calm = judge(quiet, cpu, cpu, ABSettings(), 1, final=True)
    assert calm.busy is None and calm.contended == 0
    # a hog in 2 pairs of 30: those two never enter the statistic, the other 28 judge
    few = judge(_hogged(quiet, {0, 1}), cpu, cpu, ABSettings(), 1, final=True)
    assert few.busy is None and few.contended == 2
    assert few.reason.endswith("(2 contended pairs left out)")
    rest = judge(quiet[2:], cpu, cpu, ABSettings(), 1, final=True)
    assert few.metrics == rest.metrics and few.status == rest.status
    assert (few.runqueue_wait_frac, few.others_cpu_frac) == (0.97, 0.97)  # the most load seen
    # a hog in 2 pairs of the first look's 6: more than a quarter, the point is busy and settled
    busy = judge(_hogged(quiet[:6], {0, 1}), cpu, cpu, ABSettings(), 1, final=False)
    assert busy.status == INCONCLUSIVE and busy.reason.startswith("machine busy in 2 of 6 pairs: ")
    assert all(busy.metric(name).verdict == INCONCLUSIVE for name in paired.TIMING_METRICS)
    assert settled(busy, ABSettings())


def test_a_gpu_run_is_not_judged_busy_by_its_host_cpu():
    gpu = measurement(device="cuda", output_tokens=16)
    ab = judge(machine_pairs(random.Random(2), 30, ratio=1.4, load=(0.6, 0.9)), gpu, gpu, ABSettings(), 1, True)
    assert ab.status == REGRESSED and ab.busy is None and ab.others_cpu_frac == 0.9


# ---- deterministic metrics and OOM ----

def _side(**fields):
    return measurement(device="cpu", output_tokens=16, **{"peak_mem_bytes": 1000, "params": 500, "ppl": 10.0,
                                                          **fields})


def test_deterministic_metrics_compare_each_sides_value_with_the_threshold():
    pairs = machine_pairs(random.Random(4), 30)
    ab = judge(pairs, _side(), _side(peak_mem_bytes=1030, ppl=9.7), ABSettings(), 1, final=True)
    assert ab.metric("peak_mem_bytes").verdict == REGRESSED  # +3% against 2%
    assert (ab.metric("peak_mem_bytes").base, ab.metric("peak_mem_bytes").head) == (1000, 1030)
    assert ab.metric("ppl").verdict == IMPROVED and ab.metric("params").verdict == UNCHANGED
    assert ab.status == REGRESSED and "peak_mem_bytes" in ab.reason
    within = judge(pairs, _side(), _side(peak_mem_bytes=1010), ABSettings(), 1, final=True)
    assert within.metric("peak_mem_bytes").verdict == UNCHANGED
    looser = ABSettings(thresholds={**ABSettings().thresholds, "peak_mem_bytes": 0.05})
    looser_mem = judge(pairs, _side(), _side(peak_mem_bytes=1030), looser, 1, True).metric("peak_mem_bytes")
    assert looser_mem.verdict == UNCHANGED
    params = judge(pairs, _side(), _side(params=600), ABSettings(), 1, final=True).metric("params")
    assert params.verdict == paired.CHANGED and "different models" in params.reason
    no_ppl = judge(pairs, _side(ppl=None), _side(), ABSettings(), 1, final=True)
    assert no_ppl.metric("ppl") is None


@pytest.mark.parametrize("base_oom,head_oom,status,verdict", [
    (False, True, REGRESSED, NEWLY_OOM), (True, False, IMPROVED, IMPROVED), (True, True, UNCHANGED, UNCHANGED)])
def test_out_of_memory_on_either_side(base_oom, head_oom, status, verdict):
    base, head = _side(oom=base_oom), _side(oom=head_oom)
    ab = judge((), base, head, ABSettings(), 1, final=True)
    assert ab.status == status and ab.metric("oom").verdict == verdict and settled(ab, ABSettings())
    assert paired.is_regression(ab.metric("oom").verdict) == (verdict == NEWLY_OOM)


# ---- records ----

def test_point_ab_round_trips_through_json():
    rng = random.Random(6)
    for ab in (judge(machine_pairs(rng, 12, ratio=1.2), _side(), _side(), ABSettings(), 24, final=False),
               judge(machine_pairs(rng, 30, ratio=1.2, load=(0.5, 0.1)), _side(), _side(), ABSettings(), 3, True),
               judge((), _side(), _side(oom=True), ABSettings(), 1, True)):
        text = json.dumps(ab.to_dict(), allow_nan=False)
        assert PointAB.from_dict(json.loads(text)) == ab
    settings = ABSettings(pairs_per_look=4, max_pairs=20, alpha=0.05)
    assert ABSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings


def test_stored_pairs_rederive_the_same_verdict():
    rng = random.Random(8)
    ab = run_point(rng, ABSettings(), SUITE, ratio=1.15)
    again = PointAB.from_dict(json.loads(json.dumps(ab.to_dict())))
    assert judge(again.pairs, None, None, ABSettings(), again.family, final=True).metrics == ab.metrics


@pytest.mark.parametrize("bad,named", [
    (dict(pairs_per_look=0), "pairs_per_look"), (dict(max_pairs=True), "max_pairs"),
    (dict(pairs_per_look=8, max_pairs=4), "max_pairs (4) must be at least pairs_per_look (8)"),
    (dict(alpha=1.5), "alpha must be a number in (0, 1), got 1.5"),
    (dict(thresholds={"latency": 0.05}), "unknown metric 'latency' in thresholds; valid choices: latency_s"),
    (dict(thresholds={"latency_s": -1}), "threshold latency_s must be a relative change >= 0"),
    (dict(runqueue_tolerance="x"), "runqueue_tolerance must be a number >= 0, got 'x'")])
def test_bad_settings_are_one_clear_error(bad, named):
    with pytest.raises(UserError, match=named.replace("(", r"\(").replace(")", r"\)")):
        ABSettings(**bad)


def test_bad_records_are_one_clear_error():
    with pytest.raises(UserError, match="unknown key.*pairs_per_lok.*valid keys"):
        ABSettings.from_dict({"pairs_per_lok": 4})
    with pytest.raises(UserError, match="A/B status 'slow' unknown; valid choices"):
        PointAB.from_dict({"pairs": [], "status": "slow"})
    with pytest.raises(UserError, match="first must be one of base, head, got 'both'"):
        Pair("both", SideRound(1, 1, 1, 0, 0), SideRound(1, 1, 1, 0, 0))
    with pytest.raises(UserError, match="family must be a positive number of points, got 0"):
        judge((), None, None, ABSettings(), 0, True)


def test_settings_come_from_the_config_with_per_point_groups():
    config = config_from_table({"thresholds": {"latency_s": 0.08}, "runqueue_tolerance": 0.2,
                                "groups": [{"match": "big-*", "latency_s": 0.1}]})
    plain = ABSettings.from_config(config, max_pairs=40)
    assert plain.threshold("latency_s") == 0.08 and plain.runqueue_tolerance == 0.2 and plain.max_pairs == 40
    assert ABSettings.from_config(config, "big-dense").threshold("latency_s") == 0.1
    assert MetricAB.from_dict(MetricAB("x", UNCHANGED).to_dict()) == MetricAB("x", UNCHANGED)
