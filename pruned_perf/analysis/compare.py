"""Verdicts of current results against a baseline and its history of runs. Torch-free.

Per point and metric the verdict is one of `improved | unchanged | regressed | noisy | inconclusive`,
decided in three steps (the rule in words, and the false-alarm rates measured with it: docs/verdicts.md):

1. Within the run: the relative change of the medians beyond the metric's threshold AND an exact
   one-sided Mann-Whitney U test of the raw rounds against the baseline run's rounds with p < alpha.
   Within the threshold: `unchanged`; beyond it but not significant, or too few rounds (< min_rounds)
   to ever be: `inconclusive`.
2. Between runs: the whole machine is faster or slower from one run to the next, while rounds within
   a run stay tight, so a significant change must also lie beyond the median of every stored run of
   the baseline (its history, up to 10 runs) by more than the threshold. With fewer than MIN_HISTORY
   stored runs the spread between runs is unknown: a time or a speedup must then move by more than
   `drift_allowance` (chosen from A/A trials: docs/verdict-trials.md); memory needs only the threshold.
   With MIN_HISTORY or more stored runs it must also lie more than `history_sigmas` between-run
   standard deviations from the mean of the stored medians (log scale; the SD pooled over the model's
   points, since 3 runs say little about one point while a model's points drift alike). A noisy machine
   thus gets a wide gate, a steady one a narrow gate, both measured rather than assumed. Else `noisy`.
3. Steadiness: a time that got worse while the steadiness probe of its point says the machine was
   markedly slower (probe median more than `probe_tolerance` above the baseline's) or noisier (probe
   rounds spread over more than twice that, and twice the baseline's spread) is `noisy`, not
   `regressed`; likewise an improvement on a markedly faster machine. For the speedup over dense the
   machine's state during the point is taken against its state during the dense point (a dense point
   measured while the machine was busy inflates every speedup of its shape). Each point also records
   how long its threads waited on the run queue during its rounds, and how much CPU went to anything
   else meanwhile: more than `runqueue_tolerance` s, or `others_tolerance` cores, per second beyond
   the baseline's run is `noisy` too. Memory does not depend on the machine's speed.

Samples per metric come from the raw rounds (pruned_perf.analysis.metrics); peak memory is one deterministic
number per point: threshold only, no test. A point also gets `new` (no baseline), `missing` (only in
the baseline), `newly-oom` (a regression) and `no-longer-oom` (an improvement). Its status is the
worst of its metric verdicts: regressed > inconclusive > noisy > improved > unchanged.

Step 1 alone, simulated with 5 rounds a side (tests/test_compare.py checks the same properties):
identical distributions at 5-10% CV give a false `regressed` per metric in under 1% of runs (the
exact test is valid at alpha = 0.008); a 20% slowdown at 5% CV is caught in about 97% of runs. Steps 2
and 3 only ever turn `regressed` / `improved` into `noisy`, so they lower both rates.
"""
from __future__ import annotations

import math
import statistics
from pruned_perf.analysis.comparison import Comparison, MetricVerdict, PointVerdict
from pruned_perf.analysis.config import Config, Settings
from pruned_perf.analysis.summaries import PointSummary, between_run_sd, point_summary
from pruned_perf.analysis.metrics import BY_NAME, LOWER_IS_BETTER, METRICS, Metric
from pruned_perf.analysis.results import Results
from pruned_perf.analysis.stats import mann_whitney_p, min_p_value
from pruned_perf.core.errors import UserError
from pruned_perf.analysis.verdicts import (IMPROVED, INCONCLUSIVE, MISSING, NEW, NEWLY_OOM, NO_LONGER_OOM, NOISY,
                                           REGRESSED, UNCHANGED)
from pruned_perf.core.schema import Measurement, is_number

SOFTWARE_KEYS = ("torch", "transformers", "driver", "cuda")
# Fewer stored runs than this and the envelope of their medians says little about the spread between runs.
MIN_HISTORY = 3

# Worst first: the status of a point is the first of these that any of its metrics has.
_SEVERITY = (REGRESSED, INCONCLUSIVE, NOISY, IMPROVED, UNCHANGED)


# ---------------------------------------------------------------- samples per metric


