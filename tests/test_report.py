"""Report tables: grouping, speedup against dense, OOM rows, verdicts first, summary cut."""
import copy

import pytest

from pruned_perf.analysis.compare import compare
from pruned_perf.analysis.report import render
from pruned_perf.analysis.results import results_from_dict
from pruned_perf.core.errors import UserError

try:
    from tests.synthetic_results import make_point, make_results, measurement, point_id, scale_point, sweep
except ImportError:
    from synthetic_results import make_point, make_results, measurement, point_id, scale_point, sweep


def _results(raw, path="r.json"):
    return results_from_dict(raw, path)


def _table_lines(text, title):
    """The data rows of the table under `### title` (github format)."""
    block = text.split(f"### {title}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return block[2:]


def _cells(line):
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.fixture
def raw():
    return make_results(sweep(models=("llama-7b",), io_pairs=((12, 128), (82, 512)), batch_sizes=(1, 8, 64),
                              oom_from={("llama-7b", "dense"): 64}))


def test_github_table_per_model_and_shape(raw):
    text = render(_results(raw))
    assert text.startswith("## pruned_perf results: profile smoke, 24 points (2 OOM)")
    assert "nvidia-h200-140gb (NVIDIA H200); driver 570.124.06, cuda 12.8, torch 2.11.0" in text
    assert text.count("### llama-7b in ") == 2
    rows = _table_lines(text, "llama-7b in 12 out 128")
    assert len(rows) == 12
    header = text.split("### llama-7b in 12 out 128\n\n", 1)[1].splitlines()[0]
    assert _cells(header)[:10] == ["method", "params", "M", "backend", "latency (s)", "tokens/s", "ttft (ms)",
                                   "tpot (ms)", "peak mem (GiB)", "speedup vs dense"]
    assert _cells(rows[0])[0] == "dense" and _cells(rows[0])[2] == "1"


def test_each_table_names_the_largest_batch_that_fit(raw):
    text = render(_results(raw))
    for shape in ("12 out 128", "82 out 512"):
        block = text.split(f"### llama-7b in {shape}\n\n", 1)[1].split("\n\n###", 1)[0]
        assert block.rstrip().splitlines()[-1] == (
            "Largest batch that fit: dense M8 (OOM at M64); depth M64 (the largest measured; no OOM); "
            "llm-pruner M64 (the largest measured; no OOM); flap M64 (the largest measured; no OOM)")


def test_largest_batch_names_sizes_and_backends_only_where_they_differ():
    from pruned_perf.analysis.report import largest_batch_line

    def pt(method, params, m, oom=False, backend="eager"):
        return measurement(method=method, params=params, batch_size=m, oom=oom, backend=backend)

    points = [pt("depth", 5e9, 1), pt("depth", 5e9, 8, oom=True), pt("depth", 4e9, 1), pt("depth", 4e9, 8),
              pt("dense", 7e9, 1, oom=True), pt("dense", 7e9, 8, oom=True)]
    order = ["dense", "depth"]
    assert largest_batch_line(points, order) == ("Largest batch that fit: dense none (OOM from M1); "
                                          "depth 5.00B M1 (OOM at M8); depth 4.00B M8 (the largest measured; no OOM)")
    both = [pt("dense", 7e9, 4), pt("dense", 7e9, 4, backend="static", oom=True)]
    assert largest_batch_line(both, order) == ("Largest batch that fit: dense eager M4 (the largest measured; no OOM); "
                                        "dense static none (OOM from M4)")
    assert largest_batch_line([], order) == ""
    # a method the order does not name comes last, then by name
    assert largest_batch_line([pt("zeta", 1e9, 1), pt("dense", 7e9, 1), pt("alpha", 1e9, 1)], order).startswith(
        "Largest batch that fit: dense M1 (the largest measured; no OOM); alpha M1")


def test_speedup_is_throughput_ratio_against_dense_and_blank_without_dense(raw):
    r = _results(raw)
    text = render(r)
    by_key = {(c[0], c[2]): c for c in map(_cells, _table_lines(text, "llama-7b in 12 out 128"))}
    depth = r.points[point_id("llama-7b", "depth", 8, 12, 128)]
    dense = r.points[point_id("llama-7b", "dense", 8, 12, 128)]
    assert by_key[("depth", "8")][9] == f"{depth.tokens_per_s / dense.tokens_per_s:.2f}x"
    assert by_key[("dense", "8")][9] == "1.00x"
    # dense ran out of memory at M64: OOM row, and no speedup for the others at M64
    assert by_key[("dense", "64")][4:9] == ["OOM"] * 5
    assert by_key[("depth", "64")][9] == ""


def test_plain_format_and_bad_format(raw):
    text = render(_results(raw), fmt="plain")
    assert "###" not in text and "|" not in text
    assert "llama-7b in 12 out 128\n----------------------" in text
    with pytest.raises(UserError, match="unknown report format 'html'; valid choices: github, plain"):
        render(_results(raw), fmt="html")


def test_comparison_says_how_much_other_work_used_the_cpus_in_each_run(raw):
    """The median over points, so a reader sees at once whether either run shared its machine."""
    def shared(data: dict, cores: list[float]) -> dict:
        data = copy.deepcopy(data)
        for bench, frac in zip(data["benchmarks"], cores * len(data["benchmarks"])):
            bench["extra_info"]["others_cpu_frac"] = frac
        return data

    cur = _results(shared(raw, [0.9, 1.1, 1.0]), "cur.json")
    text = render(cur, compare(cur, _results(shared(raw, [0.01, 0.03, 0.02]), "base.json")))
    assert "Other work on the CPUs during the rounds: 1.00 cores (baseline's run 0.02), median of points" in text
    assert "Other work on the CPUs" not in render(_results(raw), compare(_results(raw), _results(raw, "b.json")))


def test_comparison_puts_regressions_first_with_delta_and_verdict(raw):
    slow = point_id("llama-7b", "flap", 8, 82, 512)
    cur = _results(scale_point(raw, slow, 2.5), "cur.json")
    comparison = compare(cur, _results(raw, "base.json"))
    text = render(cur, comparison)
    assert "Baseline base.json: REGRESSION; 1 regressed, 23 unchanged" in text, text[:600]
    # the regressions table comes before every per-shape table, and its shape's table comes first
    # one stored run: only a change beyond the drift allowance (100%) counts, and the report says why
    assert "Baseline history: 1 run(s), fewer than 3: the spread between runs is unknown" in text
    assert text.index("### Regressions (4)") < text.index("### llama-7b in 82 out 512") < text.index(
        "### llama-7b in 12 out 128")
    first = _cells(_table_lines(text, "llama-7b in 82 out 512")[0])
    assert first[:3] == ["flap", "4.90B", "8"]
    assert first[-2:] == ["+150.0%", "regressed (latency_s, tokens_per_s, tpot_s, speedup_vs_dense)"]
    regression_rows = [_cells(line) for line in _table_lines(text, "Regressions (4)")]
    assert [r[1] for r in regression_rows] == ["latency_s", "tokens_per_s", "tpot_s", "speedup_vs_dense"]
    assert regression_rows[0][4] == "+150.0%"


def test_comparison_shows_warnings_missing_and_newly_oom(raw):
    base = _results(raw, "base.json")
    kept = [b for b in copy.deepcopy(raw["benchmarks"]) if b["extra_info"]["method"] != "depth"]
    cur_raw = make_results(kept, driver="580.0")
    oom_id = point_id("llama-7b", "flap", 64, 12, 128)
    for b in cur_raw["benchmarks"]:
        if b["extra_info"]["id"] == oom_id:
            b["extra_info"].update(oom=True, latency_s=None, tokens_per_s=None, rounds_s=[])
    cur = _results(cur_raw, "cur.json")
    text = render(cur, compare(cur, base))
    assert "warning: driver differs: baseline 570.124.06, results 580.0" in text
    assert "1 newly-oom" in text and "6 missing" in text
    rows = [_cells(line) for line in _table_lines(text, "llama-7b in 12 out 128")]
    assert rows[0][0] == "flap" and rows[0][-1] == "newly-oom" and rows[0][4] == "OOM"
    missing = [r for r in rows if r[-1] == "missing"]
    assert {r[0] for r in missing} == {"depth"} and len(missing) == 3


def test_summary_under_limit_is_the_full_report(raw):
    r = _results(raw)
    assert render(r, summary=True) == render(r)


def test_summary_is_cut_to_header_regressions_and_top_rows():
    raw = make_results(sweep(models=("llama-7b", "vicuna-13b"), io_pairs=((12, 128), (82, 512)),
                             batch_sizes=(1, 8, 16, 32, 64, 128)))
    slow = point_id("vicuna-13b", "depth", 16, 82, 512)
    cur = _results(scale_point(raw, slow, 2.5), "cur.json")
    comparison = compare(cur, _results(raw, "base.json"))
    full = render(cur, comparison)
    limit = 6000
    assert len(full.encode()) > limit
    cut = render(cur, comparison, summary=True, summary_limit_bytes=limit)
    assert len(cut.encode()) <= limit
    assert cut.startswith("## pruned_perf results")
    assert "### Regressions (4)" in cut and slow in cut
    assert "> Cut to fit GitHub's 1 MiB step-summary limit" in cut
    shown = int(cut.split("the top ", 1)[1].split(" of ", 1)[0])
    assert 0 < shown < 96 and "of 96 rows" in cut
    first_table = cut.split("### vicuna-13b in 82 out 512\n\n", 1)[1]
    assert _cells(first_table.splitlines()[2])[-1].startswith("regressed")


def test_summary_of_a_real_size_report_fits_one_mib():
    # ~7000 rows: over GitHub's 1 MiB limit when rendered in full.
    pts = [make_point(f"model-{i}", method, bs) for i in range(240) for method in ("dense", "flap", "depth", "x")
           for bs in (1, 8, 16, 32, 64, 128, 256, 384)]
    r = _results(make_results(pts))
    full = render(r)
    assert len(full.encode()) > 1024 * 1024
    cut = render(r, summary=True)
    assert 900 * 1024 < len(cut.encode()) <= 1024 * 1024
    assert "Cut to fit GitHub's 1 MiB step-summary limit" in cut
