"""A/A and A/B trials of the verdicts on this very machine.

Each trial runs the perf suite twice, back to back, stores the first run as the only run of a fresh
baseline (re-measuring it, up to 3 times, while `baseline update` refuses it as unsteady) and compares
the second run with it, as a team's first CI runs would:

    python scripts/verdict_trials.py aa 5                  # identical code twice: expect no `regressed`
    python scripts/verdict_trials.py hog 3                 # a CPU hog during the second run: no `regressed`
    python scripts/verdict_trials.py threads 3 --history 3 # 2 threads, then 1 (slower on a quiet machine)
    python scripts/verdict_trials.py slow-mlp 3 --history 3 # every MLP runs 4 times (a slower code path)

With `--history N` (N > 1) the script first stores N steady runs in ONE baseline, and every trial's
second run is compared with that history, as a team's CI is once its history has filled: only then is
the spread between runs known, and a change smaller than the one-run drift allowance can be caught.

Arguments after `--` go to `pytest perf/` (default: the quick profile). Prints one line per trial and
the counts of every status; writes everything under --out (default ./verdict-trials/). The exit
status is 0 when every trial came out as its kind expects, 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

EXPECT_REGRESSION = {"aa": False, "hog": False, "threads": True, "slow-mlp": True}
SCRIPTS = Path(__file__).resolve().parent
MAX_ATTEMPTS = 3


def run_suite(out: Path, name: str, extra: list[str], threads: int | None = None, slow_mlp: bool = False) -> Path:
    results = out / f"{name}.json"
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if slow_mlp:  # scripts/slow_mlp.py: a plugin that makes every LLaMA MLP run 4 times
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCRIPTS), env.get("PYTHONPATH")]))
        extra = ["-p", "slow_mlp", *extra]
    cmd = [sys.executable, "-m", "pytest", "perf/", "-q", "-p", "no:cacheprovider", "--benchmark-json",
           str(results), "--pp-log", str(out / f"{name}.jsonl"), *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{name}: pytest exited {done.returncode}; see {out / f'{name}.log'}")
    return results


@contextlib.contextmanager
def cpu_hog(active: bool):
    """One busy process: on a 2-core machine it takes a core away from the suite half the time."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if active else None
    try:
        yield
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def store(where: Path, name: str, results: Path) -> bool:
    """Append `results` to the baseline in `where`; False when `baseline update` refused it (unsteady)."""
    done = subprocess.run([sys.executable, "-m", "pruned_perf.cli", "baseline", "update", str(results),
                           "--baselines-dir", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{name}: baseline refused: {done.stderr.strip()}", flush=True)
    return done.returncode == 0


def build_baseline(out: Path, name: str, extra: list[str], runs: int, threads: int | None) -> Path | None:
    """A fresh baselines dir holding `runs` steady runs, or None when too many runs were refused."""
    where = out / f"{name}-baselines"
    stored = attempts = 0
    while stored < runs and attempts < runs + MAX_ATTEMPTS - 1:  # as a team would: only good runs are kept
        attempts += 1
        stored += store(where, f"{name}-a{attempts}", run_suite(out, f"{name}-a{attempts}", extra, threads))
    if stored < runs:
        print(f"{name}: only {stored} of {runs} runs steady in {attempts} attempts", flush=True)
        return None
    return where


def compare(out: Path, name: str, current: Path, store: Path) -> tuple[int, dict]:
    verdicts = out / f"{name}-verdicts.json"
    done = subprocess.run([sys.executable, "-m", "pruned_perf.cli", "compare", str(current), "--baselines-dir",
                           str(store), "--format", "plain", "--json", str(verdicts)], capture_output=True, text=True)
    (out / f"{name}-compare.txt").write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{name}: compare exited {done.returncode}: {done.stderr.strip()}")
    counts: dict = {}
    for point in json.loads(verdicts.read_text())["points"]:
        counts[point["status"]] = counts.get(point["status"], 0) + 1
    return done.returncode, counts


def trial(kind: str, i: int, out: Path, extra: list[str], shared: Path | None) -> bool:
    name = f"{kind}-{i}"
    first_threads = 2 if kind == "threads" else None
    baselines = shared or build_baseline(out, name, extra, 1, first_threads)
    if baselines is None:
        print(f"{name}: trial not counted", flush=True)
        return False
    with cpu_hog(kind == "hog"):
        second = run_suite(out, f"{name}-b", extra, threads=1 if kind == "threads" else None,
                           slow_mlp=kind == "slow-mlp")
    code, counts = compare(out, name, second, baselines)
    regressed = code == 1
    ok = regressed == EXPECT_REGRESSION[kind]
    listed = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{name}: compare exit {code} ({listed}) -> {'as expected' if ok else 'NOT as expected'}", flush=True)
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(EXPECT_REGRESSION))
    parser.add_argument("trials", type=int)
    parser.add_argument("--out", default="verdict-trials", type=Path)
    parser.add_argument("--history", default=1, type=int,
                        help="steady runs in one shared baseline (default 1: a fresh one-run baseline per trial)")
    argv = sys.argv[1:] if argv is None else argv
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.trials < 1 or args.history < 1:
        parser.error(f"trials ({args.trials}) and --history ({args.history}) must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    shared = None
    if args.history > 1:
        shared = build_baseline(args.out, f"{args.kind}-history", pytest_args, args.history,
                                2 if args.kind == "threads" else None)
        if shared is None:
            return 1
    results = [trial(args.kind, i + 1, args.out, pytest_args, shared) for i in range(args.trials)]
    print(f"{args.kind}: {sum(results)} of {len(results)} trials as expected")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
