"""The sweep's pure parts: option parsing, selection, point order, sharding, the model pool, the point
log (pruned_perf.core.pointlog) and the plan cache key. Fast: no model is built here."""
import gc
import json
import weakref
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruned_perf.bench import sweep
from pruned_perf.bench.options import parse_int, parse_ints, parse_names, parse_shard
from pruned_perf.bench.sweep import ModelPool, make_points, select_variants, shard
from pruned_perf.core.errors import UserError
from pruned_perf.core.pointlog import PointLog, read_log
from pruned_perf.pruning.variants import PROFILES, Variant, get_profile, plan_key
from pruned_perf.core.schema import Measurement, Point

CPU = torch.device("cpu")


# ---------------------------------------------------------------- option parsing


def test_parse_ints():
    assert parse_ints(None, "--pp-batch") is None
    assert parse_ints("1,8, 16", "--pp-batch") == (1, 8, 16)
    assert parse_ints("4", "--pp-batch") == (4,)
    for bad in ("0", "1,-2", "x", "", " , ", "1.5"):
        with pytest.raises(UserError, match="--pp-batch"):
            parse_ints(bad, "--pp-batch")


def test_parse_int_names_the_option_and_the_value():
    assert parse_int(None, "--pp-ab-pairs") is None
    assert parse_int("30", "--pp-ab-pairs") == 30
    for bad in ("0", "-3", "x", "1,2", ""):
        with pytest.raises(UserError, match=r"--pp-ab-pairs must be a positive integer, got "):
            parse_int(bad, "--pp-ab-pairs")


def test_parse_names():
    assert parse_names(None) is None
    assert parse_names("dense, depth,,") == ("dense", "depth")


def test_parse_shard():
    assert parse_shard(None) is None
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard("1/1") == (1, 1)
    for bad in ("0/2", "3/2", "1/0", "2", "a/b", "1/2/3"):
        with pytest.raises(UserError, match="--pp-shard"):
            parse_shard(bad)
    with pytest.raises(UserError, match=r"'3/2'.*1\.\.2"):  # names the bad value and the valid range
        parse_shard("3/2")


# ---------------------------------------------------------------- selection and order


def test_select_variants_defaults_to_the_profile():
    quick = get_profile("quick")
    assert select_variants(quick) == list(quick.variants)


def test_select_variants_by_model_and_method():
    quick = get_profile("quick")
    chosen = select_variants(quick, ("tiny-llama",), ("dense", "depth"))
    assert [(v.model, v.method) for v in chosen] == [("tiny-llama", "dense"), ("tiny-llama", "depth")]
    # the profile's settings are kept (not DEFAULT_SIZING's)
    assert chosen[1] == next(v for v in quick.variants if (v.model, v.method) == ("tiny-llama", "depth"))


def test_select_variants_unlisted_model_gets_default_sizing():
    chosen = select_variants(get_profile("quick"), ("llama-7b",), ("depth",))
    assert chosen == [Variant("llama-7b", "depth", ratio=9 / 32)]


def test_select_variants_unknown_method_names_it_and_the_choices():
    with pytest.raises(UserError, match=r"bogus.*dense, depth, flap, llm-pruner"):
        select_variants(get_profile("quick"), None, ("dense", "bogus"))


def test_make_points_groups_by_variant_with_batches_ascending():
    variants = [Variant("tiny-llama", "dense"), Variant("tiny-llama", "depth", ratio=0.3)]
    points = make_points(variants, (12, 82), (4,), (8, 1, 2), ("eager", "static"))
    assert len(points) == 2 * 2 * 1 * 3 * 2
    # variants are contiguous: one model on the device at a time
    methods = [p.method for p in points]
    assert methods == ["dense"] * 12 + ["depth"] * 12
    # each series is contiguous and ascending in batch size (OOM skipping needs the small ones first)
    series = [p.series for p in points]
    for s in set(series):
        where = [i for i, x in enumerate(series) if x == s]
        assert where == list(range(where[0], where[0] + 3))
        assert [points[i].batch_size for i in where] == [1, 2, 8]
    assert len({p.id for p in points}) == len(points)


