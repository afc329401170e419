"""Pruned directories other tools can read: tied embeddings, plain transformers loading, file modes."""
import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from pruned_perf.core.atomic import write_json_atomic
from pruned_perf.llama.checkpoint import LOADER, load_pruned, save_pruned
from pruned_perf.cli import main
from pruned_perf.llama.models import build_model
from pruned_perf.llama.plan import PrunePlan, load_plan
from pruned_perf.pruning.surgery import apply

# Llama-3.2 / SmolLM2 style: the output head is the input embedding. 8 layers leave the depth "+" rule
# two candidates; no tokenizer, so calibration uses token ids.
TIED = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=8, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True)


def tied_checkpoint(path):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TIED)).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(path)
    return path


def prompt(vocab=64):
    return torch.randint(3, vocab, (2, 6), generator=torch.Generator().manual_seed(1))


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("method,flags", [("depth", ["--criterion", "magnitude"]), ("llm-pruner", [])])
def test_a_tied_checkpoint_prunes_saves_and_loads_with_the_tie_kept(tmp_path, capsys, method, flags):
    source, out = tied_checkpoint(tmp_path / "src"), tmp_path / "out"
    assert main(["prune", "--model", str(source), "--method", method, "--ratio", "0.25", *flags,
                 "--out", str(out)]) == 0
    assert f"saved to {out}" in capsys.readouterr().out
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "model.embed_tokens.weight" in f.keys() and "lm_head.weight" not in f.keys()
    loaded = load_pruned(out)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    # the same plan applied to the source in memory: what the saved directory must reproduce exactly
    expected = apply(build_model(str(source)), load_plan(out / "plan.json"))
    ids = prompt()
    torch.testing.assert_close(logits(loaded, ids), logits(expected, ids), rtol=0, atol=0)


def test_a_tied_directory_written_before_the_fix_still_loads(tmp_path):
    """The old writer let safetensors keep the shared tensor as lm_head.weight only."""
    model = LlamaForCausalLM(LlamaConfig(**TIED)).eval()
    plan = PrunePlan("depth", "src", 8, drop_blocks=[4])
    out = save_pruned(apply(model, plan), plan, tmp_path / "old")
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" in f.keys() and "model.embed_tokens.weight" not in f.keys()
    loaded = load_pruned(out)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    torch.testing.assert_close(logits(loaded, prompt()), logits(model, prompt()), rtol=0, atol=0)


def test_depth_directories_load_in_plain_transformers_with_identical_logits(tmp_path):
    for name, model in (("untied", build_model("tiny-llama")),
                        ("tied", LlamaForCausalLM(LlamaConfig(**TIED)).eval())):
        plan = PrunePlan("depth", name, model.config.num_hidden_layers, drop_blocks=[4, 5])
        out = save_pruned(apply(model, plan), plan, tmp_path / name)
        assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
        assert not (out / LOADER).exists()
        plain = AutoModelForCausalLM.from_pretrained(out)
        assert (plain.lm_head.weight is plain.model.embed_tokens.weight) == (name == "tied")
        ids = prompt()
        torch.testing.assert_close(logits(plain, ids), logits(model, ids), rtol=0, atol=0)


