"""What the A/B said about the history's steps, torch-free: one A/B of two commits on the history's own
machine (`HistoryAB`: each point's verdict and ratio), and a bisection's conclusion (`Bisection`: the
first bad commit, or a change spread over several commits, or none in the code), each kept as a record
of its own beside the runs (pruned_perf.analysis.history):

    HISTORY/<hardware slug>/<profile>/ab/<measured>-<base12>-<head12>.json.gz
    HISTORY/<hardware slug>/<profile>/bisect/<measured>-<good12>-<bad12>.json.gz
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pruned_perf.analysis.ab_report import ABJudgement
from pruned_perf.analysis.history import RunEnv, read_record, write_record
from pruned_perf.analysis.verdicts import FAILED, IMPROVED, INCONCLUSIVE, REGRESSED, UNCHANGED
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import COUNT, NAME, OBJECT, POSITIVE, SAFE_NAME, TEXT, Check, Record, checked

AB_DIR, BISECT_DIR = "ab", "bisect"
PURPOSES = ("confirm", "bisect")
STATUSES = (REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE, FAILED)
# How a bisection ended: the first bad commit; a change spread over several commits (none alone beyond
# the threshold); no change in the code (the two ends judged alike on the same machine); undecided.
CULPRIT, SPREAD, NOT_IN_CODE, UNDECIDED = "culprit", "spread", "not-in-code", "undecided"
OUTCOMES = (CULPRIT, SPREAD, NOT_IN_CODE, UNDECIDED)
_OPT_POS = POSITIVE.or_null()


@dataclass(frozen=True, kw_only=True)
class PointVerdict(Record):
    """One point of an A/B: its status, and the latency's new/base with the interval that decided."""

    status: str = checked(Check(lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"))
    pairs: int = checked(COUNT, default=0)
    ratio: float | None = checked(_OPT_POS, default=None)
    ci_low: float | None = checked(_OPT_POS, default=None)
    ci_high: float | None = checked(_OPT_POS, default=None)
    reason: str = checked(TEXT, default="")


@dataclass(frozen=True, kw_only=True)
class HistoryAB(Record):
    """An A/B of two commits, run to confirm a step or as a step of a bisection."""

    measured: str = checked(NAME)
    purpose: str = checked(Check(lambda v: v in PURPOSES, f"one of {', '.join(PURPOSES)}"))
    profile: str = checked(SAFE_NAME)
    base: str = checked(NAME)  # the older commit
    head: str = checked(NAME)  # the newer
    env: RunEnv = checked(OBJECT, record=RunEnv)
    points: dict = checked(OBJECT, records=PointVerdict, default_factory=dict)

    @property
    def regressed(self) -> list[str]:
        return [pid for pid, p in self.points.items() if p.status == REGRESSED]

    @property
    def decided(self) -> bool:
        """Every point got a verdict (none failed or stayed inconclusive)."""
        return bool(self.points) and all(p.status in (REGRESSED, IMPROVED, UNCHANGED) for p in self.points.values())


def history_ab(judgement: ABJudgement, env: RunEnv, purpose: str, measured: str) -> HistoryAB:
    """The history's record of an A/B's results (its sides' commits, each point's latency verdict)."""
    record = judgement.record
    if not record.base.sha or not record.head.sha:
        raise UserError("an A/B of the history must compare two commits: a side has no git SHA")
    points = {}
    for point in record.points:
        latency = point.ab.metric("latency_s")
        low, high, _ = latency.shown() if latency is not None else (None, None, None)
        points[point.id] = PointVerdict(status=point.status, pairs=len(point.ab.pairs) - point.ab.contended,
                                        ratio=latency.ratio if latency else None,
                                        ci_low=low, ci_high=high, reason=point.ab.reason)
    return HistoryAB(measured=measured, purpose=purpose, profile=judgement.results.profile, base=record.base.sha,
                     head=record.head.sha, env=env, points=points)


@dataclass(frozen=True, kw_only=True)
class Bisection(Record):
    """Where a change between `good` and `bad` came from, as the A/Bs of a bisection found it."""

    measured: str = checked(NAME)
    profile: str = checked(SAFE_NAME)
    good: str = checked(NAME)
    bad: str = checked(NAME)
    points: list = checked(Check(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                                 "a list of point ids"))
    outcome: str = checked(Check(lambda v: v in OUTCOMES, f"one of {', '.join(OUTCOMES)}"))
    culprit: str | None = checked(TEXT.or_null(), default=None)  # the first bad commit
    subject: str | None = checked(TEXT.or_null(), default=None)
    author_time: str | None = checked(TEXT.or_null(), default=None)
    ratio: float | None = checked(_OPT_POS, default=None)  # the culprit's own new/base (or the range's)
    ci_low: float | None = checked(_OPT_POS, default=None)
    ci_high: float | None = checked(_OPT_POS, default=None)
    skipped: list = checked(Check(lambda v: isinstance(v, list), "a list of commits"), default_factory=list)
    reason: str = checked(TEXT, default="")


def _path(root, env: RunEnv, profile: str, folder: str, measured: str, old: str, new: str) -> Path:
    stamp = "".join(ch for ch in measured[:19] if ch.isdigit())
    return Path(root) / env.slug / profile / folder / f"{stamp}-{old[:12]}-{new[:12]}.json.gz"


def add_ab(root: str | os.PathLike, ab: HistoryAB) -> Path:
    return write_record(_path(root, ab.env, ab.profile, AB_DIR, ab.measured, ab.base, ab.head), ab.to_dict())


def add_bisection(root: str | os.PathLike, env: RunEnv, bisection: Bisection) -> Path:
    path = _path(root, env, bisection.profile, BISECT_DIR, bisection.measured, bisection.good, bisection.bad)
    return write_record(path, bisection.to_dict())


def load_abs(root: str | os.PathLike, slug: str, profile: str) -> tuple[list[HistoryAB], list[Bisection]]:
    """The A/Bs and bisections recorded for one hardware and profile, oldest first."""
    folder = Path(root) / slug / profile
    abs_ = [HistoryAB.from_dict(read_record(p), str(p)) for p in sorted((folder / AB_DIR).glob("*.json.gz"))]
    bisections = [Bisection.from_dict(read_record(p), str(p))
                  for p in sorted((folder / BISECT_DIR).glob("*.json.gz"))]
    return abs_, bisections
