"""The recipe "adding a method" (docs/extending.md), followed step by step: one module with the method's
facts, one line in the registry, and the suite sizes, prunes and measures a point."""
import types

import torch

from pruned_perf.analysis.plot import make_figure
from pruned_perf.analysis.results import load_results
from pruned_perf.bench.session import PerfRun
from pruned_perf.bench.sweep import Sweep, make_points, select_variants
from pruned_perf.llama.plan import PrunePlan
from pruned_perf.core.pointlog import read_log
from pruned_perf.pruning import methods
from pruned_perf.pruning.sizing import Sizing, count_params, dense_layer_params
from pruned_perf.pruning.variants import get_profile, load_variant


def last_block_method() -> types.ModuleType:
    """A toy method written as docs/extending.md says: it drops the last `ratio` of the Transformer blocks."""
    toy = types.ModuleType("last_block")
    toy.NAME = "last-block"
    toy.CRITERIA = ("position",)
    toy.GRADIENT_CRITERIA = ()
    toy.CALIB = None
    toy.OPTIONS = {}
    toy.DEFAULT_SIZING = {"ratio": 0.25}
    toy.STYLE = {"color": "tab:orange", "marker": "^"}

    def size(config, ratio=None, target=None):
        drop = max(1, round(ratio * config.num_hidden_layers))
        return Sizing(toy.NAME, {"drop": drop}, count_params(config) - drop * dense_layer_params(config), exact=True)

    def plan(model, calib, sizing, criterion="position"):
        layers = model.config.num_hidden_layers
        return PrunePlan(toy.NAME, source="", num_layers=layers,
                         drop_blocks=list(range(layers - sizing.setting["drop"], layers)))

    toy.size, toy.plan = size, plan
    return toy


def test_a_method_added_as_the_readme_says_is_pruned_and_measured(monkeypatch, tmp_path):
    toy = last_block_method()
    monkeypatch.setitem(methods.METHODS, toy.NAME, toy)  # the one registry line
    profile = get_profile("quick")
    variants = select_variants(profile, ["tiny-llama"], [toy.NAME, "dense"])
    assert [v.method for v in variants] == ["dense", toy.NAME]  # the profile's methods, then the new one
    model, plan = load_variant(variants[1], torch.device("cpu"), torch.float32, cache_dir=tmp_path)
    dense, _ = load_variant(variants[0], torch.device("cpu"), torch.float32)
    assert plan.method == toy.NAME and plan.source == "tiny-llama"
    assert len(model.model.layers) == dense.config.num_hidden_layers - round(0.25 * dense.config.num_hidden_layers)
    assert sum(p.numel() for p in model.parameters()) == toy.size(dense.config, ratio=0.25).params
    # measured by the suite's own point loop, outside pytest (pruned_perf.bench.session)
    [point] = make_points(variants[1:], (8,), (4,), (1,), ("eager",))
    sweep = Sweep(profile, variants, [point], torch.device("cpu"), torch.float32, rounds=2, warmup=1)
    run = PerfRun(sweep, cache_dir=tmp_path, log_path=tmp_path / "points.jsonl")
    m = run.measure(point, "toy-point")
    assert m.method == toy.NAME and not m.oom and len(m.rounds_s) == 2 and m.latency_s > 0
    # a round of the suite's default lasts about its minimum, however long one call takes on this machine
    # (a call of 4 tokens: several calls when quiet, one when a busy machine makes a call last a second)
    assert sweep.min_round_s == 1.0 and m.calls_per_round * max(m.rounds_s) >= sweep.min_round_s / 4
    assert m.params == toy.size(dense.config, ratio=0.25).params
    [logged] = read_log(tmp_path / "points.jsonl")  # on disk at once, under the run's id
    assert logged["nodeid"] == "toy-point" and logged["run"] == run.run_id
    assert logged["id"] == point.id and logged["rounds_s"] == m.rounds_s
    # the results carry its STYLE, last in the registry's order: the torch-free figure draws it so
    results = load_results(tmp_path / "points.jsonl")
    assert list(results.methods)[-1] == toy.NAME and results.methods[toy.NAME].to_dict() == toy.STYLE
    [line] = [line for line in make_figure(results).axes[0].get_lines() if len(line.get_xdata())]
    assert (line.get_color(), line.get_marker()) == ("tab:orange", "^")


