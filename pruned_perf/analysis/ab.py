"""Read the A/B of an interleaved run out of its results file (ab.json). Torch-free.

ab.json is pytest-benchmark JSON whose points are the head (new) side's Measurements. Each point's
extra_info also carries `ab` (paired.PointAB.to_dict(): every pair's rounds in order, the estimates,
intervals and verdicts) and `ab_base` (the base side's Measurement.to_dict()), and
machine_info.pruned_perf["ab"] names both workers and the settings: {"base": {...}, "head": {...},
"settings": ABSettings.to_dict()}. A results file without machine_info.pruned_perf["ab"] is no A/B.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from pruned_perf.analysis import paired
from pruned_perf.analysis.paired import ABSettings, PointAB
from pruned_perf.analysis.results import Results, results_from_dict
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import Measurement


@dataclass(frozen=True)
class Worker:
    """What one side ran, as its worker process reported it."""

    role: str  # "base" or "head"
    spec: str | None = None  # what the user passed: a git revision, an interpreter, or the working tree
    sha: str | None = None
    dirty: bool | None = None
    pruned_perf: str | None = None  # where pruned_perf was imported from
    python: str | None = None
    torch: str | None = None
    transformers: str | None = None
    threads: int | None = None

    @classmethod
    def from_dict(cls, d, role: str, where: str) -> "Worker":
        if not isinstance(d, dict):
            raise UserError(f"{where}: the {role} worker's description must be a mapping, got {d!r}")
        return cls(**{f.name: d.get(f.name) for f in fields(cls) if f.name != "role"}, role=role)

    def describe(self) -> str:
        """One line: which code, from where, on which library versions and threads."""
        sha = (self.sha or "unknown sha")[:12] + (" (dirty)" if self.dirty else "")
        threads = self.threads if self.threads is not None else "?"
        parts = [f"{self.spec or '?'} at {sha}", f"pruned_perf from {self.pruned_perf or '?'}",
                 f"python {self.python or '?'}", f"torch {self.torch or '?'}",
                 f"transformers {self.transformers or '?'}", f"{threads} thread{'' if threads == 1 else 's'}"]
        return ", ".join(parts)


@dataclass(frozen=True)
class ABPoint:
    id: str
    head: Measurement
    base: Measurement | None  # None where the base side has no measurement of the point
    ab: PointAB


@dataclass
class ABResults:
    """An A/B results file: the head side's Results, both workers, the settings, every point's A/B."""

    results: Results
    workers: dict  # "base" / "head" -> Worker
    settings: ABSettings
    points: dict  # point id -> ABPoint, in the file's order

    @property
    def has_regression(self) -> bool:
        return any(p.ab.status == paired.REGRESSED for p in self.points.values())

    def base_results(self) -> Results | None:
        """The base side's measurements as Results of their own (for a figure's baseline overlay), or
        None if no point has one."""
        raw = self.results.raw
        benchmarks = [{"name": b.get("name"), "extra_info": b["extra_info"]["ab_base"]}
                      for b in raw["benchmarks"] if isinstance(b.get("extra_info", {}).get("ab_base"), dict)]
        if not benchmarks:
            return None
        return results_from_dict(dict(raw, benchmarks=benchmarks), f"{self.results.path} (base side)")

    def rederived(self, settings: ABSettings | None = None, settings_for=None) -> "ABResults":
        """Every verdict judged again from the stored pairs, as final (no more pairs will come), with
        the stored settings, or `settings`, or `settings_for(point_id)`."""
        points = {}
        for pid, point in self.points.items():
            chosen = settings_for(pid) if settings_for else settings or self.settings
            ab = paired.judge(point.ab.pairs, point.base, point.head, chosen, point.ab.family, final=True)
            points[pid] = ABPoint(pid, point.head, point.base, ab)
        return ABResults(self.results, self.workers, settings or self.settings, points)


def ab_meta(results: Results) -> dict | None:
    """machine_info.pruned_perf["ab"] of a results file, or None for a plain run."""
    meta = results.raw.get("machine_info", {}).get("pruned_perf", {}).get("ab")
    return meta if meta is not None else None


def has_ab(results: Results) -> bool:
    return ab_meta(results) is not None


def load_ab(results: Results) -> ABResults:
    """The A/B of `results` (read by analysis.results.load_results); any problem is one UserError."""
    path = results.path or "<results>"
    meta = ab_meta(results)
    if not isinstance(meta, dict):
        raise UserError(f"{path}: machine_info.pruned_perf.ab must be a mapping with base, head and settings, "
                        f"got {meta!r}")
    missing = [key for key in ("base", "head", "settings") if key not in meta]
    if missing:
        raise UserError(f"{path}: machine_info.pruned_perf.ab lacks {', '.join(missing)}")
    workers = {role: Worker.from_dict(meta[role], role, path) for role in paired.SIDES}
    try:
        settings = ABSettings.from_dict(meta["settings"])
    except (UserError, TypeError) as e:
        raise UserError(f"{path}: machine_info.pruned_perf.ab.settings: {e}") from None
    points = {}
    for bench in results.raw["benchmarks"]:
        extra = bench["extra_info"]
        pid = extra["id"]
        where = f"{path}: point {pid!r}"
        if "ab" not in extra:
            raise UserError(f"{where} has no extra_info.ab, in an A/B results file")
        try:
            ab = PointAB.from_dict(extra["ab"])
            base = Measurement.from_dict(extra["ab_base"]) if extra.get("ab_base") is not None else None
        except (UserError, KeyError, TypeError) as e:
            raise UserError(f"{where}: malformed A/B record ({type(e).__name__}: {e})") from None
        if base is not None and base.id != pid:
            raise UserError(f"{where}: extra_info.ab_base is of another point ({base.id!r})")
        points[pid] = ABPoint(pid, results.points[pid], base, ab)
    return ABResults(results, workers, settings, points)
