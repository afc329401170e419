"""The verdict of an interleaved A/B: two sides (base and head) timed in pairs of adjacent rounds.

Torch-free. Each pair's log-ratio d = log(head / base) cancels the machine's drift, which moves both
rounds of a pair alike. The order within the pairs alternates, so a position effect (the round second in
its pair runs slower) cancels from the estimate; it is estimated and taken out of every d as well, so it
does not widen the interval. Per timing metric the estimate is the Hodges-Lehmann median of the Walsh
averages, with exact Wilcoxon signed-rank intervals (docs/ab-verdicts.md: the rules, and the simulations
in tests/test_paired.py that chose them):

- `regressed`: the estimate is beyond the metric's threshold, and the interval at the suite-wide level
  lies beyond the bias floor: the most that two processes of identical code read apart on the machine.
  The suite-wide level is `alpha` split (Bonferroni) over every point x timing test x deciding look, so
  identical code gets a `regressed` point in at most `alpha` of suite runs while its bias stays within
  the floor.
- `improved`: the mirror image.
- `unchanged`: the equivalence interval of this look lies within +-threshold. Its level is spent over the
  looks (most at the first), so that a point at the threshold is `unchanged` in at most 5% of A/Bs.
- `inconclusive`: none of these yet, with about how many more pairs would settle it; or the machine was
  busy: work outside the A/B contended in too many pairs.

Peak memory, parameters and perplexity are each side's own value against the threshold; a head that ran
out of memory where the base did not is `newly-oom`; a head that keeps cores busy during the base's
rounds (threads left spinning) more than the base does during its own is `regressed` on `spill_cpu`.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import replace
from statistics import NormalDist

from pruned_perf.analysis.ab import ABSettings, MetricAB, PointAB, contended, ratio_or_none
from pruned_perf.analysis.metrics import BY_NAME, HIGHER_IS_BETTER, LOWER_IS_BETTER
from pruned_perf.analysis.stats import hodges_lehmann, median_sorted, min_pairs, walsh_averages, wilcoxon_interval
from pruned_perf.analysis.verdicts import (CHANGED, IMPROVED, INCONCLUSIVE, NEWLY_OOM, REGRESSED, UNCHANGED,
                                           is_regression)
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import Measurement, is_number

# The timing metrics judged from the pairs, in the report's order; tokens/s is the inverse of latency per
# pair (the same tokens per call on both sides), judged in its own direction.
TIMING_METRICS = ("latency_s", "tokens_per_s", "ttft_s", "tpot_s")
DETERMINISTIC_METRICS = ("peak_mem_bytes", "params", "ppl")
# Latency and tokens/s are one test seen from two sides: the distinct tests per look are latency, TTFT, TPOT.
DISTINCT_TESTS = 3
# `unchanged`: latency at the threshold comes out `unchanged` in at most EQUIVALENCE_ALPHA of A/Bs over all
# its looks (simulated: 4.2-4.7%). The first look gets EQUIVALENCE_FIRST, 2^-6: with 6 pairs, every pair
# within +-threshold; the later looks share the rest. More at the first look (2/64, 3/64) lets identical
# code settle sooner but reads 5.5-7% at the threshold (docs/ab-verdicts.md).
EQUIVALENCE_ALPHA = 0.05
EQUIVALENCE_FIRST = 1 / 64
# The futility stop: from FUTILITY_FROM_PAIRS pairs on, a point whose every open timing metric would need
# more than FUTILITY_FACTOR x the cap stops, `inconclusive`; it declares nothing, so it spends no error.
FUTILITY_FACTOR = 2.0
FUTILITY_FROM_PAIRS = 12
# The spread that projects how many pairs would settle a metric is read off this tail's signed-rank
# interval (an 80% one), not the SD, which one outlier pair inflates.
_SPREAD_TAIL = 0.1
# Outside load in more than this share of a point's pairs, and in at least BUSY_MIN of them, and the point
# is busy: a point whose first two pairs are both contended says so at once.
BUSY_SHARE = 0.25
BUSY_MIN = 2


# ---- the schedule and its error control ----

def _decide_tail(settings: ABSettings, family: int, looks: int) -> float:
    return settings.alpha / (max(1, family) * DISTINCT_TESTS * looks)


def _grid(settings: ABSettings) -> set:
    """The looks every `pairs_per_look` pairs, and the cap."""
    return {min(k * settings.pairs_per_look, settings.max_pairs)
            for k in range(1, math.ceil(settings.max_pairs / settings.pairs_per_look) + 1)}


def look_sizes(settings: ABSettings, family: int = 1) -> list:
    """Clean pairs at each planned look: every `pairs_per_look`, the cap, and the first pair count at
    which the suite-wide interval can be finite (so that a clear change is decided as early as it can be)."""
    return sorted(_grid(settings) | {min(_first_deciding(settings, family), settings.max_pairs)})


def _first_deciding(settings: ABSettings, family: int) -> int:
    return min_pairs(decide_tail(settings, family))


def decide_tail(settings: ABSettings, family: int) -> float:
    """One-sided error allowed each test of each point at each look that can decide (Bonferroni over
    points x distinct timing tests x those looks). A look whose pairs cannot reach the level spends
    nothing: the smallest k such that at most k looks (the grid's and the first deciding one) can reach
    alpha / (family x tests x k) is spent."""
    grid = _grid(settings)
    for k in range(1, len(grid) + 2):
        tail = _decide_tail(settings, family, k)
        first = min_pairs(tail)
        if first <= settings.max_pairs and len({n for n in grid if n >= first} | {first}) <= k:
            return tail
    return _decide_tail(settings, family, len(grid) + 1)


def equivalence_tail(settings: ABSettings, family: int, pairs: int) -> float:
    """One-sided error of the equivalence interval at the look of `pairs` clean pairs: EQUIVALENCE_FIRST
    at the first look, an equal share of the rest at each later one."""
    sizes = look_sizes(settings, family)
    if pairs <= sizes[0]:
        return EQUIVALENCE_FIRST
    return (EQUIVALENCE_ALPHA - EQUIVALENCE_FIRST) / max(1, len(sizes) - 1)


# ---- the statistic ----

def log_ratios(pairs, metric: str) -> tuple[list, list]:
    """(d, head_second): d = log(new/base) of `metric` (tokens/s: of tokens/s) for every pair with a value
    on both sides, in order, and whether the head's round ran second in that pair."""
    d, second = [], []
    field_ = "latency_s" if metric == "tokens_per_s" else metric
    for p in pairs:
        b, h = p.base.value(field_), p.head.value(field_)
        if b is None or h is None:
            continue
        ratio = math.log(h / b)
        d.append(-ratio if metric == "tokens_per_s" else ratio)
        second.append(p.head_second)
    return d, second


def position_adjusted(d: list, head_second: list) -> tuple[list, float]:
    """d with the position effect taken out, and that effect (log of: the round second in its pair over
    the first). A round second in its pair that runs slower by b adds +b to d where the head ran second
    and -b where it ran first; half the difference of the two orders' centers estimates b. With fewer than
    two pairs of either order there is nothing to estimate."""
    late = [x for x, s in zip(d, head_second) if s]
    early = [x for x, s in zip(d, head_second) if not s]
    if len(late) < 2 or len(early) < 2:
        return list(d), 0.0
    b = (hodges_lehmann(late) - hodges_lehmann(early)) / 2
    return [x - b if s else x + b for x, s in zip(d, head_second)], b


def _z(tail: float) -> float:
    return NormalDist().inv_cdf(1 - tail)


def _spread(d: list) -> float:
    """The per-pair spread that the Hodges-Lehmann estimate's interval shrinks by (its width times sqrt n),
    read off the exact 80% Wilcoxon interval: robust, so that one outlier pair does not project a point
    as needing hundreds of pairs and stop it for futility. Where n is too small for that interval, the
    SD with Wilcoxon's efficiency 3/pi against the mean."""
    lo, hi = wilcoxon_interval(d, _SPREAD_TAIL)
    if math.isfinite(lo) and math.isfinite(hi):
        return (hi - lo) / (2 * _z(_SPREAD_TAIL)) * math.sqrt(len(d))
    mean = sum(d) / len(d)
    return math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) * math.pi / 3)


