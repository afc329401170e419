"""Replay the verdicts over stored suite runs: every run against the H plain runs before it, under the
defaults and under the defaults less some of their rules (the `history_sigmas` gate; the machine
signals: others' CPU use, the steadiness probe), so that rules meet the same measurements.

    python scripts/replay_verdicts.py DIR [--history 1 3]
    python scripts/replay_verdicts.py DIR --effects

DIR holds pytest-benchmark JSON files of the same profile and machine. A file whose name starts with
`A` is a plain run (identical code); any other name is a trial run (`B...` one thread, `S...` the slow
MLP of scripts/slow_mlp.py, ...). Runs are taken in the order they were measured; a plain run that
`baseline update` would refuse (unsteady, other processes on the cores) never joins a history, as in
a team's store. Prints one line per comparison: the points `regressed` under each rule.

`--effects` prints instead how much slower each run was than the stored plain runs right before and
after it (per model, the median over its points of the latency against the geometric mean of those
two runs' latencies). The machine's drift, where slower than a run, cancels out of it, so it says
how large a trial's slowdown really was, and how far identical code wanders when drift cancels (a
plain run between two others). Exit status 0; 2 for bad input.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from pruned_perf.analysis.compare import compare
from pruned_perf.analysis.verdicts import REGRESSED
from pruned_perf.analysis.config import config_from_table
from pruned_perf.analysis.baselines import check_good_run
from pruned_perf.analysis.results import run_summary
from pruned_perf.analysis.results import load_results
from pruned_perf.core.errors import UserError, exit_status

# These tolerances turn their signal off: no machine is that much busier (1000 cores) or slower (10x).
RULES = {"defaults": {}, "envelope only": {"history_sigmas": 0},
         "no others' CPU": {"others_tolerance": 1e3},
         "run-queue wait only": {"others_tolerance": 1e3, "probe_tolerance": 9}}


def _with_history(runs: dict, names: list[str]):
    """The newest of `names` as a baseline whose history is all of them, as `baseline update` stores it."""
    baseline = load_results(runs[names[-1]].path)  # a copy: its history is set below
    baseline.history = [run_summary(runs[name]) for name in names]
    return baseline


def _refusal(results) -> str:
    """Why `baseline update` would refuse these results ("" if it would store them)."""
    try:
        check_good_run(results)
    except UserError as e:
        return str(e).split(": ", 1)[-1]
    return ""


def _runs(directory: Path):
    """The runs in the order they were measured, and why `baseline update` would refuse plain ones."""
    runs = {path.stem: load_results(path) for path in sorted(directory.glob("*.json"))}
    if not runs:
        raise UserError(f"{directory}: no results files (*.json)")
    order = sorted(runs, key=lambda name: runs[name].datetime or "")
    refused = {name: why for name in order if name.startswith("A") and (why := _refusal(runs[name]))}
    return runs, order, refused


def replay(directory: Path, history: int) -> list[str]:
    runs, order, refused = _runs(directory)
    lines = [f"{name}: not stored ({why})" for name, why in refused.items()]
    for i, name in enumerate(order):
        before = [other for other in order[:i] if other.startswith("A") and other not in refused][-history:]
        if len(before) < history:
            continue
        baseline = _with_history(runs, before)
        verdicts = []
        for rule, table in RULES.items():
            comparison = compare(runs[name], baseline, config_from_table(table))
            regressed = [p.id for p in comparison.points if p.status == REGRESSED]
            verdicts.append(f"{rule}: {len(regressed)} regressed" + (f" ({', '.join(regressed)})" if regressed else ""))
        lines.append(f"{name} against {'+'.join(before)}: " + "; ".join(verdicts))
    return lines


def effects(directory: Path) -> list[str]:
    runs, order, refused = _runs(directory)
    plain = [i for i, name in enumerate(order) if name.startswith("A") and name not in refused]
    lines = []
    for i, name in enumerate(order):
        earlier, later = [j for j in plain if j < i], [j for j in plain if j > i]
        if not (earlier and later):
            continue
        before, after = order[earlier[-1]], order[later[0]]
        sides = (runs[before], runs[after])
        changes: dict[str, list[float]] = {}
        for pid, point in runs[name].points.items():
            latencies = [point.latency_s] + [side.points[pid].latency_s for side in sides if pid in side.points]
            if len(latencies) == 3 and all(v is not None and v > 0 for v in latencies):
                own, first, second = latencies
                changes.setdefault(point.model, []).append(math.log(own / math.sqrt(first * second)))
        listed = ", ".join(f"{model} {math.expm1(statistics.median(logs)):+.0%}" for model, logs in changes.items())
        lines.append(f"{name} between {before} and {after}: {listed}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--history", type=int, nargs="+", default=[1, 3], help="stored runs per baseline")
    parser.add_argument("--effects", action="store_true",
                        help="each run's latency against the plain runs right before and after it, per model")
    args = parser.parse_args(argv)
    return exit_status(lambda: _run(args))


def _run(args) -> None:
    if args.effects:
        print("== latency against the plain runs before and after (median over a model's points)",
              *effects(args.directory), sep="\n")
        return
    if any(h < 1 for h in args.history):
        raise UserError(f"--history must be at least 1, got {args.history}")
    for history in args.history:
        lines = replay(args.directory, history)
        print(f"== history of {history} run(s)", *lines, sep="\n")


if __name__ == "__main__":
    sys.exit(main())
