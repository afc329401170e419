"""The results subcommands end to end: exit codes, printed tables, files written or left alone."""
import json
import os
import re
import sys

import pytest

from pruned_perf.analysis.results import load_results
from pruned_perf.cli import main as cli_main

try:
    from tests.synthetic_results import make_results, point_id, scale_point, sweep, write
except ImportError:
    from synthetic_results import make_results, point_id, scale_point, sweep, write

SLUG = "nvidia-h200-140gb"


def main(argv) -> int:
    """The CLI itself (a UserError: one line on stderr, exit 2)."""
    return cli_main([str(a) for a in argv])



@pytest.fixture
def run(tmp_path, monkeypatch):
    """Run in tmp_path (default baselines/ lives there) without the repository's pyproject."""
    monkeypatch.chdir(tmp_path)
    return main


@pytest.fixture
def raw():
    return make_results(sweep(batch_sizes=(1, 8, 64), oom_from={("llama-7b", "dense"): 64}))


@pytest.fixture
def stored(tmp_path, raw, run):
    """results.json stored as the baseline; returns (results path, baseline path)."""
    results = write(tmp_path / "results.json", raw)
    assert run(["baseline", "update", results]) == 0
    return results, tmp_path / "baselines" / SLUG / "smoke.json"


def _verdicts(out: str) -> dict[str, str]:
    """method/M -> verdict from the printed github tables."""
    verdicts = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 12 and cells[2].isdigit():
            verdicts[f"{cells[0]}/M{cells[2]}"] = cells[-1]
    return verdicts


def test_compare_with_itself_exits_0_all_unchanged(run, stored, capsys):
    results, _ = stored
    capsys.readouterr()
    assert run(["compare", results]) == 0
    out = capsys.readouterr().out
    verdicts = _verdicts(out)
    assert len(verdicts) == 12 and set(verdicts.values()) == {"unchanged"}
    assert "no regression; 12 unchanged" in out


def test_compare_one_point_30_percent_slower_exits_1(run, stored, raw, tmp_path, capsys):
    slow = point_id("llama-7b", "depth", 8, 12, 128)
    current = write(tmp_path / "current.json", scale_point(raw, slow, 2.5))
    capsys.readouterr()
    assert run(["compare", current, "--json", tmp_path / "verdicts.json"]) == 1
    verdicts = _verdicts(capsys.readouterr().out)
    assert {k: v for k, v in verdicts.items() if v != "unchanged"} == {
        "depth/M8": "regressed (latency_s, tokens_per_s, tpot_s, speedup_vs_dense)"}
    saved = json.loads((tmp_path / "verdicts.json").read_text())
    assert saved["has_regression"] is True
    assert [p["id"] for p in saved["points"] if p["status"] == "regressed"] == [slow]


def test_compare_thresholds_from_pyproject(run, stored, raw, tmp_path, capsys):
    slow = point_id("llama-7b", "depth", 8, 12, 128)
    current = write(tmp_path / "current.json", scale_point(raw, slow, 2.5))
    py = tmp_path / "custom.toml"
    py.write_text('[[tool.pruned_perf.groups]]\nmatch = "llama-7b-depth-*"\n'
                  'latency_s = 2.0\ntokens_per_s = 2.0\ntpot_s = 2.0\nspeedup_vs_dense = 2.0\n')
    assert run(["compare", current, "--pyproject", py, "--format", "plain"]) == 0
    assert "no regression" in capsys.readouterr().out


def test_compare_other_hardware_needs_allow_mismatch(run, stored, raw, tmp_path, capsys):
    other = make_results(raw["benchmarks"], slug="nvidia-h100-80gb")
    current = write(tmp_path / "h100.json", other)
    baseline = stored[1]
    assert run(["compare", current, "--baseline", baseline]) == 2
    assert "hardware differs" in capsys.readouterr().err
    assert run(["compare", current, "--baseline", baseline, "--allow-mismatch"]) == 0
    assert "warning: hardware differs" in capsys.readouterr().out


def test_report_prints_github_table(run, stored, capsys):
    results, _ = stored
    capsys.readouterr()
    assert run(["report", results]) == 0
    out = capsys.readouterr().out
    assert "### llama-7b in 12 out 128" in out
    assert "| method     |   params |   M |" in out
    assert "|------------|" in out
    assert len(_verdicts(out)) == 0  # no baseline asked for: no verdict columns
    assert run(["report", results, "--baseline", "auto", "--summary", "--out", "report.md"]) == 0
    text = open("report.md").read()
    assert text.count("unchanged") >= 12 and capsys.readouterr().out == ""