def _pairs_to_settle(d: list, est: float, bound: float, floor: float, tail: float, eq_tail: float) -> int | None:
    """About how many pairs in all would settle a metric at this estimate and spread (normal
    approximation of the signed-rank interval): None if the estimate sits on the threshold (or, beyond
    it, within the bias floor), where no number of pairs settles it."""
    if len(d) < 2:
        return None
    sd = _spread(d)
    if sd == 0:
        return len(d)
    gap = abs(est) - bound
    if gap > 0:  # beyond the threshold: settled once the interval clears the floor
        margin = abs(est) - floor
        if margin <= 0:
            return None
        n = max((_z(tail) * sd / margin) ** 2, min_pairs(tail))  # the exact interval needs 2^-n <= tail
    elif gap < 0:  # within: unchanged once the equivalence interval fits within +-threshold
        n = (_z(eq_tail) * sd / -gap) ** 2
    else:
        return None
    return math.ceil(n) if math.isfinite(n) else None


def timing_verdict(name: str, d: list, head_second: list, settings: ABSettings, tail: float,
                   eq_tail: float) -> MetricAB:
    """One timing metric's verdict from its log-ratios d = log(new/base) (tokens/s: of tokens/s) and each
    pair's order, at `tail` one-sided error per side of the suite-wide interval and `eq_tail` of the
    equivalence interval."""
    if not d:
        return MetricAB(name=name, verdict=INCONCLUSIVE, reason="no pairs with this metric on both sides")
    adjusted, position = position_adjusted(d, head_second)
    walsh = walsh_averages(adjusted)
    est = median_sorted(walsh)
    lo, hi = wilcoxon_interval(adjusted, tail, walsh)
    eq_lo, eq_hi = wilcoxon_interval(adjusted, eq_tail, walsh)
    threshold = settings.threshold(name)
    bound, floor = math.log1p(threshold), math.log1p(settings.bias_floor)
    sign = -1 if BY_NAME[name].better == HIGHER_IS_BETTER else 1  # "worse" is positive in both directions
    worse_est, (worse_lo, worse_hi) = sign * est, sorted((sign * lo, sign * hi))
    record = dict(name=name, pairs=len(d), ratio=math.exp(est), ci_low=ratio_or_none(lo), ci_high=ratio_or_none(hi),
                  level=1 - 2 * tail, eq_low=ratio_or_none(eq_lo), eq_high=ratio_or_none(eq_hi),
                  eq_level=1 - 2 * eq_tail, position=math.exp(position))
    beyond = f"{math.exp(est):.3f}x, beyond {threshold:.0%}"
    if worse_lo > floor and worse_est > bound:
        return MetricAB(verdict=REGRESSED, reason=beyond, **record)
    if worse_hi < -floor and -worse_est > bound:
        return MetricAB(verdict=IMPROVED, reason=beyond, **record)
    if -bound < eq_lo and eq_hi < bound:
        return MetricAB(verdict=UNCHANGED, reason=f"{record['eq_level']:.0%} interval within +-{threshold:.0%}",
                        **record)
    need = _pairs_to_settle(adjusted, est, bound, floor, tail, eq_tail)
    more = None if need is None else max(1, need - len(d))
    reason = (f"{len(d)} pairs, ~{more} more would settle it" if more is not None
              else f"{len(d)} pairs, the estimate sits on the threshold or the bias floor")
    return MetricAB(verdict=INCONCLUSIVE, reason=reason, more_pairs=more, **record)


