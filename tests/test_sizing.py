"""Parameter counts and target sizing, checked against the reference counts (no weights allocated)."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pruned_perf.cli import main
from pruned_perf.core.errors import UserError
from pruned_perf.llama.models import build_model, model_config
from pruned_perf.pruning import methods
from pruned_perf.pruning.sizing import count_params, dense_layer_params, embedding_params, parse_param_count

# (preset, method, flags) -> (expected output fragments, exact parameter count), from methods.md.
REFERENCE = [
    ("llama-7b", "depth", ["--target-params", "4.9B"], "remove 9 of 32 blocks (keep 23)", 4_916_965_376),
    ("vicuna-13b", "depth", ["--target-params", "9.5B"], "remove 11 of 40 blocks (keep 29)", 9_526_615_040),
    ("llama-7b", "depth", ["--ratio", str(6 / 32)], "remove 6 of 32 blocks (keep 26)", 5_524_115_456),
    ("llama-7b", "depth", ["--ratio", str(11 / 32)], "remove 11 of 32 blocks (keep 21)", 4_512_198_656),
    ("vicuna-13b", "depth", ["--ratio", str(8 / 40)], "remove 8 of 40 blocks (keep 32)", 10_478_228_480),
    ("vicuna-13b", "depth", ["--ratio", str(15 / 40)], "remove 15 of 40 blocks (keep 25)", 8_257_797_120),
    # methods.md: layers 4..29 (the half-open range [4, 30)) keep 21 heads and d_ff 7155
    ("llama-7b", "llm-pruner", ["--ratio", "0.35"], "layers 4..29 keep 21 of 32 heads (21 kv), MLP 7155 of 11008",
     4_907_642_880),
    ("llama-7b", "llm-pruner", ["--ratio", "0.25"], "keep 24 of 32 heads (24 kv), MLP 8256 of 11008", 5_422_977_024),
    ("vicuna-13b", "llm-pruner", ["--ratio", "0.35"], "layers 4..37 keep", 9_240_939_520),
]


@pytest.mark.parametrize("preset,method,flags,setting,count", REFERENCE)
def test_size_command_reproduces_reference_counts(capsys, preset, method, flags, setting, count):
    assert main(["size", "--model", preset, "--method", method, *flags]) == 0
    out = capsys.readouterr().out
    assert setting in out
    assert f"exactly {count:,} parameters" in out


@pytest.mark.parametrize("preset,count", [("llama-7b", 6_738_415_616), ("vicuna-13b", 13_015_864_320),
                                          ("llama-3-8b", 8_030_261_248)])
def test_info_json_reports_reference_dense_counts(capsys, preset, count):
    assert main(["info", preset, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == count
    assert info["layers"] == model_config(preset).num_hidden_layers
    assert {s["heads"] for s in info["per_layer"]} == {model_config(preset).num_attention_heads}


def test_block_formula_matches_methods_md():
    assert dense_layer_params(model_config("llama-7b")) == 202_383_360
    assert dense_layer_params(model_config("vicuna-13b")) == 317_204_480


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gqa"])
def test_formula_equals_counted_parameters_of_a_built_model(preset):
    model = build_model(preset)
    assert count_params(model.config) == sum(p.numel() for p in model.parameters())


def test_flap_size_is_expected_not_exact(capsys):
    assert main(["size", "--model", "llama-7b", "--method", "flap", "--ratio", "0.28"]) == 0
    out = capsys.readouterr().out
    assert "ratio=0.28" in out and "about" in out and "prune` reports it" in out


def _reachable(method, config):
    """Targets every method can reach: between its smallest model and the dense one."""
    if method == "llm-pruner":
        return methods.size("llm-pruner", config, ratio=0.999).params, count_params(config) - 1
    return embedding_params(config) * 2, count_params(config) - 1


@settings(max_examples=60, deadline=None)
@given(preset=st.sampled_from(["llama-7b", "vicuna-13b", "llama-3-8b"]),
       method=st.sampled_from(["llm-pruner", "flap"]), fraction=st.floats(0.05, 0.95))
def test_any_target_lands_within_half_a_percent(preset, method, fraction):
    config = model_config(preset)
    low, high = _reachable(method, config)
    target = int(low + fraction * (high - low))
    sizing = methods.size(method, config, target=target)
    assert abs(sizing.params - target) <= 0.005 * target


@settings(max_examples=40, deadline=None)
@given(preset=st.sampled_from(["llama-7b", "vicuna-13b"]), blocks=st.floats(1.0, 20.0))
def test_depth_target_picks_the_closest_block_count(preset, blocks):
    config = model_config(preset)
    target = int(count_params(config) - blocks * dense_layer_params(config))
    sizing = methods.size("depth", config, target=target)
    assert sizing.setting["blocks"] == round(blocks)
    assert abs(sizing.params - target) <= dense_layer_params(config) / 2


@pytest.mark.parametrize("text,value", [("4.9B", 4_900_000_000), ("4900M", 4_900_000_000),
                                        ("4,916,965,376", 4_916_965_376), ("4.9e9", 4_900_000_000),
                                        ("750k", 750_000)])
def test_parse_param_count(text, value):
    assert parse_param_count(text) == value


@pytest.mark.parametrize("text", ["4.9X", "lots", "-3B", "0"])
def test_parse_param_count_rejects_nonsense(text):
    with pytest.raises(UserError, match="parameter count"):
        parse_param_count(text)


@pytest.mark.parametrize("argv,message", [
    (["--model", "llama-9b", "--method", "depth", "--ratio", "0.3"], "valid presets: llama-7b"),
    (["--model", "llama-7b", "--method", "sparsegpt", "--ratio", "0.3"], "valid choices: dense, depth, flap"),
    (["--model", "llama-7b", "--method", "depth", "--ratio", "1.2"], "strictly between 0 and 1"),
    (["--model", "llama-7b", "--method", "depth", "--ratio", "0"], "strictly between 0 and 1"),
    (["--model", "llama-7b", "--method", "flap", "--target-params", "8B"], "not smaller than the model"),
    (["--model", "llama-7b", "--method", "flap", "--target-params", "0.2B"], "embeddings"),
    (["--model", "llama-7b", "--method", "llm-pruner", "--target-params", "1.2B"], "smallest model"),
    (["--model", "llama-7b", "--method", "depth", "--target-params", "1B"], "26 of 32 are candidates"),
    (["--model", "llama-7b", "--method", "depth"], "exactly one of a ratio or a target"),
    (["--model", "llama-7b", "--method", "llm-pruner", "--ratio", "0.3", "--layers", "4:40"], "not within 0:32"),
    # an option the method does not take is refused, not ignored
    (["--model", "llama-7b", "--method", "dense", "--ratio", "0.3"],
     "--ratio does not apply to method dense; methods that take it: depth, flap, llm-pruner"),
    (["--model", "llama-7b", "--method", "dense", "--target-params", "4.9B"],
     "--target-params does not apply to method dense"),
    (["--model", "llama-7b", "--method", "depth", "--ratio", "0.3", "--layers", "4:30"],
     "--layers does not apply to method depth; methods that take it: llm-pruner"),
    (["--model", "llama-7b", "--method", "flap", "--ratio", "0.3", "--layers", "4:30"],
     "--layers does not apply to method flap; methods that take it: llm-pruner"),
    (["--model", "llama-7b", "--method", "llm-pruner", "--ratio", "0.3", "--no-plus-rule"],
     "--no-plus-rule does not apply to method llm-pruner; methods that take it: depth"),
    (["--model", "llama-7b", "--method", "depth", "--ratio", "0.3", "--no-bias"],
     "--no-bias does not apply to method depth; methods that take it: flap"),
])
def test_bad_sizing_input_is_one_clear_error_and_exit_2(capsys, argv, message):
    assert main(["size", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_options_a_method_takes_are_accepted(capsys):
    for argv in (["--method", "depth", "--ratio", "0.3", "--no-plus-rule"],
                 ["--method", "llm-pruner", "--ratio", "0.3", "--layers", "2:30"],
                 ["--method", "flap", "--ratio", "0.3", "--no-bias"]):
        assert main(["size", "--model", "llama-7b", *argv]) == 0
    assert "layers 2..29 keep" in capsys.readouterr().out


def test_describe_without_a_config_still_says_removed_and_closed_ranges():
    config = model_config("llama-7b")
    assert methods.size("depth", config, ratio=0.3).describe().startswith("depth: remove 10 blocks ->")
    assert "layers 4..29 keep 21 heads (21 kv), MLP 7155" in methods.size("llm-pruner", config, ratio=0.35).describe()
    assert methods.size("dense", config).describe().startswith("dense: no pruning")
