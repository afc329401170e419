"""Depth pruning (Shortened LLaMA, arXiv 2402.02834): remove whole blocks, least important first."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from pruned_perf.core.errors import UserError
from pruned_perf.llama.plan import PrunePlan
from pruned_perf.pruning.calibration import CalibSpec
from pruned_perf.pruning.evaluate import lm_loss, perplexity
from pruned_perf.pruning.methods.grads import gradients
from pruned_perf.pruning.methods.option import Option
from pruned_perf.pruning.sizing import Sizing, check_ratio, check_target, count_params, dense_layer_params

NAME = "depth"
CRITERIA = ("ppl", "taylor", "magnitude")
CALIB = CalibSpec(samples=10, seq_len=128, seed=0)  # the paper: 10 windows of 128 tokens
GRADIENT_CRITERIA = ("taylor",)  # ppl runs forward passes only; magnitude reads the weights
OPTIONS = {"plus_rule": Option("--no-plus-rule", "let the first 4 and last 2 blocks be removed too")}
RATIO_MEANS = "fraction of blocks"  # what --ratio is, in --help
DEFAULT_SIZING = {"ratio": 9 / 32}  # for a model no profile lists: 9 of 32 blocks, the reference 4.9B of LLaMA-7B
STYLE = {"color": "blue", "marker": "s"}  # in every figure; the reference figure's "Ours": blue squares


def candidates(num_layers: int, plus_rule: bool = True) -> list[int]:
    """The "+" rule: the first 4 and the last 2 blocks are never removed."""
    protected = {0, 1, 2, 3, num_layers - 2, num_layers - 1} if plus_rule else set()
    return [b for b in range(num_layers) if b not in protected]


def size(config, ratio=None, target=None, plus_rule: bool = True) -> Sizing:
    """Blocks to remove: round(ratio * layers), or the count whose result is closest to `target`."""
    layers = config.num_hidden_layers
    dense, block = count_params(config), dense_layer_params(config)
    if ratio is not None:
        check_ratio(ratio)
        blocks = round(ratio * layers)
    else:
        check_target(config, target)
        blocks = round((dense - target) / block)
    available = len(candidates(layers, plus_rule))
    if blocks < 1:
        raise UserError(f"that removes no block: one block is {block:,} of {dense:,} parameters; "
                        f"ask for a larger ratio or a smaller target")
    if blocks > available:
        rule = " (the + rule protects the first 4 and last 2)" if plus_rule else ""
        raise UserError(f"cannot remove {blocks} blocks: {available} of {layers} are candidates{rule}; "
                        f"the smallest reachable model has {dense - available * block:,} parameters")
    return Sizing(NAME, {"blocks": blocks}, dense - blocks * block, exact=True)


def plan(model, calib: torch.Tensor | None, sizing: Sizing, criterion: str = "ppl",
         plus_rule: bool = True) -> PrunePlan:
    layers = model.config.num_hidden_layers
    pool = candidates(layers, plus_rule)
    scores = _SCORERS[criterion](model, calib, pool)
    ranked = sorted(pool, key=lambda b: (scores[b], b))
    drop = sorted(ranked[:sizing.setting["blocks"]])
    settings = {"criterion": criterion, "plus_rule": plus_rule, "blocks": len(drop),
                "scores": {str(b): scores[b] for b in pool}}
    return PrunePlan(NAME, source="", num_layers=layers, drop_blocks=drop, settings=settings)


@contextlib.contextmanager
def _without_block(model, block: int):
    """The model with one block taken out, for scoring (no KV cache is used, so layer_idx may stay)."""
    layers, count = model.model.layers, model.config.num_hidden_layers
    model.model.layers = nn.ModuleList([layer for i, layer in enumerate(layers) if i != block])
    model.config.num_hidden_layers = count - 1
    try:
        yield model
    finally:
        model.model.layers = layers
        model.config.num_hidden_layers = count


def _ppl_scores(model, calib, pool) -> dict[int, float]:
    """Perplexity of the model with only that block removed: low = the block matters little."""
    scores = {}
    for block in pool:
        with _without_block(model, block):
            scores[block] = perplexity(model, calib)
    return scores


def _taylor_scores(model, calib, pool) -> dict[int, float]:
    """Sum over the block's weights (norms included) of |W * dL/dW|, in float32."""
    with gradients(model):
        lm_loss(model, calib).backward()
        with torch.no_grad():
            return {b: _block_sum(model.model.layers[b], lambda p: (p.float() * p.grad.float()).abs())
                    for b in pool}


def _magnitude_scores(model, calib, pool) -> dict[int, float]:
    with torch.no_grad():
        return {b: _block_sum(model.model.layers[b], lambda p: p.float().abs()) for b in pool}


def _block_sum(block: nn.Module, score) -> float:
    return float(sum(score(p).sum() for p in block.parameters()))


_SCORERS = {"ppl": _ppl_scores, "taylor": _taylor_scores, "magnitude": _magnitude_scores}