# ---- the machine: outside load, and the load a side spills into the other's rounds ----

def busy_reason(pairs, settings: ABSettings, on_cpu: bool) -> str | None:
    """Why the point is undecided for outside load, or None: more than BUSY_SHARE of its pairs (and at
    least BUSY_MIN) contended. A GPU run's host load is recorded but does not decide."""
    if not on_cpu:
        return None
    hit = [p for p in pairs if contended(p, settings.others_tolerance)]
    if len(hit) < BUSY_MIN or len(hit) <= BUSY_SHARE * len(pairs):
        return None
    most = max(r.others_cpu_frac for p in hit for r in (p.base, p.head) if is_number(r.others_cpu_frac))
    return (f"machine busy in {len(hit)} of {len(pairs)} pairs: work outside the A/B used up to {most:.2f} "
            f"cores (tolerance {settings.others_tolerance:g})")


def spill_verdict(pairs, settings: ABSettings) -> MetricAB | None:
    """What each side left running during the other side's rounds: per pair, the cores the head's worker
    used during the base's round less those the base's used during the head's; their median beyond the
    tolerance is the head's regression (or improvement): its threads kept a core the other needed."""
    spills = [p.base.peer_cpu_frac - p.head.peer_cpu_frac for p in pairs
              if is_number(p.base.peer_cpu_frac) and is_number(p.head.peer_cpu_frac)]
    if not spills:
        return None
    extra = statistics.median(spills)
    base = statistics.median(p.head.peer_cpu_frac for p in pairs if is_number(p.head.peer_cpu_frac))
    head = statistics.median(p.base.peer_cpu_frac for p in pairs if is_number(p.base.peer_cpu_frac))
    record = dict(name="spill_cpu", pairs=len(spills), base=base, head=head)
    if abs(extra) <= settings.others_tolerance:
        return MetricAB(verdict=UNCHANGED, **record)
    who = "new" if extra > 0 else "base"
    reason = (f"the {who} side kept {abs(extra):.2f} more cores busy during the other side's rounds "
              f"(tolerance {settings.others_tolerance:g})")
    return MetricAB(verdict=REGRESSED if extra > 0 else IMPROVED, reason=reason, **record)


