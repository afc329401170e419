"""What the two sides of an interleaved A/B exchange and store, torch-free: which code a side runs
(`SideDescription`), one timed round of a side (`SideRound`), and a pair of adjacent rounds (`Pair`).

The A/B's worker builds these (pruned_perf.bench.ab_worker), its driver pairs them
(pruned_perf.bench.ab), and the verdict reads them back from the results file
(pruned_perf.analysis.ab); each field is checked as the results schema's are (`checked`).
"""
from __future__ import annotations

from dataclasses import dataclass

from pruned_perf.core.schema import (COUNT, FLAG, NON_NEGATIVE, POSITIVE, TEXT, Check, Record, checked,
                                     is_number)

BASE, HEAD = "base", "head"
SIDES = (BASE, HEAD)
SIDE = Check(lambda v: v in SIDES, f"one of {', '.join(SIDES)}")
_TEXT_OR_NULL = TEXT.or_null()
_FRACTION = NON_NEGATIVE.or_null()


def other_side(side: str) -> str:
    SIDE.require("side", side)
    return HEAD if side == BASE else BASE


@dataclass(frozen=True, kw_only=True)
class SideDescription(Record):
    """Which code one side runs, as its worker reported it in its hello: the revision, where pruned_perf
    was imported from, and the versions and threads that decide its speed."""

    role: str = checked(SIDE)
    spec: str | None = checked(_TEXT_OR_NULL, default=None)  # what the user asked for: a revision, an interpreter
    sha: str | None = checked(_TEXT_OR_NULL, default=None)
    dirty: bool | None = checked(FLAG.or_null(), default=None)  # tracked files or new modules differ from sha
    pruned_perf: str | None = checked(_TEXT_OR_NULL, default=None)
    python: str | None = checked(_TEXT_OR_NULL, default=None)
    torch: str | None = checked(_TEXT_OR_NULL, default=None)
    transformers: str | None = checked(_TEXT_OR_NULL, default=None)
    threads: int | None = checked(COUNT.or_null(), default=None)

    def line(self) -> str:
        """One line: which code, from where, on which library versions and threads."""
        sha = (self.sha or "unknown sha")[:12] + (" (dirty)" if self.dirty else "")
        threads = self.threads if self.threads is not None else "?"
        parts = [f"{self.spec or '?'} at {sha}", f"pruned_perf from {self.pruned_perf or '?'}",
                 f"python {self.python or '?'}", f"torch {self.torch or '?'}",
                 f"transformers {self.transformers or '?'}", f"{threads} thread{'' if threads == 1 else 's'}"]
        return ", ".join(parts)

    # What decides a side's speed besides its code: where two sides differ in one, the report says so.
    SPEED_KEYS = ("torch", "transformers", "python", "threads")

    def differences(self, other: "SideDescription") -> list[str]:
        """`key (mine vs other's)` for every SPEED_KEYS entry the two sides differ in."""
        return [f"{key} ({getattr(self, key)} vs {getattr(other, key)})"
                for key in self.SPEED_KEYS if getattr(self, key) != getattr(other, key)]


@dataclass(frozen=True)
class SideRound(Record):
    """One timed round of one side. Times are per call: the round's mean (TTFT: its median call's).
    The load during the round, per second of it: how long this side's threads waited for a CPU (its
    own threads included), how many cores anything outside the A/B used (`others_cpu_frac`: what makes a
    round contended), and how many the other side's worker and the driver used (`peer_cpu_frac`: CPU that
    side spilled into this round). None where the OS does not say."""

    latency_s: float = checked(POSITIVE)
    ttft_s: float | None = checked(POSITIVE.or_null(), default=None)
    tpot_s: float | None = checked(NON_NEGATIVE.or_null(), default=None)
    runqueue_wait_frac: float | None = checked(_FRACTION, default=None)
    others_cpu_frac: float | None = checked(_FRACTION, default=None)
    peer_cpu_frac: float | None = checked(_FRACTION, default=None)

    def value(self, metric: str) -> float | None:
        """This round's time of a timing metric, where it has a positive one."""
        value = getattr(self, metric)
        return value if is_number(value) and value > 0 else None


@dataclass(frozen=True)
class Pair(Record):
    """Two adjacent rounds, one per side, and which side ran first."""

    first: str = checked(SIDE)
    base: SideRound = checked(Check(lambda v: isinstance(v, dict), "an object (a round)"), record=SideRound)
    head: SideRound = checked(Check(lambda v: isinstance(v, dict), "an object (a round)"), record=SideRound)

    def __post_init__(self):
        SIDE.require("pair: first", self.first)

    def side(self, role: str) -> SideRound:
        return self.base if role == BASE else self.head

    @property
    def head_second(self) -> bool:
        """Whether the head's round ran second: the position a position effect slows."""
        return self.first == BASE
