"""Quality as a metric: every variant's held-out perplexity (scored once, cached beside its plan), gated
by compare, shown by report and plot; plans scored in float32 whatever the timing dtype; FLAP on random
weights says so. Tiny presets only (their byte-level tokenizer gives a perplexity near the vocabulary
size: meaningless as language, deterministic as a regression signal)."""
import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pruned_perf.analysis.compare import compare
from pruned_perf.analysis.verdicts import IMPROVED, REGRESSED, UNCHANGED
from pruned_perf.analysis.metrics import BY_NAME, DEFAULT_THRESHOLDS, LOWER_IS_BETTER
from pruned_perf.analysis.plot import make_figure, save_figure
from pruned_perf.analysis.plot_quality import make_quality_figure
from pruned_perf.analysis.report import render
from pruned_perf.analysis.results import results_from_dict
from pruned_perf.bench.sweep import ModelPool
from pruned_perf.core.errors import UserError
from pruned_perf.llama.models import build_model
from pruned_perf.llama.plan import PrunePlan
from pruned_perf.pruning import variants
from pruned_perf.pruning.calibration import ByteTokenizer
from pruned_perf.pruning.variants import (NO_QUALITY, Variant, load_variant, plan_key, planning_dtype,
                                          structure_from_random_weights, variant_quality)

try:
    from tests.synthetic_results import make_point, make_results, measurement, point_id
except ImportError:
    from synthetic_results import make_point, make_results, measurement, point_id

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
# depth by magnitude needs no calibration: the cheapest pruned variant there is
CHEAP = Variant("tiny-llama", "depth", ratio=0.3, criterion="magnitude")


# ---------------------------------------------------------------- the metric and its verdicts


def test_ppl_is_a_gated_metric_that_does_not_drift_and_has_no_rounds():
    ppl = BY_NAME["ppl"]
    assert ppl.better == LOWER_IS_BETTER and ppl.drifts is False and ppl.samples is None
    assert DEFAULT_THRESHOLDS["ppl"] == ppl.threshold == 0.02
    assert ppl.value(measurement(ppl=13.5)) == 13.5 and ppl.value(measurement()) is None


def _with_ppl(base_ppl: float, current_ppl: float):
    """Baseline and current results with identical rounds, differing only in the variant's perplexity."""
    raw = make_results([make_point("smollm2-135m", m, b, 12, 32) for m in ("dense", "depth") for b in (1, 8)],
                       profile="quick")
    results = []
    for ppl in (base_ppl, current_ppl):
        copied = copy.deepcopy(raw)
        for bench in copied["benchmarks"]:
            bench["extra_info"]["ppl"] = 13.5 if bench["extra_info"]["method"] == "dense" else ppl
        results.append(results_from_dict(copied, f"ppl-{ppl}.json"))
    return results


@pytest.mark.parametrize("current,status", [(31.0, REGRESSED), (30.3, UNCHANGED), (28.0, IMPROVED)])
def test_compare_gates_perplexity_by_its_threshold_alone(current, status):
    base, cur = _with_ppl(30.0, current)
    comparison = compare(cur, base)
    depth = [p for p in comparison.points if p.point.method == "depth"]
    dense = [p for p in comparison.points if p.point.method == "dense"]
    assert [p.status for p in depth] == [status, status]  # +3.3% / +1% / -6.7% against a 2% threshold
    assert {p.status for p in dense} == {UNCHANGED}
    assert comparison.has_regression == (status == REGRESSED)


def test_a_perplexity_verdict_is_named_ppl():
    base, cur = _with_ppl(30.0, 31.0)
    point = compare(cur, base).by_id()[point_id("smollm2-135m", "depth", 1, 12, 32)]
    verdict = point.metric("ppl")
    assert verdict is not None and verdict.verdict == REGRESSED
    assert verdict.baseline_median == 30.0 and verdict.current_median == 31.0


# ---------------------------------------------------------------- report and figures


