"""Language-model loss and perplexity on token windows (used by the depth `ppl` criterion and tests)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def lm_loss(model, ids: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy over every predicted token of `ids` [batch, seq], in float32."""
    ids = ids.to(model.device)
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction=reduction)


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, batch_size: int = 16) -> float:
    """exp of the mean next-token loss, pooled over all predicted tokens of all windows."""
    total, count = 0.0, 0
    for chunk in ids.split(batch_size):
        total += lm_loss(model, chunk, reduction="sum").item()
        count += chunk.shape[0] * (chunk.shape[1] - 1)
    return math.exp(total / count)
