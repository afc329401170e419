"""What each method decides, checked against the published rules and by hand computations."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruned_perf.llama.models import build_model
from pruned_perf.llama.plan import PrunePlan
from pruned_perf.pruning import methods
from pruned_perf.pruning.calibration import ByteTokenizer, calibration_batch
from pruned_perf.pruning.evaluate import lm_loss, perplexity
from pruned_perf.pruning.methods import depth, flap, llm_pruner
from pruned_perf.pruning.methods.grads import gradients
from pruned_perf.pruning.surgery import apply


def calib(method, samples=None, vocab=320):
    return calibration_batch(methods.calibration_spec(method, samples=samples), vocab, ByteTokenizer())


def run(model, method, criterion, ratio=0.3, samples=None, vocab=320, **options):
    sizing = methods.size(method, model.config, ratio=ratio, **options)
    calibration = methods.calibrate(method, criterion, methods.calibration_spec(method, samples=samples), vocab,
                                    ByteTokenizer())
    return methods.make_plan(model, method, sizing, "tiny", criterion, calibration, **options)


# --- depth ---------------------------------------------------------------------------------------

def test_plus_rule_protects_first_four_and_last_two_blocks():
    assert depth.candidates(12) == [4, 5, 6, 7, 8, 9]
    assert depth.candidates(12, plus_rule=False) == list(range(12))
    model = build_model("tiny-llama")
    plan = run(model, "depth", "magnitude", ratio=0.5)
    assert len(plan.drop_blocks) == 6 and set(plan.drop_blocks) <= set(range(4, 10))


def test_without_plus_rule_every_block_is_a_candidate():
    model = build_model("tiny-llama")
    with torch.no_grad():  # make block 0 the least important by magnitude
        for p in model.model.layers[0].parameters():
            p.mul_(1e-3)
    assert 0 in run(model, "depth", "magnitude", ratio=0.1, plus_rule=False).drop_blocks
    assert 0 not in run(model, "depth", "magnitude", ratio=0.1).drop_blocks


def test_ppl_score_is_the_perplexity_without_that_block():
    model = build_model("tiny-llama")
    plan = run(model, "depth", "ppl")
    data = calib("depth")
    for block in (4, 7):
        without = apply(copy.deepcopy(model), PrunePlan("depth", "tiny", 12, drop_blocks=[block]))
        assert plan.settings["scores"][str(block)] == pytest.approx(perplexity(without, data), rel=1e-5)
    ranked = sorted(plan.settings["scores"], key=plan.settings["scores"].get)
    assert plan.drop_blocks == sorted(int(b) for b in ranked[:len(plan.drop_blocks)])


def test_taylor_and_magnitude_scores_by_hand():
    model = build_model("tiny-gqa")
    data = calib("depth")
    taylor = run(model, "depth", "taylor").settings["scores"]
    magnitude = run(model, "depth", "magnitude").settings["scores"]
    loss = lm_loss(model, data)
    block = model.model.layers[6]
    grads = torch.autograd.grad(loss, list(block.parameters()))
    by_hand = sum((p * g).abs().sum() for p, g in zip(block.parameters(), grads)).item()
    assert taylor["6"] == pytest.approx(by_hand, rel=1e-4)
    assert magnitude["6"] == pytest.approx(sum(p.abs().sum() for p in block.parameters()).item(), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())  # gradients are freed after scoring


# --- LLM-Pruner ----------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gqa"])
def test_llm_pruner_prunes_the_same_width_in_every_layer_of_its_range(preset):
    model = build_model(preset)
    config = model.config
    plan = run(model, "llm-pruner", "element", ratio=0.6)
    kv_kept, mlp_kept = llm_pruner._widths_for_ratio(config, 0.6)
    assert sorted(plan.keep_heads) == sorted(plan.keep_channels) == list(range(4, 10))
    assert {len(v) for v in plan.keep_heads.values()} == {kv_kept}
    assert {len(v) for v in plan.keep_channels.values()} == {mlp_kept}
    pruned = apply(model, plan)
    for i, layer in enumerate(pruned.model.layers):
        heads = layer.self_attn.q_proj.out_features // config.head_dim
        kv = layer.self_attn.k_proj.out_features // config.head_dim
        expected = kv_kept if 4 <= i < 10 else config.num_key_value_heads
        assert kv == expected and heads == expected * config.num_attention_heads // config.num_key_value_heads


def test_llm_pruner_group_scores_by_hand():
    """Element-wise: a KV group scores sum |W*g| over its q, k, v rows and o columns; a channel over
    its gate and up rows and its down column. Vector-wise takes |sum W*g| per row/column."""
    model = build_model("tiny-gqa")
    data = calib("llm-pruner")
    loss = lm_loss(model, data)
    layer = model.model.layers[5]
    attn, mlp = layer.self_attn, layer.mlp
    mats = [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight,
            mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]
    q, k, v, o, gate, up, down = [(w * g).detach() for w, g in zip(mats, torch.autograd.grad(loss, mats))]
    rows = lambda s, n: s.abs().sum(1).view(n, -1).sum(1)  # noqa: E731
    group_element = rows(q, 2) + rows(k, 2) + rows(v, 2) + o.abs().sum(0).view(2, -1).sum(1)
    channel_vector = gate.sum(1).abs() + up.sum(1).abs() + down.sum(0).abs()

    with gradients(model):
        lm_loss(model, data).backward()
        with torch.no_grad():
            heads, _ = llm_pruner._group_scores(layer, "element", None)
            _, channels = llm_pruner._group_scores(layer, "vector", None)
    torch.testing.assert_close(heads, group_element, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(channels, channel_vector, rtol=1e-4, atol=1e-7)


def test_llm_pruner_reference_rounding():
    from pruned_perf.llama.models import model_config

    assert llm_pruner._widths_for_ratio(model_config("llama-7b"), 0.35) == (21, 7155)
    assert llm_pruner._widths_for_ratio(model_config("llama-3-8b"), 0.35) == (6, 9318)  # whole KV groups


# --- FLAP ----------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), seed=st.integers(0, 10_000))
def test_running_stats_equal_one_pass_mean_and_variance(sizes, seed):
    chunks = [torch.randn(n, 7, generator=torch.Generator().manual_seed(seed + i)) * 3 + 1
              for i, n in enumerate(sizes)]
    stats = flap.RunningStats()
    for chunk in chunks:
        stats.add(chunk)
    everything = torch.cat(chunks)
    torch.testing.assert_close(stats.mean, everything.mean(0), rtol=1e-5, atol=1e-5)
    if len(everything) > 1:
        torch.testing.assert_close(stats.variance, everything.var(0), rtol=1e-4, atol=1e-5)


def test_flap_statistics_are_the_inputs_of_o_proj_and_down_proj():
    model = build_model("tiny-llama")
    data = calib("flap", samples=8)
    stats = flap.collect_stats(model, data)
    seen = []
    hook = model.model.layers[3].mlp.down_proj.register_forward_hook(
        lambda m, args, out: seen.append(args[0].detach().reshape(-1, args[0].shape[-1])) and None)
    with torch.no_grad():
        model.model(input_ids=data, use_cache=False)
    hook.remove()
    torch.testing.assert_close(stats["mlp"][3].mean, seen[0].mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats["mlp"][3].variance, seen[0].var(0), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gqa"])
def test_flap_adaptive_structure_keeps_one_minus_p_of_the_cost(preset):
    model = build_model(preset)
    config = model.config
    ratio = 0.4
    plan = run(model, "flap", "AL-AM", ratio=ratio, samples=32)
    group_cost = flap._group_params(config) / (3 * config.hidden_size)
    kept = sum(len(v) for v in plan.keep_heads.values()) * group_cost + \
        sum(len(v) for v in plan.keep_channels.values())
    total = 12 * (config.num_key_value_heads * group_cost + config.intermediate_size)
    assert abs(kept - (1 - ratio) * total) <= group_cost + 1
    widths = {len(v) for v in plan.keep_channels.values()}
    assert len(widths) > 1  # adaptive: layers keep different widths
    assert plan.bias_compensation and set(plan.channel_means) == {f"{k}.{i}" for k in ("attn", "mlp")
                                                                    for i in range(12)}


def test_flap_uniform_structure_prunes_every_layer_alike():
    model = build_model("tiny-llama")
    plan = run(model, "flap", "UL-UM", ratio=0.3, samples=32)
    assert {len(v) for v in plan.keep_heads.values()} == {4 - int(0.3 * 4)}
    assert len({len(v) for v in plan.keep_channels.values()}) == 1


def test_flap_metric_squares_the_attention_score_and_ranks_by_it():
    model = build_model("tiny-llama")
    stats = flap.collect_stats(model, calib("flap", samples=8))
    attn, mlp = flap._wifv_scores(model, stats)
    o = model.model.layers[2].self_attn.o_proj.weight.detach()
    expected = (stats["attn"][2].variance * o.pow(2).sum(0)) ** 2
    torch.testing.assert_close(attn[2], expected)
    down = model.model.layers[2].mlp.down_proj.weight.detach()
    torch.testing.assert_close(mlp[2], stats["mlp"][2].variance * down.pow(2).sum(0))


def test_flap_without_bias_adds_no_parameters():
    model = build_model("tiny-llama")
    plan = run(model, "flap", "AL-AM", samples=16, bias=False)
    assert not plan.bias_compensation and plan.channel_means is None
    pruned = apply(model, plan)
    assert all(layer.mlp.down_proj.bias is None for layer in pruned.model.layers)


@pytest.mark.parametrize("kind", ["attn", "mlp"])
@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gqa"])
def test_flap_bias_is_the_mean_of_what_the_removed_channels_contributed(preset, kind):
    """The compensation is the best constant stand-in for the removed channels on the calibration data:
    their contribution W[:, removed] x[removed], averaged over every calibration token."""
    model = build_model(preset)
    config = model.config
    data = calib("flap", samples=16)
    plan = run(model, "flap", "UL-UM", ratio=0.5, samples=16)  # every layer loses heads and channels
    kept, total = (plan.keep_heads, config.num_key_value_heads) if kind == "attn" else \
        (plan.keep_channels, config.intermediate_size)
    layer = 5
    assert 0 < len(kept[layer]) < total
    dense_layer = model.model.layers[layer]
    dense_proj = dense_layer.self_attn.o_proj if kind == "attn" else dense_layer.mlp.down_proj
    seen = []
    hook = dense_proj.register_forward_hook(lambda m, args, out: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        model.model(input_ids=data, use_cache=False)
    hook.remove()
    x = torch.cat(seen)
    n_rep = config.num_attention_heads // config.num_key_value_heads
    keep = kept[layer] if kind == "mlp" else \
        [(g * n_rep + r) * config.head_dim + j for g in kept[layer] for r in range(n_rep) for j in range(config.head_dim)]
    removed = torch.ones(x.shape[1], dtype=torch.bool)
    removed[keep] = False
    contribution = x[:, removed] @ dense_proj.weight[:, removed].T  # per token, what pruning takes away
    pruned = apply(copy.deepcopy(model), plan).model.layers[layer]
    bias = pruned.self_attn.o_proj.bias if kind == "attn" else pruned.mlp.down_proj.bias
    torch.testing.assert_close(bias, contribution.mean(0), rtol=1e-4, atol=1e-6)
    # hence the pruned layer's output error on those tokens is smaller with it than without it
    assert (contribution - bias).pow(2).sum() < contribution.pow(2).sum()
