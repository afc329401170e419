"""Results files: validation with one clear message, atomic writes, the baseline store, shard merge."""
import copy
import json
import os

import pytest

from pruned_perf.analysis.baselines import (HISTORY_RUNS, baseline_path, list_baselines, resolve_baseline,
                                            store_baseline)
from pruned_perf.analysis.summaries import RunSummary
from pruned_perf.analysis.results import run_summary
from pruned_perf.analysis.merge import merge_results
from pruned_perf.analysis.results import HISTORY_KEY, load_results
from pruned_perf.core.atomic import write_json_atomic
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import Fingerprint, Measurement, MethodStyle, RunMeta

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
    assert r.profile == "smoke" and r.slug == SLUG and r.schema == 2
    assert len(r.points) == 8
    pid = "llama-7b-flap-in12-out128-M1-eager"
    assert isinstance(r.points[pid], Measurement)
    assert r.points[pid].method == "flap" and len(r.points[pid].rounds_s) == 5
    assert r.points["llama-7b-flap-in12-out128-M8-eager"].oom is True
    # the typed points are the file's extra_info, field for field
    assert [b["extra_info"] for b in r.raw["benchmarks"]] == [p.to_dict() for p in r.points.values()]
    assert r.to_json() == r.raw  # the typed meta too: what was read is written back unchanged
    assert list(r.methods) == ["dense", "depth", "llm-pruner", "flap"]
    assert r.methods["flap"] == MethodStyle("green", "o")
    assert isinstance(r.fingerprint, Fingerprint) and r.fingerprint.torch == "2.11.0"
    assert r.meta.run_id == "run-1" and r.failed == [] and r.datetime.startswith("2025-01-01")


