"""PrunePlan: what a method decided to remove, as data (the plan.json of a pruned directory).

`pruning.surgery.apply` is the only code that cuts a model to a plan; `checkpoint` rebuilds a saved one's
shapes from it. A bottom module: the methods write plans, the checkpoint format reads them, and neither
is imported here. torch is imported only where FLAP's channel means are read or written, so the shapes
(`plan_shapes`, used by the torch-free sizing arithmetic) need no torch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pruned_perf.core.atomic import atomic_path, write_text_atomic
from pruned_perf.core.errors import UserError

if TYPE_CHECKING:
    import torch

PLAN_SCHEMA = 1


@dataclass
class PrunePlan:
    """Indices refer to the source model. A layer absent from `keep_heads` / `keep_channels` keeps all.

    keep_heads: per layer, the kept key/value heads; each carries its group of
        num_attention_heads // num_key_value_heads query heads (one for multi-head attention), so
        grouped-query models keep their Q:KV ratio.
    keep_channels: per layer, the kept MLP channels (rows of gate/up, columns of down).
    bias_compensation: every kept layer gets a bias on o_proj and down_proj (FLAP). With
        `channel_means` the bias is W[:, removed] @ mean[removed]; without (a saved model being
        loaded) it starts at zero and the weights fill it.
    channel_means: FLAP's mean input of o_proj ("attn.<layer>") and down_proj ("mlp.<layer>"),
        float32; stored beside the JSON, not in it.
    settings: how the plan was chosen (criterion, ratio, calibration, scores): provenance only.
    """

    method: str
    source: str
    num_layers: int
    drop_blocks: list[int] = field(default_factory=list)
    keep_heads: dict[int, list[int]] = field(default_factory=dict)
    keep_channels: dict[int, list[int]] = field(default_factory=dict)
    bias_compensation: bool = False
    settings: dict = field(default_factory=dict)
    channel_means: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def kept_layers(self) -> list[int]:
        dropped = set(self.drop_blocks)
        return [i for i in range(self.num_layers) if i not in dropped]

    def without_compensation(self) -> "PrunePlan":
        """The same shapes with no bias (for measuring what compensation buys)."""
        data = self.to_dict()
        data["bias_compensation"] = False
        return PrunePlan.from_dict(data)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("channel_means")
        data["schema"] = PLAN_SCHEMA
        # JSON object keys are strings; keep layer order stable for diffs.
        data["keep_heads"] = {str(k): v for k, v in sorted(self.keep_heads.items())}
        data["keep_channels"] = {str(k): v for k, v in sorted(self.keep_channels.items())}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PrunePlan":
        if not isinstance(data, dict):
            raise UserError(f"a plan must be a JSON object, got {type(data).__name__}")
        if data.get("schema") != PLAN_SCHEMA:
            raise UserError(f"plan schema {data.get('schema')!r} is not supported (supported: {PLAN_SCHEMA})")
        try:
            return cls(
                method=str(data["method"]),
                source=str(data["source"]),
                num_layers=int(data["num_layers"]),
                drop_blocks=[int(b) for b in data.get("drop_blocks", [])],
                keep_heads={int(k): [int(i) for i in v] for k, v in data.get("keep_heads", {}).items()},
                keep_channels={int(k): [int(i) for i in v] for k, v in data.get("keep_channels", {}).items()},
                bias_compensation=bool(data.get("bias_compensation", False)),
                settings=dict(data.get("settings", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"malformed plan: {exc!r}") from exc


def validate(plan: PrunePlan, config) -> None:
    """Raise UserError unless `plan` fits a model with `config` (the source model's shape)."""
    layers = config.num_hidden_layers
    kv_heads = config.num_key_value_heads
    d_ff = config.intermediate_size
    if plan.num_layers != layers:
        raise UserError(f"plan does not fit the model: plan is for {plan.num_layers} layers, "
                        f"the model has {layers}")
    dropped = plan.drop_blocks
    if len(set(dropped)) != len(dropped) or any(not 0 <= b < layers for b in dropped):
        raise UserError(f"plan does not fit the model: drop_blocks {dropped} must be distinct "
                        f"layers in 0..{layers - 1}")
    if len(dropped) >= layers:
        raise UserError(f"plan removes all {layers} blocks; at least one must remain")
    _check_indices("keep_heads", plan.keep_heads, kv_heads, "key/value heads", layers, dropped)
    _check_indices("keep_channels", plan.keep_channels, d_ff, "MLP channels", layers, dropped)
    if plan.channel_means:
        head_dim = config.head_dim
        width = {"attn": config.num_attention_heads * head_dim, "mlp": d_ff}
        for key, mean in plan.channel_means.items():
            kind, _, layer = key.partition(".")
            if kind not in width or not layer.isdigit() or tuple(mean.shape) != (width[kind],):
                raise UserError(f"plan does not fit the model: channel mean {key!r} with shape "
                                f"{tuple(mean.shape)}; expected 'attn.<layer>' of ({width['attn']},) "
                                f"or 'mlp.<layer>' of ({width['mlp']},)")


def plan_shapes(config, plan: PrunePlan | None = None) -> list[dict]:
    """Per kept layer, the shapes a plan leaves: query heads, key/value heads, MLP width."""
    n_rep = config.num_attention_heads // config.num_key_value_heads
    layers = plan.kept_layers() if plan else range(config.num_hidden_layers)
    shapes = []
    for i in layers:
        kv = len(plan.keep_heads[i]) if plan and i in plan.keep_heads else config.num_key_value_heads
        mlp = len(plan.keep_channels[i]) if plan and i in plan.keep_channels else config.intermediate_size
        shapes.append({"heads": kv * n_rep, "kv_heads": kv, "mlp": mlp})
    return shapes


def _check_indices(name, per_layer, size, what, layers, dropped):
    for layer, kept in per_layer.items():
        if not 0 <= layer < layers or layer in dropped:
            raise UserError(f"plan does not fit the model: {name} names layer {layer}, which is "
                            f"{'dropped' if layer in dropped else f'outside 0..{layers - 1}'}")
        if len(set(kept)) != len(kept) or any(not 0 <= i < size for i in kept):
            raise UserError(f"plan does not fit the model: {name}[{layer}] must hold distinct indices "
                            f"in 0..{size - 1} (the model has {size} {what})")


def _means_path(path: Path) -> Path:
    return path.with_suffix(".means.safetensors")


def save_plan(plan: PrunePlan, path: str | Path) -> None:
    """plan.json (+ plan.means.safetensors for FLAP statistics), each written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if plan.channel_means:
        from safetensors.torch import save_file

        means = {k: v.detach().float().cpu().contiguous() for k, v in plan.channel_means.items()}
        with atomic_path(_means_path(path)) as tmp:
            save_file(means, tmp)
    else:
        _means_path(path).unlink(missing_ok=True)  # never pair this plan with stale statistics
    text = json.dumps(plan.to_dict(), indent=1)
    write_text_atomic(path, text)


def load_plan(path: str | Path, with_means: bool = True) -> PrunePlan:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read plan {str(path)!r}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"plan {str(path)!r} is not valid JSON: {exc}") from exc
    plan = PrunePlan.from_dict(data)
    if with_means and _means_path(path).is_file():
        from safetensors.torch import load_file

        plan.channel_means = load_file(_means_path(path))
    return plan