def _quality_results(flap_random: bool = True):
    points = [make_point("smollm2-135m", m, b, 12, 32) for m in ("dense", "flap", "depth") for b in (1, 8)]
    points += [make_point("llama-7b", "dense", b, 12, 32) for b in (1, 8)]  # no tokenizer: no ppl
    ppl = {"dense": 13.5, "flap": 51.25, "depth": 62.4}
    for bench in points:
        info = bench["extra_info"]
        if info["model"] == "smollm2-135m":
            info["ppl"] = ppl[info["method"]]
        info["structure_from_random_weights"] = flap_random and info["method"] == "flap"
    return results_from_dict(make_results(points, profile="quick"), "quality.json")


def _table(text: str, title: str) -> list[dict]:
    block = text.split(f"### {title}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    header = [c.strip() for c in block[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in block[2:]]


def test_report_shows_perplexity_per_row_and_nothing_without_a_tokenizer():
    text = render(_quality_results())
    smollm2 = {(r["method"], r["M"]): r["ppl"] for r in _table(text, "smollm2-135m in 12 out 32")}
    assert smollm2 == {("dense", "1"): "13.50", ("dense", "8"): "13.50", ("flap", "1"): "51.25",
                       ("flap", "8"): "51.25", ("depth", "1"): "62.40", ("depth", "8"): "62.40"}
    assert [r["ppl"] for r in _table(text, "llama-7b in 12 out 32")] == ["", ""]


def _legend_labels(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_figure_legend_marks_flap_structure_from_random_weights():
    labels = _legend_labels(make_figure(_quality_results()))
    flap = [label for label in labels if label.startswith("flap")]
    assert flap and all(label.endswith(" (random weights)") for label in flap)
    assert not any("random" in label for label in labels if not label.startswith("flap"))
    assert not any("random" in label for label in _legend_labels(make_figure(_quality_results(False))))


def test_quality_figure_draws_each_variant_at_its_perplexity_against_throughput(tmp_path):
    results = _quality_results()
    fig = save_figure(make_quality_figure(results), tmp_path / "quality.png")
    assert (tmp_path / "quality.png").read_bytes()[:4] == b"\x89PNG"
    assert [ax.get_title() for ax in fig.axes] == ["smollm2-135m in 12 out 32"]  # llama-7b has no ppl
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "held-out perplexity"
    lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines() if len(line.get_xdata())}
    assert set(lines) == {"dense", "flap", "depth"}
    for method, line in lines.items():
        points = sorted((p for p in results.points.values()
                         if p.model == "smollm2-135m" and p.method == method), key=lambda p: p.batch_size)
        assert list(line.get_xdata()) == [p.tokens_per_s for p in points]
        assert list(line.get_ydata()) == [p.ppl for p in points]
    labels = _legend_labels(fig)
    assert [label.split(" ")[0] for label in labels] == ["dense", "depth", "flap"]  # the registry's order
    assert labels[2].endswith("(random weights)")


def test_quality_figure_without_any_perplexity_is_a_user_error():
    raw = make_results([make_point("llama-7b", "dense", 1, 12, 32)])
    with pytest.raises(UserError, match="no measured point has a held-out perplexity"):
        make_quality_figure(results_from_dict(raw, "r.json"))


# ---------------------------------------------------------------- provenance


def test_only_flap_on_random_weights_is_marked():
    def plan(method, source):
        return PrunePlan(method, source=source, num_layers=12)

    flap = Variant("tiny-llama", "flap", ratio=0.3)
    assert structure_from_random_weights(flap, plan("flap", "tiny-llama"))
    assert structure_from_random_weights(Variant("llama-7b", "flap", ratio=0.3), plan("flap", "llama-7b"))
    assert not structure_from_random_weights(Variant("smollm2-135m", "flap", ratio=0.3), plan("flap", "smollm2-135m"))
    assert not structure_from_random_weights(CHEAP, plan("depth", "tiny-llama"))
    assert not structure_from_random_weights(Variant("tiny-llama", "dense"), plan("dense", "tiny-llama"))
    # a directory pruned from a random preset: its plan names the source
    assert structure_from_random_weights(Variant("/some/dir", "flap"), plan("flap", "tiny-gqa"))


# ---------------------------------------------------------------- perplexity: once, cached beside the plan


@pytest.fixture
def scored(monkeypatch):
    """Counts the held-out perplexity evaluations."""
    calls = []
    real = variants.heldout_perplexity

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(variants, "heldout_perplexity", counting)
    return calls


def test_perplexity_is_scored_once_per_variant_and_read_back_by_the_next_session(tmp_path, scored):
    pool = ModelPool(CPU, torch.float32, tmp_path)
    fields = pool.fields(CHEAP)
    assert pool.fields(CHEAP) == fields and len(scored) == 1
    assert scored[0] == {"max_tokens": 1024, "seq_len": 1024}  # byte-level presets: cheap settings
    assert abs(math.log(fields["ppl"]) - math.log(ByteTokenizer.vocab_size)) < 0.5  # random weights
    assert fields["ppl_tokens"] == 1023 and "first 1024 tokens" in fields["ppl_source"]
    assert fields["plan_dtype"] == "float32" and fields["structure_from_random_weights"] is False
    key = plan_key(CHEAP, torch.float32, CPU)
    stored = [p.name for p in tmp_path.glob(f"{key}.ppl-*.json")]
    assert len(stored) == 1 and (tmp_path / f"{key}.json").is_file()  # beside the plan, under its key

    assert ModelPool(CPU, torch.float32, tmp_path).fields(CHEAP) == fields and len(scored) == 1  # a new session
    (tmp_path / stored[0]).write_text("{not json")  # unreadable: scored again, not trusted
    assert ModelPool(CPU, torch.float32, tmp_path).fields(CHEAP) == fields and len(scored) == 2
    assert json.loads((tmp_path / stored[0]).read_text())["ppl"] == fields["ppl"]


def test_perplexity_follows_the_timing_dtype_while_the_plan_is_shared(tmp_path, scored):
    fp32 = ModelPool(CPU, torch.float32, tmp_path).fields(CHEAP)
    bf16 = ModelPool(CPU, torch.bfloat16, tmp_path).fields(CHEAP)
    assert len(scored) == 2 and len(list(tmp_path.glob("*.ppl-*.json"))) == 2
    assert len([p for p in tmp_path.glob("*.json") if ".ppl-" not in p.name]) == 1  # one plan, scored in fp32
    assert bf16["plan_dtype"] == "float32" and bf16["ppl"] != fp32["ppl"]
    assert abs(bf16["ppl"] / fp32["ppl"] - 1) < 0.02  # bfloat16 rounding, not another model


def test_a_model_without_a_tokenizer_has_null_perplexity_and_writes_nothing(tmp_path):
    plan = PrunePlan("dense", source="llama-7b", num_layers=32)
    # no tokenizer: the model is never touched (a random 7B model on the CPU is not built for this)
    assert variant_quality(Variant("llama-7b", "dense"), None, plan, CPU, torch.float16, tmp_path) == NO_QUALITY
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- plans scored in float32


def test_a_bfloat16_run_scores_its_plan_in_float32_and_times_the_same_weights(tmp_path):
    variant = Variant("tiny-gqa", "llm-pruner", ratio=0.35)
    timed, plan = load_variant(variant, CPU, torch.bfloat16, tmp_path / "a")
    reference, plan32 = load_variant(variant, CPU, torch.float32, tmp_path / "b")
    assert plan.settings["scoring_dtype"] == plan32.settings["scoring_dtype"] == "float32"
    assert (plan.keep_heads, plan.keep_channels) == (plan32.keep_heads, plan32.keep_channels)
    # one plan for both timing dtypes: the key names the scoring dtype
    assert [p.name for p in (tmp_path / "a").iterdir()] == [f"{plan_key(variant, torch.float32, CPU)}.json"]
    assert {p.dtype for p in timed.parameters()} == {torch.bfloat16}
    assert timed.model.rotary_emb.inv_freq.dtype == torch.float32  # as a model built in bfloat16 has it
    for (name, a), (_, b) in zip(timed.named_parameters(), reference.named_parameters()):
        assert torch.equal(a, b.to(torch.bfloat16)), name


def test_make_plan_records_the_dtype_that_scored_it():
    from pruned_perf.pruning.variants import make_plan

    plan = make_plan(CHEAP, build_model("tiny-llama", CPU, torch.bfloat16))
    assert plan.settings["scoring_dtype"] == "bfloat16"
    assert "scoring_dtype" not in make_plan(Variant("tiny-llama", "dense"), build_model("tiny-llama")).settings


@pytest.mark.parametrize("model,method,free_gib,expected", [
    ("llama-7b", "llm-pruner", 80, torch.float32),    # 6.7B x 4 bytes x 2 (gradients) = 54 GB: fits
    ("llama-7b", "llm-pruner", 40, torch.float16),    # does not: scored in the timing dtype
    ("llama-7b", "flap", 40, torch.float32),          # forward statistics only: 27 GB
    ("vicuna-13b", "llm-pruner", 78, torch.float16),   # 104 GB of weights and gradients: not on an H100
    ("vicuna-13b", "llm-pruner", 139, torch.float32),  # on an H200 they fit
    ("vicuna-13b", "depth", 80, torch.float32),       # the ppl criterion runs forward only
    ("llama-7b", "dense", 80, torch.float16),         # nothing to score
])
def test_planning_dtype_on_a_gpu_is_float32_where_it_fits(monkeypatch, model, method, free_gib, expected):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free_gib << 30, 141 << 30))
    variant = Variant(model, method, ratio=0.3)
    assert planning_dtype(variant, torch.device("cuda"), torch.float16) == expected
    assert planning_dtype(variant, CPU, torch.float16) == (torch.float16 if method == "dense" else torch.float32)
    assert planning_dtype(variant, torch.device("cuda"), torch.float32) == torch.float32


