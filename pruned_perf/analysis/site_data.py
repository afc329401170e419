"""The history page's data (pruned_perf.analysis.site.SitePage) from the history: per hardware and profile
every point's series (latency, tokens/s, TTFT, TPOT, perplexity), the steps and where each stands
(pruned_perf.analysis.history_check), the environment changes, the last run's reference figure with the
runs before the newest step dashed, and the latest A/B. Torch-free (the figure: matplotlib).
"""
from __future__ import annotations

import base64
import io
import re
from datetime import datetime, timezone

from pruned_perf.analysis.history import HistoryRun, groups
from pruned_perf.analysis.history_ab import HistoryAB, load_abs
from pruned_perf.analysis.history_check import HistoryCheck, check_history
from pruned_perf.analysis.results import Results
from pruned_perf.analysis.site_records import (SiteAB, SiteABRow, SiteCulprit, SiteEnvChange, SiteGroup,
                                               SiteMetric, SitePage, SiteRun, SiteStep)
from pruned_perf.core.schema import SCHEMA_VERSION, Fingerprint, Measurement, RunMeta

METRICS = (SiteMetric(name="latency_s", label="latency", unit="s", better="lower"),
           SiteMetric(name="tokens_per_s", label="tokens/s", unit="tokens/s", better="higher"),
           SiteMetric(name="ttft_s", label="TTFT", unit="s", better="lower"),
           SiteMetric(name="tpot_s", label="TPOT", unit="s", better="lower"),
           SiteMetric(name="ppl", label="perplexity", unit="", better="lower"))
_SHAPE = re.compile(r"^(?P<variant>.+)-in(?P<inp>\d+)-out(?P<out>\d+)-M(?P<batch>\d+)-(?P<backend>eager|static)$")


def site_page(history, repo_url: str | None = None) -> SitePage:
    """The page of every hardware and profile the history holds."""
    base = repo_url.rstrip("/") if repo_url else None
    checks = [check_history(history, slug, profile) for slug, profile in groups(history)]
    return SitePage(title="pruned_perf history", generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    commit_url=f"{base}/commit/{{sha}}" if base else None,
                    compare_url=f"{base}/compare/{{before}}...{{after}}" if base else None,
                    groups=[site_group(check, _abs(history, check)) for check in checks])


def _abs(history, check: HistoryCheck) -> list[HistoryAB]:
    return load_abs(history, check.slug, check.profile)[0]


def site_group(check: HistoryCheck, abs_: list[HistoryAB]) -> SiteGroup:
    runs = list(check.runs)
    points = sorted({pid for r in runs for pid in r.points})
    return SiteGroup(hardware=check.slug, profile=check.profile, runs=[_run(r) for r in runs],
                     env_changes=_changes(runs), points=points, metrics=list(METRICS),
                     values={m.name: {pid: _series(runs, pid, m.name) for pid in points} for m in METRICS},
                     steps=[_step(s) for s in check.steps], figure_png=_figure(check),
                     ab=_latest_ab(abs_[-1]) if abs_ else None)


def _run(r: HistoryRun) -> SiteRun:
    env = {k: str(getattr(r.env, k)) for k in ("device", "name", "driver", "torch", "transformers", "threads")
           if getattr(r.env, k) is not None}
    return SiteRun(commit=r.commit, subject=r.subject or "", author_time=r.author_time, measured=r.measured,
                   event=r.event, env=env)


def _changes(runs: list[HistoryRun]) -> list[SiteEnvChange]:
    return [SiteEnvChange(at=i, what=", ".join(changes)) for i in range(1, len(runs))
            if (changes := runs[i].env.differences(runs[i - 1].env))]


def _series(runs: list[HistoryRun], pid: str, metric: str) -> list:
    shape = _SHAPE.match(pid)
    values = []
    for run in runs:
        point = run.points.get(pid)
        if point is None or point.oom:
            values.append(None)
        elif metric == "tokens_per_s":
            latency = point.latency_s
            values.append(int(shape["batch"]) * int(shape["out"]) / latency if shape and latency else None)
        elif metric == "ppl":
            variant = _variant(run, pid)
            values.append(variant.ppl if variant is not None else None)
        else:
            values.append(point.value(metric))
    return values


