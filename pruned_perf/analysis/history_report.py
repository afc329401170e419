"""The history as tables, torch-free: its runs (`history show`) and its steps with where each stands
(`history check`), and the check's JSON (what the nightly job reads to confirm and bisect).
"""
from __future__ import annotations

from tabulate import tabulate

from pruned_perf.analysis.history import HistoryRun
from pruned_perf.analysis.history_check import ENVIRONMENT, SUSPECTED, HistoryCheck, HistoryStep
from pruned_perf.analysis.verdicts import REGRESSED
from pruned_perf.core.errors import choice_error

FORMATS = {"github": "github", "plain": "simple"}
# Steps in this order: what needs attention first.
ORDER = (REGRESSED, SUSPECTED, "improved", "gradual", ENVIRONMENT)


def _fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise choice_error("format", fmt, FORMATS)
    return FORMATS[fmt]


def render_runs(slug: str, profile: str, runs: list[HistoryRun], fmt: str = "github") -> str:
    rows = [[i, r.measured[:19], (r.commit or "?")[:12], (r.subject or "")[:60], r.event, r.env.torch or "?",
             r.env.transformers or "?", r.env.threads if r.env.threads is not None else "?", len(r.points),
             sum(p.oom for p in r.points.values())] for i, r in enumerate(runs)]
    headers = ["#", "measured", "commit", "subject", "event", "torch", "transformers", "threads", "points", "OOM"]
    title = f"{slug} profile {profile}: {len(runs)} runs"
    return (f"## {title}" if fmt == "github" else title) + "\n\n" + tabulate(rows, headers, tablefmt=_fmt(fmt),
                                                                              disable_numparse=True) + "\n"


def render_check(check: HistoryCheck, fmt: str = "github") -> str:
    runs = check.runs
    title = f"pruned_perf history: {check.slug} profile {check.profile}, {len(runs)} runs"
    span = f"from {runs[0].measured[:10]} ({(runs[0].commit or '?')[:12]}) to {runs[-1].measured[:10]} " \
           f"({(runs[-1].commit or '?')[:12]})" if runs else "no runs"
    counts = {s: sum(step.standing == s for step in check.steps) for s in ORDER}
    verdict = "NEW REGRESSION" if check.has_new_regression else "no new regression"
    listed = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no step"
    lines = [f"## {title}" if fmt == "github" else title, span, f"{verdict}: {listed}"]
    changes = _environment_changes(runs)
    if changes:
        lines.append("environment changes: " + "; ".join(changes))
    sep = "  \n" if fmt == "github" else "\n"
    table = tabulate([_row(s, runs) for s in sorted(check.steps, key=_rank)], _HEADERS, tablefmt=_fmt(fmt),
                     disable_numparse=True)
    return lines[0] + "\n\n" + sep.join(lines[1:]) + "\n\n" + table + "\n"


_HEADERS = ["point", "metric", "runs", "commits", "new/old [95%]", "standing", "reason"]


def _rank(step: HistoryStep) -> tuple:
    return (ORDER.index(step.standing) if step.standing in ORDER else len(ORDER), -step.at, step.point)


def _row(step: HistoryStep, runs: list[HistoryRun]) -> list:
    commits = f"{(step.good or '?')[:12]}..{(step.bad or '?')[:12]}"
    standing = step.standing.upper() if step.standing == REGRESSED else step.standing
    if step.culprit:
        standing += f" (first bad: {step.culprit[:12]})"
    return [step.point, step.metric, f"{step.before}..{step.at}" + (" (end)" if step.at_end else ""), commits,
            f"{step.ratio:.3f}x [{step.ci_low:.3f}, {step.ci_high:.3f}]", standing, step.reason]


def _environment_changes(runs: list[HistoryRun]) -> list[str]:
    return [f"run {i}: " + ", ".join(changes) for i in range(1, len(runs))
            if (changes := runs[i].env.differences(runs[i - 1].env))]


def check_json(check: HistoryCheck) -> dict:
    """Every step; and the A/Bs that would confirm the suspected ones: {good, bad, points}."""
    return {"slug": check.slug, "profile": check.profile, "runs": len(check.runs),
            "has_new_regression": check.has_new_regression, "steps": [s.to_dict() for s in check.steps],
            "suspects": [{"good": good, "bad": bad, "points": points}
                         for (good, bad), points in check.suspects().items()]}
