"""FLAP (AAAI 2024), retraining-free: fluctuation metric, adaptive global structure, bias compensation.

Statistics come from the inputs of o_proj (heads x head_dim channels) and down_proj (MLP channels) on
the unpruned model. A key/value group (one head for multi-head attention) is the attention unit, so
grouped-query models keep their Q:KV ratio.
"""
from __future__ import annotations

import torch

from pruned_perf.core.errors import UserError
from pruned_perf.llama.plan import PrunePlan
from pruned_perf.pruning.calibration import CalibSpec
from pruned_perf.pruning.methods.option import Option
from pruned_perf.pruning.sizing import Sizing, check_ratio, check_target, count_params, dense_layer_params

NAME = "flap"
CRITERIA = ("AL-AM", "UL-UM")  # adaptive across layers and modules; uniform in every layer
CALIB = CalibSpec(samples=1024, seq_len=128, seed=0)  # reference: 1024 x 128 tokens of WikiText-2
GRADIENT_CRITERIA = ()  # statistics of forward activations only
OPTIONS = {"bias": Option("--no-bias", "no bias compensation")}
RATIO_MEANS = "fraction p of attention+MLP parameters"  # what --ratio is, in --help
DEFAULT_SIZING = {"ratio": 0.28}  # for a model no profile lists: about 27% of LLaMA-7B's parameters
STYLE = {"color": "green", "marker": "o"}  # in every figure; the reference figure: green circles
BATCH = 16  # calibration windows per forward pass


def _prunable(config) -> int:
    """Parameters of all attention and MLP matrices: what the ratio is a fraction of."""
    return config.num_hidden_layers * (dense_layer_params(config) - 2 * config.hidden_size)


def _bias_params(config, bias: bool) -> int:
    return 2 * config.hidden_size * config.num_hidden_layers if bias else 0


def size(config, ratio=None, target=None, bias: bool = True) -> Sizing:
    """The ratio of prunable parameters to remove; the count is expected, adaptive structure decides."""
    with_bias = count_params(config) + _bias_params(config, bias)
    if ratio is None:
        check_target(config, target)
        ratio = (with_bias - target) / _prunable(config)
        if not 0 < ratio < 1:
            raise UserError(f"target {target:,} needs a FLAP ratio of {ratio:.3f}, outside (0, 1)")
    check_ratio(ratio)
    expected = with_bias - round(ratio * _prunable(config))
    return Sizing(NAME, {"ratio": round(ratio, 6)}, expected, exact=False)


def plan(model, calib: torch.Tensor, sizing: Sizing, criterion: str = "AL-AM", bias: bool = True) -> PrunePlan:
    ratio = sizing.setting["ratio"]
    stats = collect_stats(model, calib)
    attn, mlp = _wifv_scores(model, stats)
    structure = _adaptive if criterion == "AL-AM" else _uniform
    keep_heads, keep_channels = structure(model.config, attn, mlp, ratio)
    means = {f"{kind}.{i}": stats[kind][i].mean for kind in ("attn", "mlp") for i in range(len(attn))}
    return PrunePlan(NAME, source="", num_layers=model.config.num_hidden_layers, keep_heads=keep_heads,
                     keep_channels=keep_channels, bias_compensation=bias,
                     settings={"criterion": criterion, "metric": "WIFV", "ratio": ratio},
                     channel_means=means if bias else None)


