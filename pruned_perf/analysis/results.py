"""The results file: read, validate and write it (format: docs/results-schema.md).

A results file is pytest-benchmark JSON with `machine_info.pruned_perf` (the run's meta: `RunMeta`) and
one measured point per `benchmarks[i].extra_info` (`Measurement`). A baseline file adds the summaries of
earlier runs under `pruned_perf_history` (pruned_perf.analysis.summaries); an interleaved A/B adds its
record under `pruned_perf_ab` (pruned_perf.analysis.ab). A JSON-lines point log reads as the results of
its last run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from pruned_perf.analysis.ab import AB_KEY, ABRecord
from pruned_perf.analysis.summaries import RunSummary, point_summary, read_history
from pruned_perf.analysis.speedups import add_speedups
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import SCHEMA_VERSION, SUPPORTED_SCHEMAS, Fingerprint, Measurement, MethodStyle, RunMeta

HISTORY_KEY = "pruned_perf_history"


@dataclass
class Results:
    """One results file: who measured and how (`meta`), what (points by id, typed), and a baseline's
    history of earlier runs. `raw` is the pytest-benchmark JSON around them, kept only to write it back."""

    meta: RunMeta
    points: dict[str, Measurement]
    path: str = ""
    history: list[RunSummary] = field(default_factory=list)
    from_log: bool = False  # read from a point log: the run may have crashed, its outcome is unknown
    datetime: str | None = None  # when pytest-benchmark wrote the file
    commit: str | None = None  # the commit measured, as pytest-benchmark saw it
    ab: ABRecord | None = None  # an interleaved A/B's record: its points are the new side's
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def fingerprint(self) -> Fingerprint:
        return self.meta.fingerprint

    @property
    def slug(self) -> str:
        return self.meta.fingerprint.slug

    @property
    def profile(self) -> str:
        return self.meta.profile

    @property
    def schema(self) -> int:
        return self.meta.schema

    @property
    def methods(self) -> dict[str, MethodStyle]:
        """How each method is shown, in the order of the measuring side's registry."""
        return self.meta.methods

    @property
    def failed(self) -> list[str]:
        return self.meta.failed

    @property
    def interrupted(self) -> bool:
        return self.meta.interrupted

    @property
    def runs(self) -> list[RunSummary]:
        """Run summaries, oldest first, this file's own run last (a plain results file: just its own)."""
        return self.history or [run_summary(self)]

    def to_json(self) -> dict:
        """The results file's JSON: its meta, every point's extra_info and the history (if any) written
        from the typed records, the rest of pytest-benchmark's JSON as read."""
        raw = {k: v for k, v in self.raw.items() if k not in (HISTORY_KEY, AB_KEY)}
        raw["machine_info"] = dict(raw.get("machine_info") or {}, pruned_perf=self.meta.to_dict())
        # results built in memory (not read) get a bare entry per point
        benchmarks = self.raw.get("benchmarks") or [{"name": pid, "extra_info": {"id": pid}} for pid in self.points]
        raw["benchmarks"] = [dict(b, extra_info=self.points[b["extra_info"]["id"]].to_dict()) for b in benchmarks]
        if self.history:
            raw[HISTORY_KEY] = [run.to_dict() for run in self.history]
        if self.ab is not None:
            raw[AB_KEY] = self.ab.to_dict()
        return raw


def run_summary(results: Results) -> RunSummary:
    """The summary of the run a results file holds."""
    return RunSummary(run_id=results.meta.run_id, datetime=results.datetime, commit=results.commit,
                      slug=results.slug, torch=results.fingerprint.torch,
                      transformers=results.fingerprint.transformers,
                      points={pid: point_summary(p) for pid, p in results.points.items()})


def method_styles(*results: Results | None) -> dict[str, MethodStyle]:
    """method -> its style, in the order the measuring side's registry lists them (the first results'
    methods first): the method modules own these facts, and the results carry them (`methods`)."""
    styles: dict[str, MethodStyle] = {}
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
    from pruned_perf.core.pointlog import is_point, read_records

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
    """Results from a results file's JSON; `path` names it in every error."""
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object (pytest-benchmark results), got {type(raw).__name__}")
    meta = _meta(raw, path)
    benchmarks = raw.get("benchmarks")
    # an A/B whose every point went unmeasured (busy, failed) has its record and nothing else
    if not isinstance(benchmarks, list) or not (benchmarks or raw.get(AB_KEY)):
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
    commit = raw.get("commit_info")
    return Results(
        meta=meta,
        points=points,
        path=path,
        history=read_history(raw.get(HISTORY_KEY), meta.fingerprint.slug, f"{path}: {HISTORY_KEY}"),
        datetime=None if raw.get("datetime") is None else str(raw["datetime"]),
        commit=commit.get("id") if isinstance(commit, dict) else None,
        ab=_ab_record(raw, points, path),
        raw=raw,
    )


def _ab_record(raw: dict, points: dict, path: str) -> ABRecord | None:
    """The A/B's record, checked: every measured point of the file is one of its points."""
    if "ab" in raw.get("machine_info", {}).get("pruned_perf", {}):
        raise UserError(f"{path}: an A/B written by an older pruned_perf (machine_info.pruned_perf.ab); this "
                        f"one reads the A/B from {AB_KEY}: run the A/B again")
    if raw.get(AB_KEY) is None:
        return None
    record = ABRecord.from_dict(raw[AB_KEY], f"{path}: {AB_KEY}")
    missing = sorted(set(points) - {p.id for p in record.points})
    if missing:
        raise UserError(f"{path}: {AB_KEY} has no verdict for point(s) {', '.join(missing[:5])}")
    return record


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


def _meta(raw: dict, path: str) -> RunMeta:
    machine_info = raw.get("machine_info")
    meta = machine_info.get("pruned_perf") if isinstance(machine_info, dict) else None
    if not isinstance(meta, dict) or "schema" not in meta:
        raise UserError(f"{path}: no machine_info.pruned_perf.core.schema; not a pruned_perf results file "
                        f"(supported schema: {', '.join(map(str, SUPPORTED_SCHEMAS))})")
    try:
        return RunMeta.from_dict(meta)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _point(bench, i: int, path: str) -> Measurement:
    name = bench.get("name", "?") if isinstance(bench, dict) else "?"
    extra = bench.get("extra_info") if isinstance(bench, dict) else None
    if not isinstance(extra, dict) or not extra:
        raise UserError(f"{path}: benchmark {i} ({name}) has no extra_info; not a pruned_perf point")
    pid = extra.get("id")
    if not isinstance(pid, str) or not pid:
        raise UserError(f"{path}: benchmark {i} ({name}) has no extra_info.id")
    try:
        return Measurement.from_dict({"schema": SCHEMA_VERSION, **extra})
    except UserError as e:
        raise UserError(f"{path}: benchmark {i}: {e}") from None