# ---------------------------------------------------------------- adding a metric

# The recipe "adding a metric" (docs/extending.md): one entry in METRICS (and the function that builds its
# samples from a point's raw rounds). Decode throughput: generated tokens after the first, per second of
# decoding.
DECODE_METRIC = '''
def _decode_rate(point):
    tokens = point.batch_size * (point.output_tokens - 1)
    pairs = zip(point.rounds_s, point.ttft_rounds_s)
    return [tokens / (end - first) for end, first in pairs if end > first] if tokens > 0 else []


METRICS = METRICS + (
    Metric("decode_tokens_per_s", HIGHER_IS_BETTER, True, 0.05, _decode_rate, "decode throughput", _probe),
)
BY_NAME = {m.name: m for m in METRICS}
DEFAULT_THRESHOLDS = {m.name: m.threshold for m in METRICS}
'''


def _package_with_decode_metric(tmp_path):
    import shutil

    from pruned_perf.core import codehash

    root = tmp_path / "pkg"
    shutil.copytree(codehash.ROOT, root / "pruned_perf", ignore=shutil.ignore_patterns("__pycache__"))
    with open(root / "pruned_perf" / "analysis" / "metrics.py", "a", encoding="utf-8") as f:
        f.write(DECODE_METRIC)
    return root


def _cli(args, cwd, package_root=None):
    import subprocess
    import sys

    path = f"sys.path.insert(0, {str(package_root)!r}); " if package_root else ""
    code = (f"import sys; {path}import pruned_perf; print('package', pruned_perf.__file__); "
            f"from pruned_perf.cli import main; sys.exit(main({args!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_metric_added_as_the_readme_says_is_gated_stored_and_configurable(tmp_path):
    import json

    try:
        from tests.synthetic_results import make_results, point_id, scale_point, sweep, write
    except ImportError:
        from synthetic_results import make_results, point_id, scale_point, sweep, write

    package = _package_with_decode_metric(tmp_path)
    base = make_results(sweep(methods=("dense", "depth"), batch_sizes=(1, 8)))
    pid = point_id("llama-7b", "depth", 8, 12, 128)
    # full calls 3x as long with the same first token: decoding 3x slower, beyond the one-run drift allowance
    write(tmp_path / "base.json", base)
    write(tmp_path / "new.json", scale_point(base, pid, 3.0))
    (tmp_path / "pyproject.toml").write_text("[tool.pruned_perf.thresholds]\ndecode_tokens_per_s = 0.02\n")
    args = ["compare", "new.json", "--baseline", "base.json", "--format", "plain", "--json", "v.json"]

    done = _cli(args, tmp_path, package)
    assert f"package {package}" in done.stdout, done.stdout  # the copy with the new entry ran
    assert done.returncode == 1, done.stdout + done.stderr
    [point] = [p for p in json.loads((tmp_path / "v.json").read_text())["points"] if p["id"] == pid]
    [decode] = [m for m in point["metrics"] if m["metric"] == "decode_tokens_per_s"]
    assert decode["verdict"] == "regressed" and decode["change"] < -0.6 and decode["threshold"] == 0.02
    assert "decode_tokens_per_s" in done.stdout  # the report names it among the regressions
    # and a column of every table, after the others (the table's order)
    header = next(line for line in done.stdout.splitlines() if line.lstrip().startswith("method")).split()
    assert header.index("decode_tokens_per_s") == header.index("ppl") + 1

    # the baseline history keeps its median per run, like every metric's
    assert _cli(["baseline", "update", "base.json", "--baselines-dir", "b"], tmp_path, package).returncode == 0
    [stored] = (tmp_path / "b").rglob("*.json")
    history = json.loads(stored.read_text())["pruned_perf_history"]
    assert history[-1]["points"][pid]["decode_tokens_per_s"] > 0

    # without the entry the threshold names a metric that does not exist: one error naming the valid ones
    plain = _cli(args, tmp_path)
    assert plain.returncode == 2 and "decode_tokens_per_s" in plain.stderr and "latency_s" in plain.stderr
