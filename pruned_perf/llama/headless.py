"""Modules a pruned LLaMA holds where a stock LLaMA module cannot have the pruned shape (cut by
pruning.surgery.apply, rebuilt by checkpoint.load_pruned)."""
from __future__ import annotations

import torch
from torch import nn


class HeadlessAttention(nn.Module):
    """Self-attention with every head removed: it outputs its bias (FLAP's compensation) or zeros.

    It still writes an empty (0-head) entry into the KV cache, so every cache layer advances in step:
    transformers reads the sequence length off cache layer 0, which may be this one.
    """

    def __init__(self, hidden_size: int, head_dim: int, layer_idx: int, bias: bool,
                 device=None, dtype=None):
        super().__init__()
        self.head_dim = head_dim
        self.layer_idx = layer_idx
        self.bias = nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype)) if bias else None

    def forward(self, hidden_states: torch.Tensor, *args, cache=None, past_key_values=None, **kwargs):
        cache = cache if cache is not None else past_key_values  # renamed in transformers 5.2x
        if cache is not None:
            batch, seq_len = hidden_states.shape[:2]
            empty = hidden_states.new_zeros(batch, 0, seq_len, self.head_dim)
            cache.update(empty, empty, self.layer_idx)
        out = torch.zeros_like(hidden_states)
        if self.bias is not None:
            out = out + self.bias
        return out, None

    def extra_repr(self) -> str:
        return f"heads=0, bias={self.bias is not None}, layer_idx={self.layer_idx}"
