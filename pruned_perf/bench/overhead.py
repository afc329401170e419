"""Does measuring cost time? Raw synchronized `generate` calls against `measure`'s timed path, in one process.

`pruned-perf overhead --model NAME` prints `measure/raw = 1.004 (target within 3%)` and exits 1 when the
harness adds more than 3% to a call.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from pruned_perf.bench.fingerprint import pick_device
from pruned_perf.bench.calls import full_call, make_inputs, model_device, synchronize
from pruned_perf.bench.rounds import plain_timed_rounds
from pruned_perf.core.errors import UserError, choice_error
from pruned_perf.core.schema import Point

TARGET = 0.03


@dataclass(frozen=True)
class OverheadArgs:
    """What `pruned-perf overhead` is asked (its flags are in pruned_perf.cli)."""

    model: str
    device: str = "auto"
    dtype: str = "auto"  # auto: float16 on cuda, float32 on cpu
    input_tokens: int = 12
    output_tokens: int = 128
    batch_size: int = 1
    backend: str = "eager"
    rounds: int = 10


def _raw_call(model, point: Point, inputs: dict):
    """What a user would time by hand; written out here, not taken from measure, so that a mistake in
    measure's generate arguments shows up as a ratio instead of being shared by both sides."""
    device = inputs["input_ids"].device
    cache = "static" if point.backend == "static" else "dynamic"
    pad_id = model.generation_config.pad_token_id
    if pad_id is None:
        eos = model.generation_config.eos_token_id
        pad_id = (eos[0] if isinstance(eos, (list, tuple)) else eos) or 0

    def call() -> float:
        synchronize(device)
        start_s = time.perf_counter()
        model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       max_new_tokens=point.output_tokens, min_new_tokens=point.output_tokens,
                       do_sample=False, pad_token_id=pad_id, cache_implementation=cache)
        synchronize(device)
        return time.perf_counter() - start_s

    return call


def check_overhead(model, point: Point, rounds: int = 20) -> dict:
    """Median wall time of raw calls and of measure's timed calls at the same shape, alternating, and the
    median ratio measure/raw over back-to-back pairs."""
    check_rounds(rounds)
    inputs = make_inputs(point, model.config.vocab_size, model_device(model))
    raw = _raw_call(model, point, inputs)
    core = full_call(model, point, inputs, point.output_tokens)
    raw()
    core()  # both warmed up at the exact shape before anything is timed
    raw_s, core_s = [], []
    for i in range(rounds):
        # ABBA order: a linear drift (clock, other load) adds the same to both sides
        if i % 2 == 0:
            raw_s.append(raw())
            core_s.extend(plain_timed_rounds(core, 1))
        else:
            core_s.extend(plain_timed_rounds(core, 1))
            raw_s.append(raw())
    return {
        "raw_median_s": statistics.median(raw_s),
        "core_median_s": statistics.median(core_s),
        # median of per-pair ratios: the two calls of a pair run back to back, so load from other processes
        # cancels within a pair (on a busy 2-core CPU a ratio of medians strayed 5%, this one under 2%)
        "ratio": statistics.median(core / raw for core, raw in zip(core_s, raw_s)),
        "raw_rounds_s": raw_s,
        "core_rounds_s": core_s,
    }


def check_rounds(rounds: int) -> None:
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1 (the ratio is a median over rounds), got {rounds}")


def check_fits(point: Point, config) -> None:
    """Prompt and generated tokens share the model's positions: past max_position_embeddings the timing
    would be of a model running outside what it was built for (a static cache would not even fit)."""
    limit = config.max_position_embeddings
    total = point.input_tokens + point.output_tokens
    if total > limit:
        raise UserError(f"--input-tokens {point.input_tokens} + --output-tokens {point.output_tokens} = {total} "
                        f"tokens do not fit the model's {limit} positions (max_position_embeddings)")


def within_target(ratio: float, target: float = TARGET) -> bool:
    return abs(ratio - 1) <= target


def _dtype(name: str, device: torch.device) -> torch.dtype:
    from pruned_perf.llama.models import DTYPES

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise choice_error("dtype", name, ("auto", *DTYPES))
    return DTYPES[name]


def run(args: OverheadArgs) -> int:
    """`pruned-perf overhead`: prints the ratio; 0 within TARGET, else 1."""
    from pruned_perf.llama import models

    device = pick_device(args.device)
    point = Point(args.model, "dense", args.input_tokens, args.output_tokens, args.batch_size, args.backend)
    check_rounds(args.rounds)
    model = models.build_model(args.model, device, _dtype(args.dtype, device))
    check_fits(point, model.config)
    result = check_overhead(model, point, args.rounds)
    ratio = result["ratio"]
    print(f"measure/raw = {ratio:.3f} (target within {TARGET:.0%})")
    print(f"raw median {result['raw_median_s'] * 1e3:.2f} ms, measure median {result['core_median_s'] * 1e3:.2f} ms, "
          f"{args.rounds} rounds each, {point.id} on {device}")
    return 0 if within_target(ratio) else 1
