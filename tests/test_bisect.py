"""`pruned-perf bisect GOOD BAD` (pruned_perf/bench/bisect.py): the search over a chain of commits with
scripted A/Bs (the first bad commit, a change spread over several, none in the code, commits skipped
like `git bisect skip`), and end to end on a real chain whose one commit plants a slowdown."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pruned_perf.analysis.history import RunEnv, read_record
from pruned_perf.analysis.history_ab import (CULPRIT, NOT_IN_CODE, SPREAD, UNDECIDED, Bisection, HistoryAB,
                                             PointVerdict)
from pruned_perf.analysis.verdicts import FAILED, INCONCLUSIVE, REGRESSED, UNCHANGED
from pruned_perf.bench.bisect import BisectRun
from pruned_perf.cli import main

REPO = Path(__file__).resolve().parents[1]
POINT = "tiny-llama-dense-in12-out2-M1-eager"
ENV = RunEnv(slug="cpu-test")


def _git(cwd, *args) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> list[str]:
    """A repository of 9 commits (c0..c8) that change nothing the suite times."""
    repo = tmp_path_factory.mktemp("chain") / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    shas = []
    for i in range(9):
        (repo / "n.txt").write_text(str(i))
        _git(repo, "add", "-A")
        _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"c{i}")
        shas.append(_git(repo, "rev-parse", "HEAD"))
    return repo, shas


def scripted(repo: Path, shas: list[str], slowdown: dict, fails: set = frozenset(), tmp: Path = Path("/tmp"),
             inconclusive: dict | None = None, interval: float | None = None):
    """A bisection whose A/B of (base, head) says head is the product of `slowdown[c]` over the commits
    after base up to head slower (regressed beyond 5%), or fails at a commit in `fails`, or is
    inconclusive the first `inconclusive[c]` times commit c is tried (with the interval ratio */ interval
    where given, else none)."""
    run = BisectRun(repo, shas[0], shas[-1], "quick", [POINT], tmp, tmp, say=lambda line: None)
    calls = []
    noisy = dict(inconclusive or {})

    def ab(base: str, head: str, purpose: str) -> HistoryAB | None:
        calls.append((shas.index(base), shas.index(head)))
        if shas.index(head) in fails:
            return None  # the driver records the skip
        ratio = 1.0
        for i in range(shas.index(base) + 1, shas.index(head) + 1):
            ratio *= slowdown.get(i, 1.0)
        status = REGRESSED if ratio > 1.05 else UNCHANGED
        low = high = None
        if noisy.get(shas.index(head), 0) > 0:
            noisy[shas.index(head)] -= 1
            status = INCONCLUSIVE
            if interval:
                low, high = ratio / interval, ratio * interval
        ab = HistoryAB(measured="2026-12-07T00:00:00", purpose=purpose, profile="quick", base=base, head=head,
                       env=ENV, points={POINT: PointVerdict(status=status, ratio=ratio, ci_low=low, ci_high=high,
                                                             pairs=16)})
        run.abs.append(ab)
        return ab

    run._ab = ab
    return run, calls


def test_the_first_bad_commit_is_found_in_log2_ab_runs_and_confirmed_against_its_parent(chain):
    repo, shas = chain
    run, calls = scripted(repo, shas, {5: 1.3})
    b = run.run()
    assert (b.outcome, b.culprit, b.subject) == (CULPRIT, shas[5], "c5")
    assert b.ratio == pytest.approx(1.3) and b.points == [POINT]
    assert calls[0] == (0, 8) and calls[-1] == (4, 5)  # the ends first, the culprit against its parent last
    assert len(calls) <= 2 + 3  # 8 commits: three halvings


def test_a_change_spread_over_several_commits_is_said_so(chain):
    repo, shas = chain
    b = scripted(repo, shas, {i: 1.03 for i in range(1, 9)})[0].run()
    assert b.outcome == SPREAD and b.culprit is not None and "no one commit alone" in b.reason


def test_no_change_in_the_code_when_the_two_ends_are_alike(chain):
    repo, shas = chain
    run, calls = scripted(repo, shas, {})
    b = run.run()
    assert b.outcome == NOT_IN_CODE and b.culprit is None and calls == [(0, 8)]


def test_a_commit_whose_ab_cannot_run_is_skipped_and_said(chain):
    repo, shas = chain
    b = scripted(repo, shas, {6: 1.5}, fails={4})[0].run()
    assert b.outcome == CULPRIT and b.culprit == shas[6]
    assert b.skipped == [shas[4]]


def test_every_commit_between_skipped_leaves_it_undecided(chain):
    repo, shas = chain
    b = scripted(repo, shas, {6: 1.5}, fails=set(range(1, 8)))[0].run()
    assert b.outcome == UNDECIDED and len(b.skipped) == 7
    assert b.reason.startswith("the first bad commit is one of " + ", ".join(c[:12] for c in shas[1:9]))


def test_an_inconclusive_commit_runs_once_more_before_it_is_skipped(chain):
    repo, shas = chain
    run, calls = scripted(repo, shas, {6: 1.5}, inconclusive={4: 1})
    b = run.run()
    assert (b.outcome, b.culprit, b.skipped) == (CULPRIT, shas[6], [])
    assert calls[1:3] == [(0, 4), (0, 4)]  # the middle commit, inconclusive, then again
    # inconclusive twice: skipped; the commit before the first bad one skipped names both as candidates
    b = scripted(repo, shas, {6: 1.5}, inconclusive={5: 2})[0].run()
    assert b.outcome == UNDECIDED and b.skipped == [shas[5]]
    assert b.reason.startswith(f"the first bad commit is one of {shas[5][:12]}, {shas[6][:12]}")


def test_an_inconclusive_ab_still_tells_which_level_a_commit_is_at(chain):
    """A 1.5x step: an inconclusive A/B whose interval lies below the step's middle (sqrt 1.5 = 1.22) puts
    the commit at the old level, one above it at the new level; neither is run again nor skipped."""
    repo, shas = chain
    run, calls = scripted(repo, shas, {6: 1.5}, inconclusive={4: 1, 6: 1}, interval=1.1)
    b = run.run()
    assert (b.outcome, b.culprit, b.skipped) == (CULPRIT, shas[6], [])
    assert calls.count((0, 4)) == 1 and len(calls) == len(set(calls))
    # an interval that straddles the middle says neither: run again, then skipped
    b = scripted(repo, shas, {6: 1.5}, inconclusive={4: 2}, interval=1.3)[0].run()
    assert b.skipped == [shas[4]] and b.culprit == shas[6]


def test_bad_revisions_are_one_error_and_exit_2(chain, capsys, tmp_path):
    repo, shas = chain
    for good, bad, named in (("nope", shas[1], "'nope' is no commit"),
                             (shas[5], shas[1], "does not descend from")):
        assert main(["bisect", good, bad, "--points", POINT, "--profile", "quick", "--repo", str(repo),
                     "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: bisect: ") and named in err and err.count("\n") == 1


@pytest.mark.slow
def test_bisect_end_to_end_names_the_commit_that_planted_a_slowdown(tmp_path):
    """A clone of this repository, then three commits: one that changes nothing, one that makes every LLaMA
    MLP run four times (tiny-llama at M=1 takes about 1.4x as long), one more that changes nothing. Real
    A/Bs, each a pytest session in a worktree of its commit; the user's checkout untouched."""
    clone = tmp_path / "repo"
    _git(REPO.parent, "clone", "--quiet", str(REPO), str(clone))
    files = _git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        source, target = REPO / name, clone / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    pyproject = clone / "pyproject.toml"  # about commits, not load: a busy test machine must not decide it
    pyproject.write_text(pyproject.read_text().replace("\nothers_tolerance = 0.25\n", "\nothers_tolerance = 64.0\n"))
    commit = ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m"]
    _git(clone, "add", "-A")
    _git(clone, *commit, "the working tree")
    good = _git(clone, "rev-parse", "HEAD")
    (clone / "scripts" / "noop.txt").write_text("nothing timed\n")
    _git(clone, "add", "-A")
    _git(clone, *commit, "no change")
    calls = clone / "pruned_perf" / "bench" / "calls.py"
    calls.write_text(calls.read_text() + "\nfrom transformers.models.llama import modeling_llama as _m  # noqa: E402\n"
                     "_f = _m.LlamaMLP.forward\n_m.LlamaMLP.forward = lambda self, x: [_f(self, x) for _ in range(4)][-1]\n")
    _git(clone, *commit, "every MLP four times", "-a")
    planted = _git(clone, "rev-parse", "HEAD")
    (clone / "scripts" / "noop.txt").write_text("still nothing timed\n")
    _git(clone, *commit, "after", "-a")
    bad = _git(clone, "rev-parse", "HEAD")
    status_before = _git(clone, "status", "--porcelain")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PP_")}
    env.update(PYTHONPATH=str(clone), OMP_NUM_THREADS="1")
    history = tmp_path / "history"
    done = subprocess.run([sys.executable, "-m", "pruned_perf.cli", "bisect", good, bad, "--points", POINT,
                           "--profile", "quick", "--repo", str(clone), "--out", str(tmp_path / "out"),
                           "--cache-dir", str(tmp_path / "cache"), "--history", str(history), "--",
                           "--pp-device", "cpu", "--pp-models", "tiny-llama", "--pp-methods", "dense", "--pp-in", "12",
                           "--pp-out", "2", "--pp-batch", "1", "--pp-min-round-s", "0.3"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"first bad commit: {planted} every MLP four times" in out
    assert _git(clone, "status", "--porcelain") == status_before  # the checkout untouched
    assert _git(clone, "worktree", "list").count("\n") == 0  # every worktree removed
    bisection = Bisection.from_dict(read_record(next(history.rglob("bisect/*.json.gz"))))
    assert bisection.culprit == planted and bisection.ratio > 1.2
    abs_ = [HistoryAB.from_dict(read_record(p)) for p in sorted(history.rglob("ab/*.json.gz"))]
    assert abs_[0].purpose == "confirm" and (abs_[0].base, abs_[0].head) == (good, bad)
    assert all(p.status != FAILED for ab in abs_ for p in ab.points.values())
    assert json.loads(json.dumps(bisection.to_dict()))["outcome"] == CULPRIT
