"""A/A and A/B trials of the verdicts on this very machine.

Each trial runs the perf suite twice, back to back, stores the first run as the only run of a fresh
baseline (re-measuring it, up to 3 times, while `baseline update` refuses it as unsteady) and compares
the second run with it, as a team's first CI runs would:

    python scripts/verdict_trials.py aa 5                  # identical code twice: expect no `regressed`
    python scripts/verdict_trials.py hog 3                 # a CPU hog during the second run: no `regressed`
    python scripts/verdict_trials.py threads 3 -- --pp-models smollm2-135m
                                                           # 2 threads, then 1 (a real slowdown): caught

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

EXPECT_REGRESSION = {"aa": False, "hog": False, "threads": True}
MAX_ATTEMPTS = 3


def run_suite(out: Path, name: str, extra: list[str], threads: int | None = None) -> Path:
    results = out / f"{name}.json"
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
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


def store(out: Path, name: str, results: Path) -> Path | None:
    """The baselines dir holding `results`, or None when `baseline update` refused it (an unsteady run)."""
    where = out / f"{name}-baselines"
    done = subprocess.run([sys.executable, "-m", "pruned_perf.cli", "baseline", "update", str(results),
                           "--baselines-dir", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{name}: baseline refused: {done.stderr.strip()}", flush=True)
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


def trial(kind: str, i: int, out: Path, extra: list[str]) -> bool:
    name = f"{kind}-{i}"
    baselines = None
    for attempt in range(1, MAX_ATTEMPTS + 1):  # as a team would: only a good run becomes the baseline
        first = run_suite(out, f"{name}-a{attempt}", extra, threads=2 if kind == "threads" else None)
        baselines = store(out, f"{name}-a{attempt}", first)
        if baselines is not None:
            break
    if baselines is None:
        print(f"{name}: no steady first run in {MAX_ATTEMPTS} attempts; trial not counted", flush=True)
        return False
    with cpu_hog(kind == "hog"):
        second = run_suite(out, f"{name}-b", extra, threads=1 if kind == "threads" else None)
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
    argv = sys.argv[1:] if argv is None else argv
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = [trial(args.kind, i + 1, args.out, pytest_args) for i in range(args.trials)]
    print(f"{args.kind}: {sum(results)} of {len(results)} trials as expected")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
