"""The long history (pruned_perf/analysis/history.py, history_ab.py, history_check.py, history_report.py,
history_import.py, site_data.py) and its commands (pruned_perf/cli_history.py): records and the store,
where a step stands, the tables and exit codes, the size of a year of runs and the speed of a check."""
from __future__ import annotations

import copy
import gzip
import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pruned_perf.analysis.history import (RunEnv, RunPoint, VariantInfo, add_run, history_run, load_runs,
                                          read_record)
from pruned_perf.analysis.history_ab import (CULPRIT, NOT_IN_CODE, SPREAD, Bisection, HistoryAB, PointVerdict,
                                             add_ab, add_bisection)
from pruned_perf.analysis.history_check import ENVIRONMENT, SUSPECTED, check_history, judge_history
from pruned_perf.analysis.results import results_from_dict
from pruned_perf.analysis.verdicts import IMPROVED, INCONCLUSIVE, REGRESSED, UNCHANGED
from pruned_perf.cli import main
from pruned_perf.core.errors import UserError

try:
    from tests.synthetic_ab import make_ab_results
    from tests.synthetic_results import make_results, sweep, write
except ImportError:
    from synthetic_ab import make_ab_results
    from synthetic_results import make_results, sweep, write

SLUG = "cpu-2core"
ENV = RunEnv(slug=SLUG, device="cpu", name="cpu", torch="2.13.0", transformers="5.25.0", threads=2)
POINTS = [f"tiny-llama-{m}-in12-out32-M{b}-eager" for m in ("dense", "depth") for b in (1, 8)]
SLOWED = POINTS[0]


def _sha(i: int) -> str:
    return f"{i:040x}"


def synthetic_runs(n: int = 40, step_at: int | None = 30, ratio: float = 1.3, env_at: int | None = None,
                   seed: int = 0, points=POINTS, noise: float = 0.03) -> list:
    """n nightly runs of identical code with 3% noise between runs; from run `step_at` on, SLOWED is `ratio`
    times slower; from `env_at` on, torch is another version (and everything 30% slower)."""
    rng = random.Random(seed)
    runs = []
    for i in range(n):
        env = replace(ENV, torch="2.14.0") if env_at is not None and i >= env_at else ENV
        machine = 1.3 if env_at is not None and i >= env_at else 1.0
        pts = {}
        for pid in points:
            slow = ratio if step_at is not None and i >= step_at and pid == SLOWED else 1.0
            latency = machine * slow * math.exp(rng.gauss(0, noise)) * (1.0 if "M1-" in pid else 2.0)
            pts[pid] = RunPoint(latency_s=latency, latency_spread=0.02, ttft_s=latency / 10, tpot_s=latency / 40,
                                probe_s=0.02 * math.exp(rng.gauss(0, 0.005)), peak_mem_bytes=1000)
        runs.append(history_run_like(i, env, pts))
    return runs


def history_run_like(i: int, env: RunEnv, points: dict):
    from pruned_perf.analysis.history import HistoryRun

    return HistoryRun(run_id=f"run-{i:04d}", profile="quick", measured=f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00",
                      event="schedule", commit=_sha(i), subject=f"commit {i}", env=env, points=points,
                      variants={"tiny-llama/dense": VariantInfo(params=1000), "tiny-llama/depth": VariantInfo(params=700)})


def _ab(base: int, head: int, status: str, ratio: float, point: str = SLOWED) -> HistoryAB:
    return HistoryAB(measured="2026-12-01T00:00:00", purpose="confirm", profile="quick", base=_sha(base),
                     head=_sha(head), env=ENV, points={point: PointVerdict(status=status, ratio=ratio, pairs=18)})


# ---- records and the store ----

def test_a_run_reads_back_as_written_and_its_file_is_small(tmp_path):
    raw = make_results(sweep(models=("llama-7b",), batch_sizes=(1, 8, 64)), profile="smoke")
    results = results_from_dict(raw, "r.json")
    run = history_run(results, "schedule", subject="a change", author_time="2025-01-01T00:00:00+00:00")
    path = add_run(tmp_path, run)
    assert path.parent == tmp_path / results.slug / "smoke" / "runs" and path.name.endswith(".json.gz")
    again = load_runs(tmp_path, results.slug, "smoke")
    assert again == [run.from_dict(json.loads(json.dumps(run.to_dict())))]
    point = next(iter(results.points.values()))
    stored = again[0].points[point.id]
    assert stored.latency_s == pytest.approx(point.latency_s, rel=1e-3)  # four significant digits
    assert stored.latency_spread == pytest.approx(point.latency_iqr_s / point.latency_s, rel=0.01)  # two
    assert again[0].variants["llama-7b/dense"].params == point.params and again[0].methods["depth"].marker
    with pytest.raises(UserError, match="is in the history already"):
        add_run(tmp_path, run)


