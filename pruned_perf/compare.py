"""Direction-aware, significance-gated verdicts of current results against a baseline.

Per point and metric the verdict is one of `improved | unchanged | regressed | inconclusive`:

- `unchanged`: the relative change of the medians is within the metric's threshold.
- `regressed` / `improved`: the change is beyond the threshold in the bad / good direction AND a
  one-sided Mann-Whitney U test of the raw rounds says so with p < alpha.
- `inconclusive`: beyond the threshold but not significant, or too few rounds on either side
  (< min_rounds), or the sample sizes cannot reach p < alpha at all (1 / C(n1+n2, n1) >= alpha).
  Never a silent pass: a report shows these.

Samples per metric, built from the raw rounds of a point:

- `latency_s`: `rounds_s`.
- `tokens_per_s`: `batch_size * output_tokens / r` for each round r (higher is better).
- `ttft_s`: `ttft_rounds_s`.
- `tpot_s`: `(r - median(ttft_rounds_s)) / (output_tokens - 1)` for each round r. The one-token
  calls are separate rounds, so there is no true pairing; subtracting their median keeps the spread of
  the full rounds and matches how `tpot_s` itself is defined.
- `peak_mem_bytes`: one deterministic number per point: threshold only, no test (p_value None);
  null on devices that cannot say, and then the metric is skipped.

A point also gets `new` (no baseline), `missing` (only in the baseline), `newly-oom` (a regression)
and `no-longer-oom` (an improvement). Its status is the worst of its metric verdicts, ordered
regressed > inconclusive > improved > unchanged.

Defaults (pruned_perf.config): alpha = 0.008, min_rounds = 5. With 5 rounds a side the exact test's
one-sided p-values are 1/252, 2/252, 4/252, ...: complete separation or one swapped pair is
significant. Simulated with 5 rounds a side (100 000 trials each; tests/test_compare.py checks the
same properties): identical distributions at 5-10% CV give a false `regressed` per metric in
0.57-0.80% of runs (bounded by alpha: the test is exact) and per point, which has two independently
measured samples (full calls and one-token calls), in 1.2-1.6%; a 20% slowdown of the full calls at
5% CV is caught in 97% of runs, and in 99.9% when the one-token calls slow down too. alpha = 0.005
would halve the false alarms but catch only 91% of that slowdown: five rounds cannot do both better.
"""
from __future__ import annotations

import bisect
import functools
import math
import statistics
from dataclasses import asdict, dataclass, field

from pruned_perf.config import Config
from pruned_perf.errors import UserError
from pruned_perf.results import Results

LOWER_IS_BETTER = "lower"
HIGHER_IS_BETTER = "higher"
METRICS = {
    "latency_s": LOWER_IS_BETTER,
    "tokens_per_s": HIGHER_IS_BETTER,
    "ttft_s": LOWER_IS_BETTER,
    "tpot_s": LOWER_IS_BETTER,
    "peak_mem_bytes": LOWER_IS_BETTER,
}
SOFTWARE_KEYS = ("torch", "transformers", "driver", "cuda")
# Above this many rank-sum permutations the normal approximation is used (it is good there).
EXACT_MAX_PERMUTATIONS = 200_000

IMPROVED, UNCHANGED, REGRESSED, INCONCLUSIVE = "improved", "unchanged", "regressed", "inconclusive"
NEW, MISSING, NEWLY_OOM, NO_LONGER_OOM = "new", "missing", "newly-oom", "no-longer-oom"
REGRESSION_STATUSES = (REGRESSED, NEWLY_OOM)
# Worst first: the status of a point is the first of these that any of its metrics has.
_SEVERITY = (REGRESSED, INCONCLUSIVE, IMPROVED, UNCHANGED)
# Fields that place a point in a table or a figure; kept in every verdict so that a missing point
# (present only in the baseline) can still be shown.
_INFO_KEYS = ("model", "method", "params", "batch_size", "input_tokens", "output_tokens", "backend", "oom")


@dataclass
class MetricVerdict:
    metric: str
    baseline_median: float | None
    current_median: float | None
    change: float | None  # relative: (current - baseline) / baseline
    p_value: float | None  # one-sided, in the direction of the change; None where no test applies
    verdict: str
    threshold: float = 0.0
    baseline_rounds: int = 0
    current_rounds: int = 0
    reason: str = ""