# ---- deterministic metrics and out of memory ----

def _deterministic(name: str, base: Measurement, head: Measurement, settings: ABSettings) -> MetricAB | None:
    b, h = getattr(base, name, None), getattr(head, name, None)
    if not (is_number(b) and is_number(h)):
        return None
    ratio = h / b if b > 0 else (1.0 if h == b else math.inf)
    record = dict(name=name, base=b, head=h, ratio=ratio if math.isfinite(ratio) and ratio > 0 else None)
    if name == "params":
        reason = "" if b == h else f"the sides timed different models: {b:,} -> {h:,} parameters"
        return MetricAB(verdict=UNCHANGED if b == h else CHANGED, reason=reason, **record)
    threshold = settings.threshold(name)
    worse = ratio if BY_NAME[name].better == LOWER_IS_BETTER else (1 / ratio if ratio else math.inf)
    verdict = REGRESSED if worse > 1 + threshold else IMPROVED if worse < 1 / (1 + threshold) else UNCHANGED
    reason = f"{b:.6g} -> {h:.6g} (threshold {threshold:.0%})" if verdict != UNCHANGED else ""
    return MetricAB(verdict=verdict, reason=reason, **record)


def _oom(base: Measurement | None, head: Measurement | None) -> MetricAB | None:
    b_oom, h_oom = bool(base and base.oom), bool(head and head.oom)
    if h_oom and not b_oom:
        return MetricAB(name="oom", verdict=NEWLY_OOM, reason="head ran out of memory, base did not")
    if b_oom and not h_oom:
        return MetricAB(name="oom", verdict=IMPROVED, reason="base ran out of memory, head did not")
    if b_oom and h_oom:
        return MetricAB(name="oom", verdict=UNCHANGED, reason="both sides ran out of memory")
    return None


# ---- a point ----

def judge(pairs, base: Measurement | None = None, head: Measurement | None = None, *, settings: ABSettings,
          family: int, final: bool, device: str, busy: str | None = None) -> PointAB:
    """The verdict of one point from its pairs so far (contended ones included: they are left out here).
    `family`: how many points the suite's A/B judges; `final`: no more pairs will come; `device`: where
    the point ran ("cpu", "cuda"): on a GPU the host's load does not decide; `busy`: why the machine was
    busy, where the driver saw it outside the pairs. The error control counts the planned looks: call it
    after the clean pairs of each of `look_sizes(settings, family)`."""
    pairs = tuple(pairs)
    if isinstance(family, bool) or not isinstance(family, int) or family < 1:
        raise UserError(f"A/B family must be a positive number of points, got {family!r}")
    on_cpu = str(device).startswith("cpu")
    clean = [p for p in pairs if not (on_cpu and contended(p, settings.others_tolerance))]
    busy = busy or busy_reason(pairs, settings, on_cpu)
    metrics = _metrics(clean, base, head, settings, family, busy)
    status = _status(metrics)
    reason = _reason(status, metrics, busy, clean)
    if status == INCONCLUSIVE and not busy and len(clean) < settings.max_pairs and futile(
            [m for m in metrics if m.name in TIMING_METRICS and m.verdict == INCONCLUSIVE], len(clean), settings):
        reason += f", beyond {FUTILITY_FACTOR:g}x the cap: stopped"
    if len(pairs) > len(clean) and not busy:
        n = len(pairs) - len(clean)
        reason += f" ({n} contended {'pair' if n == 1 else 'pairs'} run again)"
    load = [r.others_cpu_frac for p in pairs for r in (p.base, p.head) if is_number(r.others_cpu_frac)]
    return PointAB(pairs=pairs, metrics=tuple(metrics), status=status, reason=reason, family=family, final=final,
                   busy=busy, contended=len(pairs) - len(clean), others_cpu_frac=max(load) if load else None)


