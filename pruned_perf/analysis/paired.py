"""The verdict of an interleaved A/B: two sides (base and head) timed in pairs of adjacent rounds.

Torch-free. Each pair's log-ratio d = log(head / base) cancels the machine's drift, which moves both
rounds of a pair alike; the order within the pairs alternates (base first, head first, ...), so a bias
tied to the position in the pair cancels too. Per timing metric the estimate is the Hodges-Lehmann
median of the Walsh averages of d, with the exact Wilcoxon signed-rank confidence interval
(docs/ab-verdicts.md: the rules, and the simulation in tests/test_paired.py that chose them):

- `regressed`: the interval at the suite-wide level lies above 1 (below, for tokens/s) and the estimate
  is beyond the metric's threshold. The suite-wide level is `alpha` split (Bonferroni) over the planned
  family: every point x every timing metric x every look of the sequential schedule, so that identical
  code gets a `regressed` point in at most `alpha` of suite runs.
- `improved`: the mirror image.
- `unchanged`: the 90% interval lies within +-threshold.
- `inconclusive`: none of these yet, with the pairs measured and about how many more would settle it;
  also every timing metric of a point where other work contended for the CPU in more than a quarter of
  its pairs ("machine busy"). Contended pairs never enter the statistic.

Peak memory, parameters and perplexity are deterministic: each side's own value against the metric's
threshold; a head that ran out of memory where the base did not is `newly-oom`, a regression.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, fields, replace
from statistics import NormalDist

from pruned_perf.analysis.metrics import BY_NAME, HIGHER_IS_BETTER, LOWER_IS_BETTER, is_number
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import Measurement

REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE = "regressed", "improved", "unchanged", "inconclusive"
NEWLY_OOM = "newly-oom"
CHANGED = "changed"  # parameters differ: the two sides timed different models (not a verdict on speed)
STATUSES = (REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE)
SIDES = ("base", "head")
# The timing metrics judged from the pairs, in the report's order; tokens/s is the inverse of latency
# per pair (the same tokens per call on both sides), judged in its own direction.
TIMING_METRICS = ("latency_s", "tokens_per_s", "ttft_s", "tpot_s")
DETERMINISTIC_METRICS = ("peak_mem_bytes", "params", "ppl")

# Chosen by simulation (tests/test_paired.py, docs/ab-verdicts.md).
DEFAULT_PAIRS_PER_LOOK = 6
DEFAULT_MAX_PAIRS = 30
# Bonferroni bound on the share of A/A suite runs with a `regressed` point (and, separately, an `improved`
# one). Half the 1% target: the simulated A/A suites come close to the bound (0.5-0.6% of runs at 0.01).
DEFAULT_AB_ALPHA = 0.005
# Two-sided level of the interval that must lie within +-threshold for `unchanged`.
EQUIVALENCE_LEVEL = 0.90
# The futility stop: from the look at FUTILITY_FROM_PAIRS pairs on, a point whose every open timing
# metric would need more than FUTILITY_FACTOR x the cap in all (at its estimate and spread so far)
# stops, `inconclusive`. It ends points that the cap could not settle (a metric whose single pairs
# spread far more than latency's) and never declares anything, so the error control is unchanged
# (docs/ab-verdicts.md, "Futility stop").
FUTILITY_FACTOR = 2.0
FUTILITY_FROM_PAIRS = 12


@dataclass(frozen=True)
class SideRound:
    """One timed round of one side; times are per call (the round's mean; TTFT: its median call's)."""

    latency_s: float
    ttft_s: float | None
    tpot_s: float | None
    runqueue_wait_frac: float | None  # s its threads waited for a CPU per s of round (None: OS does not say)
    others_cpu_frac: float | None  # cores' worth of CPU used by anything else during the round

    @classmethod
    def from_dict(cls, d: dict) -> "SideRound":
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Pair:
    """One pair of rounds, in the order they ran."""

    first: str  # "base" or "head"
    base: SideRound
    head: SideRound

    def __post_init__(self):
        if self.first not in SIDES:
            raise UserError(f"pair: first must be one of {', '.join(SIDES)}, got {self.first!r}")

    def to_dict(self) -> dict:
        return {"first": self.first, "base": asdict(self.base), "head": asdict(self.head)}

    @classmethod
    def from_dict(cls, d: dict) -> "Pair":
        return cls(d["first"], SideRound.from_dict(d["base"]), SideRound.from_dict(d["head"]))


@dataclass(frozen=True)
class ABSettings:
    """How an A/B judges: from pytest options and `[tool.pruned_perf]` (analysis/config.py Config)."""

    pairs_per_look: int = DEFAULT_PAIRS_PER_LOOK  # pairs added between looks
    max_pairs: int = DEFAULT_MAX_PAIRS  # the cap
    alpha: float = DEFAULT_AB_ALPHA  # suite-wide share of A/A runs with a `regressed` point
    thresholds: dict = field(default_factory=lambda: {name: BY_NAME[name].threshold
                                                      for name in BY_NAME})
    runqueue_tolerance: float = 0.1  # s waited for a CPU per s of a round above which the round is contended
    others_tolerance: float = 0.25  # cores used by others in a round above which the round is contended

    def __post_init__(self):
        for name in ("pairs_per_look", "max_pairs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"A/B {name} must be a positive integer, got {value!r}")
        if self.max_pairs < self.pairs_per_look:
            raise UserError(f"A/B max_pairs ({self.max_pairs}) must be at least pairs_per_look "
                            f"({self.pairs_per_look})")
        if not is_number(self.alpha) or not 0 < self.alpha < 1:
            raise UserError(f"A/B alpha must be a number in (0, 1), got {self.alpha!r}")
        if not isinstance(self.thresholds, dict):
            raise UserError(f"A/B thresholds must map metrics to relative changes, got {self.thresholds!r}")
        for metric, value in self.thresholds.items():
            if metric not in BY_NAME:
                raise UserError(f"A/B: unknown metric {metric!r} in thresholds; valid choices: "
                                f"{', '.join(sorted(BY_NAME))}")
            if not is_number(value) or value < 0:
                raise UserError(f"A/B threshold {metric} must be a relative change >= 0 (0.05 = 5%), got {value!r}")
        for name in ("runqueue_tolerance", "others_tolerance"):
            if not is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise UserError(f"A/B {name} must be a number >= 0, got {getattr(self, name)!r}")

    @property
    def looks(self) -> int:
        """Planned looks of the sequential schedule: after every `pairs_per_look` pairs, up to the cap."""
        return math.ceil(self.max_pairs / self.pairs_per_look)

    def threshold(self, metric: str) -> float:
        return float(self.thresholds.get(metric, BY_NAME[metric].threshold if metric in BY_NAME else 0.0))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ABSettings":
        if not isinstance(d, dict):
            raise UserError(f"A/B settings must be a mapping, got {d!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"A/B settings: unknown key(s) {', '.join(unknown)}; valid keys: "
                            f"{', '.join(sorted(names))}")
        return cls(**d)

    @classmethod
    def from_config(cls, config, point_id: str | None = None, **overrides) -> "ABSettings":
        """The thresholds and busy tolerances of `config` (for `point_id`'s groups), plus `overrides`
        (pairs_per_look, max_pairs, alpha: from the pytest options)."""
        settings = config.settings_for(point_id) if point_id is not None else config
        return cls(thresholds=dict(settings.thresholds), runqueue_tolerance=settings.runqueue_tolerance,
                   others_tolerance=settings.others_tolerance, **overrides)


@dataclass(frozen=True)
class MetricAB:
    """One metric's A/B verdict. Ratios are new/base (head/base)."""

    name: str
    verdict: str  # regressed | improved | unchanged | inconclusive | newly-oom | changed
    reason: str = ""
    pairs: int = 0  # pairs with a value of this metric on both sides
    ratio: float | None = None  # timing: exp(Hodges-Lehmann estimate of the log-ratios); else head/base
    ci_low: float | None = None  # interval at the suite-wide level (decides regressed / improved)
    ci_high: float | None = None
    level: float | None = None  # its two-sided confidence level
    eq_low: float | None = None  # 90% interval (decides unchanged)
    eq_high: float | None = None
    more_pairs: int | None = None  # inconclusive: about how many more pairs would settle it
    base: float | None = None  # deterministic metrics: each side's own value
    head: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MetricAB":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class PointAB:
    """The A/B of one point: extra_info["ab"] of ab.json (to_dict / from_dict)."""

    pairs: tuple  # of Pair, in the order they ran
    metrics: tuple  # of MetricAB: the timing metrics, then the deterministic ones
    status: str  # regressed | improved | unchanged | inconclusive: the worst metric
    reason: str
    family: int = 1  # points the suite's A/B judges (error control across the suite)
    final: bool = True  # no more pairs will come
    busy: str | None = None  # the load that made the timings inconclusive, or None
    runqueue_wait_frac: float | None = None  # the most over the point's rounds, both sides
    others_cpu_frac: float | None = None
    contended: int = 0  # pairs left out of the statistic: other work contended for the CPU in a round

    def metric(self, name: str) -> MetricAB | None:
        return next((m for m in self.metrics if m.name == name), None)

    def to_dict(self) -> dict:
        return {"pairs": [p.to_dict() for p in self.pairs], "metrics": [m.to_dict() for m in self.metrics],
                "status": self.status, "reason": self.reason, "family": self.family, "final": self.final,
                "busy": self.busy, "runqueue_wait_frac": self.runqueue_wait_frac,
                "others_cpu_frac": self.others_cpu_frac, "contended": self.contended}

    @classmethod
    def from_dict(cls, d: dict) -> "PointAB":
        if not isinstance(d, dict) or "pairs" not in d or "status" not in d:
            raise UserError(f"extra_info['ab'] must be a mapping with pairs and status, got {str(d)[:80]!r}")
        if d["status"] not in STATUSES:
            raise UserError(f"A/B status {d['status']!r} unknown; valid choices: {', '.join(STATUSES)}")
        return cls(pairs=tuple(Pair.from_dict(p) for p in d["pairs"]),
                   metrics=tuple(MetricAB.from_dict(m) for m in d.get("metrics", [])),
                   status=d["status"], reason=d.get("reason", ""), family=d.get("family", 1),
                   final=d.get("final", True), busy=d.get("busy"),
                   runqueue_wait_frac=d.get("runqueue_wait_frac"), others_cpu_frac=d.get("others_cpu_frac"),
                   contended=d.get("contended", 0))


# ---- the statistic: Hodges-Lehmann estimate, exact Wilcoxon signed-rank interval ----

@functools.lru_cache(maxsize=None)
def _signed_rank_cdf(n: int) -> tuple:
    """P(T+ <= t) for t = 0 .. n(n+1)/2 under the null (each |d| equally likely + or -): exact counts
    of the subsets of {1..n} by their sum, over 2^n."""
    top = n * (n + 1) // 2
    counts = [1] + [0] * top
    for rank in range(1, n + 1):
        for s in range(top, rank - 1, -1):
            counts[s] += counts[s - rank]
    total, running, cdf = 2 ** n, 0, []
    for c in counts:
        running += c
        cdf.append(running / total)
    return tuple(cdf)


def _critical(n: int, tail: float) -> int | None:
    """Largest c with P(T+ <= c) <= tail, or None if even T+ = 0 is likelier than that."""
    cdf = _signed_rank_cdf(n)
    if cdf[0] > tail:
        return None
    lo, hi = 0, len(cdf) - 1
    while lo < hi:  # cdf is increasing: the last index with cdf <= tail
        mid = (lo + hi + 1) // 2
        if cdf[mid] <= tail:
            lo = mid
        else:
            hi = mid - 1
    return lo


def walsh_averages(d: list) -> list:
    """(d_i + d_j) / 2 for i <= j, sorted."""
    return sorted([(a + b) / 2 for i, a in enumerate(d) for b in d[i:]])


def _median_sorted(values: list) -> float:
    m = len(values)
    return (values[(m - 1) // 2] + values[m // 2]) / 2


def hodges_lehmann(d: list) -> float:
    """The median of the Walsh averages: the center of d, robust to a few wild pairs."""
    return _median_sorted(walsh_averages(d))


def wilcoxon_interval(d: list, tail: float, walsh: list | None = None) -> tuple[float, float]:
    """Exact Wilcoxon signed-rank interval for the center of d: each side misses with probability at
    most `tail` (a 1 - 2 tail interval). Infinite where n pairs cannot reach that level (2^-n > tail)."""
    walsh = walsh_averages(d) if walsh is None else walsh
    c = _critical(len(d), tail)
    if c is None:
        return -math.inf, math.inf
    return walsh[c], walsh[len(walsh) - 1 - c]


# Latency and tokens/s are one test seen from two sides: per pair, tokens/s is the inverse of latency
# (the same tokens per call on both sides), so "latency regressed" and "tokens/s regressed" are the same
# event at any thresholds. The distinct tests per look of a point: latency, TTFT, TPOT.
DISTINCT_TESTS = 3


def _min_pairs(tail: float) -> int:
    """Fewest pairs whose exact interval can be finite at this tail (2^-n <= tail)."""
    return math.ceil(math.log2(1 / tail) - 1e-12)


def look_sizes(settings: ABSettings) -> list:
    """Pairs at each planned look: every `pairs_per_look` pairs, and the cap."""
    return sorted({min(k * settings.pairs_per_look, settings.max_pairs) for k in range(1, settings.looks + 1)})


def family_tail(settings: ABSettings, family: int) -> float:
    """One-sided error allowed each test of each point at each look (Bonferroni over points x distinct
    timing tests x looks). Only looks whose pairs can reach the level count: at fewer than
    log2(1/tail) pairs the exact interval is infinite and that look cannot cry wolf, so the smallest
    number of looks k that covers every look able to decide at alpha / (family x tests x k) is spent."""
    sizes = look_sizes(settings)
    base = settings.alpha / (max(1, family) * DISTINCT_TESTS)
    for k in range(1, len(sizes) + 1):
        tail = base / k
        if sum(n >= _min_pairs(tail) for n in sizes) <= k:
            return tail
    return base / len(sizes)


# ---- judging ----

def log_ratios(pairs, metric: str) -> list:
    """d = log(new/base) of `metric` for every pair with a value on both sides, in order."""
    out = []
    for p in pairs:
        field_ = "latency_s" if metric == "tokens_per_s" else metric
        b, h = getattr(p.base, field_), getattr(p.head, field_)
        if not (is_number(b) and is_number(h) and b > 0 and h > 0):
            continue
        d = math.log(h / b)
        out.append(-d if metric == "tokens_per_s" else d)  # tokens/s is per call's tokens over latency
    return out


def _z(tail: float) -> float:
    return NormalDist().inv_cdf(1 - tail)


def _pairs_to_settle(d: list, est: float, bound: float, tail: float, eq_tail: float) -> int | None:
    """About how many pairs in all would settle a metric at this estimate and spread (normal
    approximation, Wilcoxon's efficiency 3/pi against the mean): None if the estimate sits on the
    threshold, where no number of pairs settles it."""
    if len(d) < 2:
        return None
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) * math.pi / 3)
    if sd == 0:
        return len(d)
    gap = abs(est) - bound
    if gap > 0:  # beyond the threshold: a regression or improvement once the interval leaves 0
        n = (_z(tail) * sd / abs(est)) ** 2 if est else math.inf
        n = max(n, math.log2(1 / tail))  # the exact interval needs 2^-n <= tail
    elif gap < 0:  # within: unchanged once the 90% interval fits within +-threshold
        n = (_z(eq_tail) * sd / -gap) ** 2
    else:
        return None
    return math.ceil(n) if math.isfinite(n) else None


def timing_verdict(name: str, d: list, threshold: float, tail: float) -> MetricAB:
    """One timing metric's verdict from its log-ratios d = log(new/base) (tokens/s: of tokens/s), at
    `tail` one-sided error per side of the suite-wide interval (family_tail)."""
    if not d:
        return MetricAB(name, INCONCLUSIVE, "no pairs with this metric on both sides", 0)
    walsh = walsh_averages(d)
    est = _median_sorted(walsh)
    lo, hi = wilcoxon_interval(d, tail, walsh)
    eq_tail = (1 - EQUIVALENCE_LEVEL) / 2
    eq_lo, eq_hi = wilcoxon_interval(d, eq_tail, walsh)
    bound = math.log1p(threshold)
    # in the metric's own direction, worse is positive: the interval of "how much worse"
    sign = -1 if BY_NAME[name].better == HIGHER_IS_BETTER else 1
    worse_est = sign * est
    worse_lo, worse_hi = sorted((sign * lo, sign * hi))
    record = dict(pairs=len(d), ratio=math.exp(est), ci_low=_exp(lo), ci_high=_exp(hi), level=1 - 2 * tail,
                  eq_low=_exp(eq_lo), eq_high=_exp(eq_hi))
    if worse_lo > 0 and worse_est > bound:
        return MetricAB(name, REGRESSED, f"{math.exp(est):.3f}x, beyond {threshold:.0%}", **record)
    if worse_hi < 0 and -worse_est > bound:
        return MetricAB(name, IMPROVED, f"{math.exp(est):.3f}x, beyond {threshold:.0%}", **record)
    if -bound < eq_lo and eq_hi < bound:
        return MetricAB(name, UNCHANGED, f"90% interval within +-{threshold:.0%}", **record)
    need = _pairs_to_settle(d, est, bound, tail, eq_tail)
    more = None if need is None else max(1, need - len(d))
    reason = (f"{len(d)} pairs, ~{more} more would settle it" if more is not None
              else f"{len(d)} pairs, the estimate sits on the threshold")
    return MetricAB(name, INCONCLUSIVE, reason, more_pairs=more, **record)


def _exp(x: float) -> float | None:
    """A log-ratio as a ratio; None for an interval's infinite end (JSON has no infinity)."""
    return math.exp(x) if math.isfinite(x) else None


def _timing_metric(name: str, pairs, settings: ABSettings, tail: float, busy: str | None) -> MetricAB:
    verdict = timing_verdict(name, log_ratios(pairs, name), settings.threshold(name), tail)
    if busy:
        return replace(verdict, verdict=INCONCLUSIVE, reason=busy, more_pairs=None)
    return verdict


def _most(values) -> float | None:
    values = [v for v in values if is_number(v)]
    return max(values) if values else None


BUSY_SHARE = 0.25  # more than this share of a point's pairs contended: the point is busy


def _contended(pair, settings: ABSettings) -> bool:
    """Whether other work contended for the CPU in either round of the pair."""
    return any((is_number(r.runqueue_wait_frac) and r.runqueue_wait_frac > settings.runqueue_tolerance) or
               (is_number(r.others_cpu_frac) and r.others_cpu_frac > settings.others_tolerance)
               for r in (pair.base, pair.head))


def _busy(pairs, contended: int, waited: float | None, others: float | None, settings: ABSettings) -> str | None:
    """Load that hits one round of a pair and not the other is what the pairing cannot cancel, so
    contended pairs never enter the statistic; more than BUSY_SHARE of them and the point is busy
    (the reason names the most load seen: `waited`, `others`)."""
    if contended <= BUSY_SHARE * len(pairs):
        return None
    load = []
    if waited is not None and waited > settings.runqueue_tolerance:
        load.append(f"threads waited up to {waited:.2f} s per s for a CPU (tolerance {settings.runqueue_tolerance:g})")
    if others is not None and others > settings.others_tolerance:
        load.append(f"others used up to {others:.2f} cores (tolerance {settings.others_tolerance:g})")
    return f"machine busy in {contended} of {len(pairs)} pairs: " + "; ".join(load)


def _deterministic(name: str, base: Measurement, head: Measurement, settings: ABSettings) -> MetricAB | None:
    b, h = getattr(base, name, None), getattr(head, name, None)
    if not (is_number(b) and is_number(h)):
        return None
    if name == "params":
        verdict = UNCHANGED if b == h else CHANGED
        reason = "" if b == h else f"the sides timed different models: {b:,} -> {h:,} parameters"
        return MetricAB(name, verdict, reason, ratio=h / b if b else None, base=b, head=h)
    threshold = settings.threshold(name)
    ratio = h / b if b > 0 else (1.0 if h == b else math.inf)
    worse = ratio if BY_NAME[name].better == LOWER_IS_BETTER else (1 / ratio if ratio else math.inf)
    if worse > 1 + threshold:
        verdict = REGRESSED
    elif worse < 1 / (1 + threshold):
        verdict = IMPROVED
    else:
        verdict = UNCHANGED
    return MetricAB(name, verdict, f"{b:.6g} -> {h:.6g} (threshold {threshold:.0%})" if verdict != UNCHANGED else "",
                    ratio=ratio if math.isfinite(ratio) else None, base=b, head=h)


def _oom(base: Measurement | None, head: Measurement | None) -> MetricAB | None:
    b_oom, h_oom = bool(base and base.oom), bool(head and head.oom)
    if h_oom and not b_oom:
        return MetricAB("oom", NEWLY_OOM, "head ran out of memory, base did not")
    if b_oom and not h_oom:
        return MetricAB("oom", IMPROVED, "base ran out of memory, head did not")
    if b_oom and h_oom:
        return MetricAB("oom", UNCHANGED, "both sides ran out of memory")
    return None


def _status(metrics) -> str:
    verdicts = {m.verdict for m in metrics}
    if verdicts & {REGRESSED, NEWLY_OOM}:
        return REGRESSED
    if INCONCLUSIVE in verdicts or not verdicts - {CHANGED}:
        return INCONCLUSIVE
    if IMPROVED in verdicts:
        return IMPROVED
    return UNCHANGED


def judge(pairs, base: Measurement | None, head: Measurement | None, settings: ABSettings,
          family: int, final: bool) -> PointAB:
    """The verdict of one point from its pairs so far. `family`: how many points the suite's A/B
    judges; `final`: no more pairs will come. The error control counts the planned looks: call it after
    the pairs of each of `look_sizes(settings)`, and stop once `settled`."""
    pairs = tuple(pairs)
    if isinstance(family, bool) or not isinstance(family, int) or family < 1:
        raise UserError(f"A/B family must be a positive number of points, got {family!r}")
    oom = _oom(base, head)
    devices = {m.device for m in (base, head) if m is not None}
    on_cpu = not devices or any(str(dev).startswith("cpu") for dev in devices)
    rounds = [r for p in pairs for r in (p.base, p.head)]
    waited, others = _most(r.runqueue_wait_frac for r in rounds), _most(r.others_cpu_frac for r in rounds)
    # A GPU run's host load is recorded but does not decide: the host CPU does not time the kernels.
    clean = [p for p in pairs if not _contended(p, settings)] if on_cpu else list(pairs)
    contended = len(pairs) - len(clean)
    busy = _busy(pairs, contended, waited, others, settings)
    metrics = []
    if oom is not None:
        metrics.append(oom)
    else:
        tail = family_tail(settings, family)
        for name in TIMING_METRICS:
            if name == "tpot_s" and pairs and all(p.base.tpot_s is None and p.head.tpot_s is None for p in pairs):
                continue  # one output token: no decode to time on either side
            metrics.append(_timing_metric(name, clean, settings, tail, busy))
        if base is not None and head is not None:
            for name in DETERMINISTIC_METRICS:
                m = _deterministic(name, base, head, settings)
                if m is not None:
                    metrics.append(m)
    status = _status(metrics)
    reason = _reason(status, metrics, busy, pairs)
    if status == INCONCLUSIVE and not busy and len(pairs) < settings.max_pairs and futile(
            [m for m in metrics if m.name in TIMING_METRICS and m.verdict == INCONCLUSIVE], len(pairs), settings):
        reason += f", beyond {FUTILITY_FACTOR:g}x the cap: stopped"
    if contended and not busy:
        reason += f" ({contended} contended {'pair' if contended == 1 else 'pairs'} left out)"
    return PointAB(pairs, tuple(metrics), status, reason, family, final, busy, waited, others, contended)


def _reason(status: str, metrics, busy: str | None, pairs) -> str:
    if busy and status != REGRESSED:
        return busy
    if status in (REGRESSED, IMPROVED):
        hits = [m for m in metrics if m.verdict in (status, NEWLY_OOM)]
        if any(m.name == "latency_s" for m in hits):  # tokens/s is latency's inverse: no news
            hits = [m for m in hits if m.name != "tokens_per_s"]
        return "; ".join(m.reason if m.name == "oom" else f"{m.name} {m.reason}" for m in hits)
    if status == INCONCLUSIVE:
        open_ = [m for m in metrics if m.verdict == INCONCLUSIVE]
        more = [m.more_pairs for m in open_ if m.more_pairs is not None]
        if more:
            return f"{len(pairs)} pairs, ~{max(more)} more would settle it"
        return open_[0].reason if open_ else f"{len(pairs)} pairs"
    return f"{len(pairs)} pairs"


def settled(ab: PointAB, settings: ABSettings) -> bool:
    """Whether the driver can stop adding pairs: no more will come, or the machine was busy, or the
    point regressed, or every timing metric is decided, or the open ones are futile (FUTILITY_FACTOR)."""
    if ab.final or ab.busy or ab.status == REGRESSED:
        return True
    timing = [m for m in ab.metrics if m.name in TIMING_METRICS]
    open_ = [m for m in timing if m.verdict == INCONCLUSIVE]
    return bool(timing) and (not open_ or futile(open_, len(ab.pairs), settings))


def futile(open_metrics, pairs: int, settings: ABSettings) -> bool:
    """Whether every open metric would need more than FUTILITY_FACTOR x the cap in all (or none would
    settle at its estimate), at a look of at least FUTILITY_FROM_PAIRS pairs."""
    if pairs < FUTILITY_FROM_PAIRS or not open_metrics:
        return False
    limit = FUTILITY_FACTOR * settings.max_pairs
    return all(m.more_pairs is None or m.pairs + m.more_pairs > limit for m in open_metrics)


def is_regression(verdict: str) -> bool:
    return verdict in (REGRESSED, NEWLY_OOM)