@pytest.mark.parametrize("change,named", [
    (lambda raw: raw["machine_info"]["pruned_perf"].update(session={"failed": [], "interrupted": True}),
     "an interrupted run is no run for the history"),
    (lambda raw: raw.pop("datetime"), "no datetime"),
])
def test_a_run_that_is_no_nightly_is_refused(change, named):
    raw = make_results(sweep(batch_sizes=(1,)))
    change(raw)
    with pytest.raises(UserError, match=named):
        history_run(results_from_dict(raw, "r.json"), "schedule")


def test_an_ab_file_is_no_run_for_the_history(tmp_path):
    raw = make_ab_results([{"method": "dense", "batch_size": 1, "ratio": 1.0}])
    with pytest.raises(UserError, match="an A/B is no run for the history"):
        history_run(results_from_dict(raw, "ab.json"), "schedule")


def test_a_year_of_nightly_paper_profile_runs_is_well_under_5_mb(tmp_path):
    """256 points (8 variants x 2 inputs x 2 outputs x 8 batch sizes), a tenth out of memory, 365 runs."""
    ids = [f"{m}-{v}-in{i}-out{o}-M{b}-eager" for m in ("llama-7b", "vicuna-13b")
           for v in ("dense", "llm-pruner", "flap", "depth") for i in (12, 82) for o in (128, 512)
           for b in (1, 8, 16, 32, 64, 128, 256, 384)]
    rng = random.Random(1)
    for day in range(365):
        points = {pid: RunPoint(oom=True) if rng.random() < 0.1 else RunPoint(
            latency_s=rng.uniform(1, 60), latency_spread=rng.uniform(0, 0.1), ttft_s=rng.uniform(0.01, 2),
            ttft_spread=rng.uniform(0, 0.1), tpot_s=rng.uniform(0.01, 0.2), tpot_spread=rng.uniform(0, 0.1),
            probe_s=rng.uniform(0.001, 0.002), peak_mem_bytes=rng.randrange(1 << 30, 80 << 30)) for pid in ids}
        run = history_run_like(day, replace(ENV, slug="nvidia-h100"), points)
        add_run(tmp_path, replace(run, run_id=f"night-{day:04d}", profile="paper",
                                  measured=f"2026-{1 + day // 31:02d}-{1 + day % 28:02d}T02:17:{day % 60:02d}"))
    size = sum(p.stat().st_size for p in tmp_path.rglob("*.json.gz"))
    print(f"a year of nightly paper-profile runs: {size / 1e6:.2f} MB in 365 files")
    assert size < 2.5e6


def test_records_name_their_bad_values(tmp_path):
    with pytest.raises(UserError, match="event must be one of schedule, push, manual, import, trial, got 'cron'"):
        replace(synthetic_runs(1)[0], event="cron").from_dict({**synthetic_runs(1)[0].to_dict(), "event": "cron"})
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(UserError, match="not a readable history record"):
        read_record(bad)
    with gzip.open(tmp_path / "v0.json.gz", "wt") as f:
        json.dump({"v": 0}, f)
    with pytest.raises(UserError, match="not a history run of version 1"):
        from pruned_perf.analysis.history import HistoryRun
        HistoryRun.from_dict(read_record(tmp_path / "v0.json.gz"))


# ---- where a step stands ----

def _steps_of(check, point=SLOWED, metric="latency_s"):
    return [s for s in check.steps if s.point == point and s.metric == metric]


def test_a_step_at_the_end_is_suspected_and_names_the_ab_that_would_confirm_it():
    runs = synthetic_runs(33, step_at=30)
    check = judge_history(SLUG, "quick", runs, [], [])
    (step,) = _steps_of(check)
    assert step.standing == SUSPECTED and step.at_end and (step.before, step.at) == (29, 30)
    assert step.ratio == pytest.approx(1.3, rel=0.06) and step.good == _sha(29) and step.bad == _sha(30)
    assert check.suspects() == {(_sha(29), _sha(30)): [SLOWED]}
    assert not check.has_new_regression
    assert not [s for s in check.steps if s.point != SLOWED]  # identical code elsewhere: no step


@pytest.mark.parametrize("status,standing", [(REGRESSED, REGRESSED), (UNCHANGED, ENVIRONMENT)])
def test_the_ab_of_the_ranges_two_ends_decides_a_suspected_step(status, standing):
    runs = synthetic_runs(33, step_at=30)
    check = judge_history(SLUG, "quick", runs, [_ab(29, 30, status, 1.3 if status == REGRESSED else 1.01)], [])
    (step,) = _steps_of(check)
    assert step.standing == standing and step.confirmed_by == "ab"
    assert check.has_new_regression == (standing == REGRESSED) and not check.suspects()


