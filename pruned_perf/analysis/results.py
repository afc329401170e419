"""Read and write results files and the baseline store (format: docs/results-schema.md).

A results file is pytest-benchmark JSON with `machine_info.pruned_perf` (schema, profile,
fingerprint, run id, session outcome) and one measured point per `benchmarks[i].extra_info`. A
baseline is the newest good results file of a hardware and profile, kept at
`baselines/<fingerprint slug>/<profile>.json`, with a short history of earlier runs' medians under
`pruned_perf_history` (newest last): the verdicts hold a change against the spread between runs.
"""
from __future__ import annotations

import json
import os
import re
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable

from pruned_perf.analysis.metrics import METRICS, is_number
from pruned_perf.atomic import write_json_atomic
from pruned_perf.errors import UserError
from pruned_perf.schema import SCHEMA_VERSION, Measurement, check_positive_int

SUPPORTED_SCHEMAS = (SCHEMA_VERSION,)
HISTORY_KEY = "pruned_perf_history"
# Runs a baseline remembers: enough to see how far identical code wanders between runs, few enough
# that an old machine state (another driver, a since-fixed slowdown) ages out within two weeks of nightlies.
HISTORY_RUNS = 10
# A point whose timed rounds have an interquartile range above this fraction of their median was
# measured on a machine too unsteady to be a reference. Measured on the shared 2-core CPU: 9 of 19
# quick-profile runs had a point (mostly a 0.2 s tiny-model call) at 25-63%, so 25% refused every other
# run; on a heavily loaded machine refused points spread 26% to 16049%.
MAX_ROUND_SPREAD = 0.5
# A run whose steadiness probe was more than twice as slow at one point as at another ran on a machine
# whose speed changed under it: its speedups over dense mix two machines.
MAX_PROBE_SPREAD = 1.0
# A point whose threads waited for a CPU more than this many seconds per second of its rounds shared the
# cores with other processes (quiet 2-core CPU: 0.00-0.03; with a unit test running beside: 0.69-0.80,
# and 3-5x the latency): not a reference to hold later runs against.
MAX_RUNQUEUE_WAIT = 0.1
# Likewise a CPU point during whose rounds anything else used more than this many cores' worth of CPU
# (quiet 2-core CPU: 0.00-0.05). A GPU point's host thread does not compete with work that never made it wait.
MAX_OTHERS_CPU = 0.25
# Summary fields of a measured point: required and positive, or optional and non-negative.
_POSITIVE = ("latency_s", "latency_min_s", "tokens_per_s")
_NON_NEGATIVE = ("latency_iqr_s", "ttft_s", "tpot_s", "itl_p50_s", "itl_p90_s", "itl_max_s", "probe_s",
                 "runqueue_wait_frac", "others_cpu_frac", "dense_probe_s", "speedup_vs_dense", "peak_mem_bytes",
                 "decode_bw_frac")
_ROUND_LISTS = ("rounds_s", "ttft_rounds_s", "tpot_rounds_s", "probe_rounds_s", "speedup_rounds", "warmup_s",
                "runqueue_wait_rounds_s", "others_cpu_rounds_s")
# What a method's STYLE names (pruned_perf.pruning.methods): its colour and marker in every figure.
STYLE_KEYS = ("color", "marker")
# Slugs and profiles become path components under baselines/: keep them to one safe name each.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Fields every point needs to be grouped, compared and plotted; the rest may be null (OOM) or absent.
_REQUIRED_POINT_FIELDS = {
    "model": str,
    "method": str,
    "batch_size": int,
    "input_tokens": int,
    "output_tokens": int,
    "backend": str,
}


