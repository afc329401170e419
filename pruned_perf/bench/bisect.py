"""Which commit made it slower (`pruned-perf bisect GOOD BAD`): the interleaved A/B of the range's two ends on
the points that moved, and if it confirms a regression, a bisection of the commits between them, one A/B
per commit tried, each judged with the A/B's own error control (pruned_perf.analysis.paired).

Every A/B runs the perf suite of the commit under test (`pytest perf/ --pp-ab BASE` in a worktree of it,
its code on PYTHONPATH), so each side measures with its own code; plans are shared in one cache. The
user's checkout is never touched. Like `git bisect skip`, a commit whose A/B cannot run (it does not
build or import, or a side fails) is skipped and said; so is one whose A/B says twice neither that it is
slower (`regressed`, or above the middle of the step) nor that it is not (`unchanged`, or below it).

The end (pruned_perf.analysis.history_ab.Bisection): the first bad commit (the first one the A/B finds
slower than GOOD, confirmed by an A/B against its own parent, with that ratio); or a change spread over
several commits (slower than GOOD, but not than its parent); or no change in the code (GOOD and BAD
judged alike: the step was the machine's); or undecided (the commits that could be the first bad one).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pruned_perf.analysis.ab_report import ABJudgement
from pruned_perf.analysis.history_ab import (CULPRIT, NOT_IN_CODE, SPREAD, UNDECIDED, Bisection, HistoryAB,
                                             history_ab)
from pruned_perf.analysis.history import run_env
from pruned_perf.analysis.results import load_results
from pruned_perf.analysis.verdicts import REGRESSED, UNCHANGED
from pruned_perf.bench.ab_worktree import add_worktree, remove_worktree
from pruned_perf.core.errors import UserError

CAN_NOT_START, PYTEST_USAGE = 2, 4  # the A/B's exit codes when a side cannot run at all


@dataclass
class BisectRun:
    """One bisection: where it runs, what it asks, and every A/B it ran (`log`)."""

    repo: Path
    good: str
    bad: str
    profile: str
    points: list
    out_dir: Path
    cache_dir: Path
    extra: list = field(default_factory=list)  # more pytest arguments (--pp-device, ...)
    say: object = print
    keep: object = None  # called with each A/B as it ends (the CLI adds it to the history at once)
    abs: list = field(default_factory=list)  # HistoryAB of every A/B run
    skipped: list = field(default_factory=list)

    def run(self) -> Bisection:
        commits = self._commits()
        first = self._ab(self.good, self.bad, "confirm")
        if first is None or (not first.decided and not first.regressed):
            return self._end(UNDECIDED, reason=f"the A/B of {self.good[:12]}..{self.bad[:12]} decided nothing")
        if not first.regressed:
            return self._end(NOT_IN_CODE, reason=f"the A/B of {self.good[:12]}..{self.bad[:12]}: "
                                                  f"{_summary(first)}")
        points = first.regressed
        low, high = self._search(commits, {p: first.points[p].ratio for p in points})
        if high - low > 1:  # only skipped commits are left between the last good one and the first bad
            could_be = ", ".join(c[:12] for c in commits[low + 1:high + 1])
            return self._end(UNDECIDED, points, reason=f"the first bad commit is one of {could_be}: the others "
                                                        f"before {commits[high][:12]} were skipped")
        return self._confirm(commits, high, points)

    def _commits(self) -> list[str]:
        """The commits after GOOD up to BAD, oldest first (the first-parent line: merges as one commit)."""
        done = _git(self.repo, "rev-list", "--reverse", "--first-parent", f"{self.good}..{self.bad}")
        commits = done.split()
        if not commits or commits[-1] != self.bad:
            raise UserError(f"bisect: {self.bad} does not descend from {self.good} (git rev-list "
                            f"{self.good}..{self.bad} lists {len(commits)} commits)")
        return commits

    def _search(self, commits: list[str], step: dict) -> tuple[int, int]:
        """(low, high): commits[high] is the first commit the A/B finds at the new level of `step` (each
        regressed point's new/old over the range) where high = low + 1; commits[low] is at the old level
        (-1: GOOD itself). Where commits in between were skipped and none is left to try, high - low > 1."""
        low, high = -1, len(commits) - 1  # BAD is slower
        tried: set = set()
        while high - low > 1:
            index = self._next(low, high, tried)
            if index is None:
                break
            tried.add(index)
            ab = self._ab(self.good, commits[index], "bisect")
            if ab is not None and level(ab, step) is None:
                # A noisy moment leaves an A/B undecided as often as the code does: once more first.
                self.say(f"pruned-perf bisect: {commits[index][:12]} undecided: its A/B runs once more")
                ab = self._ab(self.good, commits[index], "bisect")
            side = level(ab, step) if ab is not None else None
            if side is None:
                self.skipped.append(commits[index])
            elif side == BAD:
                high = index
            else:
                low = index
        return low, high

    @staticmethod
    def _next(low: int, high: int, tried: set) -> int | None:
        """The middle commit not tried yet, or its nearest untried neighbour (git bisect skip's way)."""
        middle = (low + high) // 2
        for offset in range(high - low):
            for index in (middle + offset, middle - offset):
                if low < index < high and index not in tried:
                    return index
        return None

    def _confirm(self, commits: list[str], index: int, points: list) -> Bisection:
        culprit = commits[index]
        parent = commits[index - 1] if index > 0 else self.good
        own = self.abs[0] if (parent, culprit) == (self.good, self.bad) else self._ab(parent, culprit, "bisect")
        subject, when = _git(self.repo, "log", "-1", "--format=%s%n%aI", culprit).split("\n", 1)
        verdict = own.points.get(points[0]) if own is not None else None
        detail = dict(culprit=culprit, subject=subject, author_time=when.strip(),
                      ratio=verdict.ratio if verdict else None, ci_low=verdict.ci_low if verdict else None,
                      ci_high=verdict.ci_high if verdict else None)
        if own is not None and any(p in own.regressed for p in points):
            return self._end(CULPRIT, points, reason=f"{culprit[:12]} against its parent: {_summary(own)}", **detail)
        return self._end(SPREAD, points, reason=f"slower than {self.good[:12]} from {culprit[:12]} on, but no one "
                                                f"commit alone beyond the threshold", **detail)

    def _ab(self, base: str, head: str, purpose: str) -> HistoryAB | None:
        """The A/B of two commits on the points (None: it could not run: the commit is skipped)."""
        out = self.out_dir / f"ab-{len(self.abs) + 1:02d}-{base[:12]}-{head[:12]}.json"
        self.say(f"pruned-perf bisect: A/B {base[:12]} (base) vs {head[:12]} (new) ...")
        worktree = add_worktree(self.repo, head, self.cache_dir.resolve() / "bisect", "bisect")
        try:
            code = self._pytest(worktree, base, out)
        finally:
            remove_worktree(worktree)
        if code in (CAN_NOT_START, PYTEST_USAGE) or not out.is_file():
            self.say(f"pruned-perf bisect: {head[:12]} skipped: its A/B could not run (exit {code})")
            return None
        results = load_results(out)
        ab = history_ab(ABJudgement(results, results.ab), run_env(results), purpose, _now())
        self.abs.append(ab)
        if self.keep is not None:
            self.keep(ab)
        self.say(f"pruned-perf bisect: {head[:12]} vs {base[:12]}: {_summary(ab)}")
        return ab

    def _pytest(self, worktree: Path, base: str, out: Path) -> int:
        command = [sys.executable, "-m", "pytest", "perf/", "-q", "-p", "no:cacheprovider", "--pp-profile",
                   self.profile, "--pp-points", ",".join(self.points), "--pp-ab", base,
                   "--pp-cache-dir", str(self.cache_dir.resolve()), "--benchmark-json", str(out), *self.extra]
        env = {**_environ(), "PYTHONPATH": str(worktree)}
        with open(out.with_suffix(".log"), "w", encoding="utf-8") as log:
            return subprocess.run(command, cwd=worktree, env=env, stdout=log, stderr=subprocess.STDOUT).returncode

    def _end(self, outcome: str, points: list | None = None, reason: str = "", **detail) -> Bisection:
        return Bisection(measured=_now(), profile=self.profile, good=self.good, bad=self.bad,
                         points=list(points or self.points), outcome=outcome, skipped=list(self.skipped),
                         reason=reason, **detail)


GOOD, BAD = "good", "bad"


def level(ab: HistoryAB, step: dict) -> str | None:
    """Which side of the step a commit's A/B against GOOD puts it on, for the points of `step` (point ->
    new/old over the whole range): BAD where a point is `regressed`, or its latency's interval lies above
    the middle of the step (geometric: sqrt of new/old); GOOD where a point is `unchanged`, or its interval
    lies below that middle; None (the commit is skipped) where no point says either. An inconclusive A/B
    of identical code (its estimate near the bias floor, a noisy TTFT) still tells which level a commit
    is at; the first bad commit is then confirmed against its own parent all the same."""
    sides = set()
    for point, ratio in step.items():
        verdict = ab.points.get(point)
        if verdict is None:
            continue
        middle = math.sqrt(ratio) if ratio else None
        if verdict.status == REGRESSED or (middle and verdict.ci_low and verdict.ci_low > middle):
            sides.add(BAD)
        elif verdict.status == UNCHANGED or (middle and verdict.ci_high and verdict.ci_high < middle):
            sides.add(GOOD)
    return BAD if BAD in sides else GOOD if GOOD in sides else None


def _summary(ab: HistoryAB) -> str:
    return "; ".join(f"{pid} {p.status}" + (f" {p.ratio:.3f}x" if p.ratio else "") for pid, p in ab.points.items())


def _git(repo: Path, *args) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"bisect: git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def resolve(repo: Path, rev: str) -> str:
    """A revision as a full SHA, or one UserError naming it."""
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"bisect: {rev!r} is no commit of {repo}")
    return done.stdout.strip()


def _environ() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PP_")}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