def metric_samples(point: Measurement) -> dict[str, list[float]]:
    """The samples of each tested metric of a point; metrics without data are left out."""
    samples = {}
    for metric in METRICS:
        values = metric.samples(point) if metric.samples is not None else []
        if values:
            samples[metric.name] = values
    return samples


def relative_change(baseline: float, current: float) -> float:
    if baseline == 0:
        return 0.0 if current == 0 else math.copysign(math.inf, current)
    return (current - baseline) / abs(baseline)


def _is_bad(metric: str, change: float) -> bool:
    return change > 0 if BY_NAME[metric].better == LOWER_IS_BETTER else change < 0


# ---------------------------------------------------------------- step 1: within the run


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


def memory_verdict(baseline: float, current: float, threshold: float, metric: str = "peak_mem_bytes") -> MetricVerdict:
    """A deterministic metric (peak memory, perplexity) has one number per point: the threshold decides."""
    change = relative_change(baseline, current)
    verdict = MetricVerdict(metric, baseline, current, change, None, UNCHANGED, threshold, 1, 1)
    if abs(change) > threshold:
        verdict.verdict = REGRESSED if _is_bad(metric, change) else IMPROVED
    return verdict


# ---------------------------------------------------------------- step 2: between runs


def between_runs_reason(metric: Metric, verdict: MetricVerdict, history: list[float],
                        settings: Settings, sd: float | None = None) -> str:
    """Why a significant change is still within the spread between runs ("" when it is beyond it).

    The current median must be worse (or better) than every stored run's median by more than the
    threshold; with fewer than MIN_HISTORY stored runs, by more than the drift allowance too, for
    metrics that drift; with more, also `history_sigmas` SDs (`sd`, of the model) from their mean.
    Compared on the log scale, so that latency +40% and throughput /1.4 are alike.
    """
    values = [v for v in history if v is not None and v > 0] or [verdict.baseline_median]
    allowance = verdict.threshold
    if len(values) < MIN_HISTORY and metric.drifts:
        allowance = max(allowance, settings.drift_allowance)
    worse = (verdict.verdict == REGRESSED) == (metric.better == LOWER_IS_BETTER)  # the value went up
    edge = max(values) if worse else min(values)
    beyond = abs(math.log(verdict.current_median / edge)) if (verdict.current_median > edge) == worse else 0.0
    if beyond > math.log1p(allowance):
        return _sigmas_reason(verdict, values, settings.history_sigmas, sd)
    spread = max(values) / min(values) - 1
    known = (f"{len(values)} stored runs, spread {spread:.0%}" if len(values) >= MIN_HISTORY else
             f"{len(values)} stored run(s): spread between runs unknown, allowing {allowance:.0%}")
    return f"{verdict.verdict} within the run, but not beyond every stored run by {allowance:.0%} ({known})"


def _sigmas_reason(verdict: MetricVerdict, values: list[float], sigmas: float, sd: float | None) -> str:
    """Why a change beyond every stored run is still within `sigmas` between-run SDs of their mean."""
    if sd is None or sigmas <= 0 or len(values) < MIN_HISTORY:
        return ""
    center = sum(math.log(v) for v in values) / len(values)
    scale = sd * math.sqrt(1 + 1 / len(values))  # the spread of one new run around a mean of n
    away = abs(math.log(verdict.current_median) - center) / scale if scale > 0 else math.inf
    if away > sigmas:
        return ""
    return (f"{verdict.verdict} within the run, but {away:.1f} between-run SDs from the mean of {len(values)} "
            f"stored runs, not over {sigmas:g} (SD {sd:.0%}, pooled over this model's points)")


# ---------------------------------------------------------------- step 3: steadiness


def machine_reason(metric: Metric, verdict: MetricVerdict, baseline: Measurement, current: Measurement,
                   settings: Settings) -> str:
    """Why the machine, not the code, explains a change ("" when it does not): the first of three
    signals that says one run's machine was slower or busier than the other's. Each misses what another
    sees: the probe runs between rounds (and on a GPU times the GPU); the run-queue wait sees other
    processes only while this one's threads queue; others' CPU use sees them whether or not they
    delayed this process, and sees the hypervisor's other guests (steal); it counts on the CPU only
    (competing_cpu)."""
    return (_probe_reason(metric, verdict, baseline, current, settings)
            or _share_reason(verdict, baseline.runqueue_wait_frac, current.runqueue_wait_frac,
                             settings.runqueue_tolerance, _WAITED)
            or _share_reason(verdict, competing_cpu(baseline), competing_cpu(current),
                             settings.others_tolerance, _OTHERS))


