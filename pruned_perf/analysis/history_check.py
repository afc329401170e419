"""The steps of a history and where each stands (`pruned-perf history check`), torch-free.

Every series (a point's latency, TTFT or TPOT over the runs, each divided by the point's steadiness probe
where every run has one: the probe takes the machine's speed out) is searched for steps over the whole
history (pruned_perf.analysis.steps: the false discoveries controlled over the grid). Each step gets a
standing:

- `suspected`: at the end of the series (fewer than `settle` runs after it) and not yet confirmed;
- `regressed` / `improved`: an A/B of the range's two ends on the history's machine found it
  (pruned_perf.analysis.history_ab), or, with no A/B, it persisted through `settle` runs and more (the
  nightly job then A/Bs it too: `suspects`);
- `environment`: not the code: the A/B of its two ends found no change, or a bisection found none in the
  code, or (with no A/B) the environment changed within its range (hardware, driver, torch,
  transformers, threads) or the point's steadiness probe stepped with it;
- `gradual`: a drift over several runs, none of whose steps alone is beyond the threshold.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from pruned_perf.analysis.history import HistoryRun, load_runs
from pruned_perf.analysis.history_ab import CULPRIT, NOT_IN_CODE, SPREAD, Bisection, HistoryAB, load_abs
from pruned_perf.analysis.steps import GRADUAL, Step, StepSettings, find_steps
from pruned_perf.analysis.verdicts import IMPROVED, REGRESSED, UNCHANGED

METRICS = ("latency_s", "ttft_s", "tpot_s")
SUSPECTED, ENVIRONMENT = "suspected", "environment"
STANDINGS = (SUSPECTED, REGRESSED, IMPROVED, ENVIRONMENT, GRADUAL)
ENV_KEYS = ("slug", "name", "driver", "cuda", "torch", "transformers", "threads")


@dataclass(frozen=True, kw_only=True)
class HistoryStep:
    """One step of one series, and where it stands (as `history check --json` writes it)."""

    point: str
    metric: str  # one of METRICS
    before: int  # the last run at the old level
    at: int  # the first run at the new level
    good: str | None  # their commits: the range is (good, bad]
    bad: str | None
    ratio: float  # new level / old
    ci_low: float
    ci_high: float
    q_value: float
    kind: str  # step | gradual
    at_end: bool  # fewer than `settle` runs after it
    standing: str  # one of STANDINGS
    confirmed_by: str | None = None  # "ab", "bisection" or "persistence"
    environment: str = ""  # what changed within the range
    culprit: str | None = None  # the first bad commit, where a bisection found one
    culprit_subject: str | None = None
    culprit_ratio: float | None = None
    reason: str = ""
    tried: bool = False  # an A/B of its range ran on this point, whatever it found

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def worse(self) -> bool:
        return self.ratio > 1  # every metric here is a time: higher is worse


@dataclass(frozen=True)
class HistoryCheck:
    """The steps of one hardware and profile, and the runs they were found in."""

    slug: str
    profile: str
    runs: tuple
    steps: tuple

    @property
    def has_new_regression(self) -> bool:
        """A confirmed regression that is still at the end of its series: what fails the nightly job."""
        return any(s.standing == REGRESSED and s.at_end for s in self.steps)

    def suspects(self) -> dict:
        """(good, bad) -> the points an A/B of those two commits would judge, in the order to run them: the
        suspected steps, then the steps that stand by persistence alone and no A/B has tried (a step can
        be found only runs after it happened), each newest first."""
        untried = [s for s in self.steps if s.confirmed_by == "persistence" and not s.tried]
        out: dict = {}
        for group in ([s for s in self.steps if s.standing == SUSPECTED], untried):
            for s in sorted(group, key=lambda s: -s.at):
                if s.good and s.bad:
                    out.setdefault((s.good, s.bad), [])
                    if s.point not in out[(s.good, s.bad)]:
                        out[(s.good, s.bad)].append(s.point)
        return out


def check_history(root, slug: str, profile: str, settings: StepSettings = StepSettings(),
                  normalize: bool = True) -> HistoryCheck:
    runs = load_runs(root, slug, profile)
    abs_, bisections = load_abs(root, slug, profile)
    return judge_history(slug, profile, runs, abs_, bisections, settings, normalize)


def judge_history(slug: str, profile: str, runs: list[HistoryRun], abs_: list[HistoryAB],
                  bisections: list[Bisection], settings: StepSettings = StepSettings(),
                  normalize: bool = True) -> HistoryCheck:
    env = [env_key(r) for r in runs]
    found = find_steps(series_of(runs, normalize), env, settings)
    probe_steps = _probe_steps(runs, env, settings)
    steps = [_stand(s, runs, abs_, bisections, probe_steps, settings) for s in found]
    return HistoryCheck(slug, profile, tuple(runs), tuple(steps))


def env_key(run: HistoryRun) -> str:
    return "|".join(str(getattr(run.env, k)) for k in ENV_KEYS)


def series_of(runs: list[HistoryRun], normalize: bool) -> dict:
    """"point|metric" -> one value per run (None: not measured or out of memory); divided by the point's
    probe where asked and every run that measured the point has one."""
    ids = sorted({pid for r in runs for pid in r.points})
    series = {}
    for pid in ids:
        points = [r.points.get(pid) for r in runs]
        probes = [p.probe_s if p is not None and not p.oom else None for p in points]
        by_probe = normalize and all(pr is not None for pr, p in zip(probes, points) if p is not None and not p.oom)
        for metric in METRICS:
            values = [p.value(metric) if p is not None else None for p in points]
            if by_probe:
                values = [v / pr if v is not None else None for v, pr in zip(values, probes)]
            if any(v is not None for v in values):
                series[f"{pid}|{metric}"] = values
    return series


def _probe_steps(runs: list[HistoryRun], env: list[str], settings: StepSettings) -> dict:
    """point -> steps of its steadiness probe: the machine's speed, which no code change moves."""
    probes = {pid: [r.points[pid].probe_s if pid in r.points and not r.points[pid].oom else None for r in runs]
              for pid in {pid for r in runs for pid in r.points}}
    probes = {pid: v for pid, v in probes.items() if sum(x is not None for x in v) > 2}
    out: dict = {}
    for step in find_steps(probes, env, settings) if probes else []:
        out.setdefault(step.series, []).append(step)
    return out


