"""LLM-Pruner (NeurIPS 2023), block-wise: coupled head and channel groups ranked by first-order Taylor.

Groups: a key/value head with its query heads (rows of q, k, v and the matching columns of o), and an
MLP channel (row of gate and up, column of down). The hidden size is never pruned. Layers in
[start, end) all lose the same number of heads and channels; the others keep full width.
"""
from __future__ import annotations

import torch

from pruned_perf.core.errors import UserError
from pruned_perf.llama.plan import PrunePlan
from pruned_perf.pruning.calibration import CalibSpec
from pruned_perf.pruning.evaluate import lm_loss
from pruned_perf.pruning.methods.grads import gradients
from pruned_perf.pruning.methods.option import Option
from pruned_perf.pruning.sizing import Sizing, check_ratio, check_target, count_params, dense_layer_params, layer_params

NAME = "llm-pruner"
# element: sum |W*g| over a channel (reference default `param_first`); vector: |sum W*g|;
# second: W*g - 1/2 W*(g^2)*W with the squared per-sample gradient as a diagonal Fisher.
CRITERIA = ("element", "vector", "second")
CALIB = CalibSpec(samples=10, seq_len=64, seed=42)  # reference: 10 samples x 64 tokens, seed 42
GRADIENT_CRITERIA = CRITERIA
RATIO_MEANS = "per-layer width ratio r"  # what --ratio is, in --help
DEFAULT_SIZING = {"ratio": 0.35}  # for a model no profile lists: the reference figure's 4.9B of LLaMA-7B
STYLE = {"color": "black", "marker": "x"}  # in every figure; the reference figure: black crosses


def parse_layers(text: str) -> tuple[int, int]:
    """"4:30" -> (4, 30)."""
    try:
        start, end = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"expected START:END, e.g. 4:30, got {text!r}") from None
    return start, end


OPTIONS = {"layers": Option("--layers", "layers START:END to prune (default 4:L-2)", parse=parse_layers,
                            metavar="START:END")}


def layer_range(config, layers=None) -> tuple[int, int]:
    count = config.num_hidden_layers
    start, end = layers if layers is not None else (4, count - 2)
    if not 0 <= start < end <= count:
        raise UserError(f"layer range {start}:{end} is not within 0:{count} (start < end)")
    return start, end


def _unit(config) -> tuple[int, int]:
    """(query channels per key/value group, number of groups)."""
    n_rep = config.num_attention_heads // config.num_key_value_heads
    return n_rep * config.head_dim, config.num_key_value_heads


def _widths_for_ratio(config, ratio: float) -> tuple[int, int]:
    """The reference's rounding: remove C - int(C * (1 - r)) channels, whole heads of them."""
    unit, groups = _unit(config)
    channels = groups * unit
    kv_kept = groups - (channels - int(channels * (1 - ratio))) // unit
    return kv_kept, int(config.intermediate_size * (1 - ratio))


def _count(config, start, end, kv_kept, mlp_kept) -> int:
    n_rep = config.num_attention_heads // config.num_key_value_heads
    pruned = layer_params(config, kv_kept * n_rep, kv_kept, mlp_kept)
    return count_params(config) - (end - start) * (dense_layer_params(config) - pruned)


def _setting(config, start, end, kv_kept, mlp_kept, **extra) -> dict:
    n_rep = config.num_attention_heads // config.num_key_value_heads
    return dict(extra, heads=kv_kept * n_rep, kv_heads=kv_kept, mlp=mlp_kept, layers=[start, end])


def size(config, ratio=None, target=None, layers=None) -> Sizing:
    start, end = layer_range(config, layers)
    if ratio is not None:
        check_ratio(ratio)
        kv_kept, mlp_kept = _widths_for_ratio(config, ratio)
        return Sizing(NAME, _setting(config, start, end, kv_kept, mlp_kept, ratio=ratio),
                      _count(config, start, end, kv_kept, mlp_kept), exact=True)
    check_target(config, target)
    return _size_for_target(config, start, end, target)


