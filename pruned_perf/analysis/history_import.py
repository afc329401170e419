"""The runs a baseline store remembers (`baselines/<slug>/<profile>.json`, pruned_perf.analysis.summaries),
added to the long history (`pruned-perf history import`). A stored run kept each point's medians and its
probe, not its spreads, its commit's subject, its driver or its threads: those stay unknown. Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path

from pruned_perf.analysis.history import HistoryRun, RunEnv, RunPoint, add_run, load_runs
from pruned_perf.analysis.results import load_results
from pruned_perf.analysis.summaries import PointSummary, RunSummary
from pruned_perf.core.errors import UserError


def import_baselines(baselines: str | os.PathLike, history: str | os.PathLike) -> list[Path]:
    """Add every run of every baseline file not in the history yet; the paths added."""
    files = sorted(Path(baselines).glob("*/*.json"))
    if not files:
        raise UserError(f"{baselines}: no baseline files (<slug>/<profile>.json) to import")
    added = []
    for path in files:
        results = load_results(path)
        known = _known(history, results.slug, results.profile)
        for i, summary in enumerate(results.runs):
            run = imported_run(summary, results.profile, results.fingerprint.name, f"{path.stem}-{i}")
            if run.run_id not in known:
                added.append(add_run(history, run))
    return added


def _known(history, slug: str, profile: str) -> set:
    try:
        return {r.run_id for r in load_runs(history, slug, profile)}
    except UserError:  # none of that hardware and profile yet
        return set()


def imported_run(summary: RunSummary, profile: str, name: str | None, fallback_id: str) -> HistoryRun:
    env = RunEnv(slug=summary.slug, name=name, torch=summary.torch, transformers=summary.transformers)
    return HistoryRun(run_id=summary.run_id or fallback_id, profile=profile, measured=summary.datetime or "",
                      event="import", commit=summary.commit, env=env,
                      points={pid: _point(p) for pid, p in summary.points.items()})


def _point(p: PointSummary) -> RunPoint:
    if p.oom:
        return RunPoint(oom=True)
    return RunPoint(latency_s=p.median("latency_s"), ttft_s=p.median("ttft_s"), tpot_s=p.median("tpot_s"),
                    probe_s=p.probe_s, peak_mem_bytes=_int(p.median("peak_mem_bytes")))


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
