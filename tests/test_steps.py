"""Steps in the history of nightly runs (pruned_perf/analysis/steps.py): its pieces, its edge cases, and
the seeded simulations that chose its defaults and back the figures of docs/history-steps.md.

The simulated machines and histories are tests/history_noise.py's. `nightly` replays the nightly job
on many histories at once: after each appended run, the at_end steps of the last `lookback` runs (what
`steps_at_end` computes; every history its own family); each new one triggers an A/B of the points
that moved, modelled by its measured power (`ab_confirms`). `python tests/test_steps.py` prints the
comparison of settings that chose the defaults.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pytest

from pruned_perf.analysis import step_prep, step_tails
from pruned_perf.analysis.steps import StepSettings, find_array, find_steps, steps_at_end
from pruned_perf.core.errors import UserError

try:
    from tests.history_noise import POINTS, RealNoise, Steady, histories
except ImportError:
    from history_noise import POINTS, RealNoise, Steady, histories

SERIES = POINTS * 3  # the quick profile's grid: 24 points x 3 timing metrics
HISTORIES = 100
RUNS = 200


def steady_series(rng, runs: int, sd: float = 0.04, n: int = 1) -> np.ndarray:
    return np.exp(sd * rng.standard_normal((n, runs)))


def as_series(values: np.ndarray) -> dict:
    return {f"s{i}": [None if not math.isfinite(v) else float(v) for v in row] for i, row in enumerate(values)}


# ---- the nightly loop ----

def ab_confirms(ratio: np.ndarray) -> np.ndarray:
    """The A/B's measured power: probability that it confirms a point whose true ratio is `ratio` (0 up
    to 5%, 0.95 at 10%, 1 from 15%, linear between; 0.002 where nothing changed)."""
    r = np.maximum(ratio, 1 / ratio)
    return np.where(r == 1.0, 0.002, np.interp(r, [1.05, 1.10, 1.15], [0.0, 0.95, 1.0]))


@dataclass
class Loop:
    """What the nightly loop did over `histories` x `nights`."""

    histories: int
    nights: int
    abs_: int = 0  # A/B runs (one per night with new at_end steps)
    noise_abs: int = 0  # of them, those whose points had no real change
    false_confirmed: int = 0  # regressions the A/B confirmed where nothing changed (sampled)
    expected_false: np.ndarray = None  # per history: expected false confirmed regressions
    first_flag: dict = field(default_factory=dict)  # (history, point, run of the change) -> first night flagged
    widths: list = field(default_factory=list)  # commit range of each flag that holds a real change

    def lag(self, change, every: bool = False) -> int:
        """Runs at the new level when the change was first flagged (at_end, the range holding it) in one
        of its points (`every`: in all of them); a large number if never."""
        nights = [self.first_flag.get((change.history, p, change.at), 10 ** 9) for p in change.points]
        return (max(nights) if every else min(nights)) - change.at + 1


def nightly(logs, level, settings: StepSettings, rng, first: int) -> Loop:
    """Replay the nightly job from run `first` on (see the module docstring). An A/B covers a point's
    step when an earlier A/B of the point has a commit range overlapping it and confirmed, or rejected
    it and the step has not grown by more than the threshold since."""
    count, series, runs = logs.shape
    families = np.repeat(np.arange(count), series)
    loop = Loop(count, runs - first, expected_false=np.zeros(count))
    tested = [[] for _ in range(count)]  # per history: (point, before, at, |log ratio|, confirmed)
    grow = math.log1p(settings.threshold)
    for night in range(first, runs):
        start = max(0, night + 1 - settings.lookback)
        found = find_array(np.exp(logs[:, :, start:night + 1]).reshape(count * series, -1), settings, families,
                           tail_only=True)
        new: dict = {}
        for row, before, at, d in zip(found.row, found.before + start, found.at + start, found.log_ratio):
            h, point = divmod(int(row), series)
            point //= 3
            true = level[h, point, at] - level[h, point, before]
            if true:
                for run in np.flatnonzero(np.diff(level[h, point, before:at + 1])) + before + 1:
                    loop.first_flag.setdefault((h, point, int(run)), night)
                loop.widths.append(at - before)
            if any(p == point and b < at and before < a and (ok or abs(d) <= size + grow)
                   for p, b, a, size, ok in tested[h]):
                continue
            if point not in new.get(h, {}) or abs(d) > abs(new[h][point][2]):
                new.setdefault(h, {})[point] = (before, at, d)
        for h, points in new.items():
            loop.abs_ += 1
            changed = False
            for point, (before, at, d) in points.items():
                true = level[h, point, at] - level[h, point, before]
                ok = bool(rng.random() < ab_confirms(np.exp(true)))
                changed |= true != 0
                if true == 0 and d > 0:
                    loop.expected_false[h] += 0.002
                    loop.false_confirmed += ok
                tested[h].append((point, before, at, abs(d), ok))
            loop.noise_abs += not changed
    return loop


def run_loop(noise, seed: int, settings: StepSettings = StepSettings(), normalize: bool = False,
             count: int = HISTORIES, ratios=(1.15, 1.30), first: int = 65) -> tuple[Loop, list]:
    """The nightly loop over `count` seeded histories of RUNS runs, each with one change per ratio in
    3 random points, from run `first` on (a full lookback before it)."""
    rng = np.random.default_rng(seed)
    logs, level, changes = histories(noise, rng, count, RUNS, ratios=ratios, normalize=normalize)
    return nightly(logs, level, settings, np.random.default_rng(seed + 1), first), changes


def report(name: str, loop: Loop, changes: list) -> dict:
    """The loop's figures (printed: docs/history-steps.md quotes them)."""
    per_200 = RUNS / loop.nights
    figures = {
        "A/B per run": loop.abs_ / (loop.histories * loop.nights),
        "noise A/B per run": loop.noise_abs / (loop.histories * loop.nights),
        "false confirmed (sampled)": loop.false_confirmed,
        "expected false confirmed per history (200 runs)": loop.expected_false.mean() * per_200,
        "its standard error": loop.expected_false.std(ddof=1) / math.sqrt(loop.histories) * per_200,
    }
    for ratio in sorted({c.ratio for c in changes}):
        mine = [c for c in changes if c.ratio == ratio]
        for k in (2, 3, 4, 5):
            figures[f"{ratio:.2f}x found within {k} runs"] = np.mean([loop.lag(c) <= k for c in mine])
        figures[f"{ratio:.2f}x every point within 5 runs"] = np.mean([loop.lag(c, every=True) <= 5 for c in mine])
    figures["range width: median, 95th percentile"] = (float(np.median(loop.widths)),
                                                       float(np.percentile(loop.widths, 95)))
    print(f"\n{name}: {loop.histories} histories x {loop.nights} nights")
    for key, value in figures.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    return figures


