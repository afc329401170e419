"""Language-model loss and perplexity: on token windows (the depth `ppl` criterion, tests) and on a
held-out text that calibration never sees (the quality of a pruned model with a real tokenizer)."""
from __future__ import annotations

import ast
import importlib
import math
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from pruned_perf.core.errors import UserError

# The held-out text: the docstrings of these standard-library modules, in source order. Calibration
# (calibration.builtin_text) draws random windows from anywhere in the pydoc topics, so no part of that
# text is unseen; these docstrings are a different text that also ships with every Python (a test checks
# that none of their lines occurs in the topics). Read from the source files, so `python -OO` does not
# empty them; like the topics, they change a little between Python versions (the source names it).
HELDOUT_MODULES = ("logging", "subprocess", "argparse", "json", "textwrap")


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


def _docstrings(module_name: str) -> list[str]:
    path = getattr(importlib.import_module(module_name), "__file__", None)
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (TypeError, OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise UserError(f"held-out text: cannot read the source of {module_name} ({path}): {exc}") from exc
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, kinds)), key=lambda n: getattr(n, "lineno", 0))
    return [doc for doc in map(ast.get_docstring, nodes) if doc]


def heldout_text() -> str:
    """English prose disjoint from the calibration text (see HELDOUT_MODULES)."""
    return "\n\n".join(doc for name in HELDOUT_MODULES for doc in _docstrings(name))


def heldout_source() -> str:
    return f"docstrings of the Python {platform.python_version()} modules {', '.join(HELDOUT_MODULES)}"


@torch.no_grad()
def heldout_perplexity(model, tokenizer, max_tokens: int = 4096, seq_len: int = 1024,
                       batch_size: int = 1) -> tuple[float, str, int]:
    """Perplexity on the held-out text: its first `max_tokens` tokens as consecutive, non-overlapping
    windows of `seq_len` (whole windows only). Returns (perplexity, where the text came from, number of
    tokens scored, i.e. predicted). One window at a time by default: a 49k-word vocabulary makes the
    float32 logits of one 1024-token window 200 MB."""
    if tokenizer is None:
        raise UserError("held-out perplexity needs a tokenizer; this model has none (a random-weight preset)")
    ids = torch.as_tensor(tokenizer.encode(heldout_text())[:max_tokens], dtype=torch.long)
    windows = ids.numel() // seq_len
    if windows < 1 or seq_len < 2:
        raise UserError(f"held-out text has {ids.numel()} tokens (max_tokens={max_tokens}); "
                        f"need a whole window of seq_len={seq_len} >= 2")
    ppl = perplexity(model, ids[:windows * seq_len].view(windows, seq_len), batch_size)
    source = f"{heldout_source()}: first {windows * seq_len} tokens, {windows} windows of {seq_len}"
    return ppl, source, windows * (seq_len - 1)
