"""The history page (`pruned-perf site HISTORY --out site/`): one static HTML file, OUT/index.html, that
shows each hardware x profile's runs over time. Torch-free, standard library only.

The caller builds a `SitePage` from the history (typed, frozen records that check every value when
built, and read back from JSON by `from_dict`); `render` writes the page. The page opens from a file
with no server and no network: its data is embedded as JSON, its CSS and JS are inline (the template
site_page.html beside this module), and its charts are inline SVG drawn by that JS.

What reads without JS is written here: per group the runs, the environment changes, the steps (newest
first, with links to the commit range and the culprit), the last run's figure and the latest A/B table.
The JS draws a small chart per point (docs/site.md).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import html
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path

from pruned_perf.core.atomic import check_writable_dir, write_text_atomic
from pruned_perf.core.errors import UserError, choice_error

# How a step stands: found but not confirmed by an A/B (suspected), confirmed either way, explained by a
# change of the environment (torch, driver...), or a slow drift over many runs (gradual).
STANDINGS = ("suspected", "regressed", "improved", "environment", "gradual")
KINDS = ("step", "gradual")
BETTER = ("lower", "higher")
TEMPLATE = "site_page.html"
INDEX = "index.html"
SHORT_SHA = 7
_SHA = re.compile(r"^[0-9a-f]{40}$")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# {{name}} in the template: filled in one pass, so nothing filled in is read again as a placeholder
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


# ---------------------------------------------------------------- value checks


def _must(ok: bool, name: str, what: str, value) -> None:
    """One error naming the field, what it must be and the bad value."""
    if not ok:
        raise UserError(f"{name} must be {what}, got {value!r}")


def _text(name: str, value, non_empty: bool = False) -> None:
    _must(isinstance(value, str) and (bool(value) or not non_empty), name,
          "a non-empty string" if non_empty else "a string", value)


def _iso(name: str, value) -> None:
    try:
        ok = isinstance(value, str) and datetime.fromisoformat(value) is not None
    except ValueError:
        ok = False
    _must(ok, name, "an ISO date and time (e.g. 2025-01-31T02:00:00+00:00)", value)


def _sha(name: str, value) -> None:
    _must(isinstance(value, str) and bool(_SHA.match(value)), name, "a 40-hex commit sha", value)


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is no run index


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(name: str, value) -> None:
    _must(_number(value) and value > 0, name, "a finite positive number", value)


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise choice_error(name, value, choices)


def _records(name: str, value, cls: type) -> None:
    _must(isinstance(value, list) and all(isinstance(v, cls) for v in value), name,
          f"a list of {cls.__name__}", value)


def _unique(name: str, names: list) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{name} must be unique; repeated: {', '.join(map(str, twice))}")


def _url(name: str, value, placeholders: tuple[str, ...]) -> None:
    """A link template: http(s), with each placeholder ({sha}; {before} and {after}) to fill in."""
    if value is None:
        return
    ok = isinstance(value, str) and value.startswith(("https://", "http://"))
    _must(ok and all("{" + p + "}" in value for p in placeholders), name,
          "null or an http(s) URL with " + " and ".join("{" + p + "}" for p in placeholders), value)


# ---------------------------------------------------------------- records


def _nested(cls: type, many: bool = False, **kwargs):
    """A field holding a record (or a list of them, `many`) that from_dict builds with cls.from_dict."""
    return field(metadata={"record": cls, "many": many}, **kwargs)


class _Record:
    """A frozen dataclass that checks its values when built (__post_init__) and goes to and from JSON:
    `to_dict` is its JSON object, `from_dict` builds it back, naming where in the page a bad value is."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data, where: str = ""):
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise UserError(f"{where} must be an object, got {data!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        missing = [n for n, f in fields.items() if n not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if unknown or missing:
            wrong = "; ".join(f"{what} fields {names}" for what, names in (("unknown", unknown), ("missing", missing))
                              if names)
            raise UserError(f"{where}: {wrong}; valid fields: {', '.join(fields)}")
        values = {name: _build(fields[name], value, f"{where}.{name}") for name, value in data.items()}
        try:
            return cls(**values)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None


def _build(f: dataclasses.Field, value, where: str):
    """The field's value from JSON: its nested record(s) built, anything else as it is."""
    cls = f.metadata.get("record")
    if cls is None or value is None:
        return value
    if not f.metadata["many"]:
        return cls.from_dict(value, where)
    _must(isinstance(value, list), where, "a list", value)
    return [cls.from_dict(item, f"{where}[{i}]") for i, item in enumerate(value)]


@dataclass(frozen=True, kw_only=True)
class SiteRun(_Record):
    """One run of the history: the commit it measured, when, why (the workflow's event) and on what
    software (torch, transformers, driver, device...)."""

    commit: str | None  # None: a run imported from a store that did not keep it
    subject: str
    author_time: str | None = None
    measured: str
    event: str
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.commit is not None:
            _sha("commit", self.commit)
        _text("subject", self.subject)
        if self.author_time is not None:
            _iso("author_time", self.author_time)
        _iso("measured", self.measured)
        _text("event", self.event, non_empty=True)
        _must(isinstance(self.env, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in self.env.items()),
              "env", "an object of strings", self.env)


@dataclass(frozen=True, kw_only=True)
class SiteEnvChange(_Record):
    """Between run at-1 and run at the environment changed, as `what` says ("torch 2.12.0 -> 2.13.0")."""

    at: int
    what: str

    def __post_init__(self):
        _must(_int(self.at) and self.at >= 1, "at", "a run index >= 1", self.at)
        _text("what", self.what, non_empty=True)


@dataclass(frozen=True, kw_only=True)
class SiteMetric(_Record):
    """A metric the charts can show: its key in `values`, its label and unit, which way is better."""

    name: str
    label: str
    unit: str
    better: str

    def __post_init__(self):
        _text("name", self.name, non_empty=True)
        _text("label", self.label, non_empty=True)
        _text("unit", self.unit)
        _choice("better", self.better, BETTER)


@dataclass(frozen=True, kw_only=True)
class SiteCulprit(_Record):
    """The first bad commit a bisection found, and its own ratio (new/old level)."""

    commit: str
    subject: str
    ratio: float

    def __post_init__(self):
        _sha("culprit commit", self.commit)
        _text("culprit subject", self.subject)
        _positive("culprit ratio", self.ratio)


@dataclass(frozen=True, kw_only=True)
class SiteStep(_Record):
    """A change of a point's metric between run `before` and run `at` (the commits
    (runs[before].commit, runs[at].commit]): the ratio of the new level to the old, with its interval."""

    point: str
    metric: str
    before: int
    at: int
    ratio: float
    ci_low: float
    ci_high: float
    standing: str
    kind: str
    culprit: SiteCulprit | None = _nested(SiteCulprit, default=None)

    def __post_init__(self):
        _text("point", self.point, non_empty=True)
        _text("metric", self.metric, non_empty=True)
        _must(_int(self.before) and self.before >= 0, "before", "a run index >= 0", self.before)
        _must(_int(self.at) and self.at > self.before, "at", f"a run index after before ({self.before})", self.at)
        for name in ("ratio", "ci_low", "ci_high"):
            _positive(name, getattr(self, name))
        _must(self.ci_low <= self.ci_high, "ci_high", f"at least ci_low ({self.ci_low})", self.ci_high)
        _choice("standing", self.standing, STANDINGS)
        _choice("kind", self.kind, KINDS)
        _must(self.culprit is None or isinstance(self.culprit, SiteCulprit), "culprit",
              "null or a SiteCulprit", self.culprit)

    @property
    def size(self) -> str:
        """How the page writes the change: "1.25x [1.20, 1.30]"."""
        return f"{self.ratio:.2f}x [{self.ci_low:.2f}, {self.ci_high:.2f}]"


@dataclass(frozen=True, kw_only=True)
class SiteABRow(_Record):
    """One point of an A/B run, its cells as the A/B report writes them."""

    point: str
    pairs: int
    latency: str
    ttft: str
    verdict: str
    reason: str

    def __post_init__(self):
        _text("point", self.point, non_empty=True)
        _must(_int(self.pairs) and self.pairs >= 0, "pairs", "an integer >= 0", self.pairs)
        for name in ("latency", "ttft", "verdict", "reason"):
            _text(name, getattr(self, name))


@dataclass(frozen=True, kw_only=True)
class SiteAB(_Record):
    """The latest A/B results: a title, header lines (both sides, settings, counts), a row per point."""

    title: str
    lines: list[str] = field(default_factory=list)
    rows: list[SiteABRow] = _nested(SiteABRow, many=True, default_factory=list)

    def __post_init__(self):
        _text("title", self.title, non_empty=True)
        _must(isinstance(self.lines, list) and all(isinstance(x, str) for x in self.lines), "lines",
              "a list of strings", self.lines)
        _records("rows", self.rows, SiteABRow)


@dataclass(frozen=True, kw_only=True)
class SiteGroup(_Record):
    """One hardware x profile: its runs (oldest first: index i is run i), a series per point and metric
    (`values[metric][point]`: one value per run, None where not measured or out of memory), and what
    the history says about them (steps, environment changes), with the last run's figure and A/B."""

    hardware: str
    profile: str
    runs: list[SiteRun] = _nested(SiteRun, many=True)
    env_changes: list[SiteEnvChange] = _nested(SiteEnvChange, many=True, default_factory=list)
    points: list[str]
    metrics: list[SiteMetric] = _nested(SiteMetric, many=True)
    values: dict[str, dict[str, list[float | None]]]
    steps: list[SiteStep] = _nested(SiteStep, many=True, default_factory=list)
    figure_png: str | None = None
    ab: SiteAB | None = _nested(SiteAB, default=None)

    @property
    def name(self) -> str:
        return f"{self.hardware} / {self.profile}"

    def __post_init__(self):
        try:
            self._check_parts()
            self._check_values()
            self._check_steps()
        except UserError as exc:
            raise UserError(f"group {self.name}: {exc}") from None

    def _check_parts(self) -> None:
        _must(isinstance(self.hardware, str) and bool(_SLUG.match(self.hardware)), "hardware",
              "a slug (letters, digits, . _ -)", self.hardware)
        _text("profile", self.profile, non_empty=True)
        _records("runs", self.runs, SiteRun)
        _must(bool(self.runs), "runs", "a non-empty list", self.runs)
        _records("env_changes", self.env_changes, SiteEnvChange)
        for change in self.env_changes:
            _must(change.at < len(self.runs), "env_changes at", f"a run index in 1..{len(self.runs) - 1}", change.at)
        _must(isinstance(self.points, list) and all(isinstance(p, str) and p for p in self.points), "points",
              "a list of point ids", self.points)
        _unique("points", self.points)
        _records("metrics", self.metrics, SiteMetric)
        _unique("metric names", [m.name for m in self.metrics])
        _check_figure(self.figure_png)
        _must(self.ab is None or isinstance(self.ab, SiteAB), "ab", "null or a SiteAB", self.ab)

    def _check_values(self) -> None:
        """values[metric][point]: one number or None per run. A metric or point left out has no values."""
        _must(isinstance(self.values, dict), "values", "an object of metrics", self.values)
        metrics, points, runs = [m.name for m in self.metrics], set(self.points), len(self.runs)
        for metric, series in self.values.items():
            _choice("metric in values", metric, metrics)
            _must(isinstance(series, dict), f"values[{metric!r}]", "an object of point ids", series)
            for point, values in series.items():
                _choice(f"point in values[{metric!r}]", point, points)
                where = f"values[{metric!r}][{point!r}]"
                _must(isinstance(values, list) and len(values) == runs, where,
                      f"a list of one value per run ({runs})", _short(values))
                bad = next((v for v in values if v is not None and not _number(v)), None)
                _must(bad is None, where + " values", "finite numbers or null", bad)

    def _check_steps(self) -> None:
        _records("steps", self.steps, SiteStep)
        metrics = [m.name for m in self.metrics]
        for step in self.steps:
            _choice("step point", step.point, self.points)
            _choice("step metric", step.metric, metrics)
            _must(step.at < len(self.runs), "step at", f"a run index in 1..{len(self.runs) - 1}", step.at)

    def metric(self, name: str) -> SiteMetric:
        return next(m for m in self.metrics if m.name == name)


def _short(values) -> object:
    """A value list as an error shows it: its length, not a year of numbers."""
    return f"<list of {len(values)}>" if isinstance(values, list) else values


def _check_figure(figure_png) -> None:
    """The figure goes into an <img src="data:...">: base64 of a PNG, nothing else."""
    if figure_png is None:
        return
    try:
        ok = isinstance(figure_png, str) and base64.b64decode(figure_png, validate=True).startswith(_PNG_MAGIC)
    except (binascii.Error, ValueError):
        ok = False
    _must(ok, "figure_png", "null or the base64 text of a PNG", _short_text(figure_png))


def _short_text(value) -> object:
    return value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value


@dataclass(frozen=True, kw_only=True)
class SitePage(_Record):
    """The whole page: a title, when it was made, how to link a commit (`commit_url`, with {sha}) and a
    range of commits (`compare_url`, with {before} and {after}; null: plain text), one group per
    hardware x profile."""

    title: str
    generated: str
    commit_url: str | None = None
    compare_url: str | None = None
    groups: list[SiteGroup] = _nested(SiteGroup, many=True, default_factory=list)

    def __post_init__(self):
        _text("title", self.title, non_empty=True)
        _iso("generated", self.generated)
        _url("commit_url", self.commit_url, ("sha",))
        _url("compare_url", self.compare_url, ("before", "after"))
        _records("groups", self.groups, SiteGroup)
        _unique("groups (hardware / profile)", [g.name for g in self.groups])


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