def test_make_points_rejects_an_unknown_backend():
    with pytest.raises(UserError, match=r"'warp'.*eager, static"):
        make_points([Variant("tiny-llama", "dense")], (12,), (4,), (1,), ("warp",))


def test_a_model_directory_has_the_same_point_ids_however_its_path_is_typed(tmp_path, monkeypatch):
    model_dir = tmp_path / "models" / "my-llama"
    model_dir.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spellings = [str(model_dir), "../models/my-llama", "../models/./my-llama/"]
    ids = [[p.id for p in make_points([Variant(s, "dense")], (12,), (4,), (1,), ("eager",))] for s in spellings]
    assert ids == [["my-llama-dense-in12-out4-M1-eager"]] * 3
    sweep_ = sweep.Sweep(None, [Variant("../models/my-llama", "dense")], [], CPU, torch.float32, 1, 0)
    assert sweep_.variant_for(Point("my-llama", "dense", 12, 4, 1)).model == "../models/my-llama"


def test_point_id_format():
    assert Point("tiny-llama", "depth", 12, 4, 2).id == "tiny-llama-depth-in12-out4-M2-eager"
    assert Point("llama-7b", "flap", 82, 512, 64, "static").id == "llama-7b-flap-in82-out512-M64-static"


# ---------------------------------------------------------------- sharding

_points = st.builds(
    Point,
    model=st.sampled_from(["tiny-llama", "tiny-gqa", "llama-7b"]),
    method=st.sampled_from(["dense", "depth", "flap", "llm-pruner"]),
    input_tokens=st.sampled_from([12, 82]),
    output_tokens=st.sampled_from([4, 128]),
    batch_size=st.integers(1, 384),
    backend=st.sampled_from(["eager", "static"]),
)


def _is_subsequence(part, whole) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


@settings(max_examples=300, deadline=None)
@given(points=st.lists(_points, max_size=40), count=st.integers(1, 6))
def test_shards_partition_the_points_by_series(points, count):
    shards = [shard(points, i, count) for i in range(1, count + 1)]
    # the union is the whole list, nothing twice (as multisets: a list may repeat a point)
    assert Counter(p for s in shards for p in s) == Counter(points)
    # order within a shard is the order of the list
    for s in shards:
        assert _is_subsequence(s, points)
    # every series lies within exactly one shard, so the shards are disjoint
    series_sets = [{p.series for p in s} for s in shards]
    for i in range(count):
        for j in range(i + 1, count):
            assert not series_sets[i] & series_sets[j]
    assert set().union(*series_sets) == {p.series for p in points}
    # whole series in first-appearance order, split as evenly as possible
    sizes = [len(x) for x in series_sets]
    assert max(sizes) - min(sizes) <= 1
    order = list(dict.fromkeys(p.series for p in points))
    assert [x for s in shards for x in dict.fromkeys(p.series for p in s)] == order


def test_shard_one_of_one_is_everything():
    points = make_points(list(PROFILES["quick"].variants), (12,), (32,), (1, 8), ("eager",))
    assert shard(points, 1, 1) == points


# ---------------------------------------------------------------- the model pool


class _FakeModel:
    def __init__(self, variant):
        self.variant = variant


