"""Results files: validation with one clear message, atomic writes, the baseline store, shard merge."""
import json
import os

import pytest

from pruned_perf.errors import UserError
from pruned_perf.atomic import write_json_atomic
from pruned_perf.results import (
    baseline_path, list_baselines, load_results, merge_results, resolve_baseline, store_baseline,
)

try:
    from tests.synthetic_results import make_point, make_results, sweep, write
except ImportError:
    from synthetic_results import make_point, make_results, sweep, write

SLUG = "nvidia-h200-140gb"


@pytest.fixture
def results_file(tmp_path):
    return write(tmp_path / "results.json", make_results(sweep(batch_sizes=(1, 8), oom_from={"llama-7b": 8})))


def test_load_results_reads_points_by_id(results_file):
    r = load_results(results_file)
    assert r.profile == "smoke" and r.slug == SLUG and r.schema == 1
    assert len(r.points) == 8
    pid = "llama-7b-flap-in12-out128-M1-eager"
    assert r.points[pid]["method"] == "flap" and len(r.points[pid]["rounds_s"]) == 5
    assert r.points["llama-7b-flap-in12-out128-M8-eager"]["oom"] is True
    assert r.raw["benchmarks"][0]["extra_info"] is r.points[r.raw["benchmarks"][0]["extra_info"]["id"]]


def _bad(tmp_path, mutate):
    raw = make_results([make_point(batch_size=1), make_point(batch_size=8)])
    mutate(raw)
    return write(tmp_path / "bad.json", raw)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["machine_info"]["pruned_perf"].update(schema=2),
     r"results schema 2 is not supported \(supported schema: 1\)"),
    (lambda r: r["machine_info"].pop("pruned_perf"), "no machine_info.pruned_perf.schema"),
    (lambda r: r.update(benchmarks=[]), "no benchmarks"),
    (lambda r: r["benchmarks"][1].pop("extra_info"), r"benchmark 1 \(test_generate\[.*M8-eager\]\) has no extra_info"),
    (lambda r: r["benchmarks"][0]["extra_info"].pop("id"), "benchmark 0 .* has no extra_info.id"),
    (lambda r: r["benchmarks"][1]["extra_info"].update(id=r["benchmarks"][0]["extra_info"]["id"]),
     r"duplicate point id .*M1-eager' \(benchmarks 0 and 1\)"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(batch_size="8"), "extra_info.batch_size must be int"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(rounds_s=None), "rounds_s must be a list"),
    (lambda r: r["machine_info"]["pruned_perf"]["fingerprint"].update(slug="../etc"), "not a file-safe name"),
])
def test_invalid_results_give_one_clear_message(tmp_path, mutate, message):
    path = _bad(tmp_path, mutate)
    with pytest.raises(UserError, match=message) as err:
        load_results(path)
    assert str(err.value).startswith(path)  # names the file


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="no such results file"):
        load_results(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"benchmarks": [')
    with pytest.raises(UserError, match=r"bad.json: malformed JSON \(.* line 1 column"):
        load_results(bad)
    with pytest.raises(UserError, match="expected a JSON object"):
        load_results(write(tmp_path / "list.json", [1, 2]))


def test_write_json_atomic_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})  # not serialisable: the old file must survive
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["out.json"]  # no temp files left behind


def test_store_baseline_and_list(tmp_path, results_file):
    store = tmp_path / "baselines"
    dest = store_baseline(results_file, store)
    assert dest == baseline_path(store, SLUG, "smoke") == store / SLUG / "smoke.json"
    assert load_results(dest).points.keys() == load_results(results_file).points.keys()
    [entry] = list_baselines(store)
    assert (entry.slug, entry.profile, entry.points, entry.oom_points, entry.error) == (SLUG, "smoke", 8, 4, "")
    assert entry.torch == "2.11.0"
    store_baseline(results_file, store)  # same hardware: replacing is fine


def test_store_baseline_refuses_other_hardware_or_schema_unless_forced(tmp_path, results_file):
    store = tmp_path / "baselines"
    dest = store_baseline(results_file, store)
    other = make_results([make_point()], slug="nvidia-h100-80gb")
    write(dest, other)  # a baseline for other hardware filed under this slug
    before = dest.read_bytes()
    with pytest.raises(UserError, match="nvidia-h100-80gb.*--force"):
        store_baseline(results_file, store)
    assert dest.read_bytes() == before
    dest.write_text("{not json")
    with pytest.raises(UserError, match="existing baseline cannot be read.*--force"):
        store_baseline(results_file, store)
    assert dest.read_text() == "{not json"
    store_baseline(results_file, store, force=True)
    assert load_results(dest).slug == SLUG


