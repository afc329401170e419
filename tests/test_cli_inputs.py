"""`pruned-perf prune` inputs that used to do damage or pass silently: each is one `error:` line and exit 2."""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pruned_perf.cli import main

# A checkpoint without a tokenizer (8 layers: the depth "+" rule leaves two candidates).
MICRO = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=8, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=128)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**MICRO)).save_pretrained(tmp_path / "models" / "src")
    return tmp_path / "models" / "src"


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("out", ["src", "."], ids=["the-source", "its-parent"])
def test_an_output_that_would_replace_the_source_is_refused(checkpoint, capsys, out):
    before = snapshot(checkpoint.parent)
    argv = ["prune", "--model", str(checkpoint), "--method", "depth", "--criterion", "magnitude",
            "--ratio", "0.25", "--out", str(checkpoint.parent / out), "--overwrite"]
    assert main(argv) == 2
    assert "would replace the model being pruned" in one_error(capsys)
    assert snapshot(checkpoint.parent) == before


def test_an_output_below_a_file_is_one_error_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a directory")
    for out in (tmp_path / "afile" / "p", tmp_path / "afile" / "deeper" / "p"):
        assert main(["prune", "--model", "tiny-llama", "--method", "depth", "--criterion", "magnitude",
                     "--ratio", "0.3", "--out", str(out)]) == 2
        assert f"{str(tmp_path / 'afile')!r} is a file, not a directory" in one_error(capsys)
    assert (tmp_path / "afile").read_text() == "not a directory"


def test_builtin_text_calibration_without_a_tokenizer_is_an_error(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", "--model", str(checkpoint), "--method", "depth", "--ratio", "0.25", "--calib", "builtin",
                 "--out", str(out)]) == 2
    err = one_error(capsys)
    assert f"model {str(checkpoint)!r} has none" in err and "calibration sources that work for it are: tokens" in err
    assert not out.exists()


@pytest.mark.parametrize("calib", [[], ["--calib", "tokens"]], ids=["default", "tokens"])
def test_a_model_without_a_tokenizer_calibrates_on_token_ids(checkpoint, tmp_path, calib):
    out = tmp_path / "out"
    assert main(["prune", "--model", str(checkpoint), "--method", "depth", "--ratio", "0.25", *calib,
                 "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["settings"]["calibration"]["source"] == "tokens"