def competing_cpu(point: Measurement) -> float | None:
    """Cores' worth of CPU that anything else used during the point's rounds, where that competes with
    the run: on the CPU only. A GPU run's host thread, alone on one of many cores, does not compete with
    other work that never made it wait (the run-queue wait would show it if it did)."""
    return point.others_cpu_frac if point.device == "cpu" else None


# What a busy machine did, per signal: {run} is "" or " in the baseline's run", {v} the value there.
_WAITED = "other processes held the cores{run}: its threads waited for a CPU {v:.2f} s per second of its rounds"
_OTHERS = "other processes or guests used the CPUs{run}: {v:.2f} cores' worth during its rounds"


def _probe_reason(metric: Metric, verdict: MetricVerdict, baseline: Measurement, current: Measurement,
                  settings: Settings) -> str:
    base_state, cur_state = metric.machine(baseline), metric.machine(current)
    if base_state is None or cur_state is None:
        return ""
    factor = cur_state / base_state  # > 1: the machine made this metric look worse than in the baseline's run
    tolerance = settings.probe_tolerance
    what = "during this point than during its dense point" if metric.name == "speedup_vs_dense" else "than"
    if verdict.verdict == REGRESSED and factor > 1 + tolerance:
        return f"the machine was {factor:.2f}x slower {what} in the baseline's run (steadiness probe)"
    if verdict.verdict == IMPROVED and factor < 1 / (1 + tolerance):
        return f"the machine was {1 / factor:.2f}x faster {what} in the baseline's run (steadiness probe)"
    base_spread, cur_spread = _probe_spread(baseline), _probe_spread(current)
    if cur_spread > 2 * tolerance and cur_spread > 2 * base_spread:
        return (f"the machine was noisy: steadiness probe rounds spread {cur_spread:.0%} "
                f"(baseline's run {base_spread:.0%})")
    return ""


def _share_reason(verdict: MetricVerdict, base: float | None, cur: float | None, tolerance: float,
                  text: str) -> str:
    """A slowdown while the machine's share that went elsewhere (seconds per second of the rounds) was
    more than `tolerance` above the baseline's run; an improvement while it was that much below."""
    if base is None or cur is None:
        return ""
    if verdict.verdict == REGRESSED and cur - base > tolerance:
        return text.format(run="", v=cur) + f" (baseline's run {base:.2f})"
    if verdict.verdict == IMPROVED and base - cur > tolerance:
        return text.format(run=" in the baseline's run", v=base) + f" (now {cur:.2f})"
    return ""


def _probe_spread(point: Measurement) -> float:
    rounds = [r for r in point.probe_rounds_s if is_number(r) and r > 0]
    return max(rounds) / min(rounds) - 1 if len(rounds) > 1 else 0.0


# ---------------------------------------------------------------- a point


def compare_point(baseline: Measurement, current: Measurement, config: Config,
                  history: list[PointSummary] | None = None, noise: dict[str, float] | None = None) -> PointVerdict:
    """Verdict of one point (the same in both runs); `history` holds its summary in each stored run
    (default: the baseline's own), `noise` the between-run SD of each metric of its model (between_run_sd)."""
    settings = config.settings_for(current.id)
    verdict = PointVerdict(current.point, UNCHANGED, [], baseline, current)
    if current.oom and baseline.oom:
        return verdict
    if current.oom or baseline.oom:
        verdict.status = NEWLY_OOM if current.oom else NO_LONGER_OOM
        return verdict
    history = history if history else [point_summary(baseline)]
    verdict.metrics = [v for metric in METRICS
                       if (v := _metric_verdict(metric, baseline, current, history, settings, noise or {})) is not None]
    # A point with nothing to compare has not passed: it is inconclusive, not unchanged.
    verdict.status = next((s for s in _SEVERITY if any(m.verdict == s for m in verdict.metrics)), INCONCLUSIVE)
    return verdict


