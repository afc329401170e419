"""The history page (`pruned-perf site HISTORY --out site/`): one static HTML file, OUT/index.html, that
shows each hardware x profile's runs over time. Torch-free, standard library only.

The caller builds a `SitePage` from the history (pruned_perf.analysis.site_records: typed, frozen records
that check every value when built, and read back from JSON by `from_dict`); `render` writes the page. The page opens from a file
with no server and no network: its data is embedded as JSON, its CSS and JS are inline (the template
site_page.html beside this module), and its charts are inline SVG drawn by that JS.

What reads without JS is written here: per group the runs, the environment changes, the steps (newest
first, with links to the commit range and the culprit), the last run's figure and the latest A/B table.
The JS draws a small chart per point (docs/site.md).
"""
from __future__ import annotations

import html
import json
import re
import statistics
from importlib import resources
from pathlib import Path

from pruned_perf.analysis.site_records import STANDINGS, SiteAB, SiteGroup, SitePage, SiteStep
from pruned_perf.core.atomic import check_writable_dir, write_text_atomic

TEMPLATE = "site_page.html"
INDEX = "index.html"
SHORT_SHA = 7
# {{name}} in the template: filled in one pass, so nothing filled in is read again as a placeholder
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


# ---------------------------------------------------------------- writing the page


def render(page: SitePage, out) -> Path:
    """Write the page to OUT/index.html (all or nothing) and return its path; OUT is checked first."""
    out_dir = check_writable_dir(out, "--out")
    text = page_html(page)
    path = out_dir / INDEX
    write_text_atomic(path, text)
    return path


def page_html(page: SitePage) -> str:
    """The page as one HTML text: the template filled with the title, the body written here and the
    data the charts are drawn from."""
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    parts = {"title": _esc(page.title), "body": _body(page), "data": _embed_json(_payload(page))}
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], template)


def _embed_json(obj) -> str:
    """JSON that can sit in a <script> element: every "<" escaped (\\u003c, still the same JSON), so no
    "</script>" or "<!--" in a commit subject ends or bends the element."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _link(url: str | None, text: str) -> str:
    escaped = _esc(text)
    return f'<a href="{_esc(url)}">{escaped}</a>' if url else escaped


def _commit_link(page: SitePage, sha: str | None, text: str) -> str:
    """`text` linked to the commit, or plain without commit_url or a commit (HTML)."""
    return _link(page.commit_url and sha and page.commit_url.replace("{sha}", sha), text)


def _range_link(page: SitePage, before: str | None, after: str | None, text: str) -> str:
    """`text` linked to the commits (before, after], or plain without compare_url or a commit (HTML)."""
    url = (page.compare_url and before and after
           and page.compare_url.replace("{before}", before).replace("{after}", after))
    return _link(url, text)


def _short_sha(sha: str | None) -> str:
    return sha[:SHORT_SHA] if sha else "?"


def _when(iso: str) -> str:
    """An ISO time as a table shows it: date and minutes."""
    return iso.replace("T", " ")[:16]


# ---------------------------------------------------------------- the data the charts draw


def _payload(page: SitePage) -> dict:
    """What the page's JS reads: per group the runs (as tooltips show them), points, metrics, values
    and environment changes as given, and each step with its label and its old and new level."""
    return {"groups": [_group_payload(g) for g in page.groups]}


def _group_payload(group: SiteGroup) -> dict:
    return {
        "runs": [{"commit": r.commit, "subject": r.subject, "measured": r.measured, "event": r.event}
                 for r in group.runs],
        "points": group.points,
        "metrics": [m.to_dict() for m in group.metrics],
        "values": group.values,
        "env_changes": [c.to_dict() for c in group.env_changes],
        "steps": [_step_payload(group, s) for s in group.steps],
    }


def _step_payload(group: SiteGroup, step: SiteStep) -> dict:
    metric = group.metric(step.metric)
    culprit = (f"; culprit {_short_sha(step.culprit.commit)} {step.culprit.subject} ({step.culprit.ratio:.2f}x)"
               if step.culprit else "")
    title = (f"{step.kind} in {metric.label}: {step.size}, {step.standing}; runs {step.before} -> {step.at} "
             f"({_short_sha(group.runs[step.before].commit)}..{_short_sha(group.runs[step.at].commit)})"
             f"{culprit}")
    return {"point": step.point, "metric": step.metric, "before": step.before, "at": step.at,
            "standing": step.standing, "kind": step.kind, "label": f"{step.ratio:.2f}x {step.standing}",
            "title": title, **_step_levels(group, step)}


def _step_levels(group: SiteGroup, step: SiteStep) -> dict:
    """The old and new level a chart draws as dashed segments: the median of the series from the last
    change before the step (another step of the same series, or a change of the environment, which
    moves every point; else run 0) to `before`, and from `at` to the next change (or the last run).
    None where that side has no values."""
    others = [(s.before, s.at) for s in group.steps
              if (s.point, s.metric) == (step.point, step.metric) and s is not step]
    changes = others + [(c.at - 1, c.at) for c in group.env_changes]
    start = max([at for _, at in changes if at <= step.before], default=0)
    end = min([before for before, _ in changes if before >= step.at], default=len(group.runs) - 1)
    series = group.values.get(step.metric, {}).get(step.point, [])
    return {"from": start, "old": _median(series[start:step.before + 1]),
            "to": end, "new": _median(series[step.at:end + 1])}


def _median(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# ---------------------------------------------------------------- what reads without JS


def _body(page: SitePage) -> str:
    generated = f'<p class="muted">Generated {_esc(_when(page.generated))}. '
    generated += f"{len(page.groups)} group{'' if len(page.groups) == 1 else 's'} (hardware x profile).</p>"
    if not page.groups:
        return generated + "<p>No runs in the history.</p>"
    nav = "".join(f'<li><a href="#g{gi}">{_esc(g.name)}</a> {_step_counts(g)}</li>'
                  for gi, g in enumerate(page.groups))
    groups = "".join(_group_html(page, gi, g) for gi, g in enumerate(page.groups))
    return f'{generated}<nav><ul class="groups">{nav}</ul></nav>{groups}'


def _step_counts(group: SiteGroup) -> str:
    """The group's steps by standing, coloured: what needs a look first."""
    counts = {s: sum(step.standing == s for step in group.steps) for s in STANDINGS}
    listed = " ".join(_badge(s, f"{n} {s}") for s, n in counts.items() if n)
    return listed or '<span class="muted">no steps</span>'