def _size_for_target(config, start, end, target) -> Sizing:
    """Closest count to `target`, with attention and MLP pruned by ratios as equal as possible.

    One ratio for both (as the reference does) jumps a whole head across all layers at a time, which
    can miss a target by over 1%; solving the MLP width for each head count lands within one channel.
    """
    _, groups = _unit(config)
    mlp, hidden = config.intermediate_size, config.hidden_size
    step = 3 * hidden * (end - start)  # one MLP channel in every pruned layer
    reachable = _count(config, start, end, 0, 0)
    if target < reachable - step:
        raise UserError(f"target {target:,} is below the smallest model that pruning layers {start}:{end} "
                        f"can give ({reachable:,})")
    options = []
    for kv_kept in range(groups + 1):
        base = _count(config, start, end, kv_kept, 0)
        mlp_kept = min(max(round((target - base) / step), 0), mlp)
        error = abs(_count(config, start, end, kv_kept, mlp_kept) - target)
        balance = abs((1 - kv_kept / groups) - (1 - mlp_kept / mlp))
        options.append((error, balance, kv_kept, mlp_kept))
    best_error = min(o[0] for o in options)
    _, _, kv_kept, mlp_kept = min((o for o in options if o[0] <= best_error + step), key=lambda o: o[1])
    count = _count(config, start, end, kv_kept, mlp_kept)
    ratios = {"attn_ratio": round(1 - kv_kept / groups, 4), "mlp_ratio": round(1 - mlp_kept / mlp, 4)}
    return Sizing(NAME, _setting(config, start, end, kv_kept, mlp_kept, **ratios), count, exact=True)


def plan(model, calib: torch.Tensor, sizing: Sizing, criterion: str = "element") -> PrunePlan:
    setting = sizing.setting
    start, end = setting["layers"]
    layers = model.model.layers[start:end]
    with gradients(model):
        fisher = _squared_grads(model, calib, layers) if criterion == "second" else None
        lm_loss(model, calib).backward()
        keep_heads, keep_channels = {}, {}
        with torch.no_grad():  # scores must not hold a graph (float copies of every matrix)
            for index, layer in enumerate(layers, start):
                head_scores, channel_scores = _group_scores(layer, criterion, fisher)
                keep_heads[index] = _top(head_scores, setting["kv_heads"])
                keep_channels[index] = _top(channel_scores, setting["mlp"])
    return PrunePlan(NAME, source="", num_layers=model.config.num_hidden_layers, keep_heads=keep_heads,
                     keep_channels=keep_channels, settings={"criterion": criterion, **setting})


def _squared_grads(model, calib, layers) -> dict:
    """Mean over samples of the per-sample squared gradient (the reference's `acc_grad`), float32."""
    params = [p for layer in layers for p in _scored_params(layer)]
    fisher = {p: torch.zeros_like(p, dtype=torch.float32) for p in params}
    for sample in calib:
        lm_loss(model, sample[None]).backward()
        with torch.no_grad():
            for p in params:
                fisher[p] += p.grad.float() ** 2 / len(calib)
        model.zero_grad(set_to_none=True)
    return fisher


def _scored_params(layer):
    attn, mlp = layer.self_attn, layer.mlp
    return [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight,
            mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]


def _channel_importance(weight, criterion, fisher, dim) -> torch.Tensor:
    """Importance of each output row (dim=1) or input column (dim=0) of a weight matrix."""
    w = weight.float()
    salience = w * weight.grad.float()
    if criterion == "second":
        salience = salience - 0.5 * w * fisher[weight] * w
    return salience.sum(dim).abs() if criterion == "vector" else salience.abs().sum(dim)


def _group_scores(layer, criterion, fisher) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of key/value groups and MLP channels: the sum over each group's members."""
    attn, mlp = layer.self_attn, layer.mlp
    groups = attn.k_proj.out_features // attn.head_dim

    def per_group(weight, dim):
        return _channel_importance(weight, criterion, fisher, dim).view(groups, -1).sum(1)

    heads = (per_group(attn.q_proj.weight, 1) + per_group(attn.k_proj.weight, 1)
             + per_group(attn.v_proj.weight, 1) + per_group(attn.o_proj.weight, 0))
    channels = sum(_channel_importance(w, criterion, fisher, dim)
                   for w, dim in ((mlp.gate_proj.weight, 1), (mlp.up_proj.weight, 1), (mlp.down_proj.weight, 0)))
    return heads, channels


def _top(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the `keep` highest scores, in ascending order."""
    return sorted(torch.topk(scores, keep).indices.tolist()) if keep else []
