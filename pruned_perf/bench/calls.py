"""One generate call at a point's shape, as the protocol times it: the prompt, greedy decoding of exactly
the point's new tokens (asserted), a timestamp at every new token, the device synchronized around it;
and running out of memory told apart from other errors.
"""
from __future__ import annotations

import gc
import time
from typing import Callable

import torch
from transformers.generation.streamers import BaseStreamer

from pruned_perf.core.schema import Point
from pruned_perf.pruning.calibration import deterministic_ids

_OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)


class GenerationLengthError(RuntimeError):
    """generate returned fewer (or more) tokens than the point asks for."""


def make_inputs(point: Point, vocab_size: int, device, seed: int = 0) -> dict:
    """M prompts of exactly `input_tokens` ids, the same for every run with the same seed."""
    shape = (point.batch_size, point.input_tokens)
    input_ids = deterministic_ids(shape, vocab_size, seed).to(device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def generate_kwargs(model, point: Point, new_tokens: int) -> dict:
    """Greedy, exactly `new_tokens` new tokens: min = max so EOS cannot end a sequence early."""
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "pad_token_id": _pad_token_id(model),
        "return_dict_in_generate": False,
        # explicit even for eager: a model's generation_config may preset another cache
        "cache_implementation": "static" if point.backend == "static" else "dynamic",
    }


def _pad_token_id(model) -> int:
    # without a pad id generate warns on every call and picks one itself
    config = model.generation_config
    for candidate in (config.pad_token_id, getattr(model.config, "pad_token_id", None), config.eos_token_id):
        if isinstance(candidate, (list, tuple)):
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return int(candidate)
    return 0


class TokenClock(BaseStreamer):
    """Timestamps every new token as `generate` hands it to the streamer.

    generate copies each step's tokens to the host before `put` (`tokens.cpu()`), so on CUDA the
    timestamp is taken after the step's kernels finished; the loop synchronizes there every step
    anyway to decide whether to stop, so the clock adds only a copy of M token ids per step.
    The first `put` is the prompt, not a new token.
    """

    def __init__(self, start_s: float):
        self.start_s = start_s
        self.token_s: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        now_s = time.perf_counter()
        if self._prompt_seen:
            self.token_s.append(now_s - self.start_s)
        self._prompt_seen = True

    def end(self) -> None:
        pass


def full_call(model, point: Point, inputs: dict, new_tokens: int, traces: list | None = None) -> Callable[[], None]:
    """One synchronized generate call at the point's shape: what the timed rounds time.

    Each call appends to `traces` the times of its new tokens, in seconds from the call's start.
    """
    kwargs = generate_kwargs(model, point, new_tokens)
    expected = (point.batch_size, point.input_tokens + new_tokens)
    device = inputs["input_ids"].device

    def call() -> None:
        synchronize(device)
        clock = TokenClock(time.perf_counter())
        output = model.generate(**inputs, **kwargs, streamer=clock)
        synchronize(device)
        check_length(output, expected, point)
        if len(clock.token_s) != new_tokens:
            raise GenerationLengthError(f"{point.id}: the token clock saw {len(clock.token_s)} new tokens, "
                                        f"expected {new_tokens}")
        if traces is not None:
            traces.append(clock.token_s)

    return call


def check_length(output, expected: tuple, point: Point) -> None:
    sequences = getattr(output, "sequences", output)
    if tuple(sequences.shape) != expected:
        raise GenerationLengthError(
            f"generate returned shape {tuple(sequences.shape)} for {point.id}, expected {expected} "
            "(batch, input + new tokens): a short generation would be a wrong, flattering result")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException | None) -> bool:
    # torch.compile wraps an OOM during compilation or graph capture in its own error: follow the chain
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _is_oom_itself(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _is_oom_itself(exc: BaseException) -> bool:
    if isinstance(exc, _OOM_ERRORS):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def free_memory(device: torch.device) -> None:
    # reference cycles (frames <-> tracebacks) can keep a failed call's tensors alive until collected
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def forget_static_cache_length(model) -> None:
    # transformers reuses the largest static cache it has seen on this model, which would make a shorter
    # point attend over (and pay for) a longer cache than its own. Within one point the length stays, so
    # the one-token TTFT calls run with the same cache as the full call's prefill and do not recompile.
    if hasattr(model, "_previous_max_cache_length"):
        del model._previous_max_cache_length
