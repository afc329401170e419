"""Read and write results files and the baseline store (format: docs/results-schema.md).

A results file is pytest-benchmark JSON with `machine_info.pruned_perf` (schema, profile,
fingerprint) and one measured point per `benchmarks[i].extra_info`. A baseline is a results file kept
at `baselines/<fingerprint slug>/<profile>.json`.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pruned_perf.atomic import write_json_atomic
from pruned_perf.errors import UserError

SCHEMA_VERSION = 1
SUPPORTED_SCHEMAS = (SCHEMA_VERSION,)
# Slugs and profiles become path components under baselines/: keep them to one safe name each.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Fields every point needs to be grouped, compared and plotted; the rest may be null (OOM) or absent.
_REQUIRED_POINT_FIELDS = {
    "model": str,
    "method": str,
    "batch_size": int,
    "input_tokens": int,
    "output_tokens": int,
    "backend": str,
}


@dataclass
class Results:
    """One results file: who measured (fingerprint, profile) and what (points by id)."""

    fingerprint: dict
    profile: str
    points: dict[str, dict]
    raw: dict = field(repr=False)
    path: str = ""
    schema: int = SCHEMA_VERSION

    @property
    def slug(self) -> str:
        return self.fingerprint["slug"]


# ---------------------------------------------------------------- reading


def load_results(path: str | os.PathLike) -> Results:
    """Read and validate one results file; any problem is one UserError naming the file."""
    path = os.fspath(path)
    raw = _read_json(path, "results file")
    return results_from_dict(raw, path)


def results_from_dict(raw, path: str = "<results>") -> Results:
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object (pytest-benchmark results), got {type(raw).__name__}")
    meta = _pruned_perf_meta(raw, path)
    benchmarks = raw.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        raise UserError(f"{path}: no benchmarks (empty results); nothing was measured")
    points: dict[str, dict] = {}
    where: dict[str, int] = {}
    for i, bench in enumerate(benchmarks):
        point = _point(bench, i, path)
        pid = point["id"]
        if pid in points:
            raise UserError(f"{path}: duplicate point id {pid!r} (benchmarks {where[pid]} and {i})")
        points[pid] = point
        where[pid] = i
    return Results(
        fingerprint=meta["fingerprint"],
        profile=meta["profile"],
        points=points,
        raw=raw,
        path=path,
        schema=meta["schema"],
    )


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


def _pruned_perf_meta(raw: dict, path: str) -> dict:
    machine_info = raw.get("machine_info")
    meta = machine_info.get("pruned_perf") if isinstance(machine_info, dict) else None
    supported = ", ".join(map(str, SUPPORTED_SCHEMAS))
    if not isinstance(meta, dict) or "schema" not in meta:
        raise UserError(
            f"{path}: no machine_info.pruned_perf.schema; not a pruned_perf results file "
            f"(supported schema: {supported})"
        )
    schema = meta["schema"]
    if schema not in SUPPORTED_SCHEMAS or isinstance(schema, bool):
        raise UserError(f"{path}: results schema {schema!r} is not supported (supported schema: {supported})")
    fingerprint = meta.get("fingerprint")
    if not isinstance(fingerprint, dict) or not isinstance(fingerprint.get("slug"), str):
        raise UserError(f"{path}: machine_info.pruned_perf.fingerprint.slug is missing")
    _check_safe_name(fingerprint["slug"], "fingerprint slug", path)
    profile = meta.get("profile")
    if not isinstance(profile, str):
        raise UserError(f"{path}: machine_info.pruned_perf.profile is missing")
    _check_safe_name(profile, "profile", path)
    return {"schema": schema, "fingerprint": fingerprint, "profile": profile}


def _check_safe_name(value: str, what: str, path: str) -> None:
    if not _SAFE_NAME.match(value):
        raise UserError(f"{path}: {what} {value!r} is not a file-safe name (letters, digits, . _ -)")


def _point(bench, i: int, path: str) -> dict:
    name = bench.get("name", "?") if isinstance(bench, dict) else "?"
    extra = bench.get("extra_info") if isinstance(bench, dict) else None
    if not isinstance(extra, dict) or not extra:
        raise UserError(f"{path}: benchmark {i} ({name}) has no extra_info; not a pruned_perf point")
    pid = extra.get("id")
    if not isinstance(pid, str) or not pid:
        raise UserError(f"{path}: benchmark {i} ({name}) has no extra_info.id")
    if extra.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise UserError(
            f"{path}: point {pid!r} has extra_info.schema {extra['schema']!r} (supported schema: {SCHEMA_VERSION})"
        )
    for key, kind in _REQUIRED_POINT_FIELDS.items():
        value = extra.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"{path}: point {pid!r}: extra_info.{key} must be {kind.__name__}, got {value!r}")
    if not extra.get("oom"):
        rounds = extra.get("rounds_s")
        if not isinstance(rounds, list) or not all(_is_number(r) for r in rounds):
            raise UserError(f"{path}: point {pid!r}: extra_info.rounds_s must be a list of seconds")
    return extra


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------- writing


# ---------------------------------------------------------------- baselines


@dataclass
class BaselineEntry:
    slug: str
    profile: str
    path: str
    points: int = 0
    oom_points: int = 0
    datetime: str = ""
    torch: str = ""
    transformers: str = ""
    error: str = ""


def baseline_path(baselines_dir: str | os.PathLike, slug: str, profile: str) -> Path:
    return Path(baselines_dir) / slug / f"{profile}.json"


def store_baseline(results_path: str | os.PathLike, baselines_dir: str | os.PathLike, force: bool = False) -> Path:
    """Copy a results file into the store as the baseline of its fingerprint and profile.

    An existing baseline that cannot be read, or that names other hardware or another schema, is only
    replaced with force=True: that guards against filing one GPU's numbers under another's slug.
    """
    results = load_results(results_path)
    dest = baseline_path(baselines_dir, results.slug, results.profile)
    if dest.exists() and not force:
        _check_replaceable(dest, results)
    write_json_atomic(dest, results.raw)
    return dest


def _check_replaceable(dest: Path, results: Results) -> None:
    hint = "pass --force to replace it"
    try:
        old = load_results(dest)
    except UserError as e:
        raise UserError(f"existing baseline cannot be read ({e}); {hint}") from None
    if old.slug != results.slug:
        raise UserError(
            f"{dest}: existing baseline is for {old.slug!r}, {results.path} is for {results.slug!r}; {hint}"
        )
    if old.schema != results.schema:
        raise UserError(
            f"{dest}: existing baseline has schema {old.schema}, {results.path} has schema {results.schema}; {hint}"
        )


def list_baselines(baselines_dir: str | os.PathLike) -> list[BaselineEntry]:
    """Every `<slug>/<profile>.json` under the store, sorted; unreadable ones carry their error."""
    root = Path(baselines_dir)
    if not root.is_dir():
        return []
    entries = []
    for path in sorted(root.glob("*/*.json")):
        entries.append(_baseline_entry(path))
    return entries


def _baseline_entry(path: Path) -> BaselineEntry:
    entry = BaselineEntry(slug=path.parent.name, profile=path.stem, path=str(path))
    try:
        results = load_results(path)
    except UserError as e:
        entry.error = str(e)
        return entry
    entry.points = len(results.points)
    entry.oom_points = sum(1 for p in results.points.values() if p.get("oom"))
    entry.datetime = str(results.raw.get("datetime", ""))
    entry.torch = str(results.fingerprint.get("torch", ""))
    entry.transformers = str(results.fingerprint.get("transformers", ""))
    if results.slug != entry.slug or results.profile != entry.profile:
        entry.error = f"file says slug {results.slug!r} profile {results.profile!r}"
    return entry


def resolve_baseline(spec: str, results: Results, baselines_dir: str | os.PathLike = "baselines") -> Path:
    """Find the baseline file for `results`: a FILE, a DIR, or `auto` (the store's entry)."""
    if spec == "auto":
        path = baseline_path(baselines_dir, results.slug, results.profile)
        if not path.is_file():
            raise UserError(
                f"no baseline for {results.slug} profile {results.profile}: {path} does not exist "
                f"(store one with `pruned-perf baseline update RESULTS.json`)"
            )
        return path
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        tried = [path / f"{results.profile}.json", baseline_path(path, results.slug, results.profile)]
        for candidate in tried:
            if candidate.is_file():
                return candidate
        raise UserError(f"baseline directory {path} has neither {tried[0]} nor {tried[1]}")
    raise UserError(f"baseline {spec}: no such file or directory")


# ---------------------------------------------------------------- shards


def merge_results(paths) -> dict:
    """Merge results files of shards of one run into one results dict (benchmarks concatenated)."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise UserError("merge needs at least one results file")
    first = load_results(paths[0])
    merged = dict(first.raw)
    benchmarks = list(first.raw["benchmarks"])
    owner = {pid: first.path for pid in first.points}
    for path in paths[1:]:
        shard = load_results(path)
        _check_same_run(first, shard)
        for pid in shard.points:
            if pid in owner:
                raise UserError(f"point {pid!r} is in both {owner[pid]} and {shard.path}; shards must not overlap")
            owner[pid] = shard.path
        benchmarks.extend(shard.raw["benchmarks"])
    merged["benchmarks"] = benchmarks
    return merged


def _check_same_run(a: Results, b: Results) -> None:
    for what, va, vb in (
        ("schema", a.schema, b.schema),
        ("fingerprint slug", a.slug, b.slug),
        ("profile", a.profile, b.profile),
    ):
        if va != vb:
            raise UserError(f"cannot merge: {a.path} has {what} {va!r}, {b.path} has {what} {vb!r}")
