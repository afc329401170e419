"""The history page's data (pruned_perf.analysis.site renders it), torch-free: typed, frozen records
(core.schema.Record) that check every value when built, and read back from JSON by `from_dict`, naming
where in the page a bad value is. pruned_perf.analysis.site_data builds them from the history.

Lists of records are kept as tuples (a frozen record holds nothing mutable); a list passed in is turned
into one.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime

from pruned_perf.core.errors import UserError, choice_error
from pruned_perf.core.schema import (COUNT, NAME, POSITIVE, SAFE_NAME, TEXT, Check, Record, check_fields,
                                     checked, fields_from_dict, is_number)

# How a step stands: found but not confirmed by an A/B (suspected), confirmed either way, explained by a
# change of the environment (torch, driver...), or a slow drift over many runs (gradual).
STANDINGS = ("suspected", "regressed", "improved", "environment", "gradual")
KINDS = ("step", "gradual")
BETTER = ("lower", "higher")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- value checks


def _is_iso(value) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value) is not None
    except ValueError:
        return False


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is no run index


def _url(placeholders: tuple[str, ...]) -> Check:
    """A link template: null, or http(s) with each placeholder ({sha}; {before} and {after}) to fill in."""
    def ok(value) -> bool:
        return value is None or (isinstance(value, str) and value.startswith(("https://", "http://"))
                                 and all("{" + p + "}" in value for p in placeholders))
    return Check(ok, "null or an http(s) URL with " + " and ".join("{" + p + "}" for p in placeholders))


def _is_png(value) -> bool:
    """The figure goes into an <img src="data:...">: base64 of a PNG, nothing else."""
    try:
        return value is None or (isinstance(value, str)
                                 and base64.b64decode(value, validate=True).startswith(_PNG_MAGIC))
    except (binascii.Error, ValueError):
        return False


ISO = Check(_is_iso, "an ISO date and time (e.g. 2025-01-31T02:00:00+00:00)")
SHA = Check(lambda v: isinstance(v, str) and bool(_SHA.match(v)), "a 40-hex commit sha")
RUN_INDEX = Check(lambda v: _is_int(v) and v >= 0, "a run index >= 0")
LATER_RUN_INDEX = Check(lambda v: _is_int(v) and v >= 1, "a run index >= 1")
TEXT_MAP = Check(lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
                 "an object of strings")
VALUES = Check(lambda v: isinstance(v, dict), "an object of metrics")
LINES = Check(lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v), "a list of strings")
POINTS = Check(lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) and x for x in v),
               "a list of point ids")
ANY = Check(lambda v: True, "anything")  # a field its record's __post_init__ checks itself


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise choice_error(name, value, choices)


def _must(ok: bool, name: str, what: str, value) -> None:
    if not ok:
        raise UserError(f"{name} must be {what}, got {value!r}")


def _unique(name: str, names: list) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{name} must be unique; repeated: {', '.join(map(str, twice))}")


def _short(value) -> object:
    """A value as an error shows it: a list by its length and a long text cut, not a year of numbers."""
    if isinstance(value, list):
        return f"<list of {len(value)}>"
    return value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value


def _records(cls: type, **kwargs):
    """A field holding a list of `cls` records (a tuple once built)."""
    return checked(Check(lambda v: isinstance(v, (list, tuple)), "a list"), items=cls, **kwargs)


def _check_records(record, name: str, cls: type) -> None:
    """The list field `name` of a frozen record made a tuple of `cls` records, or one error."""
    value = getattr(record, name)
    _must(isinstance(value, (list, tuple)) and all(isinstance(v, cls) for v in value), name,
          f"a list of {cls.__name__}", value)
    object.__setattr__(record, name, tuple(value))


class _SiteRecord(Record):
    """A site record: its plain fields checked by their metadata when built in code, as when read."""

    @classmethod
    def from_dict(cls, data, where: str = ""):
        """The record read from JSON; an unknown field is an error too (a typo would vanish silently)."""
        where = where or cls.__name__
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known)) if isinstance(data, dict) else []
        if unknown:
            raise UserError(f"{where}: unknown fields {unknown}; valid fields: {', '.join(known)}")
        values = fields_from_dict(cls, data, where)
        try:
            return cls(**values)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None

    def _check_fields(self) -> None:
        check_fields(self, type(self).__name__)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v
                                                                    for k, v in items})


# ---------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class SiteRun(_SiteRecord):
    """One run of the history: the commit it measured, when, why (the workflow's event) and on what
    software (torch, transformers, driver, device...)."""

    commit: str | None = checked(SHA.or_null())  # None: a run imported from a store that did not keep it
    subject: str = checked(TEXT)
    author_time: str | None = checked(ISO.or_null(), default=None)
    measured: str = checked(ISO)
    event: str = checked(NAME)
    env: dict[str, str] = checked(TEXT_MAP, default_factory=dict)

    def __post_init__(self):
        self._check_fields()


@dataclass(frozen=True, kw_only=True)
class SiteEnvChange(_SiteRecord):
    """Between run at-1 and run at the environment changed, as `what` says ("torch 2.12.0 -> 2.13.0")."""

    at: int = checked(LATER_RUN_INDEX)
    what: str = checked(NAME)

    def __post_init__(self):
        self._check_fields()


@dataclass(frozen=True, kw_only=True)
class SiteMetric(_SiteRecord):
    """A metric the charts can show: its key in `values`, its label and unit, which way is better."""

    name: str = checked(NAME)
    label: str = checked(NAME)
    unit: str = checked(TEXT)
    better: str = checked(ANY)

    def __post_init__(self):
        self._check_fields()
        _choice("better", self.better, BETTER)


@dataclass(frozen=True, kw_only=True)
class SiteCulprit(_SiteRecord):
    """The first bad commit a bisection found, and its own ratio (new/old level)."""

    commit: str = checked(SHA)
    subject: str = checked(TEXT)
    ratio: float = checked(POSITIVE)

    def __post_init__(self):
        check_fields(self, "culprit")


@dataclass(frozen=True, kw_only=True)
class SiteStep(_SiteRecord):
    """A change of a point's metric between run `before` and run `at` (the commits
    (runs[before].commit, runs[at].commit]): the ratio of the new level to the old, with its interval."""

    point: str = checked(NAME)
    metric: str = checked(NAME)
    before: int = checked(RUN_INDEX)
    at: int = checked(RUN_INDEX)
    ratio: float = checked(POSITIVE)
    ci_low: float = checked(POSITIVE)
    ci_high: float = checked(POSITIVE)
    standing: str = checked(ANY)
    kind: str = checked(ANY)
    culprit: SiteCulprit | None = checked(ANY, record=SiteCulprit, default=None)

    def __post_init__(self):
        self._check_fields()
        _must(self.at > self.before, "at", f"a run index after before ({self.before})", self.at)
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
class SiteABRow(_SiteRecord):
    """One point of an A/B run, its cells as the A/B report writes them."""

    point: str = checked(NAME)
    pairs: int = checked(COUNT)
    latency: str = checked(TEXT)
    ttft: str = checked(TEXT)
    verdict: str = checked(TEXT)
    reason: str = checked(TEXT)

    def __post_init__(self):
        self._check_fields()


@dataclass(frozen=True, kw_only=True)
class SiteAB(_SiteRecord):
    """The latest A/B results: a title, header lines (both sides, settings, counts), a row per point."""

    title: str = checked(NAME)
    lines: tuple[str, ...] = checked(LINES, default_factory=tuple)
    rows: tuple[SiteABRow, ...] = _records(SiteABRow, default_factory=tuple)

    def __post_init__(self):
        self._check_fields()
        object.__setattr__(self, "lines", tuple(self.lines))
        _check_records(self, "rows", SiteABRow)


@dataclass(frozen=True, kw_only=True)
class SiteGroup(_SiteRecord):
    """One hardware x profile: its runs (oldest first: index i is run i), a series per point and metric
    (`values[metric][point]`: one value per run, None where not measured or out of memory), and what
    the history says about them (steps, environment changes), with the last run's figure and A/B."""

    hardware: str = checked(SAFE_NAME)
    profile: str = checked(NAME)
    runs: tuple[SiteRun, ...] = _records(SiteRun)
    env_changes: tuple[SiteEnvChange, ...] = _records(SiteEnvChange, default_factory=tuple)
    points: tuple[str, ...] = checked(POINTS)
    metrics: tuple[SiteMetric, ...] = _records(SiteMetric)
    values: dict[str, dict[str, list[float | None]]] = checked(VALUES)
    steps: tuple[SiteStep, ...] = _records(SiteStep, default_factory=tuple)
    figure_png: str | None = checked(ANY, default=None)
    ab: SiteAB | None = checked(ANY, record=SiteAB, default=None)

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
        check_fields(self, "group")
        for name, cls in (("runs", SiteRun), ("env_changes", SiteEnvChange), ("metrics", SiteMetric),
                          ("steps", SiteStep)):
            _check_records(self, name, cls)
        _must(bool(self.runs), "runs", "a non-empty list", self.runs)
        for change in self.env_changes:
            _must(change.at < len(self.runs), "env_changes at", f"a run index in 1..{len(self.runs) - 1}", change.at)
        object.__setattr__(self, "points", tuple(self.points))
        _unique("points", list(self.points))
        _unique("metric names", [m.name for m in self.metrics])
        _must(_is_png(self.figure_png), "figure_png", "null or the base64 text of a PNG", _short(self.figure_png))
        _must(self.ab is None or isinstance(self.ab, SiteAB), "ab", "null or a SiteAB", self.ab)

    def _check_values(self) -> None:
        """values[metric][point]: one number or None per run. A metric or point left out has no values."""
        metrics, points, runs = [m.name for m in self.metrics], set(self.points), len(self.runs)
        for metric, series in self.values.items():
            _choice("metric in values", metric, metrics)
            _must(isinstance(series, dict), f"values[{metric!r}]", "an object of point ids", series)
            for point, values in series.items():
                _choice(f"point in values[{metric!r}]", point, points)
                where = f"values[{metric!r}][{point!r}]"
                _must(isinstance(values, list) and len(values) == runs, where,
                      f"a list of one value per run ({runs})", _short(values))
                bad = next((v for v in values if v is not None and not is_number(v)), None)
                _must(bad is None, where + " values", "finite numbers or null", bad)

    def _check_steps(self) -> None:
        metrics = [m.name for m in self.metrics]
        for step in self.steps:
            _choice("step point", step.point, self.points)
            _choice("step metric", step.metric, metrics)
            _must(step.at < len(self.runs), "step at", f"a run index in 1..{len(self.runs) - 1}", step.at)

    def metric(self, name: str) -> SiteMetric:
        return next(m for m in self.metrics if m.name == name)


@dataclass(frozen=True, kw_only=True)
class SitePage(_SiteRecord):
    """The whole page: a title, when it was made, how to link a commit (`commit_url`, with {sha}) and a
    range of commits (`compare_url`, with {before} and {after}; null: plain text), one group per
    hardware x profile."""

    title: str = checked(NAME)
    generated: str = checked(ISO)
    commit_url: str | None = checked(_url(("sha",)), default=None)
    compare_url: str | None = checked(_url(("before", "after")), default=None)
    groups: tuple[SiteGroup, ...] = _records(SiteGroup, default_factory=tuple)

    def __post_init__(self):
        self._check_fields()
        _check_records(self, "groups", SiteGroup)
        _unique("groups (hardware / profile)", [g.name for g in self.groups])