def _metrics(clean: list, base, head, settings: ABSettings, family: int, busy: str | None) -> list:
    oom = _oom(base, head)
    if oom is not None:
        return [oom]
    tail, eq_tail = decide_tail(settings, family), equivalence_tail(settings, family, len(clean))
    metrics = []
    for name in TIMING_METRICS:
        d, second = log_ratios(clean, name)
        if name == "tpot_s" and clean and not d:
            continue  # one output token: no decode to time on either side
        verdict = timing_verdict(name, d, second, settings, tail, eq_tail)
        metrics.append(replace(verdict, verdict=INCONCLUSIVE, reason=busy, more_pairs=None) if busy else verdict)
    spill = spill_verdict(clean, settings) if not busy else None
    if spill is not None:
        metrics.append(spill)
    if base is not None and head is not None:
        metrics += [m for name in DETERMINISTIC_METRICS if (m := _deterministic(name, base, head, settings))]
    return metrics


def _status(metrics) -> str:
    verdicts = {m.verdict for m in metrics}
    if any(is_regression(v) for v in verdicts):
        return REGRESSED
    if INCONCLUSIVE in verdicts or not verdicts - {CHANGED}:
        return INCONCLUSIVE
    return IMPROVED if IMPROVED in verdicts else UNCHANGED


def _reason(status: str, metrics, busy: str | None, clean: list) -> str:
    if busy and status != REGRESSED:
        return busy
    if status in (REGRESSED, IMPROVED):
        hits = [m for m in metrics if m.verdict in (status, NEWLY_OOM)]
        if any(m.name == "latency_s" for m in hits):  # tokens/s is latency's inverse: no news
            hits = [m for m in hits if m.name != "tokens_per_s"]
        return "; ".join(m.reason if m.name in ("oom", "spill_cpu") else f"{m.name} {m.reason}" for m in hits)
    if status == INCONCLUSIVE:
        open_ = [m for m in metrics if m.verdict == INCONCLUSIVE]
        more = [m.more_pairs for m in open_ if m.more_pairs is not None]
        if more:
            return f"{len(clean)} pairs, ~{max(more)} more would settle it"
        return open_[0].reason if open_ else f"{len(clean)} pairs"
    return f"{len(clean)} pairs"


def settled(ab: PointAB, settings: ABSettings) -> bool:
    """Whether the driver can stop adding pairs: no more will come, or the machine was busy, or the
    point regressed, or every timing metric is decided, or the open ones are futile (FUTILITY_FACTOR)."""
    if ab.final or ab.busy or ab.status == REGRESSED:
        return True
    timing = [m for m in ab.metrics if m.name in TIMING_METRICS]
    open_ = [m for m in timing if m.verdict == INCONCLUSIVE]
    clean = len(ab.pairs) - ab.contended
    return bool(timing) and (not open_ or futile(open_, clean, settings))


def futile(open_metrics, pairs: int, settings: ABSettings) -> bool:
    """Whether every open metric would need more than FUTILITY_FACTOR x the cap in all (or none would
    settle at its estimate), at a look of at least FUTILITY_FROM_PAIRS pairs."""
    if pairs < FUTILITY_FROM_PAIRS or not open_metrics:
        return False
    limit = FUTILITY_FACTOR * settings.max_pairs
    return all(m.more_pairs is None or m.pairs + m.more_pairs > limit for m in open_metrics)
