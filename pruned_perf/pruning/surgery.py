"""apply(model, plan): the one place that cuts a model's weights to a plan.

Saving and loading a pruned model is the checkpoint format's job (`pruned_perf.llama.checkpoint`).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaForCausalLM

from pruned_perf.llama.checkpoint import drop_blocks, meta_linear
from pruned_perf.llama.headless import HeadlessAttention
from pruned_perf.llama.plan import PrunePlan, validate


@torch.no_grad()  # a pruned model is for inference; slicing must not record a graph
def apply(model: LlamaForCausalLM, plan: PrunePlan) -> LlamaForCausalLM:
    """Slice heads and channels, add compensation biases, drop blocks. In place; returns `model`."""
    validate(plan, model.config)
    means = plan.channel_means or {}
    layers = model.model.layers
    for i in plan.kept_layers():
        if i in plan.keep_heads or plan.bias_compensation:
            _prune_attention(layers[i], plan.keep_heads.get(i), means.get(f"attn.{i}"), plan.bias_compensation)
        if i in plan.keep_channels or plan.bias_compensation:
            _prune_mlp(layers[i], plan.keep_channels.get(i), means.get(f"mlp.{i}"), plan.bias_compensation)
    drop_blocks(model, plan.drop_blocks)
    return model


def _span_index(units, width: int, device) -> torch.Tensor:
    """Row indices of the kept units, each `width` consecutive rows."""
    idx = [u * width + j for u in units for j in range(width)]
    return torch.tensor(idx, dtype=torch.long, device=device)


def _complement(keep: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool, device=keep.device)
    mask[keep] = False
    return mask


def _compensation(weight: torch.Tensor, keep: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """FLAP's bias: what the removed input channels contributed on average, W[:, removed] @ mean[removed]."""
    if mean is None:  # no statistics (a plan read back from disk): the bias starts at zero
        return torch.zeros(weight.shape[0], device=weight.device, dtype=weight.dtype)
    removed = _complement(keep, weight.shape[1])
    mean = mean.to(device=weight.device, dtype=torch.float32)
    return (weight.float() @ (mean * removed)).to(weight.dtype)


def _new_linear(weight: torch.Tensor, bias: torch.Tensor | None, requires_grad: bool) -> nn.Linear:
    # Built on meta, then given the sliced tensors: no throw-away matrix is allocated or initialised.
    linear = meta_linear(weight.shape[1], weight.shape[0], bias is not None)
    linear.weight = nn.Parameter(weight.detach().contiguous(), requires_grad=requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach().contiguous(), requires_grad=requires_grad)
    return linear


def _slice_rows(linear: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    bias = linear.bias[rows] if linear.bias is not None else None
    return _new_linear(linear.weight[rows], bias, linear.weight.requires_grad)


def _slice_cols(linear: nn.Linear, cols: torch.Tensor, extra_bias: torch.Tensor | None) -> nn.Linear:
    bias = linear.bias
    if extra_bias is not None:
        bias = extra_bias if bias is None else bias + extra_bias
    return _new_linear(linear.weight[:, cols], bias, linear.weight.requires_grad)


def _prune_attention(layer, keep_kv, mean, bias: bool) -> None:
    attn = layer.self_attn
    head_dim, n_rep = attn.head_dim, attn.num_key_value_groups
    o_proj = attn.o_proj
    device = o_proj.weight.device
    if keep_kv is None:
        keep_kv = range(attn.k_proj.out_features // head_dim)
    q_rows = _span_index(keep_kv, n_rep * head_dim, device)
    extra = _compensation(o_proj.weight, q_rows, mean) if bias else None
    if len(keep_kv) == 0:
        out_bias = o_proj.bias if extra is None else (extra if o_proj.bias is None else o_proj.bias + extra)
        headless = HeadlessAttention(o_proj.out_features, head_dim, attn.layer_idx, bias=out_bias is not None,
                                     device=device, dtype=o_proj.weight.dtype)
        if out_bias is not None:
            headless.bias = nn.Parameter(out_bias.detach().clone(), requires_grad=o_proj.weight.requires_grad)
        layer.self_attn = headless
        return
    kv_rows = _span_index(keep_kv, head_dim, device)
    attn.q_proj = _slice_rows(attn.q_proj, q_rows)
    attn.k_proj = _slice_rows(attn.k_proj, kv_rows)
    attn.v_proj = _slice_rows(attn.v_proj, kv_rows)
    attn.o_proj = _slice_cols(o_proj, q_rows, extra)


def _prune_mlp(layer, keep, mean, bias: bool) -> None:
    mlp = layer.mlp
    device = mlp.down_proj.weight.device
    keep = torch.arange(mlp.up_proj.out_features, device=device) if keep is None else \
        torch.tensor(keep, dtype=torch.long, device=device)
    extra = _compensation(mlp.down_proj.weight, keep, mean) if bias else None
    # Zero channels is fine for nn.Linear: the MLP then outputs its bias.
    mlp.gate_proj = _slice_rows(mlp.gate_proj, keep)
    mlp.up_proj = _slice_rows(mlp.up_proj, keep)
    mlp.down_proj = _slice_cols(mlp.down_proj, keep, extra)
    mlp.intermediate_size = len(keep)
