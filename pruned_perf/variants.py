"""Variants (a model pruned one way) and the sweep profiles; building a variant with a cached plan.

Knows nothing of pytest: the perf plugin picks points from a profile and asks for models here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pruned_perf import methods
from pruned_perf.errors import UserError, choice_error
from pruned_perf.models import PRESETS, build_model, is_preset, load_tokenizer, model_config
from pruned_perf.plan import PLAN_SCHEMA, PrunePlan, load_plan, save_plan
from pruned_perf.sizing import parse_param_count
from pruned_perf.surgery import apply


@dataclass(frozen=True)
class Variant:
    """One line of the figure: `model` pruned by `method` to `ratio` or `target` parameters."""

    model: str
    method: str
    ratio: float | None = None
    target: str | None = None
    criterion: str | None = None
    calib_samples: int | None = None  # None: the method's reference calibration

    def sizing(self, config):
        target = parse_param_count(self.target) if self.target else None
        return methods.size(self.method, config, ratio=self.ratio, target=target)

    def calib_spec(self):
        return methods.calibration_spec(self.method, samples=self.calib_samples)


# Pruning used for a model that a profile does not list: about 27% of LLaMA-7B's parameters, as in
# the reference figure's 4.9B variants.
DEFAULT_SIZING = {"dense": {}, "depth": {"ratio": 9 / 32}, "llm-pruner": {"ratio": 0.35},
                  "flap": {"ratio": 0.28}}


def _paper_variants(model: str, target: str, llm_pruner_ratio: float = 0.35) -> list[Variant]:
    return [Variant(model, "dense"), Variant(model, "llm-pruner", ratio=llm_pruner_ratio),
            Variant(model, "flap", target=target), Variant(model, "depth", target=target)]


@dataclass(frozen=True)
class Profile:
    name: str
    variants: tuple[Variant, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    batches: tuple[int, ...]
    dtype: str
    backends: tuple[str, ...] = ("eager",)

    def variant(self, model: str, method: str) -> Variant:
        for v in self.variants:
            if (v.model, v.method) == (model, method):
                return v
        if method not in DEFAULT_SIZING:
            raise choice_error("method", method, DEFAULT_SIZING)
        return Variant(model, method, **DEFAULT_SIZING[method])


_TINY_VARIANTS = tuple(
    v for model in ("tiny-llama", "tiny-gqa") for v in (
        Variant(model, "dense"), Variant(model, "llm-pruner", ratio=0.35),
        # A smaller calibration than FLAP's reference 1024 windows keeps the CPU profile short.
        Variant(model, "flap", ratio=0.3, calib_samples=128), Variant(model, "depth", ratio=0.3)))

PROFILES = {
    # The reference figure: LLaMA-7B and Vicuna-13B; LLM-Pruner r=0.35 gives 4.9B / 9.2B.
    "paper": Profile("paper", tuple(_paper_variants("llama-7b", "4.9B") + _paper_variants("vicuna-13b", "9.5B")),
                     inputs=(12, 82), outputs=(128, 512), batches=(1, 8, 16, 32, 64, 128, 256, 384),
                     dtype="float16"),
    # A GPU subset that runs in minutes and still shows the claim at M=1.
    "smoke": Profile("smoke", tuple(_paper_variants("llama-7b", "4.9B")), inputs=(12,), outputs=(128,),
                     batches=(1, 64), dtype="float16"),
    # Tiny presets on the CPU, so the suite runs anywhere.
    "quick": Profile("quick", _TINY_VARIANTS, inputs=(12,), outputs=(32,), batches=(1, 8), dtype="float32"),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise choice_error("profile", name, PROFILES)
    return PROFILES[name]


# --- building a variant --------------------------------------------------------------------------

def _model_identity(model: str) -> dict:
    """What makes a model the same model again: the preset's config, or the checkpoint files' sizes and times."""
    if is_preset(model):
        return {"preset": model, "config": PRESETS[model]}
    path = Path(model).resolve()
    files = sorted(p for p in path.iterdir() if p.is_file())
    return {"path": str(path), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def _code_digest(method: str) -> str:
    """The code that decides a plan: a changed method must not reuse plans made by the old one."""
    from pruned_perf import calibration, evaluate
    from pruned_perf.methods import grads

    files = [methods.get_method(method).__file__, calibration.__file__, evaluate.__file__, grads.__file__]
    return hashlib.sha256(b"".join(Path(f).read_bytes() for f in files)).hexdigest()[:16]


def plan_key(variant: Variant, dtype: torch.dtype, device: torch.device, seed: int = 0) -> str:
    """A plan depends on the model, the method (settings and code), the calibration and the numerics."""
    spec = variant.calib_spec()
    identity = {
        "plan_schema": PLAN_SCHEMA, "model": _model_identity(variant.model), "seed": seed,
        "code": _code_digest(variant.method),
        "variant": dataclasses.asdict(variant), "calibration": dataclasses.asdict(spec) if spec else None,
        "dtype": str(dtype), "device": device.type,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{Path(variant.model).name}-{variant.method}-{digest}"


def make_plan(variant: Variant, model) -> PrunePlan:
    """Size, calibrate and run the variant's method on `model` (left unchanged)."""
    config = model.config
    sizing = variant.sizing(config)
    criterion = methods.check_criterion(variant.method, variant.criterion)
    tokenizer = load_tokenizer(variant.model)
    spec = variant.calib_spec()
    calibration = methods.calibrate(variant.method, criterion, spec, config.vocab_size, tokenizer)
    return methods.make_plan(model, variant.method, sizing, variant.model, criterion, calibration)


def saved_plan(model: str) -> PrunePlan | None:
    """The plan of a directory that pruned_perf saved, or None for a preset or a plain checkpoint."""
    path = Path(model) / "plan.json"
    return load_plan(path, with_means=False) if not is_preset(model) and path.is_file() else None


def load_variant(variant: Variant, device: torch.device, dtype: torch.dtype,
                 cache_dir: str | Path | None = None) -> tuple[torch.nn.Module, PrunePlan]:
    """Build the model and prune it, reusing a plan cached under `cache_dir` when there is one.

    A directory saved by `pruned-perf prune` is already pruned: it loads as it is, under its own method.
    """
    already = saved_plan(variant.model)
    if already is not None:
        if already.method != variant.method:
            raise UserError(f"{variant.model} was pruned by {already.method}, not {variant.method}")
        return build_model(variant.model, device, dtype), already
    variant.sizing(model_config(variant.model))  # a bad ratio or target fails before any weights exist
    model = build_model(variant.model, device, dtype)
    cached = Path(cache_dir) / f"{plan_key(variant, dtype, device)}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        plan = load_plan(cached)
    else:
        plan = make_plan(variant, model)
        if cached is not None:
            save_plan(plan, cached)
    return apply(model, plan), plan