def test_a_bisection_names_the_first_bad_commit_or_says_it_is_spread_or_not_in_the_code():
    runs = synthetic_runs(33, step_at=30)
    base = dict(measured="2026-12-01T00:00:00", profile="quick", good=_sha(29), bad=_sha(30), points=[SLOWED])
    culprit = Bisection(**base, outcome=CULPRIT, culprit=_sha(30), subject="commit 30", ratio=1.29)
    (step,) = _steps_of(judge_history(SLUG, "quick", runs, [], [culprit]))
    assert (step.standing, step.culprit, step.culprit_ratio) == (REGRESSED, _sha(30), 1.29)
    (spread,) = _steps_of(judge_history(SLUG, "quick", runs, [], [Bisection(**base, outcome=SPREAD, ratio=1.3)]))
    assert spread.standing == REGRESSED and spread.reason.startswith("spread over several commits")
    (none,) = _steps_of(judge_history(SLUG, "quick", runs, [], [Bisection(**base, outcome=NOT_IN_CODE)]))
    assert none.standing == ENVIRONMENT


def test_a_settled_step_is_regressed_or_improved_by_persistence_until_an_ab_tries_it():
    runs = synthetic_runs(60, step_at=30)
    check = judge_history(SLUG, "quick", runs, [], [])
    slower = _steps_of(check)
    faster = _steps_of(judge_history(SLUG, "quick", synthetic_runs(60, step_at=30, ratio=0.7), [], []))
    assert [(s.standing, s.confirmed_by, s.at_end, s.tried) for s in slower] == [(REGRESSED, "persistence", False, False)]
    assert [s.standing for s in faster] == [IMPROVED]
    # found runs after it happened, it still gets its A/B: the nightly job runs what `suspects` lists
    assert check.suspects() == {(_sha(29), _sha(30)): [SLOWED]}
    (judged,) = _steps_of(judge_history(SLUG, "quick", runs, [_ab(29, 30, UNCHANGED, 1.01)], []))
    assert (judged.standing, judged.confirmed_by) == (ENVIRONMENT, "ab")
    # an A/B that decided nothing leaves the persistence standing, and is not asked for again
    undecided = judge_history(SLUG, "quick", runs, [_ab(29, 30, INCONCLUSIVE, 1.2)], [])
    assert [(s.standing, s.tried) for s in _steps_of(undecided)] == [(REGRESSED, True)] and not undecided.suspects()
    assert _steps_of(undecided)[0].reason.endswith("the A/B of its range decided nothing")


def test_suspects_list_the_steps_at_the_end_first():
    runs, other = synthetic_runs(60, step_at=30), POINTS[1]
    for i in range(57, 60):  # a second point 30% slower in the last 3 runs
        p = runs[i].points[other]
        slower = replace(p, latency_s=p.latency_s * 1.3, ttft_s=p.ttft_s * 1.3, tpot_s=p.tpot_s * 1.3)
        runs[i] = replace(runs[i], points={**runs[i].points, other: slower})
    check = judge_history(SLUG, "quick", runs, [], [])
    assert list(check.suspects().items()) == [((_sha(56), _sha(57)), [other]), ((_sha(29), _sha(30)), [SLOWED])]


def test_a_step_with_an_environment_change_in_its_range_is_the_environment():
    """Everything 30% slower from run 30 on, where torch changed: no code to blame."""
    check = judge_history(SLUG, "quick", synthetic_runs(40, step_at=None, env_at=30), [], [], normalize=False)
    assert check.steps and all(s.standing == ENVIRONMENT and "torch 2.13.0 -> 2.14.0" in s.environment
                               for s in check.steps)
    assert not check.has_new_regression and not check.suspects()


def test_a_machine_that_slows_down_with_its_probe_is_taken_out_by_the_probe():
    """Every point and its probe 40% slower from run 30 on (the machine, not the code): divided by the probe,
    no series steps; raw, they all do."""
    runs = synthetic_runs(40, step_at=None)
    slow = [replace(r, points={pid: replace(p, latency_s=p.latency_s * 1.4, ttft_s=p.ttft_s * 1.4,
                                            tpot_s=p.tpot_s * 1.4, probe_s=p.probe_s * 1.4)
                               for pid, p in r.points.items()}) if i >= 30 else r for i, r in enumerate(runs)]
    assert not judge_history(SLUG, "quick", slow, [], []).steps
    raw = judge_history(SLUG, "quick", slow, [], [], normalize=False)
    assert {s.point for s in raw.steps} == set(POINTS)