# ---- input and edge cases ----

@pytest.mark.parametrize("series,env,message", [
    ({"a": [1.0, -2.0]}, ["e", "e"], "positive time"),
    ({"a": [1.0, float("nan")]}, ["e", "e"], "positive time"),
    ({"a": [1.0, "x"]}, ["e", "e"], "positive time"),
    ({"a": [1.0, 2.0, 3.0]}, ["e", "e"], "has 3 values, env has 2"),
    ([1.0, 2.0], ["e", "e"], "must map keys"),
])
def test_bad_input_is_a_user_error_naming_the_value(series, env, message):
    with pytest.raises(UserError, match=message):
        find_steps(series, env)


@pytest.mark.parametrize("kwargs,message", [
    (dict(fdr=0), "fdr must be a number in"), (dict(fdr=1.5), "fdr must be"), (dict(threshold=-0.1), "threshold"),
    (dict(min_runs=0), "min_runs must be an integer >= 1"), (dict(settle=2, min_runs=2), "settle"),
    (dict(window=True), "window must be an integer"), (dict(clip=0), "clip"), (dict(scale_span=3), "scale_span"),
])
def test_settings_out_of_range_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        StepSettings(**kwargs)


def test_short_constant_empty_and_unmeasured_series_give_no_steps():
    env = ["e"] * 40
    assert find_steps({}, env) == []
    assert find_steps({"short": [1.0, 2.0, 1.0] + [None] * 37}, env) == []
    assert find_steps({"constant": [0.5] * 40}, env) == []
    assert find_steps({"none": [None] * 40}, env) == []
    assert find_steps({"a": [1.0]}, ["e"]) == [] and find_steps({"a": []}, []) == []
    assert steps_at_end({"short": [1.0, 3.0, 3.0]}, ["e"] * 3) == []


