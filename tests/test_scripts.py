"""scripts/replay_verdicts.py: the rules replayed over stored runs, as the trials in docs/verdict-trials.md
were."""
import importlib.util
from pathlib import Path


try:
    from tests.synthetic_results import make_results, point_id, scale_point, sweep, write
except ImportError:
    from synthetic_results import make_results, point_id, scale_point, sweep, write

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name="replay_verdicts"):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replay_compares_each_run_with_the_plain_runs_before_it(tmp_path, capsys):
    slow = point_id("llama-7b", "dense", 8, 12, 128)
    for i, name in enumerate(["A0", "A1", "A2", "A3", "S1"]):
        raw = make_results(sweep(batch_sizes=(1, 8), seed=i), run_id=name)
        raw["datetime"] = f"2026-11-26T0{i}:00:00+00:00"
        if name == "A0":  # other processes held the cores: `baseline update` would refuse it
            raw["benchmarks"][0]["extra_info"]["runqueue_wait_frac"] = 0.7
        write(tmp_path / f"{name}.json", scale_point(raw, slow, 3.0, ttft_factor=3.0) if name == "S1" else raw)
    assert _script().main([str(tmp_path), "--history", "1", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "== history of 1 run(s)" and out[1].startswith("A0: not stored (other processes held the cores")
    assert out[2].startswith("A2 against A1: defaults: 0 regressed")  # A0 is in no history
    assert not any("A0+" in line or "against A0" in line for line in out)
    [s1_one, s1_three] = [line for line in out if line.startswith("S1 against")]
    assert s1_one.startswith("S1 against A3: ")  # the newest plain run only
    assert s1_three.startswith("S1 against A1+A2+A3: ") and s1_three.count(f"1 regressed ({slow})") == 4  # every rule


def test_replay_of_an_empty_directory_is_one_error(tmp_path, capsys):
    assert _script().main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: {tmp_path}: no results files (*.json)\n"


def _scaled(raw, factor):
    """A copy of results with every point's rounds multiplied by factor."""
    for pid in [bench["extra_info"]["id"] for bench in raw["benchmarks"]]:
        raw = scale_point(raw, pid, factor)
    return raw


def test_effects_take_out_the_drift_between_the_plain_runs_around_a_run(tmp_path, capsys):
    plain = make_results(sweep(batch_sizes=(1, 8)), run_id="A")
    # The machine drifts 10% slower per run; B1, between A1 and A2, also runs 25% slower code.
    for i, (name, factor) in enumerate([("B0", 1.0), ("A1", 1.0), ("B1", 1.25), ("A2", 1.1), ("A3", 1.21)]):
        raw = _scaled(plain, factor)
        raw["datetime"] = f"2026-11-26T0{i}:00:00+00:00"
        write(tmp_path / f"{name}.json", raw)
    assert _script().main([str(tmp_path), "--effects"]) == 0
    out = capsys.readouterr().out.splitlines()
    # 1.25 / sqrt(1.0 * 1.1): the slower code, less the drift; a plain run between plain runs: none.
    # B0 and A3 lack a plain run on one side: no line.
    assert out[1:] == ["B1 between A1 and A2: llama-7b +19%", "A2 between A1 and A3: llama-7b +0%"]
