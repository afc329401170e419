"""report, compare and plot of an A/B results file (ab.json, pruned_perf/analysis/ab.py, ab_report.py),
on synthetic runs (tests/synthetic_ab.py), through the CLI and its exit codes."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from pruned_perf.analysis import paired
from pruned_perf.analysis.ab import Worker, has_ab, load_ab
from pruned_perf.analysis.paired import ABSettings
from pruned_perf.analysis.results import load_results, results_from_dict
from pruned_perf.cli import main

try:
    from tests.synthetic_ab import make_ab_results, worker
    from tests.synthetic_results import make_results, sweep, write
except ImportError:
    from synthetic_ab import make_ab_results, worker
    from synthetic_results import make_results, sweep, write

SLOWER = "smollm2-135m-flap-in16-out16-M8-eager"
NEWLY_OOM = "smollm2-135m-depth-in16-out16-M64-eager"
BUSY = "smollm2-135m-dense-in16-out16-M8-eager"
SPECS = [
    {"method": "dense", "batch_size": 1, "ratio": 1.0},
    {"method": "dense", "batch_size": 8, "ratio": 1.0, "load": (0.7, 0.9)},
    {"method": "flap", "batch_size": 1, "ratio": 1.0},
    {"method": "flap", "batch_size": 8, "ratio": 1.3},
    {"method": "depth", "batch_size": 1, "ratio": 0.7},
    {"method": "depth", "batch_size": 64, "ratio": 1.0, "head_oom": True},
]


@pytest.fixture(scope="module")
def ab_raw():
    return make_ab_results(SPECS, seed=4)


@pytest.fixture
def ab_file(ab_raw, tmp_path):
    path = tmp_path / "ab.json"
    write(path, ab_raw)
    return path


def test_the_synthetic_run_has_the_verdicts_the_tests_rely_on(ab_raw):
    ab = load_ab(results_from_dict(ab_raw, "ab.json"))
    status = {pid: p.ab.status for pid, p in ab.points.items()}
    assert status[SLOWER] == status[NEWLY_OOM] == paired.REGRESSED
    assert status[BUSY] == paired.INCONCLUSIVE and ab.points[BUSY].ab.busy
    assert status["smollm2-135m-depth-in16-out16-M1-eager"] == paired.IMPROVED
    assert ab.workers["base"].sha == "1" * 40 and ab.settings == ABSettings()
    assert ab.points[SLOWER].base.latency_s < ab.points[SLOWER].head.latency_s


@pytest.mark.parametrize("threads, says", [(1, "1 thread"), (2, "2 threads"), (None, "? threads")])
def test_a_side_names_its_thread_count(threads, says):
    line = Worker(role="head", spec="working tree", threads=threads).describe()
    assert line.endswith(", " + says)


def test_report_shows_both_sides_and_the_ab_table_regressions_first(ab_file, capsys):
    assert main(["report", str(ab_file), "--format", "plain"]) == 0
    out = capsys.readouterr().out
    assert "pruned_perf A/B: new vs base, profile quick, 6 points" in out
    assert "base: HEAD~1 at 111111111111, pruned_perf from /cache/base/pruned_perf, python 3.12.3, " \
           "torch 2.13.0, transformers 5.1.0, 2 threads" in out
    assert "new:  working tree at 222222222222 (dirty)" in out
    assert "REGRESSION: 2 regressed, 1 inconclusive, 1 improved, 2 unchanged" in out
    assert "(1 measured on a busy machine)" in out
    rows = [line for line in out.splitlines() if line.startswith("smollm2-135m")]
    assert len(rows) == 6
    assert [r.split()[0] for r in rows[:2]] == sorted([SLOWER, NEWLY_OOM], key=lambda p: p != SLOWER)
    slower = next(r for r in rows if r.startswith(SLOWER))
    assert "REGRESSED" in slower and "latency_s" in slower and "x [" in slower
    busy = next(r for r in rows if r.startswith(BUSY))
    assert "machine busy in " in busy and "threads waited up to 0.70 s per s for a CPU" in busy
    assert "others used up to 0.90 cores" in busy
    assert "head ran out of memory, base did not" in next(r for r in rows if r.startswith(NEWLY_OOM))


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
    for bench in tampered["benchmarks"]:
        if bench["extra_info"]["id"] == SLOWER:
            bench["extra_info"]["ab"]["status"] = "unchanged"
            bench["extra_info"]["ab"]["metrics"] = []
    write(tmp_path / "ab.json", tampered)
    assert main(["compare", str(tmp_path / "ab.json"), "--format", "plain", "--json", str(tmp_path / "v.json")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and next(r for r in out.splitlines() if r.startswith(SLOWER)).count("REGRESSED") == 1
    verdicts = json.loads((tmp_path / "v.json").read_text())
    assert verdicts["has_regression"] and verdicts["points"][SLOWER]["status"] == paired.REGRESSED
    assert verdicts["points"][SLOWER]["pairs"] == len(ab_raw["benchmarks"][3]["extra_info"]["ab"]["pairs"])


def test_compare_of_identical_code_exits_0(tmp_path, capsys):
    write(tmp_path / "ab.json", make_ab_results([{"method": m, "batch_size": 1, "ratio": 1.0}
                                                 for m in ("dense", "flap", "depth")], seed=1))
    assert main(["compare", str(tmp_path / "ab.json"), "--format", "plain"]) == 0
    assert "no regression" in capsys.readouterr().out


def test_compare_with_a_pyproject_judges_with_its_thresholds(ab_raw, tmp_path):
    slower_only = make_ab_results([SPECS[3]], seed=4)
    write(tmp_path / "ab.json", slower_only)
    assert main(["compare", str(tmp_path / "ab.json")]) == 1
    (tmp_path / "pyproject.toml").write_text("[tool.pruned_perf.thresholds]\nlatency_s = 0.5\ntokens_per_s = 0.5\n"
                                             "ttft_s = 0.5\ntpot_s = 0.5\n")
    assert main(["compare", str(tmp_path / "ab.json"), "--pyproject", str(tmp_path / "pyproject.toml")]) == 0


@pytest.mark.parametrize("case,message", [
    ("no_settings", "machine_info.pruned_perf.ab lacks settings"),
    ("bad_settings", "unknown key(s) pairs"),
    ("no_ab", "has no extra_info.ab, in an A/B results file"),
    ("bad_pairs", "malformed A/B record"),
    ("other_base", "extra_info.ab_base is of another point"),
    ("bad_status", "A/B status 'fine' unknown; valid choices"),
])
def test_bad_ab_input_is_one_error_and_exit_2(ab_raw, tmp_path, capsys, case, message):
    raw = copy.deepcopy(ab_raw)
    meta, extra = raw["machine_info"]["pruned_perf"]["ab"], raw["benchmarks"][0]["extra_info"]
    if case == "no_settings":
        del meta["settings"]
    elif case == "bad_settings":
        meta["settings"] = {"pairs": 3}
    elif case == "no_ab":
        del extra["ab"]
    elif case == "bad_pairs":
        extra["ab"]["pairs"] = [{"first": "base"}]
    elif case == "other_base":
        extra["ab_base"] = raw["benchmarks"][1]["extra_info"]["ab_base"]
    elif case == "bad_status":
        extra["ab"]["status"] = "fine"
    write(tmp_path / "ab.json", raw)
    for command in ("compare", "report"):
        assert main([command, str(tmp_path / "ab.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_plot_overlays_the_base_side(ab_file, tmp_path, capsys, monkeypatch):
    from pruned_perf.analysis import plot as plot_module

    drawn = {}
    real_plot = plot_module.plot

    def spy(current, out, baseline=None, comparison=None, quality=False):
        drawn.update(current=current, baseline=baseline)
        return real_plot(current, out, baseline=baseline, comparison=comparison, quality=quality)

    monkeypatch.setattr(plot_module, "plot", spy)
    assert main(["plot", str(ab_file), "--out", str(tmp_path / "fig.png")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "fig.png").stat().st_size > 10_000
    base, head = drawn["baseline"], drawn["current"]
    assert set(base.points) == set(head.points)
    assert base.points[SLOWER].latency_s < head.points[SLOWER].latency_s  # the base side's own numbers
    assert base.path.endswith("(base side)")


def test_a_plain_results_file_is_no_ab(tmp_path):
    write(tmp_path / "r.json", make_results(sweep(batch_sizes=(1,))))
    assert not has_ab(load_results(tmp_path / "r.json"))


def test_the_ab_commands_run_without_torch(ab_file):
    blocked = "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
    code = blocked + f"from pruned_perf.cli import main; sys.exit(main(['compare', {str(ab_file)!r}]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "REGRESSION" in done.stdout
