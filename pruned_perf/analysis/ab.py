"""The records of an interleaved A/B, torch-free: how it judges (`ABSettings`), each metric's and each
point's verdict (`MetricAB`, `PointAB`), and the whole A/B of a run as its results file keeps it
(`ABRecord`, under the top-level key `pruned_perf_ab`; docs/results-schema.md).

A results file of an A/B is pytest-benchmark JSON whose points are the new (head) side's Measurements;
`pruned_perf_ab` adds both sides' descriptions, the settings and, per point, every pair of rounds, the
verdict and the base side's Measurement. A point that got no measurement (a worker died or hung, Ctrl-C,
a machine busy before its start) is there too, with what it had.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pruned_perf.analysis.config import DEFAULT_AB_BIAS_FLOOR, DEFAULT_OTHERS_TOLERANCE, Config
from pruned_perf.analysis.metrics import BY_NAME
from pruned_perf.analysis.verdicts import (CHANGED, FAILED, IMPROVED, INCONCLUSIVE, NEWLY_OOM, REGRESSED,
                                           UNCHANGED)
from pruned_perf.core.ab_schema import BASE, HEAD, SIDES, Pair, SideDescription
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import (COUNT, FLAG, NAME, NON_NEGATIVE, OBJECT, POSITIVE, POSITIVE_INT, TEXT, Check,
                                     Measurement, Record, check_fields, checked, is_number)

AB_KEY = "pruned_perf_ab"  # the results file's key of the A/B record

POINT_STATUSES = (REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE, FAILED)
METRIC_VERDICTS = (REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE, NEWLY_OOM, CHANGED)

# Chosen by simulation (tests/test_paired.py, docs/ab-verdicts.md).
DEFAULT_PAIRS_PER_LOOK = 6
DEFAULT_MAX_PAIRS = 30
# Bonferroni bound on the share of A/A suite runs with a `regressed` point (and, separately, an `improved`
# one): half the 1% target, since simulated A/A suites come near the bound.
DEFAULT_AB_ALPHA = 0.005

_ALPHA = Check(lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)")
_OPT_POSITIVE = POSITIVE.or_null()
_OPT_NUMBER = Check(lambda v: v is None or is_number(v), "a finite number or null")


def _thresholds_ok(value) -> bool:
    return isinstance(value, dict) and all(k in BY_NAME and is_number(v) and v >= 0 for k, v in value.items())


def _default_thresholds() -> dict:
    return {name: metric.threshold for name, metric in BY_NAME.items()}


@dataclass(frozen=True, kw_only=True)
class ABSettings(Record):
    """How an A/B judges: from the pytest options and `[tool.pruned_perf]` (ab_settings_from_config)."""

    pairs_per_look: int = checked(POSITIVE_INT, default=DEFAULT_PAIRS_PER_LOOK)  # pairs added between looks
    max_pairs: int = checked(POSITIVE_INT, default=DEFAULT_MAX_PAIRS)  # the cap
    alpha: float = checked(_ALPHA, default=DEFAULT_AB_ALPHA)  # suite-wide share of A/A runs with a `regressed` point
    thresholds: dict = checked(Check(_thresholds_ok, "a mapping of known metrics to relative changes >= 0 "
                                                     f"({', '.join(sorted(BY_NAME))})"),
                               default_factory=_default_thresholds)
    # how far two processes of identical code read apart (a process bias): the interval must clear it too
    bias_floor: float = checked(NON_NEGATIVE, default=DEFAULT_AB_BIAS_FLOOR)
    # cores that work outside the A/B may use during a round before the round is contended
    others_tolerance: float = checked(NON_NEGATIVE, default=DEFAULT_OTHERS_TOLERANCE)

    def __post_init__(self):
        check_fields(self, "A/B settings")
        if self.max_pairs < self.pairs_per_look:
            raise UserError(f"A/B max_pairs ({self.max_pairs}) must be at least pairs_per_look "
                            f"({self.pairs_per_look})")

    def threshold(self, metric: str) -> float:
        return float(self.thresholds.get(metric, BY_NAME[metric].threshold if metric in BY_NAME else 0.0))

    @classmethod
    def from_dict(cls, data, where: str = "A/B settings") -> "ABSettings":
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.__dataclass_fields__))
            if unknown:
                raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: "
                                f"{', '.join(sorted(cls.__dataclass_fields__))}")
        return super().from_dict(data, where)


def ab_settings_from_config(config: Config, point_id: str | None = None, **overrides) -> ABSettings:
    """The thresholds, bias floor and load tolerance of `[tool.pruned_perf]` (for `point_id`'s groups),
    plus `overrides` (pairs_per_look, max_pairs, alpha: from the pytest options)."""
    settings = config.settings_for(point_id) if point_id is not None else config
    return ABSettings(thresholds=dict(settings.thresholds), bias_floor=settings.ab_bias_floor,
                      others_tolerance=settings.others_tolerance, **overrides)


@dataclass(frozen=True, kw_only=True)
class MetricAB(Record):
    """One metric's A/B verdict. Ratios are new/base. Timing metrics carry two intervals: the one at the
    suite-wide level (it decides `regressed` / `improved`) and the equivalence interval of this look
    (it decides `unchanged`); `shown` picks the one that decided."""

    name: str = checked(NAME)
    verdict: str = checked(Check(lambda v: v in METRIC_VERDICTS, f"one of {', '.join(METRIC_VERDICTS)}"))
    reason: str = checked(TEXT, default="")
    pairs: int = checked(COUNT, default=0)  # pairs with a value of this metric on both sides
    ratio: float | None = checked(_OPT_POSITIVE, default=None)  # timing: exp(Hodges-Lehmann); else head/base
    ci_low: float | None = checked(_OPT_POSITIVE, default=None)  # interval at the suite-wide level
    ci_high: float | None = checked(_OPT_POSITIVE, default=None)
    level: float | None = checked(_OPT_NUMBER, default=None)  # its two-sided confidence level
    eq_low: float | None = checked(_OPT_POSITIVE, default=None)  # equivalence interval of this look
    eq_high: float | None = checked(_OPT_POSITIVE, default=None)
    eq_level: float | None = checked(_OPT_NUMBER, default=None)
    position: float | None = checked(_OPT_POSITIVE, default=None)  # the round second in its pair over the first
    more_pairs: int | None = checked(COUNT.or_null(), default=None)  # inconclusive: about how many more would settle it
    base: float | None = checked(_OPT_NUMBER, default=None)  # deterministic metrics: each side's own value
    head: float | None = checked(_OPT_NUMBER, default=None)

    def __post_init__(self):
        check_fields(self, f"A/B metric {self.name!r}")

    def shown(self) -> tuple[float | None, float | None, float | None]:
        """(low, high, level) of the interval that decided: the suite-wide one for a regression or an
        improvement, the equivalence interval otherwise (it is finite from the first look)."""
        if self.verdict in (REGRESSED, IMPROVED):
            return self.ci_low, self.ci_high, self.level
        return self.eq_low, self.eq_high, self.eq_level


def _pairs_check(value) -> bool:
    return isinstance(value, (list, tuple))


@dataclass(frozen=True, kw_only=True)
class PointAB(Record):
    """The A/B of one point: every pair of rounds in the order they ran (contended ones included), each
    metric's verdict, and the point's status: its worst metric, or `failed` where no verdict was reached."""

    pairs: tuple = checked(Check(_pairs_check, "a list of pairs"), items=Pair, default=())
    metrics: tuple = checked(Check(_pairs_check, "a list of metric verdicts"), items=MetricAB, default=())
    status: str = checked(Check(lambda v: v in POINT_STATUSES, f"one of {', '.join(POINT_STATUSES)}"))
    reason: str = checked(TEXT, default="")
    family: int = checked(POSITIVE_INT, default=1)  # points the suite's A/B judges (error control across them)
    final: bool = checked(FLAG, default=True)  # no more pairs will come
    busy: str | None = checked(TEXT.or_null(), default=None)  # the outside load that left it undecided
    contended: int = checked(COUNT, default=0)  # pairs that outside load contended: left out, and re-run
    others_cpu_frac: float | None = checked(NON_NEGATIVE.or_null(), default=None)  # the most outside load in a round

    def metric(self, name: str) -> MetricAB | None:
        return next((m for m in self.metrics if m.name == name), None)

    def clean_pairs(self, tolerance: float) -> list:
        return [p for p in self.pairs if not contended(p, tolerance)]


def contended(pair: Pair, tolerance: float) -> bool:
    """Whether work outside the A/B used more than `tolerance` cores during either round of the pair: load
    that hits one round and not the other is what the pairing cannot cancel. The sides' own threads and
    the other side's worker are not outside load: what the code under test does to the machine is its own."""
    return any(is_number(r.others_cpu_frac) and r.others_cpu_frac > tolerance for r in (pair.base, pair.head))


@dataclass(frozen=True, kw_only=True)
class ABPoint(Record):
    """One point of the A/B as the results file keeps it: its verdict and the base side's Measurement
    (None where the base measured nothing). The head's Measurement is the results' point of this id."""

    id: str = checked(NAME)
    ab: PointAB = checked(OBJECT, record=PointAB)
    base: Measurement | None = checked(OBJECT.or_null(), default=None)

    @classmethod
    def from_dict(cls, data, where: str = "A/B point") -> "ABPoint":
        if not isinstance(data, dict) or not isinstance(data.get("base"), (dict, type(None))):
            raise UserError(f"{where} must be an object with id, ab and base, got {str(data)[:80]!r}")
        base = data.get("base")
        point = super().from_dict({**data, "base": None}, where)
        if base is None:
            return point
        try:
            measurement = Measurement.from_dict(base)
        except UserError as exc:
            raise UserError(f"{where}: base: {exc}") from None
        if measurement.id != point.id:
            raise UserError(f"{where}: the base's measurement is of another point ({measurement.id!r})")
        return ABPoint(id=point.id, ab=point.ab, base=measurement)

    def to_dict(self) -> dict:
        return {"id": self.id, "ab": self.ab.to_dict(), "base": self.base.to_dict() if self.base else None}

    @property
    def status(self) -> str:
        return self.ab.status


def _sides_ok(value) -> bool:
    return isinstance(value, dict) and set(value) == set(SIDES)


@dataclass(frozen=True, kw_only=True)
class ABRecord(Record):
    """The A/B of a run: both sides, the settings, and every point it took up, in order."""

    sides: dict = checked(Check(_sides_ok, f"an object with exactly {' and '.join(SIDES)}"),
                          records=SideDescription)
    settings: ABSettings = checked(OBJECT, record=ABSettings)
    points: tuple = checked(Check(_pairs_check, "a list of points"), items=ABPoint, default=())

    @property
    def base(self) -> SideDescription:
        return self.sides[BASE]

    @property
    def head(self) -> SideDescription:
        return self.sides[HEAD]

    @property
    def family(self) -> int:
        return max((p.ab.family for p in self.points), default=1)

    def point(self, pid: str) -> ABPoint | None:
        return next((p for p in self.points if p.id == pid), None)

    def to_dict(self) -> dict:
        return {"sides": {role: side.to_dict() for role, side in self.sides.items()},
                "settings": self.settings.to_dict(), "points": [p.to_dict() for p in self.points]}


def ratio_or_none(log_ratio: float) -> float | None:
    """A log-ratio as a ratio; None for an interval's infinite end (JSON has no infinity)."""
    return math.exp(log_ratio) if math.isfinite(log_ratio) else None