def _metric_verdict(metric: Metric, baseline: Measurement, current: Measurement, history: list[PointSummary],
                    settings: Settings, noise: dict[str, float]) -> MetricVerdict | None:
    threshold = settings.thresholds[metric.name]
    if metric.samples is None:
        base, cur = metric.value(baseline), metric.value(current)
        if base is None and cur is None:
            return None
        verdict = memory_verdict(base, cur, threshold, metric.name) if None not in (base, cur) else \
            _one_sided(metric.name, "current" if base is not None else "baseline")
    else:
        base, cur = metric.samples(baseline), metric.samples(current)
        if not base and not cur:
            return None
        if not (base and cur):
            return _one_sided(metric.name, "current" if base else "baseline")
        verdict = sample_verdict(metric.name, base, cur, threshold, settings.alpha, settings.min_rounds)
    if verdict.verdict in (REGRESSED, IMPROVED):
        reason = between_runs_reason(metric, verdict, [run.median(metric.name) for run in history], settings,
                                     noise.get(metric.name))
        if not reason and metric.machine is not None:
            reason = machine_reason(metric, verdict, baseline, current, settings)
        if reason:
            verdict.verdict, verdict.reason = NOISY, reason
    return verdict


def _one_sided(metric: str, lacking: str) -> MetricVerdict:
    """A metric measured on one side only cannot be judged; it must not vanish from the report."""
    return MetricVerdict(metric, None, None, None, None, INCONCLUSIVE, reason=f"no {metric} data in the {lacking}")


def compare(current: Results, baseline: Results, config: Config | None = None,
            allow_mismatch: bool = False) -> Comparison:
    """Compare every point of `current` with the same id in `baseline`, against its run history."""
    config = config or Config()
    warnings = fingerprint_warnings(current, baseline, allow_mismatch)
    shared = [pid for pid in current.points if pid in baseline.points]
    if not shared:
        raise UserError(f"nothing to compare: none of the {len(current.points)} points of {current.path} is "
                        f"in the baseline {baseline.path} ({len(baseline.points)} points); "
                        f"was it measured with another profile or other --pp-* options?")
    runs = baseline.runs
    models = {pid: baseline.points[pid].model for pid in shared}
    sds = between_run_sd(runs, models) if len(runs) >= MIN_HISTORY else {}
    points = []
    for pid, point in current.points.items():
        if pid in baseline.points:
            history = [run.points[pid] for run in runs if pid in run.points]
            points.append(compare_point(baseline.points[pid], point, config, history, sds.get(models[pid])))
        else:
            points.append(PointVerdict(point.point, NEW, current=point))
    for pid, point in baseline.points.items():
        if pid not in current.points:
            points.append(PointVerdict(point.point, MISSING, baseline=point))
    return Comparison(points, warnings, baseline.path, baseline.fingerprint, len(runs),
                      _machine_factor(current, baseline, shared), _others_cpu(current, baseline, shared),
                      sds, config.history_sigmas)


def _machine_factor(current: Results, baseline: Results, shared: list[str]) -> float | None:
    probes = [(current.points[pid].probe_s, baseline.points[pid].probe_s) for pid in shared]
    ratios = [cur / base for cur, base in probes if is_number(cur) and is_number(base) and base > 0]
    return statistics.median(ratios) if ratios else None


def _others_cpu(current: Results, baseline: Results, shared: list[str]) -> tuple[float, float] | None:
    pairs = [(current.points[pid].others_cpu_frac, baseline.points[pid].others_cpu_frac) for pid in shared]
    known = [(cur, base) for cur, base in pairs if cur is not None and base is not None]
    if not known:
        return None
    return statistics.median(cur for cur, _ in known), statistics.median(base for _, base in known)


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
        old, new = getattr(baseline.fingerprint, key), getattr(current.fingerprint, key)
        if old != new:
            warnings.append(f"{key} differs: baseline {old}, results {new}")
    if current.profile != baseline.profile:
        warnings.append(f"profile differs: baseline {baseline.profile}, results {current.profile}")
    return warnings
