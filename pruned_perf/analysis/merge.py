"""Merge the results files of the shards of one run (`--pp-shard I/N`) into the results of the run."""
from __future__ import annotations

import copy
import dataclasses
import os

from pruned_perf.analysis.results import Results, load_results
from pruned_perf.analysis.speedups import add_speedups
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import SessionOutcome


def merge_results(paths) -> Results:
    """The shards' results as one run: points and benchmarks concatenated, failed tests joined, speedups
    over dense recomputed across shards. The shards must be of one run (hardware, software, profile) and
    must not overlap."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise UserError("merge needs at least one results file")
    first = load_results(paths[0])
    _check_plain(first)
    points, benchmarks, failed = dict(first.points), list(first.raw["benchmarks"]), list(first.failed)
    owner = {pid: first.path for pid in first.points}
    for path in paths[1:]:
        shard = load_results(path)
        _check_plain(shard)
        _check_same_run(first, shard)
        for pid in shard.points:
            if pid in owner:
                raise UserError(f"point {pid!r} is in both {owner[pid]} and {shard.path}; shards must not overlap")
            owner[pid] = shard.path
        points.update(shard.points)
        benchmarks.extend(shard.raw["benchmarks"])
        failed.extend(shard.failed)
    points = {pid: dataclasses.replace(p) for pid, p in points.items()}  # copies: the shards stay as read
    add_speedups(points.values())
    meta = dataclasses.replace(first.meta, session=SessionOutcome(failed))
    raw = copy.deepcopy(dict(first.raw, benchmarks=benchmarks))
    return dataclasses.replace(first, meta=meta, points=points, raw=raw, path="", history=[])


def _check_plain(results: Results) -> None:
    """An A/B's points are judged against its other side's, pair by pair: merged as plain shards, they
    would lose that silently."""
    if results.ab is not None:
        raise UserError(f"{results.path} is an interleaved A/B (pruned_perf_ab): merge joins the shards of plain "
                        f"runs; report, compare or plot the A/B file itself")


def _check_same_run(a: Results, b: Results) -> None:
    for what, va, vb in (
        ("schema", a.schema, b.schema),
        ("fingerprint slug", a.slug, b.slug),
        ("profile", a.profile, b.profile),
        ("torch", a.fingerprint.torch, b.fingerprint.torch),
        ("transformers", a.fingerprint.transformers, b.fingerprint.transformers),
    ):
        if va != vb:
            raise UserError(f"cannot merge: {a.path} has {what} {va!r}, {b.path} has {what} {vb!r}")
