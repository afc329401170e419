"""A pruned model on disk: its directory format, and the model rebuilt from it.

A pruned directory holds CONFIG (the pruned layer count), PLAN (what was removed, `pruned_perf.llama.plan`),
WEIGHTS (safetensors) and, where stock LLaMA cannot build the model, LOADER (a file transformers imports
for AutoModelForCausalLM). `save_pruned` writes one all or nothing; `load_pruned` rebuilds the exact
shapes the plan leaves (`pruned_skeleton`) and loads the weights strictly. Importing this module
registers the pruned model type with transformers.

It sits below both `models` (which loads any model by name, pruned directories included) and
`pruning/` (whose `surgery.apply` cuts a model to a plan): it imports neither. The skeleton needs only
the widths a plan leaves, not which heads or channels were kept, so it is built here from counts;
tests/test_surgery.py checks that it matches what `apply` leaves for every method.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from pruned_perf.core.atomic import new_file_mode, temp_dir_beside
from pruned_perf.core.errors import UserError
from pruned_perf.llama.headless import HeadlessAttention
from pruned_perf.llama.plan import PrunePlan, load_plan, plan_shapes, save_plan, validate

WEIGHTS = "model.safetensors"
PLAN = "plan.json"
CONFIG = "config.json"
LOADER = "modeling_pruned_llama.py"


def is_pruned_dir(path: str | Path) -> bool:
    """Whether `path` is a directory saved by `save_pruned` (it holds a plan)."""
    return (Path(path) / PLAN).is_file()


def plan_source(path: str | Path) -> str:
    """The model a pruned directory was pruned from, as its plan names it."""
    return load_plan(Path(path) / PLAN, with_means=False).source


def save_pruned(model: LlamaForCausalLM, plan: PrunePlan, out_dir: str | Path, tokenizer=None,
                overwrite: bool = False) -> Path:
    """Write config.json + plan.json + model.safetensors (+ tokenizer) into `out_dir`, all or nothing."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(out_dir)
    except OSError as exc:
        raise UserError(f"cannot create output directory {str(out_dir)!r}: {exc.strerror}") from exc
    try:
        _write_config(model, plan, tmp)
        save_plan(_without_means(plan), tmp / PLAN)
        save_file(_weights(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        new_file_mode(tmp / WEIGHTS)  # safetensors writes 0600
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(tmp)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def check_output_dir(out_dir: Path, overwrite: bool, source: Path | None = None) -> None:
    """Refuse to write over a file, into a path below a file, over the model being pruned (`source`, or a
    directory holding it: --overwrite replaces the whole directory), or over a non-empty directory
    unless asked to."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output {str(out_dir)!r} exists and is not a directory")
    blocker = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"cannot create output {str(out_dir)!r}: {str(blocker)!r} is a file, not a directory")
    if source is not None and out_dir.resolve() in (source.resolve(), *source.resolve().parents):
        raise UserError(f"output {str(out_dir)!r} would replace the model being pruned ({str(source)!r}); "
                        f"choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"output directory {str(out_dir)!r} exists and is not empty (use --overwrite)")


class PrunedLlamaConfig(LlamaConfig):
    """config.json of a model whose layers differ in width. Stock LLaMA would build dense layers and fail on
    (or, with ignore_mismatched_sizes, re-initialise) the pruned weights; its own model_type stops that."""

    model_type = "pruned_llama"


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    """What `AutoModelForCausalLM.from_pretrained(DIR)` calls for a width-pruned DIR (in a process without
    pruned_perf, with trust_remote_code=True, via LOADER in DIR): the shapes are in plan.json, so
    `load_pruned` builds the model. Honours dtype and a one-device device_map; the other from_pretrained
    options do not apply to a local pruned directory."""

    config_class = PrunedLlamaConfig

    @classmethod
    def from_pretrained(cls, path, *args, dtype=None, device_map=None, **kwargs):
        device = device_map if isinstance(device_map, (str, torch.device)) and device_map != "auto" else "cpu"
        dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        return load_pruned(path, device, dtype if isinstance(dtype, torch.dtype) else None)


# Where pruned_perf is imported, transformers knows the type: AutoConfig / AutoTokenizer read a pruned
# directory without asking whether to run its code, and AutoModelForCausalLM loads it through load_pruned.
AutoConfig.register(PrunedLlamaConfig.model_type, PrunedLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(PrunedLlamaConfig, PrunedLlamaForCausalLM, exist_ok=True)


# Written beside a width-pruned model: transformers imports it when asked to trust the directory's code.
# It imports pruned_perf.surgery, the stable public path (a re-export of this module), so that directories
# saved by any version keep loading when the code inside the package moves.
# The import sits in a try block, which transformers' own import check skips, so a missing pruned_perf
# gives this message rather than "pip install pruned_perf".
_LOADER_CODE = '''"""Written by pruned_perf: this model's layers differ in width (see plan.json), which stock LLaMA
cannot build. Load it with AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True) or with
pruned_perf.surgery.load_pruned(DIR); both need pruned_perf installed."""
try:
    from pruned_perf.surgery import PrunedLlamaConfig, PrunedLlamaForCausalLM  # noqa: F401
except ImportError as exc:
    raise ImportError("this model was pruned by pruned_perf, which is not installed here; install it and "
                      "load the directory with pruned_perf.surgery.load_pruned(DIR)") from exc
'''


def stock_loadable(config: LlamaConfig, plan: PrunePlan) -> bool:
    """Whether stock LLaMA can build the pruned model from its config alone: every kept layer at full
    width and no added biases (depth pruning, dense)."""
    source = source_config(config, plan)
    dense = plan_shapes(source)[0]
    return not plan.bias_compensation and all(shape == dense for shape in plan_shapes(source, plan))


def _write_config(model: LlamaForCausalLM, plan: PrunePlan, out_dir: Path) -> None:
    """A stock config where stock LLaMA can build the model. Otherwise a model_type stock transformers does
    not know, with an auto_map to LOADER (written here too): a plain `from_pretrained` then asks for
    trust_remote_code=True and loads through `load_pruned`, instead of failing on mismatched sizes (or,
    with ignore_mismatched_sizes, silently re-initialising the pruned matrices)."""
    stock = stock_loadable(model.config, plan)
    data = model.config.to_dict()
    data.pop("model_type", None)  # the class below decides it
    config = (LlamaConfig if stock else PrunedLlamaConfig).from_dict(data)
    config.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    config.architectures = [LlamaForCausalLM.__name__ if stock else PrunedLlamaForCausalLM.__name__]
    if not stock:
        module = LOADER.removesuffix(".py")
        config.auto_map = {"AutoConfig": f"{module}.{PrunedLlamaConfig.__name__}",
                           "AutoModelForCausalLM": f"{module}.{PrunedLlamaForCausalLM.__name__}"}
        (out_dir / LOADER).write_text(_LOADER_CODE, encoding="utf-8")
    config.to_json_file(out_dir / CONFIG)


def _weights(model: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    """Every tensor once, under the name a stock checkpoint uses: a tied head is stored as
    model.embed_tokens.weight alone (safetensors' own de-duplication kept lm_head.weight instead,
    which neither load_pruned nor transformers could load)."""
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return {name: tensor.contiguous() for name, tensor in state.items()}


def _without_means(plan: PrunePlan) -> PrunePlan:
    # The biases the means produced are in the weights now; the loader needs only shapes.
    plan = copy.copy(plan)
    plan.channel_means = None
    return plan


def _replace_dir(new: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)


def read_pruned_dir(path: str | Path) -> tuple[LlamaConfig, PrunePlan]:
    """The saved config (pruned layer count) and plan of a pruned directory, without weights."""
    path = Path(path)
    missing = [name for name in (CONFIG, PLAN, WEIGHTS) if not (path / name).is_file()]
    if missing:
        raise UserError(f"{str(path)!r} is not a pruned model directory: missing {', '.join(missing)}")
    try:
        data = json.loads((path / CONFIG).read_text())
        for key in ("model_type", "auto_map"):  # whichever class wrote it, it is read as plain LLaMA
            data.pop(key, None)
        config = LlamaConfig.from_dict(data)
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{str(path / CONFIG)!r} is corrupt: {exc}") from exc
    plan = load_plan(path / PLAN, with_means=False)
    if config.num_hidden_layers != len(plan.kept_layers()):
        raise UserError(f"{str(path)!r} is inconsistent: {CONFIG} has {config.num_hidden_layers} layers, "
                        f"{PLAN} keeps {len(plan.kept_layers())}")
    return config, plan


def source_config(config: LlamaConfig, plan: PrunePlan) -> LlamaConfig:
    """The config of the unpruned model a plan was made for (LLaMA layers are homogeneous)."""
    source = copy.deepcopy(config)
    source.num_hidden_layers = plan.num_layers
    if getattr(source, "layer_types", None):
        source.layer_types = [source.layer_types[0]] * plan.num_layers
    return source


def pruned_skeleton(config: LlamaConfig, plan: PrunePlan) -> LlamaForCausalLM:
    """The pruned model's exact module shapes on the meta device (no memory, no init)."""
    source = source_config(config, plan)
    validate(plan, source)
    with torch.device("meta"):
        model = LlamaForCausalLM(source)
    layers = model.model.layers
    for i, shape in zip(plan.kept_layers(), plan_shapes(source, plan)):
        _shape_attention(layers[i], shape["kv_heads"], source, plan.bias_compensation)
        _shape_mlp(layers[i], shape["mlp"], source, plan.bias_compensation)
    drop_blocks(model, plan.drop_blocks)
    return model


def meta_linear(n_in: int, n_out: int, bias: bool) -> nn.Linear:
    """An nn.Linear on the meta device: shapes only, nothing allocated or initialised."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")  # a layer pruned to width 0
        return nn.Linear(n_in, n_out, bias=bias)


def _shape_attention(layer, kv_heads: int, config: LlamaConfig, compensated: bool) -> None:
    attn = layer.self_attn
    hidden, head_dim = config.hidden_size, attn.head_dim
    q_width = kv_heads * attn.num_key_value_groups * head_dim
    out_bias = config.attention_bias or compensated  # a headless layer keeps o_proj's bias
    if kv_heads == 0:
        layer.self_attn = HeadlessAttention(hidden, head_dim, attn.layer_idx, bias=out_bias, device="meta")
        return
    attn.q_proj = meta_linear(hidden, q_width, config.attention_bias)
    attn.k_proj = meta_linear(hidden, kv_heads * head_dim, config.attention_bias)
    attn.v_proj = meta_linear(hidden, kv_heads * head_dim, config.attention_bias)
    attn.o_proj = meta_linear(q_width, hidden, out_bias)


def _shape_mlp(layer, channels: int, config: LlamaConfig, compensated: bool) -> None:
    mlp = layer.mlp
    mlp.gate_proj = meta_linear(config.hidden_size, channels, config.mlp_bias)
    mlp.up_proj = meta_linear(config.hidden_size, channels, config.mlp_bias)
    mlp.down_proj = meta_linear(channels, config.hidden_size, config.mlp_bias or compensated)
    mlp.intermediate_size = channels


def drop_blocks(model: LlamaForCausalLM, drop: list[int]) -> None:
    """Remove decoder blocks `drop` (source indices) and renumber the rest; updates the config."""
    if not drop:
        return
    dropped = set(drop)
    kept = [layer for i, layer in enumerate(model.model.layers) if i not in dropped]
    model.model.layers = nn.ModuleList(kept)
    # The KV cache is indexed by layer_idx: a stale index would write into another layer's slot.
    for new_idx, layer in enumerate(kept):
        layer.self_attn.layer_idx = new_idx
    config = model.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        config.layer_types = [t for i, t in enumerate(layer_types) if i not in dropped]
    config.num_hidden_layers = len(kept)



def load_pruned(path: str | Path, device="cpu", dtype: torch.dtype | None = None) -> LlamaForCausalLM:
    """Rebuild exact shapes from the plan (`pruned_skeleton`), then load the weights strictly: no size is re-initialised."""
    path = Path(path)
    config, plan = read_pruned_dir(path)
    model = pruned_skeleton(config, plan)
    try:
        state = load_file(str(path / WEIGHTS), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{str(path / WEIGHTS)!r} is corrupt: {exc}") from exc
    _check_state(model, state, path)
    model.load_state_dict(state, strict=False, assign=True)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    _rebuild_buffers(model, device)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def _check_state(model: nn.Module, state: dict, path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)  # the head is the embedding; load_pruned ties them
        head = state.pop("lm_head.weight", None)
        if head is not None:  # directories written before the fix stored the shared tensor under this name
            state.setdefault("model.embed_tokens.weight", head)
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"missing {k}" for k in expected.keys() - found.keys()]
    problems += [f"unexpected {k}" for k in found.keys() - expected.keys()]
    problems += [f"{k}: file {found[k]} vs plan {expected[k]}"
                 for k in expected.keys() & found.keys() if found[k] != expected[k]]
    if problems:
        shown = "; ".join(sorted(problems)[:5])
        raise UserError(f"weights in {str(path)!r} do not match {PLAN} ({len(problems)} problems): {shown}")


def _rebuild_buffers(model: LlamaForCausalLM, device) -> None:
    # Non-persistent buffers (rotary frequencies) are not in the file; build them on the device.
    rotary = model.model.rotary_emb
    with torch.device(device):
        model.model.rotary_emb = type(rotary)(config=model.config)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise UserError(f"pruned model has tensors that were not loaded: {', '.join(left[:5])}")