def test_store_baseline_of_invalid_results_changes_nothing(tmp_path, results_file):
    store = tmp_path / "baselines"
    dest = store_baseline(results_file, store)
    before = dest.read_bytes()
    bad = _bad(tmp_path, lambda r: r.update(benchmarks=[]))
    with pytest.raises(UserError, match="no benchmarks"):
        store_baseline(bad, store)
    assert dest.read_bytes() == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["smoke.json"]


def test_list_baselines_reports_unreadable_entries(tmp_path):
    (tmp_path / "gpu-a").mkdir()
    (tmp_path / "gpu-a" / "smoke.json").write_text("nope")
    [entry] = list_baselines(tmp_path)
    assert "malformed JSON" in entry.error
    assert list_baselines(tmp_path / "absent") == []


def test_resolve_baseline_file_dir_and_auto(tmp_path, results_file):
    r = load_results(results_file)
    store = tmp_path / "baselines"
    with pytest.raises(UserError, match=f"no baseline for {SLUG} profile smoke: .*smoke.json does not exist"):
        resolve_baseline("auto", r, store)
    dest = store_baseline(results_file, store)
    assert resolve_baseline("auto", r, store) == dest
    assert resolve_baseline(str(store), r, tmp_path / "elsewhere") == dest  # <dir>/<slug>/<profile>.json
    assert resolve_baseline(str(store / SLUG), r) == dest  # <dir>/<profile>.json
    assert str(resolve_baseline(str(results_file), r)) == results_file
    with pytest.raises(UserError, match="no such file or directory"):
        resolve_baseline(str(tmp_path / "nope.json"), r)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has neither"):
        resolve_baseline(str(tmp_path / "empty"), r)


def test_merge_results_concatenates_shards(tmp_path):
    a = write(tmp_path / "a.json", make_results(sweep(methods=("dense",), batch_sizes=(1, 8))))
    b = write(tmp_path / "b.json", make_results(sweep(methods=("flap",), batch_sizes=(1, 8))))
    merged = merge_results([a, b])
    out = write(tmp_path / "m.json", merged)
    assert len(load_results(out).points) == 4
    assert merged["machine_info"] == load_results(a).raw["machine_info"]


@pytest.mark.parametrize("change, message", [
    ({"slug": "nvidia-h100-80gb"}, "fingerprint slug 'nvidia-h200-140gb'.*fingerprint slug 'nvidia-h100-80gb'"),
    ({"profile": "paper"}, "profile 'smoke'.*profile 'paper'"),
])
def test_merge_refuses_different_runs(tmp_path, change, message):
    a = write(tmp_path / "a.json", make_results(sweep(methods=("dense",), batch_sizes=(1,))))
    raw = make_results(sweep(methods=("flap",), batch_sizes=(1,)))
    if "slug" in change:
        raw["machine_info"]["pruned_perf"]["fingerprint"]["slug"] = change["slug"]
    else:
        raw["machine_info"]["pruned_perf"]["profile"] = change["profile"]
    b = write(tmp_path / "b.json", raw)
    with pytest.raises(UserError, match=message) as err:
        merge_results([a, b])
    assert "a.json" in str(err.value) and "b.json" in str(err.value)


def test_merge_refuses_overlapping_shards_and_bad_schema(tmp_path):
    a = write(tmp_path / "a.json", make_results(sweep(methods=("dense",), batch_sizes=(1,))))
    b = write(tmp_path / "b.json", make_results(sweep(methods=("dense", "flap"), batch_sizes=(1,))))
    with pytest.raises(UserError, match="'llama-7b-dense-in12-out128-M1-eager' is in both .*a.json and .*b.json"):
        merge_results([a, b])
    c = write(tmp_path / "c.json", make_results([make_point(method="flap")], schema=2))
    with pytest.raises(UserError, match="c.json: results schema 2 is not supported"):
        merge_results([a, c])
    with pytest.raises(UserError, match="at least one"):
        merge_results([])
