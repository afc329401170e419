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

from pruned_perf.core.atomic import write_json_atomic
from pruned_perf.llama.checkpoint import PLAN, is_pruned_dir
from pruned_perf.core.codehash import code_digest
from pruned_perf.core.errors import UserError, choice_error
from pruned_perf.llama.models import (BYTE_LEVEL_PRESETS, PRESETS, PRETRAINED, build_model, is_preset, load_tokenizer,
                                model_config)
from pruned_perf.llama.plan import PLAN_SCHEMA, PrunePlan, load_plan, save_plan
from pruned_perf.pruning import methods
from pruned_perf.pruning.evaluate import heldout_perplexity
from pruned_perf.pruning.sizing import count_params, parse_param_count
from pruned_perf.pruning.surgery import apply

# Bumped when what the cache holds changes (2: plans scored in float32, a held-out perplexity beside each).
CACHE_FORMAT = 2


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
        return Variant(model, method, **methods.get_method(method).DEFAULT_SIZING)


_TINY_VARIANTS = tuple(
    v for model in ("tiny-llama", "tiny-gqa") for v in (
        Variant(model, "dense"), Variant(model, "llm-pruner", ratio=0.35),
        # A smaller calibration than FLAP's reference 1024 windows keeps the CPU profile short.
        Variant(model, "flap", ratio=0.3, calib_samples=128), Variant(model, "depth", ratio=0.3)))

# The real model at about 100M of its 134.5M parameters. Calibration is cut so that planning all three
# takes about 2.5 minutes on a 2-core CPU the first time (cached after): the depth `ppl` criterion runs
# the model once per candidate block (24 of them), 10 reference windows would take ~4 minutes alone.
_SMOLLM2_VARIANTS = (
    Variant("smollm2-135m", "dense"), Variant("smollm2-135m", "llm-pruner", target="100M"),
    Variant("smollm2-135m", "flap", target="100M", calib_samples=64),
    Variant("smollm2-135m", "depth", target="100M", calib_samples=4))