class RunningStats:
    """Per-channel mean and variance over all tokens, merged batch by batch (Chan/Welford), float32."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        n, batch_mean = x.shape[0], x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, batch_mean, batch_m2
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    @property
    def variance(self) -> torch.Tensor:
        return self.m2 / max(self.count - 1, 1)


@torch.no_grad()
def collect_stats(model, calib: torch.Tensor) -> dict[str, list[RunningStats]]:
    """Hook the inputs of every o_proj and down_proj while the unpruned model reads `calib`."""
    layers = model.model.layers
    stats = {"attn": [RunningStats() for _ in layers], "mlp": [RunningStats() for _ in layers]}
    hooks = []
    for i, layer in enumerate(layers):
        for kind, module in (("attn", layer.self_attn.o_proj), ("mlp", layer.mlp.down_proj)):
            hooks.append(module.register_forward_hook(lambda m, args, out, s=stats[kind][i]: s.add(args[0])))
    try:
        for chunk in calib.split(BATCH):
            model.model(input_ids=chunk.to(model.device), use_cache=False)  # no lm_head: not needed
    finally:
        for hook in hooks:
            hook.remove()
    return stats


def _wifv_scores(model, stats) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """WIFV: fluctuation of input channel j times the squared norm of weight column j.

    The reference squares the attention score once more; kept so rankings match it.
    """
    attn, mlp = [], []
    for i, layer in enumerate(model.model.layers):
        o_norm = layer.self_attn.o_proj.weight.float().pow(2).sum(0)
        down_norm = layer.mlp.down_proj.weight.float().pow(2).sum(0)
        attn.append((stats["attn"][i].variance * o_norm) ** 2)
        mlp.append(stats["mlp"][i].variance * down_norm)
    return attn, mlp


def _standardize(scores: torch.Tensor) -> torch.Tensor:
    """Per layer: (S - mean) / std over that layer's channels (rows of `scores`)."""
    std = scores.std(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    return (scores - scores.mean(dim=-1, keepdim=True)) / std


def _group_params(config) -> int:
    """Parameters of one key/value group: n_rep query heads, one key and one value head, their o_proj columns."""
    n_rep = config.num_attention_heads // config.num_key_value_heads
    return (2 * n_rep + 2) * config.head_dim * config.hidden_size


def _adaptive(config, attn, mlp, ratio: float):
    """AL-AM: rank all heads and channels of all layers together; keep until (1-p) of the cost is kept.

    Cost is counted in MLP channels (3 x hidden parameters each): a group of LLaMA-7B (d = 128) costs
    4 d / 3 = 512/3, as in the reference.
    """
    layers, groups = len(attn), config.num_key_value_heads
    head_scores = _standardize(torch.stack(attn)).view(layers, groups, -1).mean(-1)
    channel_scores = _standardize(torch.stack(mlp))
    scores = torch.cat([head_scores.flatten(), channel_scores.flatten()])
    cost = torch.ones_like(scores)
    cost[: head_scores.numel()] = _group_params(config) / (3 * config.hidden_size)
    ordered, order = torch.sort(scores, descending=True)
    kept_cost = torch.cumsum(cost[order], 0)
    threshold = ordered[torch.argmin((kept_cost - cost.sum() * (1 - ratio)).abs())]
    # Strictly greater, as the reference: the unit at the cut is removed.
    keep_heads = {i: _indices(head_scores[i] > threshold) for i in range(layers)}
    keep_channels = {i: _indices(channel_scores[i] > threshold) for i in range(layers)}
    return keep_heads, keep_channels


def _uniform(config, attn, mlp, ratio: float):
    """UL-UM: every layer removes int(p x groups) groups and the MLP channels that make up the rest."""
    groups, hidden = config.num_key_value_heads, config.hidden_size
    heads_removed = int(ratio * groups)
    layer_prunable = dense_layer_params(config) - 2 * hidden
    channels_removed = int((ratio * layer_prunable - heads_removed * _group_params(config)) / (3 * hidden))
    channels_removed = min(max(channels_removed, 0), config.intermediate_size)
    keep_heads, keep_channels = {}, {}
    for i, (a, m) in enumerate(zip(attn, mlp)):
        keep_heads[i] = _drop_lowest(a.view(groups, -1).sum(-1), heads_removed)
        keep_channels[i] = _drop_lowest(m, channels_removed)
    return keep_heads, keep_channels


def _indices(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


def _drop_lowest(scores: torch.Tensor, count: int) -> list[int]:
    order = torch.argsort(scores)
    return sorted(order[count:].tolist())
