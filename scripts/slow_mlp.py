"""A genuinely slower code path for A/B trials: every LLaMA MLP runs its forward 4 times (3 results
thrown away), as a careless refactor might. scripts/verdict_trials.py (kind `slow-mlp`) loads it into
the second run with `-p slow_mlp` and PYTHONPATH=scripts."""
from transformers.models.llama import modeling_llama

_forward = modeling_llama.LlamaMLP.forward
TIMES = 4


def _repeated(self, x):
    for _ in range(TIMES - 1):
        _forward(self, x)
    return _forward(self, x)


modeling_llama.LlamaMLP.forward = _repeated