def _bad(tmp_path, mutate):
    raw = make_results([make_point(batch_size=1), make_point(batch_size=8)])
    mutate(raw)
    return write(tmp_path / "bad.json", raw)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["machine_info"]["pruned_perf"].update(schema=1),
     r"machine_info\.pruned_perf: schema must be a supported schema \(2\), got 1"),
    (lambda r: r["machine_info"].pop("pruned_perf"), "no machine_info.pruned_perf.core.schema"),
    (lambda r: r.update(benchmarks=[]), "no benchmarks"),
    (lambda r: r["benchmarks"][1].pop("extra_info"), r"benchmark 1 \(test_generate\[.*M8-eager\]\) has no extra_info"),
    (lambda r: r["benchmarks"][0]["extra_info"].pop("id"), "benchmark 0 .* has no extra_info.id"),
    (lambda r: r["benchmarks"].__setitem__(1, copy.deepcopy(r["benchmarks"][0])),
     r"duplicate point id .*M1-eager' \(benchmarks 0 and 1\)"),
    (lambda r: r["benchmarks"][1]["extra_info"].update(id=r["benchmarks"][0]["extra_info"]["id"]),
     r"benchmark 1: measurement id .*M1-eager' does not match its fields \('.*M8-eager'\)"),
    (lambda r: r["benchmarks"][0]["extra_info"].pop("dtype"), "benchmark 0: measurement .* lacks fields: dtype"),
    (lambda r: r["machine_info"]["pruned_perf"].update(methods={"flap": {"color": "green"}}),
     r"machine_info\.pruned_perf\.methods\.flap lacks fields: marker"),
    (lambda r: r["machine_info"]["pruned_perf"].update(methods=["flap"]),
     r"machine_info\.pruned_perf: methods must be an object mapping each method to its style \(color, marker\)"),
    (lambda r: r["machine_info"]["pruned_perf"].update(session={"failed": "t::a"}),
     r"machine_info\.pruned_perf\.session: failed must be a list of strings, got 't::a'"),
    (lambda r: r["machine_info"]["pruned_perf"].update(profile=""), r"profile must be a file-safe name"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(batch_size="8"),
     r"benchmark 0: measurement '.*M1-eager': batch_size must be a positive integer, got '8'"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(backend="fast"),
     r"benchmark 0: measurement '.*': backend must be one of eager, static, got 'fast'"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(oom="no"), r"oom must be true or false, got 'no'"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(calls_per_round=0),
     r"calls_per_round must be a positive integer, got 0"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(ppl=-1.0), r"ppl must be a finite non-negative number or null"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(layers=None), r"layers must be a list, got None"),
    (lambda r: r["benchmarks"][1]["extra_info"].update(schema=1), r"benchmark 1: measurement '.*': schema 1 is not"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(rounds_s=None), "rounds_s must be a non-empty list"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(rounds_s=[1.0, float("nan")]), "rounds_s must be .*finite"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(rounds_s=[1.0, -1.0]), "rounds_s must be .*positive"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(rounds_s=[0.0]), "rounds_s must be .*positive"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(latency_s=float("inf")), "latency_s must be a finite positive"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(tokens_per_s=0), "tokens_per_s must be a finite positive"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(tpot_s=-0.01), "tpot_s must be a finite non-negative"),
    (lambda r: r["benchmarks"][0]["extra_info"].update(ttft_rounds_s=[float("nan")]), "ttft_rounds_s must be"),
    (lambda r: r["machine_info"]["pruned_perf"]["fingerprint"].update(slug="../etc"),
     r"machine_info\.pruned_perf\.fingerprint: slug must be a file-safe name \(letters, digits, \. _ -\), "
     r"got '\.\./etc'"),
    (lambda r: r["machine_info"]["pruned_perf"]["fingerprint"].pop("slug"),
     r"machine_info\.pruned_perf\.fingerprint lacks fields: slug"),
    (lambda r: r["machine_info"]["pruned_perf"]["fingerprint"].update(memory_bytes="141G"),
     r"fingerprint: memory_bytes must be an integer >= 0 or null, got '141G'"),
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
    dest, runs = store_baseline(results_file, store)
    assert runs == 1
    assert dest == baseline_path(store, SLUG, "smoke") == store / SLUG / "smoke.json"
    assert load_results(dest).points.keys() == load_results(results_file).points.keys()
    [entry] = list_baselines(store)
    assert (entry.slug, entry.profile, entry.points, entry.oom_points, entry.error) == (SLUG, "smoke", 8, 4, "")
    assert entry.torch == "2.11.0"
    store_baseline(results_file, store)  # same hardware: replacing is fine


def test_store_baseline_refuses_other_hardware_or_schema_unless_forced(tmp_path, results_file):
    store = tmp_path / "baselines"
    dest, _ = store_baseline(results_file, store)
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
    dest, _ = store_baseline(results_file, store)
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
    dest, _ = store_baseline(results_file, store)
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
    out = write(tmp_path / "m.json", merged.to_json())
    points = load_results(out).points
    assert len(points) == 4
    assert json.loads(open(out).read())["machine_info"] == load_results(a).raw["machine_info"]
    # the dense points were in another shard: the speedup is computed across shards
    flap, dense = points["llama-7b-flap-in12-out128-M8-eager"], points["llama-7b-dense-in12-out128-M8-eager"]
    assert flap.speedup_vs_dense == pytest.approx(dense.latency_s / flap.latency_s)


@pytest.mark.parametrize("change, message", [
    ({"slug": "nvidia-h100-80gb"}, "fingerprint slug 'nvidia-h200-140gb'.*fingerprint slug 'nvidia-h100-80gb'"),
    ({"profile": "paper"}, "profile 'smoke'.*profile 'paper'"),
    ({"torch": "2.12.0"}, "torch '2.11.0'.*torch '2.12.0'"),
])
def test_merge_refuses_different_runs(tmp_path, change, message):
    a = write(tmp_path / "a.json", make_results(sweep(methods=("dense",), batch_sizes=(1,))))
    raw = make_results(sweep(methods=("flap",), batch_sizes=(1,)))
    if "profile" in change:
        raw["machine_info"]["pruned_perf"]["profile"] = change["profile"]
    else:
        raw["machine_info"]["pruned_perf"]["fingerprint"].update(change)
    b = write(tmp_path / "b.json", raw)
    with pytest.raises(UserError, match=message) as err:
        merge_results([a, b])
    assert "a.json" in str(err.value) and "b.json" in str(err.value)


