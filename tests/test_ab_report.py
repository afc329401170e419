"""report, compare, plot, merge and baseline update of an A/B results file (ab.json: pruned_perf/analysis/ab.py,
ab_report.py, ab_plot.py), on synthetic runs (tests/synthetic_ab.py), through the CLI and its exit codes."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from pruned_perf.analysis.ab import AB_KEY, PointAB
from pruned_perf.analysis.ab_report import ABJudgement, live_line
from pruned_perf.analysis.results import load_results, results_from_dict
from pruned_perf.analysis.verdicts import FAILED, IMPROVED, INCONCLUSIVE, REGRESSED, UNCHANGED
from pruned_perf.cli import main
from pruned_perf.core.ab_schema import SideDescription
from pruned_perf.core.schema import Point

try:
    from tests.synthetic_ab import make_ab_results, worker
    from tests.synthetic_results import make_results, sweep, write
except ImportError:
    from synthetic_ab import make_ab_results, worker
    from synthetic_results import make_results, sweep, write

SLOWER = "smollm2-135m-flap-in16-out16-M8-eager"
NEWLY_OOM = "smollm2-135m-depth-in16-out16-M64-eager"
BUSY = "smollm2-135m-dense-in16-out16-M8-eager"
FAILS = "smollm2-135m-llm-pruner-in16-out16-M1-eager"
SPECS = [
    {"method": "dense", "batch_size": 1, "ratio": 1.0},
    {"method": "dense", "batch_size": 8, "ratio": 1.0, "load_share": 1.0},
    {"method": "flap", "batch_size": 1, "ratio": 1.0},
    {"method": "flap", "batch_size": 8, "ratio": 1.3},
    {"method": "depth", "batch_size": 1, "ratio": 0.7},
    {"method": "depth", "batch_size": 64, "ratio": 1.0, "head_oom": True},
    {"method": "llm-pruner", "batch_size": 1, "ratio": 1.0, "failed": "the head worker was killed by signal 9 "
                                                                      "before it could answer a round"},
]


@pytest.fixture(scope="module")
def ab_raw():
    return make_ab_results(SPECS, seed=4)


@pytest.fixture
def ab_file(ab_raw, tmp_path):
    path = tmp_path / "ab.json"
    write(path, ab_raw)
    return path


def _judgement(raw) -> ABJudgement:
    results = results_from_dict(raw, "ab.json")
    return ABJudgement(results, results.ab)


def test_the_synthetic_run_has_the_verdicts_the_tests_rely_on(ab_raw):
    judgement = _judgement(ab_raw)
    status = {p.id: p.status for p in judgement.record.points}
    assert status[SLOWER] == status[NEWLY_OOM] == REGRESSED and status[FAILS] == FAILED
    assert status[BUSY] == INCONCLUSIVE and judgement.record.point(BUSY).ab.busy
    assert status["smollm2-135m-depth-in16-out16-M1-eager"] == IMPROVED
    assert status["smollm2-135m-dense-in16-out16-M1-eager"] == UNCHANGED
    assert judgement.record.base.sha == "1" * 40 and FAILS not in judgement.results.points
    slower = judgement.record.point(SLOWER)
    assert slower.base.latency_s < judgement.results.points[SLOWER].latency_s


@pytest.mark.parametrize("threads, says", [(1, "1 thread"), (2, "2 threads"), (None, "? threads")])
def test_a_side_names_its_thread_count(threads, says):
    assert SideDescription(role="head", spec="working tree", threads=threads).line().endswith(", " + says)


def test_report_shows_both_sides_and_every_point_regressions_and_failures_first(ab_file, capsys):
    assert main(["report", str(ab_file), "--format", "plain"]) == 0
    out = capsys.readouterr().out
    assert "pruned_perf A/B: new vs base, profile quick, 7 points" in out
    assert "base: HEAD~1 at 111111111111, pruned_perf from /cache/base/pruned_perf, python 3.12.3, " \
           "torch 2.13.0, transformers 5.1.0, 2 threads" in out
    assert "new:  working tree at 222222222222 (dirty)" in out
    assert "REGRESSION: 2 regressed, 1 failed, 1 inconclusive, 1 improved, 2 unchanged (1 on a busy machine)" in out
    assert "beyond the bias floor of 3%" in out
    rows = [line for line in out.splitlines() if line.startswith("smollm2-135m")]
    assert len(rows) == 7
    assert {r.split()[0] for r in rows[:2]} == {SLOWER, NEWLY_OOM} and rows[2].startswith(FAILS)
    slower = next(r for r in rows if r.startswith(SLOWER))
    assert "REGRESSED" in slower and "latency_s" in slower and "x [" in slower
    failed = next(r for r in rows if r.startswith(FAILS))
    assert "FAILED" in failed and "killed by signal 9" in failed and failed.split()[1] == "4"
    busy = next(r for r in rows if r.startswith(BUSY))
    assert "machine busy in 2 of 2 pairs: work outside the A/B used up to 1.00 cores" in busy
    assert "head ran out of memory, base did not" in next(r for r in rows if r.startswith(NEWLY_OOM))
    unchanged = next(r for r in rows if r.startswith("smollm2-135m-dense-in16-out16-M1"))
    assert "[too few pairs]" not in unchanged and "[-" not in unchanged  # the interval that decided


def test_a_failed_point_alone_fails_the_comparison(tmp_path, capsys):
    write(tmp_path / "ab.json", make_ab_results([SPECS[0], SPECS[-1]], seed=2))
    assert main(["compare", str(tmp_path / "ab.json"), "--format", "plain"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 failed, 1 unchanged" in out


def test_an_interrupted_run_says_so(ab_raw, tmp_path, capsys):
    raw = copy.deepcopy(ab_raw)
    raw["machine_info"]["pruned_perf"]["session"] = {"failed": [], "interrupted": True}
    write(tmp_path / "ab.json", raw)
    main(["compare", str(tmp_path / "ab.json"), "--format", "plain", "--json", str(tmp_path / "v.json")])
    assert "INTERRUPTED (Ctrl-C)" in capsys.readouterr().out
    assert json.loads((tmp_path / "v.json").read_text())["interrupted"] is True


def test_report_names_a_library_that_differs_between_the_sides(tmp_path, capsys):
    raw = make_ab_results(SPECS[:1], head_worker=worker("head", transformers="5.2.0", spec="/venv2/bin/python"))
    write(tmp_path / "ab.json", raw)
    assert main(["report", str(tmp_path / "ab.json"), "--format", "github"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## pruned_perf A/B")
    assert "note: the sides differ in transformers (5.1.0 vs 5.2.0)" in out and "/venv2/bin/python" in out


def test_compare_rederives_the_verdicts_from_the_pairs_and_exits_1_on_a_regression(ab_raw, tmp_path, capsys):
    # the stored verdict of the slower point says unchanged: compare judges the stored pairs again
    tampered = copy.deepcopy(ab_raw)
    point = next(p for p in tampered[AB_KEY]["points"] if p["id"] == SLOWER)
    point["ab"].update(status="unchanged", metrics=[])
    write(tmp_path / "ab.json", tampered)
    assert main(["compare", str(tmp_path / "ab.json"), "--format", "plain", "--json", str(tmp_path / "v.json")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and next(r for r in out.splitlines() if r.startswith(SLOWER)).count("REGRESSED") == 1
    verdicts = json.loads((tmp_path / "v.json").read_text())
    assert verdicts["has_regression"] and verdicts["points"][SLOWER]["status"] == REGRESSED
    assert verdicts["points"][SLOWER]["pairs"] == len(point["ab"]["pairs"])
    assert verdicts["points"][FAILS]["status"] == FAILED  # no verdict to judge again: it stays


def test_compare_of_identical_code_exits_0(tmp_path, capsys):
    write(tmp_path / "ab.json", make_ab_results([{"method": m, "batch_size": 1, "ratio": 1.0}
                                                 for m in ("dense", "flap", "depth")], seed=1))
    assert main(["compare", str(tmp_path / "ab.json"), "--format", "plain"]) == 0
    assert "no regression" in capsys.readouterr().out


def test_compare_with_a_pyproject_judges_with_its_thresholds(tmp_path):
    write(tmp_path / "ab.json", make_ab_results([SPECS[3]], seed=4))
    assert main(["compare", str(tmp_path / "ab.json")]) == 1
    (tmp_path / "pyproject.toml").write_text("[tool.pruned_perf.thresholds]\nlatency_s = 0.5\ntokens_per_s = 0.5\n"
                                             "ttft_s = 0.5\ntpot_s = 0.5\n")
    assert main(["compare", str(tmp_path / "ab.json"), "--pyproject", str(tmp_path / "pyproject.toml")]) == 0


@pytest.mark.parametrize("case,message", [
    ("bad_settings", "unknown key(s) pairs"),
    ("no_verdict", "pruned_perf_ab has no verdict for point(s) smollm2-135m-dense-in16-out16-M1-eager"),
    ("bad_pairs", "pruned_perf_ab.points[0].ab.pairs[0] lacks fields: base, head"),
    ("other_base", "the base's measurement is of another point"),
    ("bad_status", "status must be one of regressed, improved, unchanged, inconclusive, failed, got 'fine'"),
    ("old_format", "an A/B written by an older pruned_perf"),
])
def test_bad_ab_input_is_one_error_and_exit_2(ab_raw, tmp_path, capsys, case, message):
    raw = copy.deepcopy(ab_raw)
    record, first = raw[AB_KEY], raw[AB_KEY]["points"][0]
    if case == "bad_settings":
        record["settings"] = {"pairs": 3}
    elif case == "no_verdict":
        record["points"] = record["points"][1:]
    elif case == "bad_pairs":
        first["ab"]["pairs"] = [{"first": "base"}]
    elif case == "other_base":
        first["base"] = record["points"][2]["base"]
    elif case == "bad_status":
        first["ab"]["status"] = "fine"
    elif case == "old_format":
        raw["machine_info"]["pruned_perf"]["ab"] = {"base": {}, "head": {}, "settings": {}}
    write(tmp_path / "ab.json", raw)
    for command in ("compare", "report"):
        assert main([command, str(tmp_path / "ab.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_plot_draws_what_the_ab_decided_over_the_base_side(ab_file, tmp_path, capsys, monkeypatch):
    from pruned_perf.analysis import plot as plot_module

    drawn = {}
    real = plot_module.make_figure

    def spy(current, baseline=None, comparison=None, top=None):
        fig = real(current, baseline, comparison, top=top)
        drawn.update(current=current, baseline=baseline, fig=fig)
        return fig

    monkeypatch.setattr(plot_module, "make_figure", spy)
    assert main(["plot", str(ab_file), "--out", str(tmp_path / "fig.png")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "fig.png").stat().st_size > 10_000
    base, head = drawn["baseline"], drawn["current"]
    assert set(base.points) <= set(head.points) and base.path.endswith("(base side)")
    assert base.points[SLOWER].latency_s < head.points[SLOWER].latency_s  # the base side's own numbers
    forest = drawn["fig"].axes[0]  # the top panel: a row per point of the A/B, failed ones included
    assert [t.get_text() for t in forest.get_yticklabels()][::-1] == [p["id"] for p in json.loads(
        ab_file.read_text())[AB_KEY]["points"]]
    texts = [t.get_text() for t in forest.texts]
    assert any(t.startswith("regressed (") for t in texts) and any(t.startswith("failed (4 pairs)") for t in texts)
    lines = {round(x, 4) for line in forest.get_lines() for x in line.get_xdata() if len(set(line.get_xdata())) == 1}
    assert {1.0, round(1.03, 4), round(1 / 1.03, 4)} <= lines  # 1 and the bias floor


def test_merge_and_baseline_update_refuse_an_ab_file_with_one_line(ab_file, tmp_path, capsys):
    assert main(["merge", str(ab_file), "-o", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "is an interleaved A/B (pruned_perf_ab): merge joins the shards of plain runs" in err
    assert err.count("\n") == 1 and not (tmp_path / "m.json").exists()
    for force in ([], ["--force"]):
        assert main(["baseline", "update", str(ab_file), "--baselines-dir", str(tmp_path / "b"), *force]) == 2
        err = capsys.readouterr().err
        assert "an interleaved A/B, not a run of one version" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("*.json"))


def test_an_ab_file_reads_and_writes_back_whole(ab_raw):
    results = results_from_dict(ab_raw, "ab.json")
    again = results_from_dict(json.loads(json.dumps(results.to_json())), "again.json")
    assert again.ab == results.ab and len(again.ab.points) == 7


def test_a_run_whose_every_point_went_unmeasured_still_reads(ab_raw, tmp_path, capsys):
    busy = PointAB(status=INCONCLUSIVE, reason="machine busy before the point started: ...", busy="machine busy",
                   family=1)
    raw = {"machine_info": ab_raw["machine_info"], "benchmarks": [],
           AB_KEY: {**ab_raw[AB_KEY], "points": [{"id": BUSY, "ab": busy.to_dict(), "base": None}]}}
    write(tmp_path / "ab.json", raw)
    assert main(["compare", str(tmp_path / "ab.json"), "--format", "plain"]) == 0
    assert "no regression: 1 inconclusive (1 on a busy machine)" in capsys.readouterr().out


def test_the_live_line_shows_the_interval_that_decided(ab_raw):
    judgement = _judgement(ab_raw)
    first = judgement.record.points[0]
    line = live_line(Point("smollm2-135m", "dense", 16, 16, 1), first.ab)
    assert line.startswith("pruned_perf A/B: smollm2-135m dense in16 out16 M1 eager: ")
    assert ", new/base 1." in line or ", new/base 0." in line
    assert " [" in line and "unchanged" in line
    failed = judgement.record.point(FAILS)
    assert live_line(Point("smollm2-135m", "llm-pruner", 16, 16, 1), failed.ab).endswith(
        "failed (the head worker was killed by signal 9 before it could answer a round)")


def test_a_plain_results_file_is_no_ab(tmp_path):
    write(tmp_path / "r.json", make_results(sweep(batch_sizes=(1,))))
    assert load_results(tmp_path / "r.json").ab is None


def test_the_ab_commands_run_without_torch(ab_file):
    blocked = "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
    code = blocked + f"from pruned_perf.cli import main; sys.exit(main(['compare', {str(ab_file)!r}]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "REGRESSION" in done.stdout