PROFILES = {
    # The reference figure: LLaMA-7B and Vicuna-13B; LLM-Pruner r=0.35 gives 4.9B / 9.2B.
    "paper": Profile("paper", tuple(_paper_variants("llama-7b", "4.9B") + _paper_variants("vicuna-13b", "9.5B")),
                     inputs=(12, 82), outputs=(128, 512), batches=(1, 8, 16, 32, 64, 128, 256, 384),
                     dtype="float16"),
    # A GPU subset that runs in minutes and still shows the claim at M=1.
    "smoke": Profile("smoke", tuple(_paper_variants("llama-7b", "4.9B")), inputs=(12,), outputs=(128,),
                     batches=(1, 64), dtype="float16"),
    # Tiny presets and the real smollm2-135m on the CPU, so the suite runs anywhere.
    "quick": Profile("quick", _TINY_VARIANTS + _SMOLLM2_VARIANTS, inputs=(12,), outputs=(32,), batches=(1, 8),
                     dtype="float32"),
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


def _code_digest() -> str:
    """The code that decides a plan (every method, the registry's size -> calibrate -> plan, sizing,
    calibration, the model builders and all they import): a plan made by other code is made anew."""
    return code_digest("pruned_perf.pruning.methods", "pruned_perf.llama.models")


def plan_key(variant: Variant, dtype: torch.dtype, device: torch.device, seed: int = 0) -> str:
    """A plan depends on the model, the method (settings and code), the calibration and the numerics
    (`dtype`: the dtype the plan is scored in, see planning_dtype)."""
    spec = variant.calib_spec()
    identity = {
        "plan_schema": PLAN_SCHEMA, "cache": CACHE_FORMAT, "model": _model_identity(variant.model), "seed": seed,
        "code": _code_digest(),
        "variant": dataclasses.asdict(variant), "calibration": dataclasses.asdict(spec) if spec else None,
        "dtype": str(dtype), "device": device.type,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{Path(variant.model).name}-{variant.method}-{digest}"


def make_plan(variant: Variant, model) -> PrunePlan:
    """Size, calibrate and run the variant's method on `model` (left unchanged)."""
    config = model.config
    return methods.prepare_plan(variant.method, config, variant.sizing(config), variant.model, variant.criterion,
                                variant.calib_spec(), load_tokenizer(variant.model)).plan(model)


def saved_plan(model: str) -> PrunePlan | None:
    """The plan of a directory that pruned_perf saved, or None for a preset or a plain checkpoint."""
    if is_preset(model) or not is_pruned_dir(model):
        return None
    return load_plan(Path(model) / PLAN, with_means=False)


# Room a GPU must keep beside a float32 planning copy (activations, logits, the allocator's slack).
_PLANNING_HEADROOM_BYTES = 2 << 30


def planning_dtype(variant: Variant, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """float32 for scoring wherever the model fits: Taylor scores need gradients, and fp16 gradients
    without loss scaling underflow (the reference implementations score in float32).

    On the CPU always; on a GPU when the float32 model (and its gradients, for gradient criteria) fits
    in free memory, else the timing dtype (a 13B model with gradients needs 104 GB), recorded in the
    plan. Never a CPU copy for a GPU run: FLAP's reference calibration on a 7B model would take hours.
    """
    if dtype == torch.float32 or variant.method == "dense":
        return dtype
    if device.type != "cuda":
        return torch.float32
    copies = 2 if methods.needs_gradients(variant.method, variant.criterion) else 1
    needed = count_params(model_config(variant.model)) * 4 * copies + _PLANNING_HEADROOM_BYTES
    free_bytes, _ = torch.cuda.mem_get_info(device)
    return torch.float32 if needed <= free_bytes else dtype


def cast_weights(model, dtype: torch.dtype):
    """The scored weights, rounded to the timing dtype. Parameters only: a model built in `dtype` keeps
    its rotary frequencies in float32 (model.to would round them too)."""
    for param in model.parameters():  # a tied embedding is one parameter: cast once, stays tied
        param.data = param.data.to(dtype)
    if getattr(model.config, "dtype", None) is not None:
        model.config.dtype = dtype
    return model


def load_variant(variant: Variant, device: torch.device, dtype: torch.dtype,
                 cache_dir: str | Path | None = None) -> tuple[torch.nn.Module, PrunePlan]:
    """Build the model and prune it, reusing a plan cached under `cache_dir` when there is one.

    The plan is scored in planning_dtype (float32 where it fits) and the same weights, cast to `dtype`,
    are pruned and returned: built once, so a random preset's timed weights are the scored ones.
    A directory saved by `pruned-perf prune` is already pruned: it loads as it is, under its own method.
    """
    already = saved_plan(variant.model)
    if already is not None:
        if already.method != variant.method:
            raise UserError(f"{variant.model} was pruned by {already.method}, not {variant.method}")
        return build_model(variant.model, device, dtype), already
    variant.sizing(model_config(variant.model))  # a bad ratio or target fails before any weights exist
    scoring = planning_dtype(variant, device, dtype)
    model = build_model(variant.model, device, scoring)
    cached = Path(cache_dir) / f"{plan_key(variant, scoring, device)}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        plan = load_plan(cached)
    else:
        plan = make_plan(variant, model)
        if cached is not None:
            save_plan(plan, cached)
    if scoring != dtype:
        model = cast_weights(model, dtype)
    return apply(model, plan), plan


# --- what every point of a variant shares: quality and provenance ------------------------------------

# Held-out tokens scored per variant: 4096 take ~30 s per smollm2 variant on a 2-core CPU, 2048 half
# that, once per variant (cached beside the plan). Byte-level tiny presets have random weights: their
# perplexity sits near the vocabulary size and says nothing about language, but it is deterministic
# given the plan, so it still catches a surgery or loading change; 1024 bytes cost milliseconds.
QUALITY_TOKENS = 2048
BYTE_LEVEL_QUALITY_TOKENS = 1024
QUALITY_WINDOW = 1024
NO_QUALITY = {"ppl": None, "ppl_source": None, "ppl_tokens": None}


def has_random_weights(model: str) -> bool:
    """A preset without published weights: whatever it computes, it learned nothing."""
    return is_preset(model) and model not in PRETRAINED


def structure_from_random_weights(variant: Variant, plan: PrunePlan) -> bool:
    """FLAP's per-layer widths (and so its speed) come from the statistics of the weights; on random
    weights they say nothing about the structure FLAP finds in a trained model. The other methods'
    shapes do not depend on the weights."""
    return plan.method == "flap" and has_random_weights(plan.source or variant.model)


def quality_settings(variant: Variant, config) -> dict:
    """heldout_perplexity's max_tokens and seq_len for this variant's model."""
    byte_level = (saved_source(variant.model) or variant.model) in BYTE_LEVEL_PRESETS
    window = min(QUALITY_WINDOW, config.max_position_embeddings)
    return {"max_tokens": BYTE_LEVEL_QUALITY_TOKENS if byte_level else QUALITY_TOKENS, "seq_len": window}


def saved_source(model: str) -> str | None:
    plan = saved_plan(model)
    return plan.source if plan is not None else None


def _quality_path(variant: Variant, plan: PrunePlan, device: torch.device, dtype: torch.dtype, settings: dict,
                  cache_dir: str | Path) -> Path:
    """Beside the plan, under the plan's key; the file name also covers what turns a plan into the timed
    model (surgery, loading, library versions) and the evaluation, so a change to any of them is measured
    again rather than read back: perplexity is a regression metric of exactly that code."""
    import transformers

    from pruned_perf.pruning import evaluate
    scoring = getattr(torch, plan.settings.get("scoring_dtype") or "", dtype)
    identity = {"dtype": str(dtype), "settings": settings, "text": evaluate.heldout_source(),
                "code": code_digest("pruned_perf.pruning.evaluate", "pruned_perf.llama.models", "pruned_perf.pruning.surgery"),
                "torch": torch.__version__, "transformers": transformers.__version__}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{plan_key(variant, scoring, device)}.ppl-{digest}.json"


def _read_quality(path: Path) -> dict | None:
    """A cached quality record, or None when it is unreadable (then it is measured again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and set(data) == set(NO_QUALITY) else None


def variant_quality(variant: Variant, model, plan: PrunePlan, device: torch.device, dtype: torch.dtype,
                    cache_dir: str | Path | None = None) -> dict:
    """ppl, ppl_source, ppl_tokens of the timed model on the held-out text; null for a model without a
    tokenizer. Computed once per variant and cached beside its plan."""
    tokenizer = load_tokenizer(variant.model)
    if tokenizer is None:
        return dict(NO_QUALITY)
    settings = quality_settings(variant, model.config)
    path = _quality_path(variant, plan, device, dtype, settings, cache_dir) if cache_dir else None
    cached = _read_quality(path) if path is not None and path.is_file() else None
    if cached is not None:
        return cached
    ppl, source, tokens = heldout_perplexity(model, tokenizer, **settings)
    quality = {"ppl": ppl, "ppl_source": source, "ppl_tokens": tokens}
    if path is not None:
        write_json_atomic(path, quality)
    return quality


def variant_cached(variant: Variant, device: torch.device, dtype: torch.dtype, cache_dir: str | Path) -> bool:
    """Whether building `variant` and scoring it would only read the cache: its plan and, for a model with
    a tokenizer, its held-out perplexity are there. A directory saved by `pruned-perf prune` is not
    checked here (False: building it says)."""
    if saved_plan(variant.model) is not None:
        return False
    scoring = planning_dtype(variant, device, dtype)
    plan_path = Path(cache_dir) / f"{plan_key(variant, scoring, device)}.json"
    if not plan_path.is_file():
        return False
    if load_tokenizer(variant.model) is None:
        return True
    plan = load_plan(plan_path, with_means=False)
    settings = quality_settings(variant, model_config(variant.model))
    return _quality_path(variant, plan, device, dtype, settings, cache_dir).is_file()


def variant_fields(variant: Variant, model, plan: PrunePlan, device: torch.device, dtype: torch.dtype,
                   cache_dir: str | Path | None = None) -> dict:
    """The Measurement fields every point of a variant shares."""
    return {**variant_quality(variant, model, plan, device, dtype, cache_dir),
            "plan_dtype": plan.settings.get("scoring_dtype"),
            "structure_from_random_weights": structure_from_random_weights(variant, plan)}
