"""The long history of runs that CI keeps, torch-free: one small record per run (`HistoryRun`), and the
A/Bs that confirmed or bisected a step (`HistoryAB`), each a gzip file of its own, never rewritten:

    HISTORY/<hardware slug>/<profile>/runs/<measured>-<commit12>-<run8>.json.gz
    HISTORY/<hardware slug>/<profile>/ab/<measured>-<base12>-<head12>.json.gz   (pruned_perf.analysis.history_ab)

A file per record keeps the store append-only and free of conflicts (two jobs that add at once add two
files), and lets git store each record once: a single growing file would be stored anew at every commit.
A run keeps, per point, the median and relative spread (interquartile range over the median) of
latency, TTFT and TPOT, the steadiness probe and peak memory; per variant its parameters and held-out
perplexity; the commit (SHA, subject, author date) and the environment (`RunEnv`).
"""
from __future__ import annotations

import gzip
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from pruned_perf.analysis.results import Results
from pruned_perf.core.atomic import atomic_path
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import (COUNT, FLAG, NAME, NON_NEGATIVE, OBJECT, POSITIVE, SAFE_NAME, TEXT, Check,
                                     Measurement, MethodStyle, Record, checked, is_number)

HISTORY_VERSION = 1
EVENTS = ("schedule", "push", "manual", "import", "trial")
RUNS, ABS = "runs", "ab"
_OPT_TEXT = TEXT.or_null()
_OPT_POS = POSITIVE.or_null()
_OPT_SPREAD = NON_NEGATIVE.or_null()


@dataclass(frozen=True, kw_only=True)
class RunEnv(Record):
    """What a run measured on besides the code: hardware and the software that decides its speed."""

    slug: str = checked(SAFE_NAME)
    device: str | None = checked(_OPT_TEXT, default=None)
    name: str | None = checked(_OPT_TEXT, default=None)
    driver: str | None = checked(_OPT_TEXT, default=None)
    cuda: str | None = checked(_OPT_TEXT, default=None)
    torch: str | None = checked(_OPT_TEXT, default=None)
    transformers: str | None = checked(_OPT_TEXT, default=None)
    threads: int | None = checked(COUNT.or_null(), default=None)

    def differences(self, before: "RunEnv") -> list[str]:
        """`torch 2.12.0 -> 2.13.0` for every field that changed since `before` (an unknown one is no change)."""
        changes = []
        for key in ("slug", "name", "driver", "cuda", "torch", "transformers", "threads"):
            old, new = getattr(before, key), getattr(self, key)
            if old is not None and new is not None and old != new:
                changes.append(f"{key} {old} -> {new}")
        return changes


@dataclass(frozen=True, kw_only=True)
class RunPoint(Record):
    """One point of one run: medians (s, bytes) and relative spreads; or that it ran out of memory."""

    oom: bool = checked(FLAG, default=False)
    latency_s: float | None = checked(_OPT_POS, default=None)
    latency_spread: float | None = checked(_OPT_SPREAD, default=None)
    ttft_s: float | None = checked(_OPT_POS, default=None)
    ttft_spread: float | None = checked(_OPT_SPREAD, default=None)
    tpot_s: float | None = checked(_OPT_POS, default=None)
    tpot_spread: float | None = checked(_OPT_SPREAD, default=None)
    probe_s: float | None = checked(_OPT_POS, default=None)
    peak_mem_bytes: int | None = checked(COUNT.or_null(), default=None)

    def value(self, metric: str) -> float | None:
        return None if self.oom else getattr(self, metric, None)


# The order of a point's values on disk: [latency_s, latency_spread, ..., peak_mem_bytes]; null: OOM.
POINT_FIELDS = ("latency_s", "latency_spread", "ttft_s", "ttft_spread", "tpot_s", "tpot_spread", "probe_s",
                "peak_mem_bytes")


@dataclass(frozen=True, kw_only=True)
class VariantInfo(Record):
    """What every point of a variant shares in a run: its parameters and held-out perplexity."""

    params: int = checked(COUNT)
    ppl: float | None = checked(_OPT_POS, default=None)