def _variant(run: HistoryRun, pid: str):
    """The run's VariantInfo of the point's variant ("model/method", the point id's prefix)."""
    shape = _SHAPE.match(pid)
    prefix = shape["variant"] if shape else ""
    return next((v for key, v in run.variants.items() if key.replace("/", "-", 1) == prefix), None)


def _step(s) -> SiteStep:
    culprit = (SiteCulprit(commit=s.culprit, subject=s.culprit_subject or "", ratio=s.culprit_ratio or s.ratio)
               if s.culprit else None)
    return SiteStep(point=s.point, metric=s.metric, before=s.before, at=s.at, ratio=s.ratio,
                    ci_low=min(s.ci_low, s.ratio), ci_high=max(s.ci_high, s.ratio), standing=s.standing,
                    kind=s.kind, culprit=culprit)


def _latest_ab(ab: HistoryAB) -> SiteAB:
    def cell(p) -> str:
        return "" if p.ratio is None else (f"{p.ratio:.3f}x" + (f" [{p.ci_low:.3f}, {p.ci_high:.3f}]"
                                                                  if p.ci_low and p.ci_high else ""))
    rows = [SiteABRow(point=pid, pairs=p.pairs, latency=cell(p), ttft="", verdict=p.status, reason=p.reason)
            for pid, p in ab.points.items()]
    lines = [f"base {ab.base[:12]}, new {ab.head[:12]} ({ab.purpose}), measured {ab.measured[:19]}",
             f"{sum(p.status == 'regressed' for p in ab.points.values())} regressed of {len(ab.points)} points"]
    return SiteAB(title=f"{ab.base[:12]}..{ab.head[:12]}", lines=lines, rows=rows)


# ---- the last run's figure ----

def _figure(check: HistoryCheck) -> str | None:
    """The reference figure of the last run, the run before the newest step (else the one before the
    last) dashed, as base64 PNG; None where the runs cannot be drawn (no latencies)."""
    from pruned_perf.analysis.plot import make_figure

    runs = list(check.runs)
    if not runs:
        return None
    newest = max(check.steps, key=lambda s: s.at, default=None)
    before = runs[newest.before] if newest is not None else (runs[-2] if len(runs) > 1 else None)
    current = _results(runs[-1], check.slug)
    if not any(p.latency_s for p in current.points.values()):
        return None
    fig = make_figure(current, _results(before, check.slug) if before is not None else None)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _results(run: HistoryRun, slug: str) -> Results:
    """A history run as the figure reads results: each point's median latency and its throughput."""
    points = {}
    for pid, p in run.points.items():
        shape, variant = _SHAPE.match(pid), _variant(run, pid)
        if shape is None or variant is None:
            continue
        model, method = next(k for k in run.variants if k.replace("/", "-", 1) == shape["variant"]).split("/", 1)
        tokens = int(shape["batch"]) * int(shape["out"])
        measured = {} if p.oom else dict(latency_s=p.latency_s, tokens_per_s=tokens / p.latency_s,
                                         rounds_s=[p.latency_s], latency_min_s=p.latency_s)
        points[pid] = Measurement(model=model, method=method, params=variant.params, weight_bytes=0,
                                  batch_size=int(shape["batch"]), input_tokens=int(shape["inp"]),
                                  output_tokens=int(shape["out"]), backend=shape["backend"], dtype="?",
                                  device=run.env.device or "?", oom=p.oom, **measured)
    meta = RunMeta(schema=SCHEMA_VERSION, profile=run.profile, run_id=run.run_id, methods=dict(run.methods),
                   fingerprint=Fingerprint(slug=slug, name=run.env.name, device=run.env.device))
    return Results(meta, points, path=run.run_id, datetime=run.measured, commit=run.commit)