def test_depth_taylor_counts_its_gradients(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (40 << 30, 80 << 30))
    taylor = Variant("llama-7b", "depth", ratio=0.3, criterion="taylor")
    assert planning_dtype(taylor, torch.device("cuda"), torch.float16) == torch.float16
    assert planning_dtype(Variant("llama-7b", "depth", ratio=0.3), torch.device("cuda"), torch.float16) == torch.float32


# ---------------------------------------------------------------- the perf suite end to end


@pytest.mark.slow
def test_perf_points_carry_their_variants_perplexity(tmp_path):
    """One small perf run: the plugin puts each variant's fields on all of its points."""
    args = ["--pp-device", "cpu", "--pp-profile", "quick", "--pp-models", "tiny-llama", "--pp-methods",
            "dense,depth", "--pp-in", "12", "--pp-out", "2", "--pp-batch", "1,2", "--pp-rounds", "1",
            "--pp-min-round-s", "0", "--pp-cache-dir", tmp_path / "cache", "--benchmark-json", tmp_path / "r.json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PP_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "perf"), "-p", "no:cacheprovider", "-q",
                          *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    points = [b["extra_info"] for b in json.loads((tmp_path / "r.json").read_text())["benchmarks"]]
    ppl = {(p["method"], p["batch_size"]): p["ppl"] for p in points}
    assert ppl[("dense", 1)] == ppl[("dense", 2)] and ppl[("depth", 1)] == ppl[("depth", 2)]
    assert ppl[("dense", 1)] != ppl[("depth", 1)]
    assert {p["ppl_tokens"] for p in points} == {1023}
    assert {(p["method"], p["plan_dtype"]) for p in points} == {("dense", None), ("depth", "float32")}
    assert not any(p["structure_from_random_weights"] for p in points)
    assert len(list((tmp_path / "cache").glob("*.ppl-*.json"))) == 2
    assert "ppl" in run.stdout  # the closing table has the column