def test_merge_refuses_overlapping_shards_and_bad_schema(tmp_path):
    a = write(tmp_path / "a.json", make_results(sweep(methods=("dense",), batch_sizes=(1,))))
    b = write(tmp_path / "b.json", make_results(sweep(methods=("dense", "flap"), batch_sizes=(1,))))
    with pytest.raises(UserError, match="'llama-7b-dense-in12-out128-M1-eager' is in both .*a.json and .*b.json"):
        merge_results([a, b])
    c = write(tmp_path / "c.json", make_results([make_point(method="flap")], schema=1))
    with pytest.raises(UserError, match=r"c.json: machine_info.pruned_perf: schema must be a supported schema \(2\), "
                                        r"got 1"):
        merge_results([a, c])
    with pytest.raises(UserError, match="at least one"):
        merge_results([])


def test_merge_joins_the_failed_tests_of_every_shard(tmp_path):
    a = write(tmp_path / "a.json", make_results(sweep(methods=("dense",), batch_sizes=(1,)), failed=["t::a"]))
    b = write(tmp_path / "b.json", make_results(sweep(methods=("flap",), batch_sizes=(1,)), failed=["t::b"]))
    merged = merge_results([a, b])
    assert merged.failed == ["t::a", "t::b"]
    assert merged.to_json()["machine_info"]["pruned_perf"]["session"]["failed"] == ["t::a", "t::b"]


# ---------------------------------------------------------------- speedups and the run history


def test_speedup_over_dense_is_data_with_per_round_samples(results_file):
    points = load_results(results_file).points
    dense = points["llama-7b-dense-in12-out128-M1-eager"]
    depth = points["llama-7b-depth-in12-out128-M1-eager"]
    assert depth.speedup_vs_dense == pytest.approx(dense.latency_s / depth.latency_s)
    assert depth.speedup_rounds == pytest.approx([dense.latency_s / r for r in depth.rounds_s])
    assert dense.speedup_vs_dense is None  # the dense model is the reference, not a ratio
    assert points["llama-7b-depth-in12-out128-M8-eager"].speedup_vs_dense is None  # OOM


def _run(tmp_path, name, seed, **kwargs):
    raw = make_results(sweep(batch_sizes=(1, 8), seed=seed), run_id=name, **kwargs)
    return write(tmp_path / f"{name}.json", raw)


def test_baseline_keeps_a_capped_history_of_runs_newest_last(tmp_path):
    store = tmp_path / "baselines"
    for i in range(HISTORY_RUNS + 2):
        dest, runs = store_baseline(_run(tmp_path, f"run-{i}", seed=i), store)
        assert runs == min(i + 1, HISTORY_RUNS)
    stored = load_results(dest)
    assert [run.run_id for run in stored.runs] == [f"run-{i}" for i in range(2, HISTORY_RUNS + 2)]
    newest = stored.runs[-1].points["llama-7b-flap-in12-out128-M8-eager"]
    assert newest.median("latency_s") == stored.points["llama-7b-flap-in12-out128-M8-eager"].latency_s
    assert newest.probe_s > 0
    # storing the same run again replaces its entry instead of counting it twice
    _, runs = store_baseline(_run(tmp_path, f"run-{HISTORY_RUNS + 1}", seed=0), store)
    assert runs == HISTORY_RUNS


