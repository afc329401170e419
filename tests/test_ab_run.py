"""`pytest perf/ --pp-ab BASE`: the interleaved A/B end to end, on tiny-llama on the CPU, with its faults.

Every run is a subprocess in a temporary clone of this repository whose last commit is the working
tree, so that `--pp-ab HEAD` has a base with the A/B worker. Faults come from PP_AB_TEST_FAULT, which
the worker honours (pruned_perf/bench/ab_worker.py); a "base interpreter" is a script that runs this
interpreter (the same source in another environment, as a venv's python would be).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pruned_perf.core.pointlog import read_log, read_pairs

REPO = Path(__file__).resolve().parents[1]
# One tiny model, two tokens out, one call per round; few pairs: a run is mostly its two workers' start.
SMALL = ("--pp-device", "cpu", "--pp-profile", "quick", "--pp-models", "tiny-llama", "--pp-methods", "dense",
         "--pp-in", "12", "--pp-out", "2", "--pp-min-round-s", "0", "--pp-rounds", "2")
INTERRUPTED = 2  # pytest's exit status after Ctrl-C


def _git(cwd, *args) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clone of this repository whose HEAD is the working tree as it is now (committed there)."""
    root = tmp_path_factory.mktemp("ab") / "repo"
    _git(REPO.parent, "clone", "--quiet", str(REPO), str(root))
    files = _git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        source, target = REPO / name, root / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():  # deleted in the working tree
            target.unlink()
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--allow-empty", "-m", "working tree")
    return root


@pytest.fixture
def python_base(tmp_path) -> Path:
    """Another "interpreter": a script that runs this one."""
    script = tmp_path / "python-base"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    script.chmod(0o755)
    return script