def test_model_pool_keeps_one_model_and_does_not_rebuild_a_failed_variant(monkeypatch):
    a, b = Variant("tiny-llama", "dense"), Variant("tiny-llama", "depth", ratio=0.3)
    broken = Variant("tiny-llama", "flap", ratio=0.3)
    calls = []
    refs = {}

    def fake_load_variant(variant, device, dtype, cache_dir):
        calls.append(variant)
        # one model at a time: every earlier model is gone before the next is built
        for v, ref in refs.items():
            assert ref() is None, f"{v} still alive while building {variant}"
        if variant == broken:
            raise RuntimeError("no such weights")
        model = _FakeModel(variant)
        refs[variant] = weakref.ref(model)
        return model, None

    monkeypatch.setattr(sweep, "load_variant", fake_load_variant)
    pool = ModelPool(CPU, torch.float32, None)

    first = pool.get(a)
    assert first.variant == a
    assert pool.get(a) is first and calls == [a]  # the same variant is not rebuilt
    first_ref = weakref.ref(first)
    del first
    gc.collect()
    assert first_ref() is not None  # the pool holds it

    second = pool.get(b)
    assert second.variant == b and calls == [a, b]
    assert first_ref() is None  # released: garbage-collected
    del second

    with pytest.raises(RuntimeError, match="no such weights"):
        pool.get(broken)
    assert calls == [a, b, broken]
    assert refs[b]() is None and pool.model is None and pool.variant is None
    with pytest.raises(RuntimeError, match="failed earlier.*no such weights"):
        pool.get(broken)
    assert calls == [a, b, broken]  # not rebuilt

    again = pool.get(a)  # a good variant still builds after a failure
    assert again.variant == a and calls == [a, b, broken, a]


# ---------------------------------------------------------------- the point log


def _measurement(batch_size=1, oom=False):
    fields = {"model": "tiny-llama", "method": "dense", "params": 10, "weight_bytes": 40, "batch_size": batch_size,
              "input_tokens": 12, "output_tokens": 4, "backend": "eager", "dtype": "float32", "device": "cpu"}
    if oom:
        return Measurement(**fields, oom=True)
    return Measurement(**fields, latency_s=0.2, latency_iqr_s=0.0, latency_min_s=0.2,
                       tokens_per_s=batch_size * 4 / 0.2, ttft_s=0.05, tpot_s=0.05,
                       rounds_s=[0.2, 0.2], ttft_rounds_s=[0.05, 0.05], warmup_s=[0.3],
                       layers=[{"heads": 4, "kv_heads": 4, "mlp": 352}])


def test_point_log_appends_full_measurements_and_read_log_skips_a_cut_line(tmp_path):
    path = tmp_path / "deep" / "points.jsonl"
    log = PointLog(path, run="2024-01-01T00:00:00")
    log.append(_measurement(1), "perf/test_generate.py::test_generate[a]")
    log.append(_measurement(2, oom=True), "perf/test_generate.py::test_generate[b]")
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"run": "2024-01-01T00:00:00", "nodeid": "perf/test_gen')  # a crash mid-write
    records = read_log(path)
    assert [r["id"] for r in records] == ["tiny-llama-dense-in12-out4-M1-eager", "tiny-llama-dense-in12-out4-M2-eager"]
    assert records[0]["nodeid"].endswith("[a]") and records[0]["run"] == "2024-01-01T00:00:00"
    assert Measurement.from_dict(records[0]) == _measurement(1)
    assert Measurement.from_dict(records[1]) == _measurement(2, oom=True)
    assert records[1]["oom"] is True and records[1]["latency_s"] is None
    # one JSON object per line
    assert all(isinstance(json.loads(line), dict) for line in path.read_text().splitlines()[:2])


# ---------------------------------------------------------------- the plan cache key


