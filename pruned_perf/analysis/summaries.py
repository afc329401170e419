"""What a baseline remembers of each run (`RunSummary`: per point the median of each metric), and how
far identical code moves between runs (`between_run_sd`). The verdicts hold a change against that
spread (pruned_perf.analysis.compare); the store keeps the summaries (pruned_perf.analysis.baselines).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pruned_perf.analysis.metrics import METRICS
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import NAME, OBJECT, TEXT, Check, Measurement, Record, checked, is_number


@dataclass(frozen=True)
class PointSummary:
    """One point of one run: the median of each metric it has (metric name -> median) and of its
    steadiness probe; or that it ran out of memory. As JSON: `{metric: median, ..., "probe_s": s}`
    (`{"oom": true}`)."""

    oom: bool = False
    medians: dict[str, float] = field(default_factory=dict)
    probe_s: float | None = None

    def median(self, metric: str) -> float | None:
        value = self.medians.get(metric)
        return None if value is None else float(value)

    def to_dict(self) -> dict:
        if self.oom:
            return {"oom": True}
        return {**self.medians, **({"probe_s": self.probe_s} if self.probe_s is not None else {})}

    @classmethod
    def from_dict(cls, data, where: str = "point") -> "PointSummary":
        if not isinstance(data, dict):
            raise UserError(f"{where} is not an object: {data!r}")
        bad = {k: v for k, v in data.items() if k != "oom" and not (is_number(v) and v >= 0)}
        if bad:
            raise UserError(f"{where} has bad values for {', '.join(bad)}: {bad!r}")
        if data.get("oom"):
            return cls(oom=True)
        return cls(False, {k: v for k, v in data.items() if k not in ("oom", "probe_s")}, data.get("probe_s"))


def point_summary(point: Measurement) -> PointSummary:
    if point.oom:
        return PointSummary(oom=True)
    medians = {m.name: value for m in METRICS if (value := m.value(point)) is not None}
    return PointSummary(False, medians, point.probe_s if is_number(point.probe_s) else None)


@dataclass(frozen=True, kw_only=True)
class RunSummary(Record):
    """What the history keeps of one run: who and when, and a summary per point (by id)."""

    run_id: str | None = checked(TEXT.or_null(), default=None)
    datetime: str | None = checked(TEXT.or_null(), default=None)
    commit: str | None = checked(TEXT.or_null(), default=None)
    slug: str = checked(NAME)
    torch: str | None = checked(TEXT.or_null(), default=None)
    transformers: str | None = checked(TEXT.or_null(), default=None)
    points: dict[str, PointSummary] = checked(Check(OBJECT.ok, "an object of point summaries by id"),
                                              records=PointSummary)

    def median(self, pid: str, metric: str) -> float | None:
        point = self.points.get(pid)
        return point.median(metric) if point is not None else None

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "datetime": self.datetime, "commit": self.commit, "slug": self.slug,
                "torch": self.torch, "transformers": self.transformers,
                "points": {pid: point.to_dict() for pid, point in self.points.items()}}


def read_history(history, slug: str, where: str) -> list[RunSummary]:
    """The stored run summaries (a JSON list, or None: no history), checked: a corrupt history or one of
    other hardware than `slug` is one error naming `where`."""
    if history is None:
        return []
    if not isinstance(history, list) or not history:
        raise UserError(f"{where} must be a non-empty list of run summaries")
    runs = [RunSummary.from_dict(run, f"{where}[{i}]") for i, run in enumerate(history)]
    for i, run in enumerate(runs):
        if run.slug != slug:
            raise UserError(f"{where}[{i}] is from hardware {run.slug!r}, the file from {slug!r}")
    return runs


def between_run_sd(runs: list[RunSummary], models: dict[str, str]) -> dict[str, dict[str, float]]:
    """model -> metric -> the standard deviation of a point's log median from one stored run to the next,
    pooled over the model's points (each point's own mean taken out). `models` maps point ids to their
    model; metrics that do not drift with the machine have none."""
    sums: dict[tuple[str, str], list] = {}
    for pid, model in models.items():
        for metric in (m for m in METRICS if m.drifts):
            values = [run.median(pid, metric.name) for run in runs]
            logs = [math.log(v) for v in values if v is not None and v > 0]
            if len(logs) < 2:
                continue
            mean = sum(logs) / len(logs)
            acc = sums.setdefault((model, metric.name), [0.0, 0])
            acc[0] += sum((x - mean) ** 2 for x in logs)
            acc[1] += len(logs) - 1
    sds: dict[str, dict[str, float]] = {}
    for (model, metric), (squares, dof) in sums.items():
        sds.setdefault(model, {})[metric] = math.sqrt(squares / dof)
    return sds
