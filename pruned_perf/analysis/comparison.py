"""The records of a run held against stored runs (pruned_perf.analysis.compare decides them): each metric's
verdict, each point's, and the whole comparison. Torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from pruned_perf.analysis.verdicts import is_regression
from pruned_perf.core.schema import Fingerprint, Measurement, Point

# Fields of a point that the JSON of a verdict carries (`info`): what places it in a table or a figure.
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
    """The verdict of one point, with the point's measurement in the baseline's run and in this one
    (None where it is only in the other: `new`, `missing`)."""

    point: Point
    status: str
    metrics: list[MetricVerdict] = field(default_factory=list)
    baseline: Measurement | None = None
    current: Measurement | None = None

    @property
    def id(self) -> str:
        return self.point.id

    @property
    def measurement(self) -> Measurement:
        """The point as this run measured it, or as the baseline's did where this run did not."""
        return self.current if self.current is not None else self.baseline

    def metric(self, name: str) -> MetricVerdict | None:
        return next((m for m in self.metrics if m.metric == name), None)

    @property
    def is_regression(self) -> bool:
        return is_regression(self.status)

    def to_dict(self) -> dict:
        measurement = self.measurement
        info = {k: getattr(measurement, k) for k in _INFO_KEYS} if measurement is not None else {}
        return {"id": self.id, "status": self.status, "metrics": [asdict(m) for m in self.metrics], "info": info}


@dataclass
class Comparison:
    points: list[PointVerdict]
    warnings: list[str] = field(default_factory=list)
    baseline_path: str = ""
    baseline_fingerprint: Fingerprint | None = None
    history_runs: int = 1
    # median over points of (current probe / baseline probe): how much slower the machine was
    machine_factor: float | None = None
    # median over points of the cores' worth of CPU that anything else used during the rounds:
    # (this run, the baseline's run); None where either run did not record it
    others_cpu: tuple[float, float] | None = None
    # between_run_sd of the history (>= MIN_HISTORY runs only): model -> metric -> SD of the log medians
    between_run_sd: dict[str, dict[str, float]] = field(default_factory=dict)
    history_sigmas: float = 0.0

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
        """The verdicts as JSON (`compare --json`)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["points"] = [p.to_dict() for p in self.points]
        d["baseline_fingerprint"] = self.baseline_fingerprint.to_dict() if self.baseline_fingerprint else {}
        d["others_cpu"] = list(self.others_cpu) if self.others_cpu is not None else None
        d["has_regression"] = self.has_regression
        return d