def _points_ok(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, RunPoint) for v in value.values())


@dataclass(frozen=True, kw_only=True)
class HistoryRun(Record):
    """One run as the history keeps it."""

    run_id: str = checked(NAME)
    profile: str = checked(SAFE_NAME)
    measured: str = checked(NAME)  # ISO time the run ended
    event: str = checked(Check(lambda v: v in EVENTS, f"one of {', '.join(EVENTS)}"))
    commit: str | None = checked(_OPT_TEXT, default=None)
    subject: str | None = checked(_OPT_TEXT, default=None)
    author_time: str | None = checked(_OPT_TEXT, default=None)
    env: RunEnv = checked(OBJECT, record=RunEnv)
    points: dict = checked(Check(_points_ok, "an object of RunPoint by point id"), default_factory=dict)
    variants: dict = checked(OBJECT, records=VariantInfo, default_factory=dict)  # "model/method" -> info
    methods: dict = checked(OBJECT, records=MethodStyle, default_factory=dict)  # how figures draw each method

    def to_dict(self) -> dict:
        """As the file holds it: each point's values in POINT_FIELDS order (null: out of memory)."""
        meta = {k: getattr(self, k) for k in ("run_id", "profile", "measured", "event", "commit", "subject",
                                              "author_time")}
        return {"v": HISTORY_VERSION, **meta, "env": self.env.to_dict(), "fields": list(POINT_FIELDS),
                "points": {pid: None if p.oom else [_round(getattr(p, f), 2 if f.endswith("_spread") else 4)
                                                    for f in POINT_FIELDS]
                           for pid, p in self.points.items()},
                "variants": {k: v.to_dict() for k, v in self.variants.items()},
                "methods": {k: v.to_dict() for k, v in self.methods.items()}}

    @classmethod
    def from_dict(cls, data, where: str = "history run") -> "HistoryRun":
        if not isinstance(data, dict) or data.get("v") != HISTORY_VERSION:
            raise UserError(f"{where}: not a history run of version {HISTORY_VERSION} (v: "
                            f"{data.get('v') if isinstance(data, dict) else data!r})")
        fields = data.get("fields")
        if not isinstance(fields, list) or not set(fields) <= set(POINT_FIELDS):
            raise UserError(f"{where}: fields must list point fields of {', '.join(POINT_FIELDS)}, got {fields!r}")
        points = {pid: _run_point(values, fields, f"{where}: point {pid!r}")
                  for pid, values in (data.get("points") or {}).items()}
        return super().from_dict({**data, "points": points}, where)


def _run_point(values, fields: list, where: str) -> RunPoint:
    if values is None:
        return RunPoint(oom=True)
    if not isinstance(values, list) or len(values) != len(fields):
        raise UserError(f"{where} must be a list of {len(fields)} values or null, got {values!r}")
    return RunPoint.from_dict(dict(zip(fields, values)), where)


def _round(value, digits: int):
    """`digits` significant digits (a median four, a spread two: they need no more), so that the file
    stays small; an integer (bytes) stays one."""
    if not is_number(value):
        return value
    rounded = float(f"{value:.{digits}g}")
    return int(rounded) if isinstance(value, int) else rounded


# ---- from a results file ----

def history_run(results: Results, event: str, subject: str | None = None, author_time: str | None = None,
                commit: str | None = None) -> HistoryRun:
    """The history's record of a finished plain run (an A/B, a point log or an interrupted run is no
    nightly: one UserError)."""
    if results.ab is not None or results.from_log or results.interrupted:
        kind = "an A/B" if results.ab is not None else "a point log" if results.from_log else "an interrupted run"
        raise UserError(f"{results.path}: {kind} is no run for the history; add the --benchmark-json of a plain "
                        f"run that finished")
    if not results.datetime:
        raise UserError(f"{results.path}: no datetime (pytest-benchmark writes one): when the run ended is what "
                        f"orders the history")
    env = run_env(results)
    variants = {f"{p.model}/{p.method}": VariantInfo(params=p.params, ppl=p.ppl if is_number(p.ppl) else None)
                for p in results.points.values()}
    return HistoryRun(run_id=results.meta.run_id or os.path.basename(results.path), profile=results.profile,
                      measured=results.datetime, event=event, commit=commit or results.commit, subject=subject,
                      author_time=author_time, env=env, variants=variants, methods=dict(results.methods),
                      points={pid: run_point(p) for pid, p in results.points.items()})