def test_plot_writes_png(run, stored, tmp_path, capsys):
    results, _ = stored
    assert run(["plot", results, "--baseline", "auto", "--out", tmp_path / "fig.png"]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run(["plot", results, "--out", tmp_path / "fig.jpg"]) == 2
    assert "valid choices: .png, .svg" in capsys.readouterr().err
    assert not (tmp_path / "fig.jpg").exists()


def test_baseline_show(run, stored, capsys):
    capsys.readouterr()
    assert run(["baseline", "show"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["hardware", "profile", "points", "OOM"]
    assert out[2].split()[:4] == [SLUG, "smoke", "12", "1"]


def test_merge_shards(run, tmp_path, capsys):
    a = write(tmp_path / "a.json", make_results(sweep(methods=("dense",), batch_sizes=(1, 8))))
    b = write(tmp_path / "b.json", make_results(sweep(methods=("flap", "depth"), batch_sizes=(1, 8))))
    assert run(["merge", a, b, "-o", tmp_path / "all.json"]) == 0
    assert len(load_results(tmp_path / "all.json").points) == 6
    assert run(["merge", a, a, "-o", tmp_path / "dup.json"]) == 2
    assert "is in both" in capsys.readouterr().err
    assert not (tmp_path / "dup.json").exists()


def _mutations():
    return {
        "malformed JSON": (lambda path, raw: open(path, "w").write('{"benchmarks": [}'), "malformed JSON"),
        "other schema": (lambda path, raw: write(path, _with(raw, lambda r: r["machine_info"]["pruned_perf"]
                                                            .update(schema=3))),
                         r"schema must be a supported schema \(2\), got 3"),
        "empty results": (lambda path, raw: write(path, _with(raw, lambda r: r.update(benchmarks=[]))),
                          "no benchmarks"),
        "no extra_info": (lambda path, raw: write(path, _with(raw, lambda r: [b.pop("extra_info")
                                                                            for b in r["benchmarks"]])),
                          "has no extra_info"),
    }


def _with(raw, change):
    raw = json.loads(json.dumps(raw))
    change(raw)
    return raw


@pytest.mark.parametrize("case", list(_mutations()))
@pytest.mark.parametrize("command", ["compare", "report", "plot", "baseline update"])
def test_bad_input_gives_one_message_exit_2_and_changes_nothing(run, stored, raw, tmp_path, capsys, case, command):
    _, baseline = stored
    before = baseline.read_bytes()
    mutate, message = _mutations()[case]
    bad = tmp_path / "bad.json"
    mutate(bad, raw)
    capsys.readouterr()
    argv = command.split() + [bad] + (["--out", tmp_path / "fig.png"] if command == "plot" else [])
    assert run(argv) == 2
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith(f"error: {bad}")
    assert re.search(message, err_lines[0])
    assert captured.out == ""
    assert baseline.read_bytes() == before
    assert sorted(os.listdir(baseline.parent)) == ["smoke.json"]
    assert not (tmp_path / "fig.png").exists()


def test_missing_baseline_exit_2(run, raw, tmp_path, capsys):
    results = write(tmp_path / "results.json", raw)
    assert run(["compare", results]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no baseline for {SLUG} profile smoke") and "baseline update" in err
    assert run(["compare", results, "--baseline", tmp_path / "nope.json"]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "baselines").exists()


def test_baseline_update_refuses_other_hardware_unless_forced(run, stored, raw, tmp_path, capsys):
    _, baseline = stored
    write(baseline, make_results(raw["benchmarks"], slug="nvidia-h100-80gb"))
    before = baseline.read_bytes()
    results = tmp_path / "results.json"
    assert run(["baseline", "update", results]) == 2
    assert "--force" in capsys.readouterr().err
    assert baseline.read_bytes() == before
    assert run(["baseline", "update", results, "--force"]) == 0
    assert load_results(baseline).slug == SLUG


def test_results_modules_do_not_import_torch():
    import subprocess

    code = ("import sys, pruned_perf.cli_results, pruned_perf.analysis.compare, pruned_perf.analysis.report, pruned_perf.analysis.plot, "
            "pruned_perf.analysis.config, pruned_perf.analysis.results, pruned_perf.analysis.baselines, "
            "pruned_perf.analysis.merge; "
            "bad = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]; "
            "print(*bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr  # matplotlib too: it is imported only when plotting