@dataclass
class Results:
    """One results file: who measured (fingerprint, profile) and what (points by id, typed)."""

    fingerprint: dict
    profile: str
    points: dict[str, Measurement]
    raw: dict = field(repr=False)  # the file as read; its points are written back from `points` (to_json)
    path: str = ""
    schema: int = SCHEMA_VERSION
    history: list[RunSummary] = field(default_factory=list)
    from_log: bool = False  # read from a point log: the run may have crashed, its outcome is unknown
    # how each method is shown, in the order of the measuring side's registry (method -> its STYLE)
    methods: dict[str, dict] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.fingerprint["slug"]

    @property
    def runs(self) -> list[RunSummary]:
        """Run summaries, oldest first, this file's own run last (a plain results file: just its own)."""
        return self.history or [run_summary(self)]

    @property
    def failed(self) -> list[str]:
        session = self.raw["machine_info"]["pruned_perf"].get("session") or {}
        return list(session.get("failed") or [])

    def to_json(self) -> dict:
        """The results file's JSON, every point's extra_info written from its typed point."""
        return dict(self.raw, benchmarks=[dict(b, extra_info=self.points[b["extra_info"]["id"]].to_dict())
                                          for b in self.raw["benchmarks"]])


def method_styles(*results: "Results | None") -> dict[str, dict]:
    """method -> its style, in the order the measuring side's registry lists them (the first results'
    methods first): the method modules own these facts, and the results carry them (`methods`)."""
    styles: dict[str, dict] = {}
    for r in results:
        for method, style in (r.methods if r is not None else {}).items():
            styles.setdefault(method, style)
    return styles


def method_rank(method: str, order: list[str]) -> tuple:
    """Where a method goes in tables and legends: by `order`, then any other by name."""
    return (order.index(method) if method in order else len(order), method)


# ---------------------------------------------------------------- reading


def load_results(path: str | os.PathLike) -> Results:
    """Read and validate one results file (or a `.jsonl` point log); any problem is one UserError naming it."""
    path = os.fspath(path)
    if path.endswith(".jsonl"):
        return results_from_log(path)
    raw = _read_json(path, "results file")
    return results_from_dict(raw, path)


def results_from_log(path: str) -> Results:
    """The last run of a JSON-lines point log as results: what a crashed or interrupted sweep left."""
    from pruned_perf.pointlog import is_point, read_records

    try:
        records = read_records(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such point log") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the point log: {e}") from None
    headers = [r for r in records if "meta" in r]
    if not headers:
        raise UserError(f"{path}: no run header line in this point log (written by an older pruned_perf, or "
                        f"not a point log)")
    run = headers[-1].get("run")
    points = [{k: v for k, v in r.items() if k not in ("run", "nodeid")}
              for r in records if r.get("run") == run and is_point(r)]
    if not points:
        raise UserError(f"{path}: run {run} logged no point; nothing was measured")
    raw = {"machine_info": {"pruned_perf": headers[-1]["meta"]},
           "benchmarks": [{"name": p.get("id"), "extra_info": p} for p in points]}
    results = results_from_dict(raw, path)
    add_speedups(results.points.values())  # the session's end computes them; a crashed run never got there
    results.from_log = True
    return results


def results_from_dict(raw, path: str = "<results>") -> Results:
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object (pytest-benchmark results), got {type(raw).__name__}")
    meta = _pruned_perf_meta(raw, path)
    benchmarks = raw.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        raise UserError(f"{path}: no benchmarks (empty results); nothing was measured")
    points: dict[str, Measurement] = {}
    where: dict[str, int] = {}
    for i, bench in enumerate(benchmarks):
        point = _point(bench, i, path)
        pid = point.id
        if pid in points:
            raise UserError(f"{path}: duplicate point id {pid!r} (benchmarks {where[pid]} and {i})")
        points[pid] = point
        where[pid] = i
    return Results(
        fingerprint=meta["fingerprint"],
        profile=meta["profile"],
        points=points,
        raw=raw,
        path=path,
        schema=meta["schema"],
        history=_history(raw.get(HISTORY_KEY), meta["fingerprint"]["slug"], path),
        methods=meta["methods"],
    )