def test_a_run_summary_reads_back_as_written_an_oom_point_as_oom_only(tmp_path):
    r = load_results(write(tmp_path / "r.json", make_results(sweep(batch_sizes=(1, 8), oom_from={"llama-7b": 8}))))
    summary = run_summary(r)
    assert RunSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary
    oom = summary.points["llama-7b-flap-in12-out128-M8-eager"]
    measured = summary.points["llama-7b-flap-in12-out128-M1-eager"]
    assert oom.to_dict() == {"oom": True} and oom.median("latency_s") is None
    assert measured.median("latency_s") == r.points["llama-7b-flap-in12-out128-M1-eager"].latency_s
    assert (summary.run_id, summary.slug, summary.torch) == ("run-1", SLUG, "2.11.0")


def test_baseline_update_refuses_a_run_with_failed_tests_unless_forced(tmp_path):
    store = tmp_path / "baselines"
    bad = _run(tmp_path, "failing", seed=0, failed=["perf/test_generate.py::test_generate[x]"])
    with pytest.raises(UserError, match=r"1 failed or errored test\(s\) \(perf/test_generate.py::test_generate\[x\]\)"):
        store_baseline(bad, store)
    assert not store.exists()
    dest, _ = store_baseline(bad, store, force=True)
    assert dest.is_file()


def test_baseline_update_refuses_widely_spread_rounds_naming_the_points(tmp_path):
    raw = make_results(sweep(batch_sizes=(1,)))
    info = raw["benchmarks"][2]["extra_info"]
    info["rounds_s"] = [1.0, 1.0, 2.0, 3.0, 3.0]  # interquartile range 2.0 over a median of 2.0
    path = write(tmp_path / "r.json", raw)
    with pytest.raises(UserError, match=rf"rounds spread more than 50% .* {info['id']} \(100%\)"):
        store_baseline(path, tmp_path / "baselines")
    assert not (tmp_path / "baselines").exists()


@pytest.mark.parametrize("corrupt, message", [
    (lambda h: h.append({"points": {}, "slug": "nvidia-h100-80gb"}), r"pruned_perf_history\[1\] is from hardware"),
    (lambda h: h[0].pop("points"), r"pruned_perf_history\[0\] lacks fields: points"),
    (lambda h: h[0].update(run_id=7), r"pruned_perf_history\[0\]: run_id must be a string or null, got 7"),
    (lambda h: h[0]["points"].update(x={"latency_s": float("nan")}),
     r"pruned_perf_history\[0\]\.points\.x has bad values for latency_s: \{'latency_s': nan\}"),
    (lambda h: h.clear(), "must be a non-empty list"),
])
def test_a_corrupt_history_is_one_error_and_the_store_stays_untouched(tmp_path, corrupt, message):
    store = tmp_path / "baselines"
    dest, _ = store_baseline(_run(tmp_path, "first", seed=0), store)
    raw = json.loads(dest.read_text())
    corrupt(raw[HISTORY_KEY])
    write(dest, raw)
    before = dest.read_bytes()
    with pytest.raises(UserError, match=message):
        load_results(dest)
    with pytest.raises(UserError, match="existing baseline cannot be read.*--force"):
        store_baseline(_run(tmp_path, "second", seed=1), store)
    assert dest.read_bytes() == before


def test_baseline_update_refuses_a_run_whose_machine_changed_speed(tmp_path):
    raw = make_results(sweep(batch_sizes=(1,)))
    info = raw["benchmarks"][1]["extra_info"]
    info["probe_rounds_s"] = [r * 3 for r in info["probe_rounds_s"]]
    info["probe_s"] *= 3
    path = write(tmp_path / "r.json", raw)
    with pytest.raises(UserError, match=rf"steadiness probe ran 3.\dx slower during {info['id']} than during"):
        store_baseline(path, tmp_path / "baselines")
    assert not (tmp_path / "baselines").exists()