@dataclass
class PointVerdict:
    id: str
    status: str
    metrics: list[MetricVerdict] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def metric(self, name: str) -> MetricVerdict | None:
        return next((m for m in self.metrics if m.metric == name), None)

    @property
    def is_regression(self) -> bool:
        return self.status in REGRESSION_STATUSES


@dataclass
class Comparison:
    points: list[PointVerdict]
    warnings: list[str] = field(default_factory=list)
    baseline_path: str = ""
    baseline_fingerprint: dict = field(default_factory=dict)

    @property
    def has_regression(self) -> bool:
        return any(p.is_regression for p in self.points)

    def by_id(self) -> dict[str, PointVerdict]:
        return {p.id: p for p in self.points}

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.points:
            counts[p.status] = counts.get(p.status, 0) + 1
        return counts

    def to_dict(self) -> dict:
        d = asdict(self)
        d["has_regression"] = self.has_regression
        return d


# ---------------------------------------------------------------- Mann-Whitney U


def _mid_ranks_x2(values: list[float]) -> list[int]:
    """Ranks (1-based, ties get their mean) times two, so that mid-ranks stay integers."""
    n = len(values)
    order = sorted(range(n), key=values.__getitem__)
    ranks = [0] * n
    i = 0
    while i < n:
        j = i + 1
        while j < n and values[order[j]] == values[order[i]]:
            j += 1
        for k in range(i, j):  # positions i+1 .. j share the mean rank (i+1+j)/2
            ranks[order[k]] = i + 1 + j
        i = j
    return ranks


@functools.lru_cache(maxsize=256)
def _rank_sum_null(ranks_x2: tuple[int, ...], k: int) -> tuple[list[int], list[int], int]:
    """Exact permutation null distribution of the rank sum of k values drawn from `ranks_x2`.

    Returns (sums ascending, how many k-subsets have each sum, total). Dynamic programming over the
    pooled ranks, so ties (mid-ranks) are handled exactly; cached because without ties every
    comparison of the same sample sizes has the same distribution.
    """
    by_size: list[dict[int, int]] = [{0: 1}] + [{} for _ in range(k)]
    for r in ranks_x2:
        for size in range(k, 0, -1):
            row = by_size[size]
            for s, n in by_size[size - 1].items():
                row[s + r] = row.get(s + r, 0) + n
    sums = sorted(by_size[k])
    counts = [by_size[k][s] for s in sums]
    return sums, counts, sum(counts)


def min_p_value(n_baseline: int, n_current: int) -> float:
    """Smallest one-sided p the exact test can give for these sizes (complete separation, no ties)."""
    return 1.0 / math.comb(n_baseline + n_current, n_current)