def _read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a {what} (JSON)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read {what}: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def _pruned_perf_meta(raw: dict, path: str) -> dict:
    machine_info = raw.get("machine_info")
    meta = machine_info.get("pruned_perf") if isinstance(machine_info, dict) else None
    supported = ", ".join(map(str, SUPPORTED_SCHEMAS))
    if not isinstance(meta, dict) or "schema" not in meta:
        raise UserError(
            f"{path}: no machine_info.pruned_perf.schema; not a pruned_perf results file "
            f"(supported schema: {supported})"
        )
    schema = meta["schema"]
    if schema not in SUPPORTED_SCHEMAS or isinstance(schema, bool):
        raise UserError(f"{path}: results schema {schema!r} is not supported (supported schema: {supported})")
    fingerprint = meta.get("fingerprint")
    if not isinstance(fingerprint, dict) or not isinstance(fingerprint.get("slug"), str):
        raise UserError(f"{path}: machine_info.pruned_perf.fingerprint.slug is missing")
    _check_safe_name(fingerprint["slug"], "fingerprint slug", path)
    profile = meta.get("profile")
    if not isinstance(profile, str):
        raise UserError(f"{path}: machine_info.pruned_perf.profile is missing")
    _check_safe_name(profile, "profile", path)
    methods = meta.get("methods", {})
    if not isinstance(methods, dict) or not all(
            isinstance(style, dict) and all(isinstance(style.get(k), str) for k in STYLE_KEYS)
            for style in methods.values()):
        raise UserError(f"{path}: machine_info.pruned_perf.methods must map each method to its style "
                        f"({', '.join(STYLE_KEYS)}: matplotlib names), got {methods!r}")
    return {"schema": schema, "fingerprint": fingerprint, "profile": profile, "methods": methods}


def _check_safe_name(value: str, what: str, path: str) -> None:
    if not _SAFE_NAME.match(value):
        raise UserError(f"{path}: {what} {value!r} is not a file-safe name (letters, digits, . _ -)")


def _point(bench, i: int, path: str) -> Measurement:
    name = bench.get("name", "?") if isinstance(bench, dict) else "?"
    extra = bench.get("extra_info") if isinstance(bench, dict) else None
    if not isinstance(extra, dict) or not extra:
        raise UserError(f"{path}: benchmark {i} ({name}) has no extra_info; not a pruned_perf point")
    pid = extra.get("id")
    if not isinstance(pid, str) or not pid:
        raise UserError(f"{path}: benchmark {i} ({name}) has no extra_info.id")
    if extra.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise UserError(
            f"{path}: point {pid!r} has extra_info.schema {extra['schema']!r} (supported schema: {SCHEMA_VERSION})"
        )
    for key, kind in _REQUIRED_POINT_FIELDS.items():
        value = extra.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"{path}: point {pid!r}: extra_info.{key} must be {kind.__name__}, got {value!r}")
    if not extra.get("oom"):
        _check_measured(extra, f"{path}: point {pid!r}: extra_info")
    try:
        return Measurement.from_dict({"schema": SCHEMA_VERSION, **extra})
    except UserError as e:
        raise UserError(f"{path}: benchmark {i}: {e}") from None


def _check_measured(extra: dict, where: str) -> None:
    """Timings must be real: NaN, infinite, negative or zero latencies are a broken measurement, not
    a point to compare (a NaN median compares as neither better nor worse and would pass a gate)."""
    rounds = extra.get("rounds_s")
    if not isinstance(rounds, list) or not rounds or not all(_positive(r) for r in rounds):
        raise UserError(f"{where}.rounds_s must be a non-empty list of finite positive seconds, got {rounds!r}")
    for key in _ROUND_LISTS:
        values = extra.get(key, [])
        if not isinstance(values, list) or not all(_non_negative(v) for v in values):
            raise UserError(f"{where}.{key} must be a list of finite non-negative numbers, got {values!r}")
    for key in _POSITIVE:
        if not _positive(extra.get(key)):
            raise UserError(f"{where}.{key} must be a finite positive number, got {extra.get(key)!r}")
    for key in _NON_NEGATIVE:
        if extra.get(key) is not None and not _non_negative(extra[key]):
            raise UserError(f"{where}.{key} must be a finite non-negative number or null, got {extra[key]!r}")
    check_positive_int(f"{where}.calls_per_round", extra.get("calls_per_round", 1))


def _positive(value) -> bool:
    return is_number(value) and value > 0


def _non_negative(value) -> bool:
    return is_number(value) and value >= 0


# ---------------------------------------------------------------- speedup over dense