def test_every_short_history_is_searched_without_error():
    """The first nights of a history: 1 to 12 runs of noisy series, each searched as a whole and at its
    end (a window with no run to test in it is nothing to pick, not an error)."""
    rng = np.random.default_rng(4)
    for runs in range(1, 13):
        series = as_series(steady_series(rng, runs, n=6))
        env = ["e"] * runs
        assert isinstance(find_steps(series, env), list) and isinstance(steps_at_end(series, env), list)


def test_a_clear_step_is_found_where_it_is_with_its_ratio():
    rng = np.random.default_rng(1)
    values = steady_series(rng, 120, n=4)
    values[:3, 70:] *= 1.3  # the fourth series stays flat
    found = find_steps(as_series(values), ["e"] * 120)
    assert [(s.series, s.before, s.at, s.kind, s.at_end, s.env_change) for s in found] == [
        (f"s{i}", 69, 70, "step", False, False) for i in range(3)]
    for s in found:
        assert s.ci_low < 1.3 < s.ci_high and s.ratio == pytest.approx(1.3, rel=0.05)
        assert 0 <= s.p_value <= s.q_value <= 0.01


def test_improvements_and_gaps_map_back_to_runs():
    rng = np.random.default_rng(2)
    values = steady_series(rng, 100)[0]
    values[60:] /= 1.4  # faster from run 60 on
    series = [None if i in (10, 59, 60, 61) else float(v) for i, v in enumerate(values)]
    found = find_steps({"gappy": series}, ["e"] * 100)
    assert len(found) == 1
    assert (found[0].before, found[0].at) == (58, 62)  # the last measured run before, the first after
    assert found[0].ratio == pytest.approx(1 / 1.4, rel=0.05)


def test_an_environment_change_within_the_range_is_flagged():
    rng = np.random.default_rng(3)
    values = steady_series(rng, 90, n=2)
    values[:, 50:] *= 1.25
    env = ["torch-2.4"] * 50 + ["torch-2.5"] * 40
    found = find_steps(as_series(values), env)
    assert [s.env_change for s in found] == [True, True]
    later = ["torch-2.4"] * 70 + ["torch-2.5"] * 20  # the change of environment elsewhere
    assert [s.env_change for s in find_steps(as_series(values), later)] == [False, False]


def test_steps_at_end_are_find_steps_at_end_steps_over_the_lookback():
    rng = np.random.default_rng(4)
    settings = StepSettings()
    values = steady_series(rng, settings.lookback, n=30)
    values[:5, -3:] *= 1.3  # new: 3 runs at a new level
    values[5:8, 20:] *= 1.3  # settled long ago
    series, env = as_series(values), ["e"] * settings.lookback
    tail = steps_at_end(series, env, settings)
    assert tail == [s for s in find_steps(series, env, settings) if s.at_end]
    assert {s.series for s in tail} == {f"s{i}" for i in range(5)} and all(s.at == settings.lookback - 3 for s in tail)
    longer = np.hstack([steady_series(rng, 100, n=30), values])  # runs before the lookback are not read
    assert [replace(s, before=s.before - 100, at=s.at - 100) for s in steps_at_end(as_series(longer), ["e"] * 
            (100 + settings.lookback), settings)] == tail


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, 0.2])
    q = step_tails.benjamini_hochberg(p, np.zeros(6, int))
    # sorted 0.005 0.01 0.03 0.04 0.2 0.5 -> x 6/rank: 0.03 0.03 0.06 0.06 0.24 0.5, then running minima from the top
    assert q == pytest.approx([0.03, 0.06, 0.06, 0.03, 0.5, 0.24])
    two = step_tails.benjamini_hochberg(np.r_[p, p], np.r_[np.zeros(6, int), np.ones(6, int)])
    assert two == pytest.approx(np.r_[q, q])  # families apart