def _stand(step: Step, runs: list[HistoryRun], abs_: list[HistoryAB], bisections: list[Bisection],
           probe_steps: dict, settings: StepSettings) -> HistoryStep:
    point, metric = step.series.rsplit("|", 1)
    good, bad = runs[step.before].commit, runs[step.at].commit
    changed = _environment(runs, step, probe_steps.get(point, []))
    base = HistoryStep(point=point, metric=metric, before=step.before, at=step.at, good=good, bad=bad,
                       ratio=step.ratio, ci_low=step.ci_low, ci_high=step.ci_high, q_value=step.q_value,
                       kind=step.kind, at_end=step.at_end, standing=SUSPECTED, environment=changed)
    if step.kind == GRADUAL:
        return _with(base, GRADUAL, None, f"a drift over runs {step.before + 1}-{step.at}: {step.ratio:.3f}x in all")
    bisection = next((b for b in reversed(bisections) if (b.good, b.bad) == (good, bad) and point in b.points), None)
    if bisection is not None and bisection.outcome in (CULPRIT, SPREAD, NOT_IN_CODE):
        return _bisected(base, bisection)
    ab = next((a for a in reversed(abs_) if (a.base, a.head) == (good, bad) and point in a.points), None)
    if ab is not None and ab.points[point].status in (REGRESSED, IMPROVED, UNCHANGED):
        return _confirmed(base, ab)
    return _unconfirmed(replace(base, tried=ab is not None or bisection is not None), step, settings)


def _with(step: HistoryStep, standing: str, by: str | None, reason: str, **more) -> HistoryStep:
    return replace(step, standing=standing, confirmed_by=by, reason=reason, **more)


def _confirmed(step: HistoryStep, ab: HistoryAB) -> HistoryStep:
    verdict = ab.points[step.point]
    said = f"the A/B of {ab.base[:12]}..{ab.head[:12]}: {verdict.status}" + (
        f", {verdict.ratio:.3f}x" if verdict.ratio else "")
    if verdict.status == UNCHANGED:
        return _with(step, ENVIRONMENT, "ab", said + " (not the code" + (f": {step.environment})" if step.environment
                                                                         else ": the machine)"))
    return _with(step, verdict.status, "ab", said)


def _bisected(step: HistoryStep, b: Bisection) -> HistoryStep:
    if b.outcome == NOT_IN_CODE:
        return _with(step, ENVIRONMENT, "bisection", f"bisected: no change in the code ({b.reason})")
    standing = REGRESSED if (b.ratio or step.ratio) > 1 else IMPROVED
    if b.outcome == SPREAD:
        return _with(step, standing, "bisection", f"spread over several commits: {b.reason}")
    return _with(step, standing, "bisection", f"first bad commit {b.culprit[:12]} ({b.subject or '?'})",
                 culprit=b.culprit, culprit_subject=b.subject, culprit_ratio=b.ratio)


def _unconfirmed(step: HistoryStep, found: Step, settings: StepSettings) -> HistoryStep:
    if step.environment:
        return _with(step, ENVIRONMENT, None, f"the environment changed within its range: {step.environment}")
    if found.at_end:
        return _with(step, SUSPECTED, None, "at the end of the series: an A/B of its two ends would confirm it")
    standing = REGRESSED if step.worse else IMPROVED
    ab = "the A/B of its range decided nothing" if step.tried else "no A/B of its range yet"
    return _with(step, standing, "persistence", f"held for {settings.settle} runs and more; {ab}")


def _environment(runs: list[HistoryRun], step: Step, probe_steps: list) -> str:
    """What changed within (before, at]: the environment, or the point's steadiness probe."""
    changes = [c for i in range(step.before + 1, step.at + 1) for c in runs[i].env.differences(runs[i - 1].env)]
    if any(p.before < step.at and step.before < p.at for p in probe_steps):
        changes.append("the steadiness probe stepped")
    return "; ".join(dict.fromkeys(changes))
