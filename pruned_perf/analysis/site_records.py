"""The history page's data (pruned_perf.analysis.site renders it), torch-free: typed, frozen records that
check every value when built, and read back from JSON by `from_dict`, naming where in the page a bad value
is. pruned_perf.analysis.site_data builds them from the history.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import datetime

from pruned_perf.core.errors import UserError, choice_error

# How a step stands: found but not confirmed by an A/B (suspected), confirmed either way, explained by a
# change of the environment (torch, driver...), or a slow drift over many runs (gradual).
STANDINGS = ("suspected", "regressed", "improved", "environment", "gradual")
KINDS = ("step", "gradual")
BETTER = ("lower", "higher")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
