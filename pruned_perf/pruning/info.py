"""What `pruned-perf info` reports, read from configs and plans alone (no weights are allocated)."""
from __future__ import annotations

from pruned_perf.llama.checkpoint import is_pruned_dir, read_pruned_dir, source_config
from pruned_perf.llama.models import model_config
from pruned_perf.llama.plan import plan_shapes
from pruned_perf.pruning.sizing import count_params


def describe(name: str) -> dict:
    """Parameter count, layer count and per-layer widths of a preset, checkpoint or pruned directory."""
    plan = None
    if is_pruned_dir(name):
        pruned_config, plan = read_pruned_dir(name)
        config = source_config(pruned_config, plan)
    else:
        config = model_config(name)
    shapes = plan_shapes(config, plan)
    info = {
        "model": name,
        "params": count_params(config, plan),
        "layers": len(shapes),
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "head_dim": config.head_dim,
        "per_layer": shapes,
    }
    if plan is not None:
        info.update(method=plan.method, source=plan.source, drop_blocks=plan.drop_blocks,
                    bias_compensation=plan.bias_compensation)
    return info


def layer_runs(per_layer: list[dict]) -> list[tuple[int, int, dict]]:
    """(first, last, shape) for each run of consecutive layers with the same shape: a dense 40-layer model
    is one run, not 40 identical lines."""
    runs = []
    for i, shape in enumerate(per_layer):
        if runs and runs[-1][2] == shape:
            runs[-1] = (runs[-1][0], i, shape)
        else:
            runs.append((i, i, shape))
    return runs