def test_the_tail_probabilities_match_student_t_and_monte_carlo():
    # Student's t two-sided 1% quantiles: 2.787 at 25 df, 2.704 at 40
    for t, df in ((2.787, 25), (2.704, 40)):
        assert 2 * math.exp(step_tails.log_upper_tail(t, df)) == pytest.approx(0.01, rel=0.03)
    assert step_tails.t_quantile(0.95, 40.0) == pytest.approx(2.021, rel=0.005)
    rng = np.random.default_rng(5)
    n, df, n_ref = 1_000_000, 38, 30
    s = np.sqrt(rng.chisquare(df, n) / df)
    ref = rng.standard_normal(n) / math.sqrt(n_ref)
    z = np.sort((rng.standard_normal((n, 3)) - ref[:, None]) / s[:, None], axis=1)
    for k_least, column, u in ((3, 0, 1.2), (2, 1, 2.0)):
        exact = (z[:, column] >= u).mean()
        assert math.exp(step_tails.log_at_least(u, df, n_ref, 3, k_least)) == pytest.approx(exact, rel=0.1)


def test_the_scale_and_its_degrees_of_freedom():
    # a normal series of 66 values: the winsorized mean square of differences is about unbiased and
    # spreads as a chi-square with the degrees of freedom the tests use (0.6 per difference)
    x = np.random.default_rng(10).standard_normal((20000, 66))
    scale, df = step_prep.local_scale(x, np.zeros(len(x), int), 66)
    s = scale[:, -1]
    assert (s ** 2).mean() == pytest.approx(1, abs=0.01) and df[0, -1] == pytest.approx(0.6 * 65)
    assert 1 / (2 * s.std() ** 2) == pytest.approx(df[0, -1], rel=0.15)
    with_step = x + np.where(np.arange(66) >= 33, 5.0, 0.0)  # a step of 5 SDs moves it by a few %
    moved = step_prep.local_scale(with_step, np.zeros(len(x), int), 66)[0][:, -1].mean() / s.mean()
    assert 1 < moved < 1.06


def test_the_real_noise_file_and_its_resampler():
    common, residual, points = RealNoise().deviations()
    assert common.shape == (6, 4) and residual.shape == (6, 4, POINTS) and len(points) == POINTS
    assert np.abs(residual.mean(axis=2)).max() < 1e-12  # the common mode taken out of the residuals
    values, probes = RealNoise(outliers=None).draw(np.random.default_rng(6), 50, 200)
    assert values.shape == (50, POINTS, 3, 200) and probes.shape == (50, POINTS, 200)
    real_sd = (common[:, 1:, None] + residual[:, 1:]).std()
    assert values.std() == pytest.approx(real_sd, rel=0.15)  # the smoothed bootstrap keeps the spread
    # the common mode kept: the mean over points of a night moves as much as the real nights' did
    assert values.mean(axis=(1, 2)).std() == pytest.approx(common[:, 1:].mean(axis=1).std(), rel=0.35)


# ---- claim 4: one bad night, a gradual drift, an environment change ----

def test_one_outlier_night_is_no_step_before_or_after_runs_follow_it():
    rng = np.random.default_rng(7)
    values, _ = Steady().draw(rng, 1, 120)
    logs = values.reshape(SERIES, 120)
    logs[:, 80] += math.log(2)  # every point of run 80 twice as slow
    env = ["e"] * 120
    for night in range(80, 120):  # the nightly view: never a step at the bad night
        found = steps_at_end(as_series(np.exp(logs[:, :night + 1])), env[:night + 1])
        assert not [s for s in found if s.before < 81 and s.at >= 80], night
    assert not [s for s in find_steps(as_series(np.exp(logs)), env) if s.before < 81 and s.at >= 80]


def test_a_gradual_drift_is_one_gradual_change_with_its_range_and_total():
    truth = 1.03 ** 8
    found_as, covered = [], []
    for seed in range(10):
        values, _ = Steady().draw(np.random.default_rng(100 + seed), 1, 160)
        logs = values.reshape(SERIES, 160)
        logs[:12] += np.clip(np.arange(160) - 89, 0, 8) * math.log(1.03)  # 4 points: 3% per run, runs 90..97
        found = find_steps(as_series(np.exp(logs)), ["e"] * 160)
        for i in range(12):
            mine = [s for s in found if s.series == f"s{i}"]
            found_as.append(mine[0].kind if len(mine) == 1 else f"{len(mine)} changes")
            if len(mine) == 1 and mine[0].kind == "gradual":
                s = mine[0]
                assert 85 <= s.before <= 92 and 94 <= s.at <= 101 and s.at - s.before >= 4, s
                assert s.ratio == pytest.approx(truth, rel=0.08) and not s.at_end
                covered.append(s.ci_low < truth < s.ci_high)
        assert len({s.series for s in found} - {f"s{i}" for i in range(12)}) <= 1  # elsewhere: the FDR
    share = found_as.count("gradual") / len(found_as)
    print(f"\n3% per run over 8 runs: one gradual change in {share:.0%} of {len(found_as)} series "
          f"(otherwise {sorted(set(found_as) - {'gradual'})}); its 95% interval holds the total in "
          f"{np.mean(covered):.0%}")
    assert share >= 0.85 and np.mean(covered) >= 0.8