def mann_whitney_p(baseline: list[float], current: list[float], alternative: str) -> float:
    """One-sided Mann-Whitney U p-value that `current` is stochastically `greater` / `less`.

    Exact (permutation distribution of the rank sum with mid-ranks) when C(n1+n2, n1) is at most
    EXACT_MAX_PERMUTATIONS, else the normal approximation with tie and continuity correction.
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    n1, n2 = len(baseline), len(current)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks = _mid_ranks_x2(list(baseline) + list(current))
    w_x2 = sum(ranks[n1:])
    if math.comb(n1 + n2, n2) <= EXACT_MAX_PERMUTATIONS:
        return _exact_p(ranks, n2, w_x2, alternative)
    return _normal_p(ranks, n1, n2, w_x2, alternative)


def _exact_p(ranks_x2: list[int], k: int, w_x2: int, alternative: str) -> float:
    sums, counts, total = _rank_sum_null(tuple(sorted(ranks_x2)), k)
    if alternative == "greater":
        tail = sum(counts[bisect.bisect_left(sums, w_x2):])
    else:
        tail = sum(counts[:bisect.bisect_right(sums, w_x2)])
    return tail / total


def _normal_p(ranks_x2: list[int], n1: int, n2: int, w_x2: int, alternative: str) -> float:
    n = n1 + n2
    mean = n2 * (n + 1) / 2
    ties = _tie_sizes(ranks_x2)
    var = n1 * n2 / 12 * ((n + 1) - sum(t**3 - t for t in ties) / (n * (n - 1)))
    if var <= 0:
        return 1.0  # every value equal: no evidence either way
    w = w_x2 / 2
    if alternative == "greater":
        z = (w - mean - 0.5) / math.sqrt(var)
    else:
        z = (mean - w - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _tie_sizes(ranks_x2: list[int]) -> list[int]:
    sizes: dict[int, int] = {}
    for r in ranks_x2:
        sizes[r] = sizes.get(r, 0) + 1
    return [t for t in sizes.values() if t > 1]


# ---------------------------------------------------------------- samples per metric


def metric_samples(point: dict) -> dict[str, list[float]]:
    """The samples of each metric a point can be tested on; metrics without data are left out."""
    rounds = _numbers(point.get("rounds_s"))
    ttft_rounds = _numbers(point.get("ttft_rounds_s"))
    out_tokens = point.get("output_tokens") or 0
    tokens = (point.get("batch_size") or 0) * out_tokens
    samples: dict[str, list[float]] = {}
    if rounds:
        samples["latency_s"] = rounds
        if tokens > 0 and all(r > 0 for r in rounds):
            samples["tokens_per_s"] = [tokens / r for r in rounds]
    if ttft_rounds:
        samples["ttft_s"] = ttft_rounds
    if rounds and ttft_rounds and out_tokens > 1:
        ttft = statistics.median(ttft_rounds)
        samples["tpot_s"] = [(r - ttft) / (out_tokens - 1) for r in rounds]
    return samples


def _numbers(values) -> list[float]:
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def relative_change(baseline: float, current: float) -> float:
    if baseline == 0:
        return 0.0 if current == 0 else math.copysign(math.inf, current)
    return (current - baseline) / abs(baseline)


def _is_bad(metric: str, change: float) -> bool:
    return change > 0 if METRICS[metric] == LOWER_IS_BETTER else change < 0


# ---------------------------------------------------------------- verdicts


def sample_verdict(metric: str, baseline: list[float], current: list[float], threshold: float,
                   alpha: float, min_rounds: int) -> MetricVerdict:
    """Verdict of one metric from its raw samples."""
    base_med, cur_med = statistics.median(baseline), statistics.median(current)
    change = relative_change(base_med, cur_med)
    verdict = MetricVerdict(metric, base_med, cur_med, change, None, UNCHANGED, threshold,
                            len(baseline), len(current))
    # The direction of the change picks the one-sided alternative: larger or smaller values.
    alternative = "greater" if cur_med >= base_med else "less"
    verdict.p_value = mann_whitney_p(baseline, current, alternative)
    fewest = min(len(baseline), len(current))
    if fewest < min_rounds:
        verdict.verdict = INCONCLUSIVE
        verdict.reason = f"{fewest} rounds < min_rounds {min_rounds}"
        return verdict
    floor = min_p_value(len(baseline), len(current))
    if floor >= alpha:
        verdict.verdict = INCONCLUSIVE
        verdict.reason = f"{len(baseline)} vs {len(current)} rounds cannot reach p < {alpha:g} (min p {floor:.3g})"
        return verdict
    if abs(change) <= threshold:
        return verdict
    if verdict.p_value < alpha:
        verdict.verdict = REGRESSED if _is_bad(metric, change) else IMPROVED
    else:
        verdict.verdict = INCONCLUSIVE
        verdict.reason = f"change beyond {threshold:.0%} but p = {verdict.p_value:.3g} >= alpha {alpha:g}"
    return verdict


def memory_verdict(baseline: float, current: float, threshold: float) -> MetricVerdict:
    """Peak memory is deterministic for a given shape: the threshold alone decides."""
    change = relative_change(baseline, current)
    verdict = MetricVerdict("peak_mem_bytes", baseline, current, change, None, UNCHANGED, threshold, 1, 1)
    if abs(change) > threshold:
        verdict.verdict = REGRESSED if _is_bad("peak_mem_bytes", change) else IMPROVED
    return verdict


def compare_point(pid: str, baseline: dict, current: dict, config: Config) -> PointVerdict:
    settings = config.settings_for(pid)
    info = {k: current.get(k) for k in _INFO_KEYS}
    if current.get("oom") and baseline.get("oom"):
        return PointVerdict(pid, UNCHANGED, [], info)
    if current.get("oom"):
        return PointVerdict(pid, NEWLY_OOM, [], info)
    if baseline.get("oom"):
        return PointVerdict(pid, NO_LONGER_OOM, [], info)
    metrics = []
    base_samples, cur_samples = metric_samples(baseline), metric_samples(current)
    for metric in METRICS:
        if metric in base_samples and metric in cur_samples:
            metrics.append(sample_verdict(metric, base_samples[metric], cur_samples[metric],
                                          settings.thresholds[metric], settings.alpha, settings.min_rounds))
        elif metric in base_samples or metric in cur_samples:
            metrics.append(_one_sided(metric, "current" if metric in base_samples else "baseline"))
    base_mem, cur_mem = _number(baseline.get("peak_mem_bytes")), _number(current.get("peak_mem_bytes"))
    if base_mem is not None and cur_mem is not None:
        metrics.append(memory_verdict(base_mem, cur_mem, settings.thresholds["peak_mem_bytes"]))
    elif base_mem is not None or cur_mem is not None:
        metrics.append(_one_sided("peak_mem_bytes", "current" if base_mem is not None else "baseline"))
    # A point with nothing to compare has not passed: it is inconclusive, not unchanged.
    status = next((s for s in _SEVERITY if any(m.verdict == s for m in metrics)), INCONCLUSIVE)
    return PointVerdict(pid, status, metrics, info)


def _one_sided(metric: str, lacking: str) -> MetricVerdict:
    """A metric measured on one side only cannot be judged; it must not vanish from the report."""
    return MetricVerdict(metric, None, None, None, None, INCONCLUSIVE, reason=f"no {metric} data in the {lacking}")


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare(current: Results, baseline: Results, config: Config | None = None,
            allow_mismatch: bool = False) -> Comparison:
    """Compare every point of `current` with the same id in `baseline`."""
    config = config or Config()
    warnings = fingerprint_warnings(current, baseline, allow_mismatch)
    points = []
    for pid, point in current.points.items():
        if pid in baseline.points:
            points.append(compare_point(pid, baseline.points[pid], point, config))
        else:
            points.append(PointVerdict(pid, NEW, [], {k: point.get(k) for k in _INFO_KEYS}))
    for pid, point in baseline.points.items():
        if pid not in current.points:
            points.append(PointVerdict(pid, MISSING, [], {k: point.get(k) for k in _INFO_KEYS}))
    return Comparison(points, warnings, baseline.path, dict(baseline.fingerprint))


def fingerprint_warnings(current: Results, baseline: Results, allow_mismatch: bool) -> list[str]:
    """Different hardware is refused (or warned with allow_mismatch); other software is a warning."""
    warnings = []
    if current.slug != baseline.slug:
        message = (f"hardware differs: results {current.path} are from {current.slug!r}, "
                   f"baseline {baseline.path} from {baseline.slug!r}")
        if not allow_mismatch:
            raise UserError(message + "; pass --allow-mismatch to compare anyway")
        warnings.append(message)
    for key in SOFTWARE_KEYS:
        old, new = baseline.fingerprint.get(key), current.fingerprint.get(key)
        if old != new:
            warnings.append(f"{key} differs: baseline {old}, results {new}")
    if current.profile != baseline.profile:
        warnings.append(f"profile differs: baseline {baseline.profile}, results {current.profile}")
    return warnings


def compare_with_baseline(current: Results, spec: str, baselines_dir: str = "baselines",
                          pyproject: str | None = None, allow_mismatch: bool = False):
    """(baseline Results, Comparison) against a baseline given as FILE, DIR or `auto`."""
    from pruned_perf.config import load_config
    from pruned_perf.results import load_results, resolve_baseline

    config = load_config(pyproject)  # read first: a bad pyproject fails before any work
    baseline = load_results(resolve_baseline(spec, current, baselines_dir))
    return baseline, compare(current, baseline, config, allow_mismatch=allow_mismatch)
