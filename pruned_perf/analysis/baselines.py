"""The baseline store and its admission policy.

A baseline is the newest good results file of a hardware and profile, kept at
`baselines/<fingerprint slug>/<profile>.json`, with a short history of earlier runs' summaries (newest
last): the verdicts hold a change against the spread between runs. A run is good (admitted) when it
finished, had no failed test, and ran on a machine steady enough to be a reference.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from pruned_perf.analysis.compare import compare, competing_cpu
from pruned_perf.analysis.comparison import Comparison
from pruned_perf.analysis.config import load_config
from pruned_perf.analysis.summaries import RunSummary
from pruned_perf.analysis.results import run_summary
from pruned_perf.analysis.results import Results, load_results
from pruned_perf.core.atomic import write_json_atomic
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import is_number

# Runs a baseline remembers: enough to see how far identical code wanders between runs, few enough
# that an old machine state (another driver, a since-fixed slowdown) ages out within two weeks of nightlies.
HISTORY_RUNS = 10
# A point whose timed rounds have an interquartile range above this fraction of their median was
# measured on a machine too unsteady to be a reference. Half the median: short calls on a shared CPU
# spread by a quarter or more in runs that are otherwise steady, and a tighter limit refuses those
# (chosen from trials: docs/verdict-trials.md).
MAX_ROUND_SPREAD = 0.5
# A run whose steadiness probe was more than twice as slow at one point as at another ran on a machine
# whose speed changed under it: its speedups over dense mix two machines.
MAX_PROBE_SPREAD = 1.0
# A point whose threads waited for a CPU more than this many seconds per second of its rounds shared the
# cores with other processes: a quiet machine's threads wait a few hundredths of that, threads beside
# other work most of it (docs/verdict-trials.md). Not a reference to hold later runs against.
MAX_RUNQUEUE_WAIT = 0.1
# Likewise a CPU point during whose rounds anything else used more than a quarter of a core: a quiet
# machine's own background stays well below (docs/verdict-trials.md). A GPU point's host thread does not
# compete with work that never made it wait (compare.competing_cpu).
MAX_OTHERS_CPU = 0.25


@dataclass
class BaselineEntry:
    """One file of the store, as `baseline show` lists it; `error` says why it cannot be read."""

    slug: str
    profile: str
    path: str
    points: int = 0
    oom_points: int = 0
    datetime: str = ""
    torch: str = ""
    transformers: str = ""
    error: str = ""


def baseline_path(baselines_dir: str | os.PathLike, slug: str, profile: str) -> Path:
    return Path(baselines_dir) / slug / f"{profile}.json"


# ---------------------------------------------------------------- storing a run


def store_baseline(results_path: str | os.PathLike, baselines_dir: str | os.PathLike,
                   force: bool = False) -> tuple[Path, int]:
    """Store a results file as the baseline of its hardware and profile, its run appended to the
    stored history. Returns (path, runs in the history).

    Refused unless force=True: a run that check_good_run refuses, and an existing baseline that cannot
    be read or is of other hardware or another schema (that guards against filing one GPU's numbers
    under another's slug; with force, its history is dropped and starts anew).
    """
    results = load_results(results_path)
    if results.ab is not None:  # not even with force: a baseline holds runs of one version
        raise UserError(f"{results.path}: an interleaved A/B, not a run of one version: its rounds alternated with "
                        f"another version's, and its verdicts are against that one; store a plain run "
                        f"(pytest perf/ --benchmark-json) as the baseline")
    if not force:
        check_good_run(results)
    dest = baseline_path(baselines_dir, results.slug, results.profile)
    history = _kept_history(dest, results, force)
    new_run = run_summary(results)
    history = [run for run in history if run.run_id is None or run.run_id != new_run.run_id]
    stored = dataclasses.replace(results, history=(history + [new_run])[-HISTORY_RUNS:])
    write_json_atomic(dest, stored.to_json())
    return dest, len(stored.history)


def check_good_run(results: Results) -> None:
    """A UserError saying why `results` is no reference to hold later runs against: a point log (its
    run's outcome is unknown), failed tests, no measured point, or a machine that was unsteady, busy
    or changed speed during the run."""
    hint = "pass --force to store it anyway"
    if results.interrupted:
        raise UserError(f"{results.path}: the run was interrupted (Ctrl-C): it holds only the points before "
                        f"that; not a baseline; {hint}")
    if results.from_log:
        raise UserError(f"{results.path}: a point log, not the results of a finished run (its outcome is "
                        f"unknown); store the --benchmark-json file of a run that finished, or {hint}")
    if results.failed:
        raise UserError(f"{results.path}: the run had {len(results.failed)} failed or errored test(s) "
                        f"({', '.join(results.failed[:5])}); not a baseline; {hint}")
    measured = {pid: p for pid, p in results.points.items() if not p.oom}
    if not measured:
        raise UserError(f"{results.path}: every point ran out of memory; nothing to hold later runs against; {hint}")
    wide = [f"{pid} ({spread:.0%})" for pid, p in measured.items()
            if (spread := round_spread(p.rounds_s)) > MAX_ROUND_SPREAD]
    if wide:
        raise UserError(f"{results.path}: rounds spread more than {MAX_ROUND_SPREAD:.0%} of their median "
                        f"(interquartile range) in {len(wide)} point(s): {', '.join(wide[:5])}; the machine "
                        f"was unsteady; measure again on a quiet machine or {hint}")
    busy = _over(measured, lambda p: p.runqueue_wait_frac, MAX_RUNQUEUE_WAIT)
    if busy:
        raise UserError(f"{results.path}: other processes held the cores: in {len(busy)} point(s) the threads "
                        f"waited for a CPU more than {MAX_RUNQUEUE_WAIT} s per second of the rounds: "
                        f"{', '.join(busy[:5])}; measure again on a quiet machine or {hint}")
    shared = _over(measured, competing_cpu, MAX_OTHERS_CPU)
    if shared:
        raise UserError(f"{results.path}: other processes or guests used the CPUs: in {len(shared)} point(s) they "
                        f"took more than {MAX_OTHERS_CPU} cores' worth of CPU during the rounds: "
                        f"{', '.join(shared[:5])}; measure again on a quiet machine or {hint}")
    probes = {pid: p.probe_s for pid, p in measured.items() if is_number(p.probe_s) and p.probe_s > 0}
    if probes:
        slow, fast = max(probes, key=probes.get), min(probes, key=probes.get)
        if probes[slow] / probes[fast] - 1 > MAX_PROBE_SPREAD:
            raise UserError(f"{results.path}: the steadiness probe ran {probes[slow] / probes[fast]:.1f}x slower "
                            f"during {slow} than during {fast}: the machine's speed changed during the run; "
                            f"measure again on a quiet machine or {hint}")


def _over(points: dict, value, limit: float) -> list[str]:
    """"id (value)" of each point whose value (a function of the point; None: not known) exceeds limit."""
    return [f"{pid} ({v:.2f})" for pid, p in points.items() if (v := value(p)) is not None and v > limit]


def round_spread(rounds: list) -> float:
    """Interquartile range of the rounds over their median."""
    if len(rounds) < 2:
        return 0.0
    q1, median, q3 = statistics.quantiles(rounds, n=4, method="inclusive")
    return (q3 - q1) / median


def _kept_history(dest: Path, results: Results, force: bool) -> list[RunSummary]:
    """The existing baseline's run history, if the new run may join it."""
    if not dest.exists():
        return []
    hint = "pass --force to replace it and start its history anew"
    try:
        old = load_results(dest)
    except UserError as e:
        if force:
            return []
        raise UserError(f"existing baseline cannot be read ({e}); {hint}") from None
    for what, was, new in (("hardware", old.slug, results.slug), ("schema", old.schema, results.schema)):
        if was != new and not force:
            raise UserError(f"{dest}: existing baseline is for {what} {was!r}, {results.path} for {new!r}; {hint}")
        if was != new:
            return []
    return old.runs


# ---------------------------------------------------------------- finding a baseline


def list_baselines(baselines_dir: str | os.PathLike) -> list[BaselineEntry]:
    """Every `<slug>/<profile>.json` under the store, sorted; unreadable ones carry their error."""
    root = Path(baselines_dir)
    if not root.is_dir():
        return []
    return [_baseline_entry(path) for path in sorted(root.glob("*/*.json"))]


def _baseline_entry(path: Path) -> BaselineEntry:
    entry = BaselineEntry(slug=path.parent.name, profile=path.stem, path=str(path))
    try:
        results = load_results(path)
    except UserError as e:
        entry.error = str(e)
        return entry
    entry.points = len(results.points)
    entry.oom_points = sum(1 for p in results.points.values() if p.oom)
    entry.datetime = results.datetime or ""
    entry.torch = results.fingerprint.torch or ""
    entry.transformers = results.fingerprint.transformers or ""
    if results.slug != entry.slug or results.profile != entry.profile:
        entry.error = f"file says slug {results.slug!r} profile {results.profile!r}"
    return entry


def resolve_baseline(spec: str, results: Results, baselines_dir: str | os.PathLike = "baselines") -> Path:
    """Find the baseline file for `results`: a FILE, a DIR, or `auto` (the store's entry)."""
    if spec == "auto":
        path = baseline_path(baselines_dir, results.slug, results.profile)
        if not path.is_file():
            raise UserError(
                f"no baseline for {results.slug} profile {results.profile}: {path} does not exist "
                f"(store one with `pruned-perf baseline update RESULTS.json`)"
            )
        return path
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        tried = [path / f"{results.profile}.json", baseline_path(path, results.slug, results.profile)]
        for candidate in tried:
            if candidate.is_file():
                return candidate
        raise UserError(f"baseline directory {path} has neither {tried[0]} nor {tried[1]}")
    raise UserError(f"baseline {spec}: no such file or directory")


def compare_with_baseline(current: Results, spec: str, baselines_dir: str | os.PathLike = "baselines",
                          pyproject: str | None = None, allow_mismatch: bool = False) -> tuple[Results, Comparison]:
    """(baseline Results, Comparison) against a baseline given as FILE, DIR or `auto`."""
    config = load_config(pyproject)  # read first: a bad pyproject fails before any work
    baseline = load_results(resolve_baseline(spec, current, baselines_dir))
    return baseline, compare(current, baseline, config, allow_mismatch=allow_mismatch)
