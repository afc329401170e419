"""The README's recipe "adding a method", followed step by step: one module with the method's facts,
one line in the registry, and the suite sizes, prunes and measures a point."""
import types

import torch

from pruned_perf import methods
from pruned_perf.measure import Point, measure
from pruned_perf.plan import PrunePlan
from pruned_perf.sizing import Sizing, count_params, dense_layer_params
from pruned_perf.sweep import make_points, select_variants
from pruned_perf.variants import get_profile, load_variant


def last_block_method() -> types.ModuleType:
    """A toy method written as the README says: it drops the last `ratio` of the Transformer blocks."""
    toy = types.ModuleType("last_block")
    toy.NAME = "last-block"
    toy.CRITERIA = ("position",)
    toy.GRADIENT_CRITERIA = ()
    toy.CALIB = None
    toy.OPTIONS = frozenset()
    toy.DEFAULT_SIZING = {"ratio": 0.25}

    def size(config, ratio=None, target=None):
        drop = max(1, round(ratio * config.num_hidden_layers))
        return Sizing(toy.NAME, {"drop": drop}, count_params(config) - drop * dense_layer_params(config), exact=True)

    def plan(model, calib, sizing, criterion="position"):
        layers = model.config.num_hidden_layers
        return PrunePlan(toy.NAME, source="", num_layers=layers,
                         drop_blocks=list(range(layers - sizing.setting["drop"], layers)))

    toy.size, toy.plan = size, plan
    return toy


def test_a_method_added_as_the_readme_says_is_pruned_and_measured(monkeypatch, tmp_path):
    toy = last_block_method()
    monkeypatch.setitem(methods.METHODS, toy.NAME, toy)  # the one registry line
    profile = get_profile("quick")
    variants = select_variants(profile, ["tiny-llama"], [toy.NAME, "dense"])
    assert [v.method for v in variants] == ["dense", toy.NAME]  # the profile's methods, then the new one
    model, plan = load_variant(variants[1], torch.device("cpu"), torch.float32, cache_dir=tmp_path)
    dense, _ = load_variant(variants[0], torch.device("cpu"), torch.float32)
    assert plan.method == toy.NAME and plan.source == "tiny-llama"
    assert len(model.model.layers) == dense.config.num_hidden_layers - round(0.25 * dense.config.num_hidden_layers)
    assert sum(p.numel() for p in model.parameters()) == toy.size(dense.config, ratio=0.25).params
    [point] = make_points(variants[1:], (8,), (4,), (1,), ("eager",))
    m = measure(model, point, rounds=2, warmup=1)
    assert m.method == toy.NAME and not m.oom and len(m.rounds_s) == 2 and m.latency_s > 0
    assert m.params == toy.size(dense.config, ratio=0.25).params