def width_plans():
    """LLM-Pruner's shape (same narrower widths in layers 4..9) and FLAP's (every layer its own widths,
    biases, one layer with no heads left)."""
    llm_pruner = PrunePlan("llm-pruner", "tiny-gqa", 12, keep_heads={i: [0] for i in range(4, 10)},
                           keep_channels={i: list(range(0, 384, 2)) for i in range(4, 10)})
    randn = lambda n, seed: torch.randn(n, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    means = {f"{kind}.{i}": randn(width, i) for i in range(12) for kind, width in (("attn", 128), ("mlp", 384))}
    flap = PrunePlan("flap", "tiny-gqa", 12, keep_heads={5: [], 6: [1]},
                     keep_channels={i: list(range(i, 384, 3)) for i in range(12)}, bias_compensation=True,
                     channel_means=means)
    return [llm_pruner, flap]


@pytest.mark.parametrize("plan", width_plans(), ids=lambda p: p.method)
def test_width_directories_load_through_auto_classes_where_pruned_perf_is_imported(tmp_path, plan):
    model = apply(build_model("tiny-gqa"), plan)
    out = save_pruned(model, plan, tmp_path / plan.method)
    assert json.loads((out / "config.json").read_text())["model_type"] == "pruned_llama"
    with pytest.raises(RuntimeError, match="mismatch"):
        LlamaForCausalLM.from_pretrained(out)  # stock LLaMA refuses: never re-initialised weights
    ids = prompt(vocab=300)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(out), ids), logits(model, ids),
                               rtol=0, atol=0)


# Plain transformers in a fresh process: pruned_perf is not imported, so nothing is registered.
PLAIN_TRANSFORMERS = """
import sys, torch
from transformers import AutoModelForCausalLM
root, names = sys.argv[1], sys.argv[2:]
for name in names:
    try:
        AutoModelForCausalLM.from_pretrained(f"{root}/{name}")
    except ValueError as exc:
        print(name, "refused:", str(exc).splitlines()[-1])
assert "pruned_perf" not in sys.modules
for name in names:  # trusting the directory's code imports pruned_perf, which loads it
    model = AutoModelForCausalLM.from_pretrained(f"{root}/{name}", trust_remote_code=True)
    with torch.no_grad():
        torch.save(model(torch.load(f"{root}/ids.pt")).logits, f"{root}/{name}.pt")
"""


def test_plain_transformers_is_told_how_to_load_a_width_directory_and_then_loads_it_exactly(tmp_path):
    ids = prompt(vocab=300)
    torch.save(ids, tmp_path / "ids.pt")
    expected = {}
    for plan in width_plans():
        model = apply(build_model("tiny-gqa"), plan)
        save_pruned(model, plan, tmp_path / plan.method)
        expected[plan.method] = logits(model, ids)
    run = subprocess.run([sys.executable, "-c", PLAIN_TRANSFORMERS, str(tmp_path), *expected], cwd=tmp_path,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    for method, want in expected.items():
        assert f"{method} refused: Please pass the argument `trust_remote_code=True`" in run.stdout
        torch.testing.assert_close(torch.load(tmp_path / f"{method}.pt"), want, rtol=0, atol=0)


def test_the_loader_written_beside_a_width_model_names_load_pruned_without_pruned_perf(tmp_path, monkeypatch):
    plan = width_plans()[0]
    out = save_pruned(apply(build_model("tiny-gqa"), plan), plan, tmp_path / "w")
    monkeypatch.setitem(sys.modules, "pruned_perf.surgery", None)  # as if pruned_perf were not installed
    with pytest.raises(ImportError, match=r"pruned_perf.surgery.load_pruned\(DIR\)"):
        exec(compile((out / LOADER).read_text(), str(out / LOADER), "exec"), {})


def modes(root):
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
                         ids=["umask-022", "umask-027"])
def test_outputs_get_the_modes_the_umask_gives(tmp_path, umask, file_mode, dir_mode):
    previous = os.umask(umask)
    try:
        plan = width_plans()[1]  # writes every kind of file: weights, plan, config, loader
        out = save_pruned(apply(build_model("tiny-gqa"), plan), plan, tmp_path / "m")
        write_json_atomic(tmp_path / "results.json", {"a": 1})
        written = modes(out)
        written["results.json"] = stat.S_IMODE((tmp_path / "results.json").stat().st_mode)
    finally:
        os.umask(previous)
    assert set(written) == {".", "config.json", "plan.json", "model.safetensors", LOADER, "results.json"}
    assert written == {name: dir_mode if name == "." else file_mode for name in written}