def _badge(standing: str, text: str) -> str:
    return f'<span class="standing s-{standing}">{_esc(text)}</span>'


def _group_html(page: SitePage, gi: int, group: SiteGroup) -> str:
    last = group.runs[-1]
    env = ", ".join(f"{k} {v}" for k, v in last.env.items())
    head = (f'<section class="group" id="g{gi}"><h2>{_esc(group.name)}</h2>'
            f'<p class="muted">{len(group.runs)} runs from {_esc(_when(group.runs[0].measured))} to '
            f'{_esc(_when(last.measured))}; last run {_commit_link(page, last.commit, _short_sha(last.commit))} '
            f'{_esc(last.subject)}{f" ({_esc(env)})" if env else ""}</p>')
    parts = [head, _env_list(group), _steps_html(page, gi, group), _charts_html(gi, group),
             _figure_html(group), _ab_html(group.ab), "</section>"]
    return "".join(parts)


def _env_list(group: SiteGroup) -> str:
    if not group.env_changes:
        return ""
    items = "".join(f"<li>before run {c.at} ({_esc(_when(group.runs[c.at].measured))}): {_esc(c.what)}</li>"
                    for c in group.env_changes)
    return f'<h3>Environment changes</h3><ul class="env-changes">{items}</ul>'


def _steps_html(page: SitePage, gi: int, group: SiteGroup) -> str:
    if not group.steps:
        return '<h3>Steps</h3><p class="muted">No steps found.</p>'
    head = "".join(f'<th scope="col">{h}</th>' for h in
                   ("when", "point", "metric", "change", "standing", "kind", "commits", "culprit"))
    # newest first; steps found at the same run keep the order they were given in
    rows = "".join(_step_row(page, gi, group, s) for s in sorted(group.steps, key=lambda s: (-s.at, -s.before)))
    return f'<h3>Steps</h3><table class="steps"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _step_row(page: SitePage, gi: int, group: SiteGroup, step: SiteStep) -> str:
    before, at = group.runs[step.before], group.runs[step.at]
    chart = f"g{gi}-p{group.points.index(step.point)}"
    point = f'<a href="#{chart}" data-group="{gi}" data-metric="{_esc(step.metric)}">{_esc(step.point)}</a>'
    change = ("total " if step.kind == "gradual" else "") + step.size
    kind = f"gradual over runs {step.before}-{step.at}" if step.kind == "gradual" else "step"
    commits = _range_link(page, before.commit, at.commit, f"{_short_sha(before.commit)}..{_short_sha(at.commit)}")
    culprit = ""
    if step.culprit is not None:
        culprit = (f"{_commit_link(page, step.culprit.commit, _short_sha(step.culprit.commit))} "
                   f"{_esc(step.culprit.subject)} ({step.culprit.ratio:.2f}x)")
    cells = [_esc(_when(at.measured)), point, _esc(group.metric(step.metric).label), _esc(change),
             _badge(step.standing, step.standing), _esc(kind), commits, culprit]
    return f'<tr class="step-row s-{step.standing}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _charts_html(gi: int, group: SiteGroup) -> str:
    """The charts' place: the metric control, the legend, and the grid the JS fills."""
    options = "".join(f'<option value="{_esc(m.name)}">{_esc(m.label)}</option>' for m in group.metrics)
    control = f'<label>Metric <select class="metric" data-group="{gi}">{options}</select></label>'
    return (f'<h3>Points over time</h3><div class="controls">{control}</div>{LEGEND}'
            f'<noscript><p>The charts need JavaScript.</p></noscript>'
            f'<div class="charts" id="charts-{gi}" data-group="{gi}"></div>')


