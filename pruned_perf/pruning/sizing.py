"""Parameter counts from shapes, without weights, and the shapes a model actually has."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pruned_perf.core.errors import UserError
from pruned_perf.core.formatting import format_params
from pruned_perf.llama.plan import plan_shapes

if TYPE_CHECKING:  # sizing is pure arithmetic: it imports without torch
    from torch import nn


@dataclass(frozen=True)
class Sizing:
    """The setting a method will prune with, and the parameter count it gives.

    `exact` is False where the count depends on what the method finds (FLAP's adaptive structure):
    `params` is then the expected count, and the plan gives the achieved one.
    """

    method: str
    setting: dict
    params: int
    exact: bool

    def describe(self, config=None) -> str:
        """One line, e.g. "depth: remove 9 of 32 blocks (keep 23) -> exactly 4,916,965,376 parameters (4.92B)";
        `config` (the source model's) adds the totals that the counts are out of."""
        kind = "exactly" if self.exact else "about"
        setting = describe_setting(self.setting, config)
        return f"{self.method}: {setting} -> {kind} {self.params:,} parameters ({format_params(self.params)})"


def layer_span(first: int, last: int) -> str:
    """Layers first..last, both included: "layer 4" or "layers 4..29"."""
    return f"layer {first}" if first == last else f"layers {first}..{last}"


def describe_setting(setting: dict, config=None) -> str:
    """A method's setting in words: how many blocks go and how many stay; which layers keep which widths
    (a method's `layers` is the half-open range [start, end), shown as the closed range start..end-1)."""
    rest = dict(setting)
    parts = []
    if "blocks" in rest:
        parts.append(_blocks_words(rest.pop("blocks"), config))
    if "layers" in rest:
        widths = {k: rest.pop(k) for k in ("layers", "heads", "kv_heads", "mlp")}
        parts.append(_widths_words(**widths, config=config))
    parts += [f"{k}={v}" for k, v in rest.items()]
    return ", ".join(parts) or "no pruning"


def _blocks_words(blocks: int, config=None) -> str:
    if config is None:
        return f"remove {blocks} blocks"
    total = config.num_hidden_layers
    return f"remove {blocks} of {total} blocks (keep {total - blocks})"


def _widths_words(layers, heads: int, kv_heads: int, mlp: int, config=None) -> str:
    start, end = layers
    of_heads = f" of {config.num_attention_heads}" if config is not None else ""
    of_mlp = f" of {config.intermediate_size}" if config is not None else ""
    return f"{layer_span(start, end - 1)} keep {heads}{of_heads} heads ({kv_heads} kv), MLP {mlp}{of_mlp}"


def layer_shapes(model: nn.Module) -> list[dict]:
    """Per decoder layer: query heads, key/value heads and MLP width, read off the modules."""
    shapes = []
    for layer in model.model.layers:
        attn = layer.self_attn
        q_proj = getattr(attn, "q_proj", None)  # a layer pruned to zero heads has no projections
        heads = q_proj.out_features // attn.head_dim if q_proj is not None else 0
        kv_heads = attn.k_proj.out_features // attn.head_dim if q_proj is not None else 0
        shapes.append({"heads": heads, "kv_heads": kv_heads, "mlp": layer.mlp.up_proj.out_features})
    return shapes


def layer_params(config, heads: int, kv_heads: int, mlp: int, compensated: bool = False) -> int:
    """Parameters of one decoder layer with the given widths (attention + MLP + two RMSNorms)."""
    h, d = config.hidden_size, config.head_dim
    attn = 0
    if kv_heads:
        attn = 2 * h * heads * d + 2 * h * kv_heads * d
        if config.attention_bias:
            attn += heads * d + 2 * kv_heads * d
    if config.attention_bias or compensated:  # o_proj bias, kept even by a headless layer
        attn += h
    ffn = 3 * h * mlp
    if config.mlp_bias:
        ffn += 2 * mlp
    if config.mlp_bias or compensated:
        ffn += h
    return attn + ffn + 2 * h


def dense_layer_params(config) -> int:
    return layer_params(config, config.num_attention_heads, config.num_key_value_heads,
                        config.intermediate_size)


def embedding_params(config) -> int:
    """Everything outside the decoder layers: embeddings, lm_head (unless tied), final norm."""
    vocab_params = config.vocab_size * config.hidden_size
    return vocab_params * (1 if config.tie_word_embeddings else 2) + config.hidden_size


def count_params(config, plan=None) -> int:
    """Exact parameter count of `config`'s model after `plan`, from shapes alone."""
    compensated = bool(plan and plan.bias_compensation)
    layers = sum(layer_params(config, s["heads"], s["kv_heads"], s["mlp"], compensated)
                 for s in plan_shapes(config, plan))
    return embedding_params(config) + layers


_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_param_count(text: str) -> int:
    """'4.9B', '4900M', '4,916,965,376' or '4.9e9' -> an integer count."""
    raw = str(text).strip().replace(",", "").replace("_", "")
    suffix = raw[-1:].upper() if raw[-1:].isalpha() and raw[-1:].upper() in _SUFFIXES else ""
    number = raw[:-1] if suffix else raw
    try:
        value = float(number) * _SUFFIXES[suffix]
    except ValueError:
        raise UserError(f"cannot read parameter count {text!r}; write e.g. 4.9B, 4900M or 4916965376") from None
    if not value > 0:
        raise UserError(f"parameter count must be positive, got {text!r}")
    return int(round(value))


def check_target(config, target: int) -> None:
    """A target must lie between the embeddings alone and the whole model."""
    dense, floor = count_params(config), embedding_params(config)
    if target >= dense:
        raise UserError(f"target {target:,} parameters is not smaller than the model ({dense:,})")
    if target <= floor:
        raise UserError(f"target {target:,} parameters is not larger than the model's embeddings and "
                        f"head alone ({floor:,}); nothing can reach it")


def check_ratio(ratio: float) -> None:
    if not 0 < ratio < 1:
        raise UserError(f"ratio must lie strictly between 0 and 1, got {ratio}")