def add_speedups(points: Iterable[Measurement]) -> None:
    """Set `speedup_vs_dense` (and its per-round samples) on every pruned point whose dense point of
    the same shape was measured in the same run: the ratio is what the suite exists to show, and the
    machine's drift between runs cancels out of it. In place; dense and OOM points get None."""
    points = list(points)
    dense = {_shape(p): p for p in points if p.method == "dense" and not p.oom and p.rounds_s}
    for p in points:
        base = dense.get(_shape(p))
        if p.method == "dense" or p.oom or base is None or not p.rounds_s:
            p.speedup_vs_dense, p.speedup_rounds, p.dense_probe_s = None, [], None
            continue
        base_latency = statistics.median(base.rounds_s)
        p.speedup_vs_dense = base_latency / statistics.median(p.rounds_s)
        p.speedup_rounds = [base_latency / r for r in p.rounds_s]
        # how fast the machine was during the dense point: the speedup's denominator was timed then
        p.dense_probe_s = base.probe_s


def add_speedups_to_benchmarks(benchmarks: list[dict]) -> None:
    """add_speedups over the points of pytest-benchmark JSON (its `benchmarks`), in place: each
    extra_info is written anew from its typed point."""
    measured = [b for b in benchmarks if b.get("extra_info")]
    points = [Measurement.from_dict(b["extra_info"]) for b in measured]
    add_speedups(points)
    for bench, point in zip(measured, points):
        bench["extra_info"] = point.to_dict()


def _shape(p: Measurement) -> tuple:
    return (p.model, p.input_tokens, p.output_tokens, p.batch_size, p.backend)


# ---------------------------------------------------------------- run history


@dataclass
class RunSummary:
    """What the history keeps of one run: who and when, and per point the median of each metric
    (metric name -> median, and the probe's `probe_s`; an OOM point: {"oom": true})."""

    run_id: str | None
    datetime: str | None
    commit: str | None
    slug: str
    torch: str | None
    transformers: str | None
    points: dict[str, dict]

    def median(self, pid: str, metric: str) -> float | None:
        value = self.points.get(pid, {}).get(metric)
        return float(value) if is_number(value) else None

    def to_dict(self) -> dict:
        return asdict(self)


_RUN_FIELDS = [f.name for f in fields(RunSummary)]


def run_summary(results: Results) -> RunSummary:
    commit = results.raw.get("commit_info") or {}
    meta = results.raw["machine_info"]["pruned_perf"]
    return RunSummary(meta.get("run_id"), results.raw.get("datetime"), commit.get("id"), results.slug,
                      results.fingerprint.get("torch"), results.fingerprint.get("transformers"),
                      {pid: point_summary(p) for pid, p in results.points.items()})


def point_summary(point: Measurement) -> dict:
    if point.oom:
        return {"oom": True}
    values = {m.name: m.value(point) for m in METRICS}
    values["probe_s"] = point.probe_s if is_number(point.probe_s) else None
    return {k: v for k, v in values.items() if v is not None}


def _history(history, slug: str, path: str) -> list[RunSummary]:
    """The stored run summaries, checked: a corrupt history or one of other hardware is an error."""
    if history is None:
        return []
    if not isinstance(history, list) or not history:
        raise UserError(f"{path}: {HISTORY_KEY} must be a non-empty list of run summaries")
    for i, run in enumerate(history):
        where = f"{path}: {HISTORY_KEY}[{i}]"
        if not isinstance(run, dict) or not isinstance(run.get("points"), dict):
            raise UserError(f"{where} is not a run summary (needs a points object)")
        if run.get("slug") != slug:
            raise UserError(f"{where} is from hardware {run.get('slug')!r}, the file from {slug!r}")
        for pid, values in run["points"].items():
            bad = [k for k, v in values.items() if k != "oom" and not (is_number(v) and v >= 0)] \
                if isinstance(values, dict) else ["(not an object)"]
            if bad:
                raise UserError(f"{where}: point {pid!r} has bad values for {', '.join(bad)}")
    return [RunSummary(**{name: run.get(name) for name in _RUN_FIELDS}) for run in history]


# ---------------------------------------------------------------- writing


# ---------------------------------------------------------------- baselines


@dataclass
class BaselineEntry:
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