# ---- claim 5: speed ----

def test_a_year_of_the_quick_grid_takes_well_under_a_second():
    rng = np.random.default_rng(9)
    values, _ = Steady().draw(rng, 1, 365, points=24)
    # 96 series: a fourth metric per point, its latency's deviations 10% wider
    logs = np.concatenate([values.reshape(72, 365), values[0, :, :1, :].reshape(24, 365) * 1.1])
    logs[:10, 200:] += math.log(1.2)
    series, env = as_series(np.exp(logs)), ["e"] * 365
    find_steps(series, env)  # warm
    best = min(_timed(lambda: find_steps(series, env)) for _ in range(3))
    print(f"\nfind_steps: 365 runs x 96 series in {best * 1000:.0f} ms (best of 3)")
    assert {s.series for s in find_steps(series, env)} == {f"s{i}" for i in range(10)}


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# ---- claims 1-3: the nightly loop ----

@pytest.mark.slow
def test_steady_runner_finds_steps_fast_and_rarely_cries_wolf():
    loop, changes = run_loop(Steady(), seed=11)
    figures = report("steady runner", loop, changes)
    assert figures["1.15x found within 3 runs"] >= 0.95
    assert figures["1.30x found within 2 runs"] >= 0.95
    assert figures["noise A/B per run"] <= 0.1
    assert figures["expected false confirmed per history (200 runs)"] <= 0.01 and loop.false_confirmed <= 1


@pytest.mark.slow
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "probe-normalized"])
def test_this_machine_rarely_cries_wolf_and_finds_large_steps(normalize):
    loop, changes = run_loop(RealNoise(), seed=12, normalize=normalize, ratios=(1.15, 1.30, 1.50))
    figures = report(f"2-core CPU, {'probe-normalized' if normalize else 'raw'}", loop, changes)
    assert figures["noise A/B per run"] <= 0.1
    assert figures["expected false confirmed per history (200 runs)"] <= 0.01 and loop.false_confirmed <= 1
    assert figures["1.30x found within 3 runs"] >= 0.9 and figures["1.50x found within 3 runs"] >= 0.95


# ---- the comparison that chose the defaults ----

CANDIDATES = [dict(), dict(fdr=0.005), dict(fdr=0.01), dict(fdr=0.05), dict(settle=5), dict(settle=8),
              dict(window=20), dict(clip=2.0), dict(clip=3.0), dict(min_runs=3)]


def compare(count: int = 50) -> None:
    """Each candidate's nightly loop on the steady runner and this machine (raw), then the table of
    docs/history-steps.md, "Choosing the parameters"."""
    keys = ("noise A/B per run", "expected false confirmed per history (200 runs)", "1.15x found within 2 runs",
            "1.15x found within 3 runs", "1.30x found within 2 runs", "1.30x found within 3 runs",
            "1.15x every point within 5 runs")
    rows = []
    for name, noise, seed in (("steady", Steady(), 21), ("2-core CPU", RealNoise(), 22)):
        for change, normalize in [(c, False) for c in CANDIDATES] + [(dict(), True)]:
            loop, changes = run_loop(noise, seed, replace(StepSettings(), **change), normalize, count=count)
            label = f"{change or 'defaults'}{', probe-normalized' if normalize else ''}"
            figures = report(f"{name} {label}", loop, changes)
            rows.append(f"| {name} | {label} | " + " | ".join(f"{figures[k]:.3g}" for k in keys) + " |")
    print("\n| machine | settings | " + " | ".join(keys) + " |")
    print("\n".join(rows))


if __name__ == "__main__":
    compare()
