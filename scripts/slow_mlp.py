"""A genuinely slower code path for A/B trials: every LLaMA MLP runs its forward 4 times (3 results
thrown away), as a careless refactor might; `PP_SLOW_MLP_TIMES` sets another count. Importing it patches
LlamaMLP. scripts/verdict_trials.py (kind `slow-mlp`) loads it into the second run with `-p slow_mlp`
and PYTHONPATH=scripts."""
import os

from transformers.models.llama import modeling_llama

_forward = modeling_llama.LlamaMLP.forward
TIMES = int(os.environ.get("PP_SLOW_MLP_TIMES", "4"))


def _repeated(self, x):
    for _ in range(TIMES - 1):
        _forward(self, x)
    return _forward(self, x)


modeling_llama.LlamaMLP.forward = _repeated
