"""A tiny LLaMA trained on the built-in text: real weights for the faithfulness tests (about a minute)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from pruned_perf.models import build_model
from pruned_perf.pruning.calibration import ByteTokenizer, CalibSpec, split_builtin_text, token_windows

RECIPE = {"preset": "tiny-llama", "steps": 200, "batch": 16, "seq_len": 128, "lr": 3e-3, "seed": 0}


def recipe_key() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]


def train(out_dir: Path) -> None:
    """AdamW with a one-cycle schedule on random windows of the training part of the text."""
    torch.manual_seed(RECIPE["seed"])
    train_text, _ = split_builtin_text()
    ids = torch.tensor(ByteTokenizer().encode(train_text))
    model = build_model(RECIPE["preset"], seed=RECIPE["seed"]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=RECIPE["lr"], total_steps=RECIPE["steps"],
                                                   pct_start=0.1)
    generator = torch.Generator().manual_seed(RECIPE["seed"])
    seq_len = RECIPE["seq_len"]
    for _ in range(RECIPE["steps"]):
        starts = torch.randint(0, len(ids) - seq_len, (RECIPE["batch"],), generator=generator)
        batch = torch.stack([ids[s:s + seq_len] for s in starts.tolist()])
        logits = model(input_ids=batch).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval().save_pretrained(out_dir)


def load_trained(cache_root: Path) -> LlamaForCausalLM:
    """The trained model, from the cache when this recipe was trained before."""
    out_dir = cache_root / f"tiny-llama-trained-{recipe_key()}"
    if not (out_dir / "config.json").is_file():
        tmp = cache_root / f".{out_dir.name}.tmp"
        train(tmp)
        tmp.rename(out_dir)
    return LlamaForCausalLM.from_pretrained(out_dir).eval()


def heldout_windows(samples: int = 32, seq_len: int = 128) -> torch.Tensor:
    """Evaluation windows from the held-out tail of the built-in text (never trained on)."""
    _, heldout = split_builtin_text()
    return token_windows(ByteTokenizer().encode(heldout), CalibSpec(samples, seq_len, seed=1))