def test_baseline_update_refuses_a_run_whose_threads_waited_for_the_cores(tmp_path):
    raw = make_results(sweep(batch_sizes=(1,)))
    for i, bench in enumerate(raw["benchmarks"]):  # the quiet CPU's waits, one point with a test run beside
        frac = 0.7 if i == 2 else 0.01
        bench["extra_info"].update(runqueue_wait_rounds_s=[frac * r for r in bench["extra_info"]["rounds_s"]],
                                   runqueue_wait_frac=frac)
    busy = raw["benchmarks"][2]["extra_info"]["id"]
    path = write(tmp_path / "r.json", raw)
    with pytest.raises(UserError, match=rf"other processes held the cores: in 1 point\(s\) .* {busy} \(0.70\)"):
        store_baseline(path, tmp_path / "baselines")
    assert not (tmp_path / "baselines").exists()
    raw["benchmarks"][2]["extra_info"]["runqueue_wait_frac"] = 0.05
    assert store_baseline(write(tmp_path / "r.json", raw), tmp_path / "baselines")[0].is_file()


def test_baseline_update_refuses_a_run_beside_which_other_work_used_the_cpus(tmp_path):
    """Other work on a core this run's threads never asked for: no wait, but the CPUs were shared. A GPU
    point's host thread does not compete with it."""
    raw = make_results(sweep(batch_sizes=(1,)))
    for i, bench in enumerate(raw["benchmarks"]):
        cores = 1.0 if i == 1 else 0.02
        bench["extra_info"].update(others_cpu_rounds_s=[cores * r for r in bench["extra_info"]["rounds_s"]],
                                   others_cpu_frac=cores)
    assert store_baseline(write(tmp_path / "gpu.json", raw), tmp_path / "gpu-baselines")[0].is_file()
    for bench in raw["benchmarks"]:
        bench["extra_info"]["device"] = "cpu"
    shared = raw["benchmarks"][1]["extra_info"]["id"]
    path = write(tmp_path / "r.json", raw)
    with pytest.raises(UserError, match=rf"other processes or guests used the CPUs: in 1 point\(s\) they took "
                                        rf"more than 0.25 cores' worth of CPU during the rounds: {shared} \(1.00\)"):
        store_baseline(path, tmp_path / "baselines")
    assert not (tmp_path / "baselines").exists()
    raw["benchmarks"][1]["extra_info"]["others_cpu_frac"] = 0.2
    assert store_baseline(write(tmp_path / "r.json", raw), tmp_path / "baselines")[0].is_file()


def _write_log(path, results: dict, run="run-1", cut_after=None) -> None:
    """A point log as the perf plugin writes it: a header, then one line per point (to_dict)."""
    from types import SimpleNamespace

    from pruned_perf.core.pointlog import PointLog

    meta = {k: v for k, v in results["machine_info"]["pruned_perf"].items() if k != "session"}
    log = PointLog(path, run=run, meta=meta)
    for bench in results["benchmarks"][:cut_after]:
        point = {k: v for k, v in bench["extra_info"].items() if k not in ("speedup_vs_dense", "speedup_rounds",
                                                                           "dense_probe_s")}
        log.append(SimpleNamespace(to_dict=lambda point=point: point), f"perf/test_generate.py::t[{point['id']}]")


def test_a_point_log_reads_as_the_results_of_its_last_run(tmp_path):
    """report/plot/compare read the log of a crashed sweep; speedups are computed as at a session's end."""
    full = make_results(sweep(batch_sizes=(1, 8)))
    log = tmp_path / "r.jsonl"
    _write_log(log, make_results(sweep(batch_sizes=(1,))), run="older")  # a log is appended to
    _write_log(log, full, run="crashed", cut_after=5)
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"run": "crashed", "nodeid": "perf/t')  # the line the crash cut short
    r = load_results(log)
    expected = {b["extra_info"]["id"]: b["extra_info"] for b in full["benchmarks"][:5]}
    assert list(r.points) == list(expected) and r.from_log and r.slug == SLUG and r.profile == "smoke"
    for pid, point in r.points.items():
        assert point.speedup_vs_dense == expected[pid]["speedup_vs_dense"]
        assert point.rounds_s == expected[pid]["rounds_s"]