def _env(clone: Path, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PP_") and k != "PYTEST_ADDOPTS"}
    env.update(PYTHONPATH=str(clone), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(extra or {}))
    return env


def _command(tmp_path: Path, base, *args) -> list:
    return [sys.executable, "-m", "pytest", "perf/", "-p", "no:cacheprovider", "-q", *SMALL, "--pp-ab", str(base),
            "--pp-cache-dir", str(tmp_path / "cache"), "--benchmark-json", str(tmp_path / "ab.json"), *map(str, args)]


def run_ab(clone: Path, tmp_path: Path, base, *args, env: dict | None = None) -> SimpleNamespace:
    done = subprocess.run(_command(tmp_path, base, *args), cwd=clone, env=_env(clone, env), capture_output=True,
                          text=True, timeout=900)
    return SimpleNamespace(returncode=done.returncode, output=done.stdout + done.stderr)


def _points(tmp_path: Path) -> dict:
    data = json.loads((tmp_path / "ab.json").read_text())
    return data, {b["extra_info"]["id"]: b for b in data["benchmarks"]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _nothing_left(clone: Path, tmp_path: Path, pids) -> None:
    """No worker process, no worktree (nor its registration) outlives the session."""
    assert [pid for pid in pids if _alive(pid)] == []
    assert _git(clone, "worktree", "list").count("\n") == 1, _git(clone, "worktree", "list")
    ab_dir = tmp_path / "cache" / "ab"
    assert not ab_dir.exists() or list(ab_dir.iterdir()) == []


M1, M2, M4 = (f"tiny-llama-dense-in12-out2-M{m}-eager" for m in (1, 2, 4))


@pytest.mark.slow
def test_ab_against_head_with_a_worker_that_dies_and_one_that_hangs(clone, tmp_path):
    """An A/A against HEAD: both sides report what they run, every pair is in the log in counterbalanced
    order, the head's point carries the base's and the verdict. The head worker dies in the first
    point, the base worker hangs in the second (killed after the timeout): each point fails naming the
    side, the worker restarts, and the last point goes on."""
    faults = f"head:die:3:{M1},base:hang:2:{M2}"
    result = run_ab(clone, tmp_path, "HEAD", "--pp-batch", "1,2,4", "--pp-ab-pairs", "4", "--pp-ab-look", "4",
                    "--pp-ab-timeout-s", "5", env={"PP_AB_TEST_FAULT": faults})
    out = result.output
    assert result.returncode == 1, out
    assert f"FAILED perf/test_generate.py::test_generate[{M1}]" in out
    assert "the head worker (working tree) exited with status 3" in out and "injected fault die" in out
    assert f"FAILED perf/test_generate.py::test_generate[{M2}]" in out
    assert "the base worker (HEAD) did not answer a round within 5 s: it hung, and was killed" in out
    sha = _git(clone, "rev-parse", "HEAD").strip()
    assert f"pruned_perf A/B base: HEAD at {sha[:12]}," in out and f"pruned_perf A/B head: working tree at {sha[:12]}," in out
    assert "pruned_perf A/B: tiny-llama dense in12 out2 M4 eager: " in out  # the live line (and the table)

    data, points = _points(tmp_path)
    assert list(points) == [M4]
    info = points[M4]["extra_info"]
    ab, base = info["ab"], info["ab_base"]
    assert base["id"] == M4 and base["rounds_s"] and info["rounds_s"]
    assert ab["status"] in ("unchanged", "inconclusive") and 1 <= len(ab["pairs"]) <= 4
    # the head's rounds are pytest-benchmark's stats, one per pair
    assert points[M4]["stats"]["rounds"] == len(info["rounds_s"]) == len(ab["pairs"])
    assert [p["head"]["latency_s"] for p in ab["pairs"]] == info["rounds_s"]
    described = data["machine_info"]["pruned_perf"]["ab"]
    assert described["base"]["sha"] == described["head"]["sha"] == sha
    assert described["base"]["spec"] == "HEAD" and described["head"]["dirty"] is False
    assert Path(described["head"]["pruned_perf"]) == clone / "pruned_perf"
    assert Path(described["base"]["pruned_perf"]).is_relative_to(tmp_path / "cache" / "ab")
    assert described["settings"]["max_pairs"] == 4
    for role in ("base", "head"):  # each side scored the variant in its own cache: the same work on both
        assert list((tmp_path / "cache" / "ab-plans" / role).glob("tiny-llama-dense-*.ppl-*.json")), role

    pairs = read_pairs(tmp_path / "ab.jsonl")
    by_point = {p: [r["ab_pair"] for r in pairs if r["point"] == p] for p in (M1, M2, M4)}
    assert len(by_point[M1]) == 2  # the head died at its third round: two pairs were finished, and kept
    assert len(by_point[M2]) == 1  # the base hung at its second
    assert by_point[M4] == ab["pairs"]
    firsts = [p["first"] for p in by_point[M4]]
    assert all(a != b for a, b in zip(firsts, firsts[1:])), firsts  # AB, BA, AB, ...
    assert [r["id"] for r in read_log(tmp_path / "ab.jsonl")] == [M4]
    _nothing_left(clone, tmp_path, [described[role]["pid"] for role in ("base", "head")])


@pytest.mark.slow
def test_ab_newly_oom_is_a_regression(clone, tmp_path, python_base):
    """Another interpreter as the base. The head runs out of memory at a point where the base does not:
    newly-oom, a regression (the session exits 1 with no test failed), the point in the results."""
    result = run_ab(clone, tmp_path, python_base, "--pp-batch", "1,2", "--pp-ab-pairs", "2",
                    env={"PP_AB_TEST_FAULT": f"head:oom:1:{M2}"})
    out = result.output
    assert result.returncode == 1, out
    assert "1 passed, 1 skipped" in out and "FAILED" not in out
    assert "M2 eager: regressed (head ran out of memory, base did not)" in out
    data, points = _points(tmp_path)
    m2 = points[M2]["extra_info"]
    assert m2["oom"] is True and m2["ab"]["status"] == "regressed"
    assert [m["verdict"] for m in m2["ab"]["metrics"]] == ["newly-oom"]
    assert m2["ab_base"]["oom"] is False and m2["ab_base"]["rounds_s"]  # the base's point got its rounds
    assert points[M1]["extra_info"]["ab"]["status"] != "regressed"
    described = data["machine_info"]["pruned_perf"]["ab"]
    assert described["base"]["spec"] == str(python_base)
    assert Path(described["base"]["pruned_perf"]) == clone / "pruned_perf"
    _nothing_left(clone, tmp_path, [described[role]["pid"] for role in ("base", "head")])


@pytest.mark.slow
def test_ab_ctrl_c_keeps_every_finished_pair_and_leaves_nothing(clone, tmp_path):
    # Ctrl-C as in a terminal: a shell that started this session in the background (`cmd &`) passed it
    # SIGINT ignored, and the run would inherit that and never see the signal.
    proc = subprocess.Popen(_command(tmp_path, "HEAD", "--pp-batch", "1", "--pp-ab-pairs", "500",
                                     "--pp-ab-look", "500"),
                            cwd=clone, env=_env(clone), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = tmp_path / "ab.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(read_pairs(log)) >= 3:
            break
        time.sleep(0.5)
    pids = _worker_pids((clone, tmp_path))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED, out
    assert len(read_pairs(log)) >= 3
    assert len(pids) == 2
    _nothing_left(clone, tmp_path, pids)


def _worker_pids(roots) -> list[int]:
    """The A/B workers whose cwd lies under one of `roots` (the clone, the test's worktrees)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except (OSError, ValueError):
            continue
        if "pruned_perf.bench.ab_worker" in cmdline and any(Path(cwd).is_relative_to(root) for root in roots):
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_ab_warm_up_that_hangs_is_killed_and_a_killed_runs_worktree_is_removed(clone, tmp_path):
    """A worker silent in a point's warm-up is killed after 60 x --pp-ab-timeout-s; and a worktree left
    by an A/B whose driver was killed outright (its pid in the name, no longer running) is removed by
    the next A/B."""
    sha = _git(clone, "rev-parse", "HEAD").strip()
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    stale = tmp_path / "cache" / "ab" / f"{sha[:12]}-{gone.pid}-deadbeef"
    _git(clone, "worktree", "add", "--detach", "--quiet", str(stale), sha)
    result = run_ab(clone, tmp_path, "HEAD", "--pp-batch", "1", "--pp-ab-timeout-s", "0.2",
                    env={"PP_AB_TEST_FAULT": "base:hang:0"})
    assert result.returncode == 1, result.output
    assert f"FAILED perf/test_generate.py::test_generate[{M1}]" in result.output
    assert "the base worker (HEAD) did not warm up within 12 s: it hung, and was killed" in result.output
    assert not stale.exists()
    _nothing_left(clone, tmp_path, [])


def test_a_base_that_cannot_start_is_one_error_line_and_exit_2(clone, tmp_path):
    """Before any timing: a bad revision, a missing interpreter, a revision older than the A/B (no
    worker module), an interpreter that fails at once."""
    old = _git(clone, "rev-list", "--max-count=1", "d57622b").strip()
    cases = {
        "no-such-rev": "is neither a git revision of",
        str(tmp_path / "missing" / "python"): "is neither a git revision of",
        old: "No module named pruned_perf.bench.ab_worker",
        "/bin/false": "exited with status 1 before it could say hello",
    }
    for base, message in cases.items():
        result = run_ab(clone, tmp_path, base, "--pp-batch", "1")
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.returncode == 2, result.output
        assert len(lines) == 1 and lines[0].startswith(f"error: --pp-ab {base}") and message in lines[0], lines
        assert not (tmp_path / "ab.jsonl").exists()
        _nothing_left(clone, tmp_path, [])
