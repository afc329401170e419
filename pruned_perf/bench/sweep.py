"""Which points a perf run measures, in what order, and the state a run keeps between points.

Knows nothing of pytest (the plugin is glue): selection and sharding are plain functions, the model
pool keeps at most one model on the device (the point log is pruned_perf.core.pointlog, the point loop
pruned_perf.bench.session).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pruned_perf.bench.calls import free_memory
from pruned_perf.core.errors import UserError
from pruned_perf.llama.models import model_name
from pruned_perf.pruning.methods import get_method
from pruned_perf.pruning.variants import Profile, Variant, load_variant, saved_plan, variant_fields
from pruned_perf.core.schema import BACKENDS, Point


# A timed round lasts at least this long (several calls of a short point): see
# pruned_perf.bench.rounds.calls_per_round for why.
DEFAULT_MIN_ROUND_S = 1.0


def select_variants(profile: Profile, models=None, methods=None) -> list[Variant]:
    """The profile's variants, or the variants of the given models, filtered by method. A registered
    method that the profile does not list is measured at its default size on the chosen models."""
    if models is None:
        chosen = list(profile.variants)
        models = list(dict.fromkeys(v.model for v in chosen))
    else:
        listed_methods = list(dict.fromkeys(v.method for v in profile.variants))
        chosen = []
        for model in models:
            saved = saved_plan(model)
            for method in ([saved.method] if saved else listed_methods):
                chosen.append(profile.variant(model, method))
    if methods is None:
        return chosen
    for method in methods:
        get_method(method)  # an unknown one: one error naming every registered method
    added = [profile.variant(model, m) for model in models if saved_plan(model) is None
             for m in methods if m not in {v.method for v in chosen}]
    order = list(models)
    return sorted([v for v in chosen if v.method in methods] + added, key=lambda v: order.index(v.model))


def make_points(variants, inputs, outputs, batches, backends) -> list[Point]:
    """Grouped by variant (one model on the device at a time), batch sizes ascending within a series
    (so that after an out-of-memory the larger ones are skipped, not run)."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise UserError(f"unknown backend {unknown[0]!r}; valid choices: {', '.join(BACKENDS)}")
    return [Point(model_name(v.model), v.method, i, o, m, backend)
            for v in variants for i in inputs for o in outputs for backend in backends
            for m in sorted(batches)]


def shard(points: list[Point], index: int, count: int) -> list[Point]:
    """Shard `index` of `count`: contiguous runs of whole series, so a shard builds few models and
    every batch size of a series stays together (OOM skipping needs the smaller ones first)."""
    series = list(dict.fromkeys(p.series for p in points))
    lo, hi = (index - 1) * len(series) // count, index * len(series) // count
    mine = set(series[lo:hi])
    return [p for p in points if p.series in mine]


@dataclass
class Sweep:
    """Everything a perf run was asked to do."""

    profile: Profile
    variants: list[Variant]
    points: list[Point]
    device: torch.device
    dtype: torch.dtype
    rounds: int
    warmup: int
    min_round_s: float = DEFAULT_MIN_ROUND_S

    def variant_for(self, point: Point) -> Variant:
        for v in self.variants:
            if (model_name(v.model), v.method) == (point.model, point.method):
                return v
        raise KeyError(point.id)


class ModelPool:
    """At most one model on the device: the current variant's. A dense 13B and its three pruned
    versions would not fit an 80 GB GPU together."""

    def __init__(self, device: torch.device, dtype: torch.dtype, cache_dir: str | Path | None):
        self.device, self.dtype, self.cache_dir = device, dtype, cache_dir
        self.variant: Variant | None = None
        self.model = None
        self.plan = None
        self._failed: dict[Variant, str] = {}
        self._fields: dict[Variant, dict] = {}

    def get(self, variant: Variant):
        if variant != self.variant:
            self.release()
            if variant in self._failed:  # do not rebuild a 7B model for every point of a broken variant
                raise RuntimeError(f"building {variant} failed earlier: {self._failed[variant]}")
            try:
                self.model, self.plan = load_variant(variant, self.device, self.dtype, self.cache_dir)
            except Exception as exc:
                self._failed[variant] = f"{type(exc).__name__}: {exc}"
                self.release()
                raise
            self.variant = variant
        return self.model

    def fields(self, variant: Variant) -> dict:
        """The Measurement fields `variant` shares over its points (held-out perplexity, provenance):
        computed once per session, on the model `get` built, and cached on disk beside its plan."""
        if variant not in self._fields:
            model = self.get(variant)
            self._fields[variant] = variant_fields(variant, model, self.plan, self.device, self.dtype,
                                                   self.cache_dir)
        return dict(self._fields[variant])

    def release(self) -> None:
        self.model, self.plan, self.variant = None, None, None
        free_memory(self.device)