def test_a_year_of_quick_profile_runs_is_checked_in_well_under_2_s(tmp_path):
    points = [f"{m}-{v}-in12-out32-M{b}-eager" for m in ("tiny-llama", "tiny-gqa", "smollm2-135m")
              for v in ("dense", "llm-pruner", "flap", "depth") for b in (1, 8)]
    for run in synthetic_runs(365, step_at=300, points=points, seed=3):
        add_run(tmp_path, run)
    start = time.perf_counter()
    check = check_history(tmp_path, SLUG, "quick")
    seconds = time.perf_counter() - start
    print(f"history check of 365 runs x 24 points x 3 metrics: {seconds:.2f} s, {len(check.steps)} steps")
    assert len(check.runs) == 365 and any(s.point == SLOWED for s in check.steps)


# ---- the commands ----

def _history_with_step(tmp_path: Path, n: int = 33) -> Path:
    history = tmp_path / "history"
    for run in synthetic_runs(n, step_at=30):
        add_run(history, run)
    return history


def test_history_check_prints_the_steps_writes_json_and_exits_1_only_for_a_new_confirmed_regression(tmp_path, capsys):
    history = _history_with_step(tmp_path)
    assert main(["history", "check", str(history), "--json", str(tmp_path / "steps.json")]) == 0
    out = capsys.readouterr().out
    assert "no new regression: 3 suspected" in out and SLOWED in out and "29..30 (end)" in out
    data = json.loads((tmp_path / "steps.json").read_text())
    assert data["groups"][0]["suspects"] == [{"good": _sha(29), "bad": _sha(30), "points": [SLOWED]}]
    add_ab(history, _ab(29, 30, REGRESSED, 1.3))
    assert main(["history", "check", str(history)]) == 1
    assert "NEW REGRESSION: 3 regressed" in capsys.readouterr().out


def test_history_add_and_show_from_results_files(tmp_path, capsys):
    raw = make_results(sweep(batch_sizes=(1, 8)), profile="smoke")
    write(tmp_path / "r.json", raw)
    assert main(["history", "add", str(tmp_path / "h"), str(tmp_path / "r.json"), "--event", "push",
                 "--repo", str(tmp_path)]) == 0
    assert "added" in capsys.readouterr().out
    assert main(["history", "add", str(tmp_path / "h"), str(tmp_path / "r.json")]) == 2
    assert "in the history already" in capsys.readouterr().err
    assert main(["history", "show", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "profile smoke: 1 runs" in out and " push " in out


def test_history_import_takes_the_runs_a_baseline_store_remembers(tmp_path, capsys):
    store = Path(__file__).resolve().parents[1] / "baselines"
    assert main(["history", "import", str(tmp_path / "h"), str(store)]) == 0
    assert "imported 6 runs" in capsys.readouterr().out
    assert main(["history", "import", str(tmp_path / "h"), str(store)]) == 0  # nothing twice
    assert "imported 0 runs" in capsys.readouterr().out


@pytest.mark.parametrize("argv,named", [
    (["history", "check", "/no/such/history"], "history /no/such/history: no such directory"),
    (["history", "add", "h", "/no/results.json"], "/no/results.json: no such results file"),
])
def test_bad_history_input_is_one_error_and_exit_2(tmp_path, capsys, monkeypatch, argv, named):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and err.count("\n") == 1


def test_site_of_a_history_writes_one_page_with_its_steps(tmp_path, capsys):
    history = _history_with_step(tmp_path)
    add_ab(history, _ab(29, 30, REGRESSED, 1.3))
    assert main(["site", str(history), "--out", str(tmp_path / "site"), "--repo-url", "https://github.com/o/r"]) == 0
    page = (tmp_path / "site" / "index.html").read_text()
    assert SLOWED in page and f"https://github.com/o/r/compare/{_sha(29)}...{_sha(30)}" in page
    assert "Latest A/B: " in page and "data:image/png;base64," in page  # the last run's figure


def test_the_history_commands_run_without_torch(tmp_path):
    import subprocess
    import sys

    history = _history_with_step(tmp_path)
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
            f"from pruned_perf.cli import main; sys.exit(main(['history', 'check', {str(history)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "3 suspected" in done.stdout, done.stderr


def test_a_bisection_record_round_trips(tmp_path):
    b = Bisection(measured="2026-12-01T00:00:00", profile="quick", good=_sha(1), bad=_sha(2), points=[SLOWED],
                  outcome=CULPRIT, culprit=_sha(2), subject="x", ratio=1.2, skipped=[_sha(5)])
    path = add_bisection(tmp_path, ENV, b)
    assert Bisection.from_dict(read_record(path)) == b
    with pytest.raises(UserError, match="outcome must be one of"):
        Bisection.from_dict({**b.to_dict(), "outcome": "maybe"})
    assert copy.deepcopy(b) == b
