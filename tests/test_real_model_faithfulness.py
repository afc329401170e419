"""The methods on real weights (smollm2-135m, about 100M of its 134.5M parameters): does each one's
criterion pick better than chance, and does FLAP behave as published?

Slow: they need the fetched model (one fetch per machine, see test_real_model.py) and plan it three
times, with the quick profile's settings and into the perf suite's own plan cache (--pp-cache-dir,
default .pp-cache): only the first of the tests pays for planning (about 2.5 min on a 2-core CPU),
and a later `pytest perf/` from the same directory (as in .ci/run) reuses the plans. Quality is the
held-out perplexity on 1023 tokens (one window of 1024): enough to separate the choices below by a wide
margin, at about 5 s per model.
"""
import copy
import random
import statistics

import pytest
import torch

from pruned_perf.bench.pytest_plugin import plan_cache_dir
from pruned_perf.llama.models import build_model, load_tokenizer
from pruned_perf.llama.plan import PrunePlan
from pruned_perf.pruning.evaluate import heldout_perplexity
from pruned_perf.pruning.methods.depth import candidates
from pruned_perf.pruning.surgery import apply
from pruned_perf.pruning.variants import PROFILES, load_variant

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
CPU = torch.device("cpu")
RANDOM_CHOICES = 3  # random selections per method: each costs one perplexity (~5 s)


def _quick_variant(method: str):
    """The quick profile's variant: the same settings the perf suite measures."""
    return next(v for v in PROFILES["quick"].variants if (v.model, v.method) == (MODEL, method))


@pytest.fixture(scope="module")
def dense():
    return build_model(MODEL), load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def plan_cache(request):
    return plan_cache_dir(request.config)


@pytest.fixture(scope="module")
def score(dense):
    """Held-out perplexity of the dense model pruned by a plan (on a copy: apply edits in place)."""
    model, tokenizer = dense

    def ppl(plan: PrunePlan | None) -> float:
        pruned = apply(copy.deepcopy(model), plan) if plan is not None else model
        return heldout_perplexity(pruned, tokenizer, max_tokens=1024)[0]

    return ppl


def _plan(method: str, plan_cache) -> PrunePlan:
    _, plan = load_variant(_quick_variant(method), CPU, torch.float32, plan_cache)
    return plan


def test_depth_ppl_criterion_beats_random_blocks(score, plan_cache):
    plan = _plan("depth", plan_cache)
    blocks = len(plan.drop_blocks)
    rng = random.Random(0)
    pool = candidates(plan.num_layers)  # the "+" rule's candidates, as the criterion had
    chosen = score(plan)
    rand = [score(PrunePlan("depth", MODEL, plan.num_layers, drop_blocks=sorted(rng.sample(pool, blocks))))
            for _ in range(RANDOM_CHOICES)]
    print(f"depth ppl criterion, {blocks} blocks {plan.drop_blocks}: {chosen:.2f}; random: "
          f"{', '.join(f'{r:.2f}' for r in rand)}; dense {score(None):.2f}")
    assert chosen <= statistics.mean(rand)


def _random_widths(plan: PrunePlan, config, rng: random.Random) -> PrunePlan:
    """The same per-layer shapes as `plan`, with heads and channels drawn at random."""
    heads = {i: sorted(rng.sample(range(config.num_key_value_heads), len(kept))) for i, kept in plan.keep_heads.items()}
    channels = {i: sorted(rng.sample(range(config.intermediate_size), len(kept)))
                for i, kept in plan.keep_channels.items()}
    return PrunePlan(plan.method, MODEL, plan.num_layers, keep_heads=heads, keep_channels=channels)


def test_llm_pruner_taylor_beats_random_groups_of_the_same_shapes(dense, score, plan_cache):
    plan = _plan("llm-pruner", plan_cache)
    rng = random.Random(0)
    chosen = score(plan)
    rand = [score(_random_widths(plan, dense[0].config, rng)) for _ in range(RANDOM_CHOICES)]
    print(f"llm-pruner taylor ({plan.settings['kv_heads']} kv heads, mlp {plan.settings['mlp']} in layers "
          f"{plan.settings['layers']}): {chosen:.2f}; random: {', '.join(f'{r:.2f}' for r in rand)}")
    assert chosen < min(rand)


def test_flap_on_real_weights_removes_whole_heads_unevenly_and_its_bias_helps(score, plan_cache):
    plan = _plan("flap", plan_cache)
    kv_heads = [len(plan.keep_heads[i]) for i in range(plan.num_layers)]
    mlp = [len(plan.keep_channels[i]) for i in range(plan.num_layers)]
    with_bias, without = score(plan), score(plan.without_compensation())
    print(f"flap kv heads per layer {kv_heads}; mlp {min(mlp)}..{max(mlp)}; "
          f"ppl with bias {with_bias:.2f}, without {without:.2f}")
    assert any(k < 3 for k in kv_heads) and len(set(kv_heads)) > 1  # whole heads, not in every layer alike
    assert len(set(mlp)) > 1
    assert plan.bias_compensation and with_bias < without