# What the lines of every chart mean (static: the same for all groups).
LEGEND = (
    '<ul class="legend">'
    '<li><svg class="key" viewBox="0 0 24 10"><line class="series" x1="0" y1="5" x2="24" y2="5"/>'
    '<path class="dots" d="M12,5h0"/></svg> the point\'s value per run (hover: the nearest run\'s commit, time and '
    'value)</li>'
    '<li><svg class="key" viewBox="0 0 24 10"><line class="env-line" x1="12" y1="-3" x2="12" y2="13"/></svg>'
    ' grey dashed vertical: the environment changed (hover: what)</li>'
    '<li><svg class="key" viewBox="0 0 24 10"><path class="key-mark" d="M8,0 h8 l-4,6 z"/></svg>'
    ' marker: a step at that run, labelled with its ratio and standing; shaded: its commit range</li>'
    '<li><svg class="key" viewBox="0 0 24 10"><line class="key-level" x1="0" y1="5" x2="24" y2="5"/></svg>'
    ' coloured dashed horizontal: the level before and after the step (median of the runs between steps)</li>'
    '<li>colour: ' + " ".join(f'<span class="standing s-{s}">{s}</span>' for s in STANDINGS) + '</li>'
    '</ul>'
)


def _figure_html(group: SiteGroup) -> str:
    if group.figure_png is None:
        return ""
    alt = f"Throughput against latency of the last run of {group.name}"
    return (f'<h3>Last run: throughput against latency</h3><img class="figure" alt="{_esc(alt)}" '
            f'src="data:image/png;base64,{group.figure_png}">')


def _ab_html(ab: SiteAB | None) -> str:
    if ab is None:
        return ""
    lines = "".join(f"<li>{_esc(line)}</li>" for line in ab.lines)
    head = "".join(f'<th scope="col">{h}</th>' for h in ("point", "pairs", "latency", "TTFT", "verdict", "reason"))
    rows = "".join(
        f'<tr><td>{_esc(r.point)}</td><td class="num">{r.pairs}</td><td class="num">{_esc(r.latency)}</td>'
        f'<td class="num">{_esc(r.ttft)}</td><td class="verdict" data-verdict="{_esc(r.verdict)}">'
        f'{_esc(r.verdict)}</td><td>{_esc(r.reason)}</td></tr>' for r in ab.rows)
    return (f'<h3>Latest A/B: {_esc(ab.title)}</h3><ul class="ab-lines">{lines}</ul>'
            f'<table class="ab"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')
