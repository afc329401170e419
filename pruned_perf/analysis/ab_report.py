"""The A/B table of an interleaved run (ab.json), and the `report`, `compare` and `plot` of one. Torch-free.

A header names both sides (revision, where pruned_perf came from, python, torch, transformers,
threads) and the settings; then a row per point: pairs, the new/base ratio of latency, TTFT and TPOT
with their intervals, the verdict and its reason, regressions first. Tokens/s is the inverse of
latency per pair (its verdict is in the JSON and in the reason where it differs).
"""
from __future__ import annotations

import math

from tabulate import tabulate

from pruned_perf.analysis import paired
from pruned_perf.analysis.ab import ABPoint, ABResults
from pruned_perf.analysis.paired import ABSettings, IMPROVED, INCONCLUSIVE, REGRESSED, UNCHANGED
from pruned_perf.core.errors import choice_error

FORMATS = {"github": "github", "plain": "simple"}
# Rows in this order: what needs attention first.
STATUS_ORDER = (REGRESSED, INCONCLUSIVE, IMPROVED, UNCHANGED)
SHOWN_METRICS = (("latency_s", "latency"), ("ttft_s", "ttft"), ("tpot_s", "tpot"))
EXIT_OK, EXIT_REGRESSION = 0, 1


def render(ab: ABResults, fmt: str = "github") -> str:
    if fmt not in FORMATS:
        raise choice_error("report format", fmt, FORMATS)
    return _header(ab, fmt) + "\n\n" + _table(ab, fmt) + "\n"


def _header(ab: ABResults, fmt: str) -> str:
    results, settings = ab.results, ab.settings
    counts = {s: sum(p.ab.status == s for p in ab.points.values()) for s in STATUS_ORDER}
    busy = sum(p.ab.busy is not None for p in ab.points.values())
    family = max((p.ab.family for p in ab.points.values()), default=1)
    title = f"pruned_perf A/B: new vs base, profile {results.profile}, {len(ab.points)} points"
    lines = [f"## {title}" if fmt == "github" else title,
             f"Hardware {results.slug}",
             f"base: {ab.workers['base'].describe()}",
             f"new:  {ab.workers['head'].describe()}"]
    differ = [k for k in ("torch", "transformers", "python", "threads")
              if getattr(ab.workers["base"], k) != getattr(ab.workers["head"], k)]
    if differ:
        lines.append("note: the sides differ in " + ", ".join(
            f"{k} ({getattr(ab.workers['base'], k)} vs {getattr(ab.workers['head'], k)})" for k in differ))
    level = 1 - 2 * paired.family_tail(settings, family)
    lines.append(f"Pairs of rounds in alternating order, a look every {settings.pairs_per_look} pairs up to "
                 f"{settings.max_pairs}; intervals at {level:.4%} (alpha {settings.alpha:g} over {family} points "
                 f"x {paired.DISTINCT_TESTS} timing tests x the deciding looks); unchanged: the 90% interval "
                 f"within the threshold")
    verdict = "REGRESSION" if ab.has_regression else "no regression"
    listed = ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])
    lines.append(f"{verdict}: {listed}" + (f" ({busy} measured on a busy machine)" if busy else ""))
    sep = "  \n" if fmt == "github" else "\n"  # two spaces: a markdown line break
    return lines[0] + "\n\n" + sep.join(lines[1:])


def _ratio_cell(point: ABPoint, name: str) -> str:
    m = point.ab.metric(name)
    if m is None or m.ratio is None:
        return ""
    if m.ci_low is None or m.ci_high is None:
        return f"{m.ratio:.3f}x [too few pairs]"
    return f"{m.ratio:.3f}x [{m.ci_low:.3f}, {m.ci_high:.3f}]"


def _rank(point: ABPoint) -> tuple:
    latency = point.ab.metric("latency_s")
    ratio = latency.ratio if latency is not None and latency.ratio is not None else 1.0
    return (STATUS_ORDER.index(point.ab.status), -abs(math.log(ratio)), point.id)


def _table(ab: ABResults, fmt: str) -> str:
    headers = ["point", "pairs"] + [f"{label} new/base [CI]" for _, label in SHOWN_METRICS] + ["verdict", "reason"]
    rows = []
    for point in sorted(ab.points.values(), key=_rank):
        status = point.ab.status.upper() if point.ab.status == REGRESSED else point.ab.status
        rows.append([point.id, str(len(point.ab.pairs))] + [_ratio_cell(point, name) for name, _ in SHOWN_METRICS]
                    + [status, point.ab.reason])
    return tabulate(rows, headers, tablefmt=FORMATS[fmt], disable_numparse=True)


def verdicts_json(ab: ABResults) -> dict:
    """What `compare --json` writes: every point's verdict, metrics and reason (not the raw pairs)."""
    return {"has_regression": ab.has_regression, "settings": ab.settings.to_dict(),
            "points": {pid: {k: v for k, v in p.ab.to_dict().items() if k != "pairs"} | {"pairs": len(p.ab.pairs)}
                       for pid, p in ab.points.items()}}


def settings_from_pyproject(ab: ABResults, pyproject: str):
    """Per point: the stored schedule and alpha, with the thresholds and tolerances of `pyproject`."""
    from pruned_perf.analysis.config import load_config

    config = load_config(pyproject)
    keep = {k: getattr(ab.settings, k) for k in ("pairs_per_look", "max_pairs", "alpha")}
    return lambda point_id: ABSettings.from_config(config, point_id, **keep)


# ---- the results commands on an A/B results file (pruned_perf.cli_results branches here) ----

def compare(results, fmt: str = "github", json_path: str | None = None, pyproject: str | None = None) -> int:
    """`compare ab.json`: the verdicts judged again from the stored pairs, with no baseline; prints the
    table, returns 0, or 1 on a regression."""
    from pruned_perf.analysis.ab import load_ab
    from pruned_perf.core.atomic import write_json_atomic

    stored = load_ab(results)
    ab = stored.rederived(settings_for=settings_from_pyproject(stored, pyproject) if pyproject else None)
    print(render(ab, fmt), end="")
    if json_path:
        write_json_atomic(json_path, verdicts_json(ab))
    return EXIT_REGRESSION if ab.has_regression else EXIT_OK


def report(results, fmt: str = "github") -> str:
    """`report ab.json`: the A/B table as the run judged it."""
    from pruned_perf.analysis.ab import load_ab

    return render(load_ab(results), fmt)


def base_side(results):
    """`plot ab.json`: the base side's points, drawn as the figure's baseline lines."""
    from pruned_perf.analysis.ab import load_ab

    return load_ab(results).base_results()
