import statistics

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pruned_perf.llama import models
from pruned_perf.bench import overhead
from pruned_perf.cli import main as cli_main
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import Point


def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def test_check_overhead_returns_medians_and_ratio(model):
    result = overhead.check_overhead(model, Point("tiny", "dense", 4, 4, 1), rounds=3)
    assert len(result["raw_rounds_s"]) == len(result["core_rounds_s"]) == 3
    pairs = [core / raw for core, raw in zip(result["core_rounds_s"], result["raw_rounds_s"])]
    assert result["ratio"] == pytest.approx(statistics.median(pairs))
    assert result["raw_median_s"] == statistics.median(result["raw_rounds_s"])
    assert result["core_median_s"] == statistics.median(result["core_rounds_s"])
    assert 0 < result["raw_median_s"] and 0 < result["core_median_s"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_check_catches_a_slow_timed_path(model, monkeypatch):
    real = model.generate

    def slower(**kwargs):
        # only measure's path asks for dict-less output explicitly; a real regression could be anything
        if "return_dict_in_generate" in kwargs:
            # twice the work; the extra call feeds no token clock, which would count its tokens too
            real(**{k: v for k, v in kwargs.items() if k != "streamer"})
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", slower)
    result = overhead.check_overhead(model, Point("tiny", "dense", 4, 8, 1), rounds=4)
    assert not overhead.within_target(result["ratio"])
    assert result["ratio"] > 1.5


def test_within_target_edges():
    assert overhead.within_target(1.0) and overhead.within_target(1.029) and overhead.within_target(0.971)
    assert not overhead.within_target(1.031) and not overhead.within_target(0.96)


def test_main_prints_ratio_and_exits_by_target(model, monkeypatch, capsys):
    built = []

    def build(name, device, dtype):
        built.append((name, device, dtype))
        return model

    monkeypatch.setattr(models, "build_model", build)
    monkeypatch.setattr(overhead, "check_overhead", lambda m, p, rounds: {
        "ratio": 1.004, "raw_median_s": 0.05, "core_median_s": 0.0502})
    argv = ["overhead", "--model", "tiny", "--device", "cpu", "--rounds", "2"]
    assert cli_main(argv) == 0
    assert built == [("tiny", torch.device("cpu"), torch.float32)]
    assert "measure/raw = 1.004 (target within 3%)" in capsys.readouterr().out
    monkeypatch.setattr(overhead, "check_overhead", lambda m, p, rounds: {
        "ratio": 1.08, "raw_median_s": 0.05, "core_median_s": 0.054})
    assert cli_main(argv) == 1
    assert "measure/raw = 1.080" in capsys.readouterr().out


def test_main_runs_for_real_with_a_built_model(model, monkeypatch, capsys):
    monkeypatch.setattr(models, "build_model", lambda name, device, dtype: model)
    code = cli_main(["overhead", "--model", "tiny", "--device", "cpu", "--input-tokens", "4", "--output-tokens", "4",
                     "--rounds", "2"])
    printed = capsys.readouterr().out
    ratio = float(printed.split("measure/raw = ", 1)[1].split()[0])
    assert code == (0 if overhead.within_target(ratio) else 1)  # the exit code follows the printed figure
    assert "tiny-dense-in4-out4-M1-eager on cpu" in printed


def test_run_takes_typed_arguments_without_a_command_line(model, monkeypatch, capsys):
    monkeypatch.setattr(models, "build_model", lambda name, device, dtype: model)
    monkeypatch.setattr(overhead, "check_overhead", lambda m, p, rounds: {
        "ratio": 1.2, "raw_median_s": 0.05, "core_median_s": 0.06})
    args = overhead.OverheadArgs("tiny", device="cpu", input_tokens=4, output_tokens=4, rounds=2)
    assert overhead.run(args) == 1  # beyond the target
    assert "2 rounds each, tiny-dense-in4-out4-M1-eager on cpu" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--input-tokens", "5000"], "--input-tokens 5000 + --output-tokens 128 = 5128 tokens do not fit the model's "
                                 "1024 positions (max_position_embeddings)"),
    (["--input-tokens", "1000", "--output-tokens", "25"], "= 1025 tokens do not fit"),
    (["--backend", "warp"], "'warp'; valid choices: eager, static"),
    (["--dtype", "int8"], "'int8'; valid choices: auto, bfloat16, float16, float32"),
])
def test_bad_overhead_input_is_one_error_line_and_exit_2(capsys, argv, message):
    assert cli_main(["overhead", "--model", "tiny-llama", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_check_overhead_refuses_zero_rounds(model):
    with pytest.raises(UserError, match="at least 1"):
        overhead.check_overhead(model, Point("tiny", "dense", 4, 4, 1), rounds=0)
