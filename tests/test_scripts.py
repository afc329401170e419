"""scripts/replay_verdicts.py: the rules replayed over stored runs, as the README's trials were."""
import importlib.util
from pathlib import Path

try:
    from tests.synthetic_results import make_results, point_id, scale_point, sweep, write
except ImportError:
    from synthetic_results import make_results, point_id, scale_point, sweep, write

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "replay_verdicts.py"


def _script():
    spec = importlib.util.spec_from_file_location("replay_verdicts", SCRIPT)
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
