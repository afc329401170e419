"""`pruned-perf prune` and `info` end to end, and the errors a user can cause."""
import json

import pytest
import torch

from pruned_perf.llama.checkpoint import save_pruned
from pruned_perf.cli import main
from pruned_perf.llama.models import build_model
from pruned_perf.llama.plan import PrunePlan
from pruned_perf.pruning.sizing import count_params
from pruned_perf.pruning.surgery import apply


def test_prune_writes_weights_plan_and_config_that_info_and_load_read(tmp_path, capsys):
    out = tmp_path / "tiny-depth"
    assert main(["prune", "--model", "tiny-llama", "--method", "depth", "--criterion", "magnitude",
                 "--ratio", "0.3", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "plan.json"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["method"] == "depth" and len(plan["drop_blocks"]) == 4 and plan["source"] == "tiny-llama"
    model = build_model(str(out))
    counted = sum(p.numel() for p in model.parameters())
    assert f"achieved: {counted:,} parameters" in printed
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == counted and info["layers"] == 8 and info["method"] == "depth"


def test_prune_flap_records_calibration_and_loads_with_biases(tmp_path, capsys):
    out = tmp_path / "tiny-flap"
    assert main(["prune", "--model", "tiny-gqa", "--method", "flap", "--ratio", "0.3", "--calib-samples", "16",
                 "--device", "cpu", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["settings"]["calibration"] == {"source": "builtin", "samples": 16, "seq_len": 128, "seed": 0}
    model = build_model(str(out))
    assert all(layer.mlp.down_proj.bias is not None for layer in model.model.layers)
    ids = torch.randint(3, 300, (1, 6))
    assert model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0).shape == (1, 9)


@pytest.mark.parametrize("argv,message", [
    (["--model", "tiny-llama", "--method", "depth", "--ratio", "0.3", "--criterion", "fisher"],
     "valid choices: magnitude, ppl, taylor"),
    (["--model", "tiny-llama", "--method", "flap", "--ratio", "0.3", "--dtype", "int4"],
     "valid choices: bfloat16, float16, float32"),
    (["--model", "tiny-llama", "--method", "flap", "--ratio", "0.3", "--device", "tpu"], "'tpu'"),
    (["--model", "tiny-llama", "--method", "depth", "--ratio", "0.3", "--calib", "wiki"],
     "valid choices: builtin, tokens"),
    (["--model", "llama-7b", "--method", "depth", "--ratio", "0.3", "--calib-file", "x.txt"],
     "needs a model with a tokenizer"),
    (["--model", "tiny-llama", "--method", "depth", "--ratio", "0.3", "--calib-file", "/nonexistent.txt"],
     "cannot read calibration text"),
])
def test_bad_prune_input_exits_2_before_building_anything(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["prune", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ")
    assert not out.exists()


def test_an_existing_output_is_left_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["prune", "--model", "tiny-llama", "--method", "depth", "--criterion", "magnitude", "--ratio", "0.3",
            "--out", str(out)]
    assert main(argv) == 2
    assert "exists and is not empty (use --overwrite)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "plan.json"]


def test_an_already_pruned_directory_cannot_be_pruned_again(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["prune", "--model", "tiny-llama", "--method", "depth", "--criterion", "magnitude",
                 "--ratio", "0.3", "--out", str(out)]) == 0
    assert main(["prune", "--model", str(out), "--method", "flap", "--ratio", "0.2", "--out",
                 str(tmp_path / "q")]) == 2
    assert "already pruned" in capsys.readouterr().err


def test_info_of_a_preset_allocates_nothing(capsys):
    assert main(["info", "vicuna-13b"]) == 0
    out = capsys.readouterr().out
    assert "13,015,864,320 parameters, 40 layers" in out
    assert out.splitlines()[1:] == ["  layers 0..39: 40 heads (40 kv), MLP 13824"]  # one line, not 40


def test_info_shows_each_run_of_identical_layers_once(tmp_path, capsys):
    model = build_model("tiny-llama")
    plan = PrunePlan("llm-pruner", "tiny-llama", 12, keep_heads={i: [0, 1] for i in range(4, 10)},
                     keep_channels={i: list(range(100)) for i in range(4, 10)} | {10: list(range(200))})
    save_pruned(apply(model, plan), plan, tmp_path / "p")
    assert main(["info", str(tmp_path / "p")]) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        "  layers 0..3: 4 heads (4 kv), MLP 352",
        "  layers 4..9: 2 heads (2 kv), MLP 100",
        "  layer 10: 4 heads (4 kv), MLP 200",
        "  layer 11: 4 heads (4 kv), MLP 352",
    ]


def test_missing_or_corrupt_directories_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "not a preset and not a directory" in capsys.readouterr().err
    (tmp_path / "plan.json").write_text("{}")
    assert main(["info", str(tmp_path)]) == 2
    assert "missing config.json" in capsys.readouterr().err


def test_a_local_checkpoint_directory_loads_offline(tmp_path):
    """A plain Hugging Face checkpoint directory (what a user downloaded before) loads and counts."""
    build_model("tiny-llama").save_pretrained(tmp_path / "ckpt")
    model = build_model(str(tmp_path / "ckpt"))
    assert sum(p.numel() for p in model.parameters()) == count_params(model.config)
    reference = build_model("tiny-llama")
    ids = torch.randint(3, 300, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_a_new_methods_option_comes_from_its_module_alone(monkeypatch, capsys):
    """A method module declaring OPTIONS gets its flag, its help and the does-not-apply check, with no edit
    to the command line."""
    import types

    from pruned_perf.pruning import methods
    from pruned_perf.pruning.methods import depth
    from pruned_perf.pruning.methods.option import Option

    toy = types.ModuleType("toy")
    toy.NAME, toy.CRITERIA, toy.RATIO_MEANS = "toy", ("position",), "fraction of the last blocks"
    toy.OPTIONS = {"keep_last": Option("--keep-last", "blocks at the end that stay", parse=int, metavar="N")}
    toy.size = lambda config, ratio=None, target=None, keep_last=1: depth.size(config, ratio=0.25)
    monkeypatch.setitem(methods.METHODS, toy.NAME, toy)
    with pytest.raises(SystemExit):
        main(["size", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--keep-last N toy: blocks at the end that stay" in help_text
    assert "toy: fraction of the last blocks" in help_text and "--method METHOD dense, depth, llm-pruner, flap, toy" in help_text
    assert main(["size", "--model", "tiny-llama", "--method", "toy", "--ratio", "0.25", "--keep-last", "2"]) == 0
    assert main(["size", "--model", "tiny-llama", "--method", "depth", "--ratio", "0.25", "--keep-last", "2"]) == 2
    assert "--keep-last does not apply to method depth; methods that take it: toy" in capsys.readouterr().err