def test_plan_key_changes_with_everything_a_plan_depends_on(tmp_path):
    base = Variant("tiny-llama", "flap", ratio=0.3, calib_samples=128)
    key = plan_key(base, torch.float32, CPU)
    assert key == plan_key(Variant("tiny-llama", "flap", ratio=0.3, calib_samples=128), torch.float32, CPU)
    assert key.startswith("tiny-llama-flap-")
    changed = {
        "ratio": plan_key(Variant("tiny-llama", "flap", ratio=0.25, calib_samples=128), torch.float32, CPU),
        "target": plan_key(Variant("tiny-llama", "flap", target="1.5M", calib_samples=128), torch.float32, CPU),
        "calibration samples": plan_key(Variant("tiny-llama", "flap", ratio=0.3, calib_samples=64),
                                        torch.float32, CPU),
        "reference calibration": plan_key(Variant("tiny-llama", "flap", ratio=0.3), torch.float32, CPU),
        "dtype": plan_key(base, torch.float16, CPU),
        "model": plan_key(Variant("tiny-gqa", "flap", ratio=0.3, calib_samples=128), torch.float32, CPU),
        "method": plan_key(Variant("tiny-llama", "llm-pruner", ratio=0.3), torch.float32, CPU),
        "seed": plan_key(base, torch.float32, CPU, seed=1),
    }
    for what, other in changed.items():
        assert other != key, f"plan_key ignores the {what}"
    assert len(set(changed.values())) == len(changed)


def test_plan_key_of_a_model_directory_follows_its_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 10)
    variant = Variant(str(tmp_path), "depth", ratio=0.3)
    key = plan_key(variant, torch.float32, CPU)
    assert key.startswith(f"{tmp_path.name}-depth-")
    assert plan_key(variant, torch.float32, CPU) == key
    weights.write_bytes(b"y" * 11)  # another checkpoint in the same place
    assert plan_key(variant, torch.float32, CPU) != key


def test_quick_profile_measures_the_real_model_at_about_100m_parameters():
    from pruned_perf.llama.models import model_config

    quick = get_profile("quick")
    smollm2 = [v for v in quick.variants if v.model == "smollm2-135m"]
    assert [v.method for v in smollm2] == ["dense", "llm-pruner", "flap", "depth"]
    assert quick.dtype == "float32" and quick.batches == (1, 8) and (quick.inputs, quick.outputs) == ((12,), (32,))
    config = model_config("smollm2-135m")  # sizes come from the config: no weights needed
    for variant in smollm2[1:]:
        assert abs(variant.sizing(config).params / 100e6 - 1) < 0.01, variant
    # calibration cut for a 2-core CPU: the depth ppl criterion runs the model once per candidate block
    assert {v.method: v.calib_spec().samples for v in smollm2[1:]} == {"llm-pruner": 10, "flap": 64, "depth": 4}


def test_the_plan_code_is_every_file_the_methods_and_model_builders_import():
    from pruned_perf.core.codehash import ROOT, dependency_files

    files = {str(p.relative_to(ROOT)) for p in dependency_files("pruned_perf.pruning.methods", "pruned_perf.llama.models")}
    method_files = {f"pruning/methods/{p.name}" for p in (ROOT / "pruning" / "methods").glob("*.py")}
    decides = {f"pruning/{name}" for name in ("sizing.py", "calibration.py", "evaluate.py", "__init__.py")} | {
        "llama/models.py", "llama/checkpoint.py", "llama/plan.py", "__init__.py"}
    assert method_files | decides <= files
    # measuring, reporting and the sweep do not decide a plan: editing them keeps the cached plans
    assert not {f for f in files if f.startswith(("bench/", "analysis/"))}, files


def test_plan_key_changes_when_any_file_the_plan_code_imports_changes(tmp_path, monkeypatch):
    import shutil

    from pruned_perf.core import codehash

    copy = tmp_path / "pruned_perf"
    shutil.copytree(codehash.ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "ROOT", copy)
    variant = Variant("tiny-llama", "depth", ratio=0.3)
    key = plan_key(variant, torch.float32, CPU)
    (copy / "analysis" / "report.py").write_text("# not plan code\n", encoding="utf-8")
    assert plan_key(variant, torch.float32, CPU) == key
    for name in ("pruning/sizing.py", "llama/plan.py", "pruning/methods/__init__.py", "pruning/methods/flap.py"):
        with open(copy / name, "a", encoding="utf-8") as f:
            f.write("\n# changed\n")
        assert plan_key(variant, torch.float32, CPU) != key, f"plan_key ignores {name}"
        key = plan_key(variant, torch.float32, CPU)