def store_baseline(results_path: str | os.PathLike, baselines_dir: str | os.PathLike,
                   force: bool = False) -> tuple[Path, int]:
    """Store a results file as the baseline of its hardware and profile, its run appended to the
    stored history. Returns (path, runs in the history).

    Refused unless force=True: a run with failed points or with a point whose rounds spread widely
    (not a reference to hold later runs against), and an existing baseline that cannot be read or is
    of other hardware or another schema (that guards against filing one GPU's numbers under another's
    slug; with force, its history is dropped and starts anew).
    """
    results = load_results(results_path)
    if not force:
        check_good_run(results)
    dest = baseline_path(baselines_dir, results.slug, results.profile)
    history = _kept_history(dest, results, force)
    new_run = run_summary(results)
    history = [run for run in history if run.run_id is None or run.run_id != new_run.run_id]
    raw = results.to_json()
    raw[HISTORY_KEY] = [run.to_dict() for run in (history + [new_run])[-HISTORY_RUNS:]]
    write_json_atomic(dest, raw)
    return dest, len(raw[HISTORY_KEY])


def competing_cpu(point: Measurement) -> float | None:
    """Cores' worth of CPU that anything else used during the point's rounds, where that competes with
    the run: on the CPU only. A GPU run's host thread, alone on one of many cores, does not compete with
    other work that never made it wait (the run-queue wait would show it if it did)."""
    return point.others_cpu_frac if point.device == "cpu" else None


def check_good_run(results: Results) -> None:
    hint = "pass --force to store it anyway"
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


def list_baselines(baselines_dir: str | os.PathLike) -> list[BaselineEntry]:
    """Every `<slug>/<profile>.json` under the store, sorted; unreadable ones carry their error."""
    root = Path(baselines_dir)
    if not root.is_dir():
        return []
    entries = []
    for path in sorted(root.glob("*/*.json")):
        entries.append(_baseline_entry(path))
    return entries


def _baseline_entry(path: Path) -> BaselineEntry:
    entry = BaselineEntry(slug=path.parent.name, profile=path.stem, path=str(path))
    try:
        results = load_results(path)
    except UserError as e:
        entry.error = str(e)
        return entry
    entry.points = len(results.points)
    entry.oom_points = sum(1 for p in results.points.values() if p.oom)
    entry.datetime = str(results.raw.get("datetime", ""))
    entry.torch = str(results.fingerprint.get("torch", ""))
    entry.transformers = str(results.fingerprint.get("transformers", ""))
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


# ---------------------------------------------------------------- shards


def merge_results(paths) -> dict:
    """Merge results files of shards of one run into one results dict (benchmarks concatenated,
    failed tests joined, speedups over dense recomputed across shards)."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise UserError("merge needs at least one results file")
    first = load_results(paths[0])
    points, benchmarks, failed = dict(first.points), list(first.raw["benchmarks"]), list(first.failed)
    owner = {pid: first.path for pid in first.points}
    for path in paths[1:]:
        shard = load_results(path)
        _check_same_run(first, shard)
        for pid in shard.points:
            if pid in owner:
                raise UserError(f"point {pid!r} is in both {owner[pid]} and {shard.path}; shards must not overlap")
            owner[pid] = shard.path
        points.update(shard.points)
        benchmarks.extend(shard.raw["benchmarks"])
        failed.extend(shard.failed)
    add_speedups(points.values())
    raw = json.loads(json.dumps(dict(first.raw, benchmarks=benchmarks)))  # a deep copy: the shards stay as read
    merged = Results(first.fingerprint, first.profile, points, raw).to_json()
    merged["machine_info"]["pruned_perf"]["session"] = {"failed": failed}
    return merged


def _check_same_run(a: Results, b: Results) -> None:
    for what, va, vb in (
        ("schema", a.schema, b.schema),
        ("fingerprint slug", a.slug, b.slug),
        ("profile", a.profile, b.profile),
        ("torch", a.fingerprint.get("torch"), b.fingerprint.get("torch")),
        ("transformers", a.fingerprint.get("transformers"), b.fingerprint.get("transformers")),
    ):
        if va != vb:
            raise UserError(f"cannot merge: {a.path} has {what} {va!r}, {b.path} has {what} {vb!r}")