def test_a_point_log_is_never_a_baseline_and_a_bad_log_is_one_error(tmp_path):
    log = tmp_path / "r.jsonl"
    _write_log(log, make_results(sweep(batch_sizes=(1,))))
    with pytest.raises(UserError, match="a point log, not the results of a finished run"):
        store_baseline(log, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    headless = tmp_path / "old.jsonl"
    headless.write_text("\n".join(line for line in log.read_text().splitlines() if '"meta"' not in line))
    with pytest.raises(UserError, match="no run header line"):
        load_results(headless)
    empty = tmp_path / "empty.jsonl"
    empty.write_text(log.read_text().splitlines()[0] + "\n")
    with pytest.raises(UserError, match="logged no point"):
        load_results(empty)
    with pytest.raises(UserError, match="no such point log"):
        load_results(tmp_path / "none.jsonl")


# ---------------------------------------------------------------- the records' from_dict checks


def test_a_measurement_names_itself_the_field_and_the_bad_value():
    good = make_point(batch_size=1)["extra_info"]
    typed = Measurement.from_dict(good)
    assert Measurement.from_dict(typed.to_dict()) == typed  # what was read is written back
    for field, bad, message in (
            ("latency_s", None, r"latency_s must be a finite positive number, got None"),
            ("rounds_s", [], r"rounds_s must be a non-empty list of finite positive seconds, got \[\]"),
            ("params", -1, r"params must be an integer >= 0, got -1"),
            ("model", "", r"model must be a non-empty string, got ''"),
            ("warmup_s", [1.0, "x"], r"warmup_s must be a list of finite non-negative numbers, got \[1.0, 'x'\]"),
            ("structure_from_random_weights", 1, r"structure_from_random_weights must be true or false, got 1")):
        with pytest.raises(UserError, match=rf"^measurement '{good['id']}': {message}$"):
            Measurement.from_dict({**good, field: bad})


def test_a_point_that_ran_out_of_memory_may_lack_its_timings_but_not_its_identity():
    oom = make_point(batch_size=8, oom=True)["extra_info"]
    assert oom["latency_s"] is None and oom["rounds_s"] == []
    assert Measurement.from_dict(oom).oom
    with pytest.raises(UserError, match=r"rounds_s must be a list of finite positive seconds, got None"):
        Measurement.from_dict({**oom, "rounds_s": None})  # empty, not null (docs/results-schema.md)
    with pytest.raises(UserError, match=r"batch_size must be a positive integer, got True"):
        Measurement.from_dict({**oom, "batch_size": True})
    with pytest.raises(UserError, match=r"a measurement must be an object, got \[\]"):
        Measurement.from_dict([])


def test_run_meta_reads_back_as_written_and_names_its_bad_fields():
    meta = make_results([make_point()])["machine_info"]["pruned_perf"]
    typed = RunMeta.from_dict(meta)
    assert typed.to_dict() == meta and typed.fingerprint.slug == SLUG and typed.methods["dense"].marker
    header = {k: v for k, v in meta.items() if k not in ("session", "run_id")}  # a point log's header
    assert RunMeta.from_dict(header).session is None and RunMeta.from_dict(header).to_dict() == header
    for change, message in (({"run_id": 3}, r"^machine_info\.pruned_perf: run_id must be a string or null, got 3$"),
                            ({"fingerprint": "gpu"}, r"^machine_info\.pruned_perf: fingerprint must be an object"),
                            ({"methods": {"flap": {"color": "", "marker": "o"}}},
                             r"^machine_info\.pruned_perf\.methods\.flap: color must be a non-empty string, got ''$")):
        with pytest.raises(UserError, match=message):
            RunMeta.from_dict({**meta, **change})
    with pytest.raises(UserError, match=r"^Fingerprint: torch must be a string or null, got 2.11$"):
        Fingerprint.from_dict({**meta["fingerprint"], "torch": 2.11})