def run_env(results: Results) -> RunEnv:
    """The environment a results file was measured in (its fingerprint and torch's threads)."""
    fp = results.fingerprint
    return RunEnv(slug=fp.slug, device=fp.device, name=fp.name, driver=fp.driver, cuda=fp.cuda, torch=fp.torch,
                  transformers=fp.transformers, threads=fp.threads)


def run_point(p: Measurement) -> RunPoint:
    if p.oom:
        return RunPoint(oom=True)
    latency_spread = p.latency_iqr_s / p.latency_s if is_number(p.latency_iqr_s) and p.latency_s else None
    return RunPoint(latency_s=p.latency_s, latency_spread=latency_spread, ttft_s=p.ttft_s,
                    ttft_spread=_spread(p.ttft_rounds_s), tpot_s=p.tpot_s, tpot_spread=_spread(p.tpot_rounds_s),
                    probe_s=p.probe_s if is_number(p.probe_s) and p.probe_s > 0 else None,
                    peak_mem_bytes=p.peak_mem_bytes)


def _spread(rounds: list) -> float | None:
    """Interquartile range over the median of a point's rounds (None with fewer than two), as the suite
    takes latency's (pruned_perf.core.schema.timing_fields)."""
    values = [r for r in rounds if is_number(r) and r > 0]
    if len(values) < 2:
        return None
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / median if median > 0 else None


# ---- the store ----

def _stamp(iso: str) -> str:
    return "".join(ch for ch in iso[:19] if ch.isdigit()) or "00000000000000"


def run_path(root: str | os.PathLike, run: HistoryRun) -> Path:
    name = f"{_stamp(run.measured)}-{(run.commit or 'nocommit')[:12]}-{run.run_id[-8:]}.json.gz"
    return Path(root) / run.env.slug / run.profile / RUNS / name


def write_record(path: Path, data: dict) -> Path:
    """A new record, whole or not at all; an existing one is never written over (append-only)."""
    if path.exists():
        raise UserError(f"{path} is in the history already: a record is never written twice")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".json.gz") as tmp:
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
    return path


def read_record(path: Path) -> dict:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, EOFError, ValueError) as exc:
        raise UserError(f"{path}: not a readable history record ({exc})") from None


def add_run(root: str | os.PathLike, run: HistoryRun) -> Path:
    """Append a run to the history; the same run (its run id) twice is refused."""
    existing = Path(root) / run.env.slug / run.profile / RUNS
    if existing.is_dir() and any(p.name.endswith(f"-{run.run_id[-8:]}.json.gz") for p in existing.iterdir()):
        raise UserError(f"run {run.run_id} of {run.env.slug} {run.profile} is in the history already")
    return write_record(run_path(root, run), run.to_dict())


def groups(root: str | os.PathLike) -> list[tuple[str, str]]:
    """Every (hardware slug, profile) the history holds runs of."""
    base = Path(root)
    if not base.is_dir():
        raise UserError(f"history {root}: no such directory")
    return sorted((p.parent.parent.name, p.parent.name) for p in base.glob(f"*/*/{RUNS}") if p.is_dir())


def load_runs(root: str | os.PathLike, slug: str, profile: str) -> list[HistoryRun]:
    """The runs of one hardware and profile in the order they were measured (then by file name)."""
    folder = Path(root) / slug / profile / RUNS
    if not folder.is_dir():
        raise UserError(f"history {root} has no runs of {slug} profile {profile}; it holds: "
                        f"{', '.join(f'{s} {p}' for s, p in groups(root)) or 'nothing'}")
    runs = [HistoryRun.from_dict(read_record(p), str(p)) for p in sorted(folder.glob("*.json.gz"))]
    return sorted(runs, key=lambda r: r.measured)
