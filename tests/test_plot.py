"""The reference-style figure: layout, log2 axis, styles, labels, OOM notes, baseline and regressions."""
import os

import pytest

from pruned_perf.compare import compare
from pruned_perf.errors import UserError
from pruned_perf.plot import make_figure, plot
from pruned_perf.results import results_from_dict

try:
    from tests.synthetic_results import make_results, point_id, scale_point, sweep
except ImportError:
    from synthetic_results import make_results, point_id, scale_point, sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def raw():
    return make_results(sweep(models=("llama-7b", "vicuna-13b"), io_pairs=((12, 128), (82, 512)),
                              batch_sizes=(1, 8, 64, 256, 384), oom_from={("vicuna-13b", "dense"): 256}))


def _lines(ax):
    """Data lines by method, the first word of their label "method size" (legend helpers have no data)."""
    return {line.get_label().split(" ")[0]: line for line in ax.get_lines()
            if len(line.get_xdata()) and not line.get_label().startswith("_")}


def test_labels_name_method_and_size_as_the_reference_does(raw):
    fig = make_figure(results_from_dict(raw))
    labels = {line.get_label() for line in fig.axes[0].get_lines() if len(line.get_xdata())}
    assert {"dense 6.74B", "depth 4.92B"} <= labels


def test_plot_writes_png_with_reference_layout(tmp_path, raw):
    out = tmp_path / "fig.png"
    fig = plot(results_from_dict(raw, "r.json"), out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert os.listdir(tmp_path) == ["fig.png"]  # written via a temp file, nothing left over
    axes = fig.axes
    assert len(axes) == 4  # 2 models x 2 (in, out) pairs
    assert [ax.get_title() for ax in axes] == ["llama-7b in 12 out 128", "llama-7b in 82 out 512",
                                               "vicuna-13b in 12 out 128", "vicuna-13b in 82 out 512"]
    for ax in axes:
        assert ax.get_yscale() == "log" and ax.yaxis.get_transform().base == 2
        ticks = list(ax.get_yticks())
        assert ticks[0] <= 32 and ticks[-1] >= 8192
        assert all(t in ticks for t in [2.0**k for k in range(5, 14)])
        assert ax.get_xlabel() == "latency (s)" and ax.get_ylabel() == "throughput (tokens/s)"
        assert set(_lines(ax)) == {"dense", "llm-pruner", "flap", "depth"}


def test_lines_follow_batch_size_with_reference_styles(raw):
    r = results_from_dict(raw, "r.json")
    ax = make_figure(r).axes[0]
    lines = _lines(ax)
    assert (lines["dense"].get_color(), lines["dense"].get_marker()) == ("gray", "x")
    assert (lines["llm-pruner"].get_color(), lines["llm-pruner"].get_marker()) == ("black", "x")
    assert (lines["flap"].get_color(), lines["flap"].get_marker()) == ("green", "o")
    assert (lines["depth"].get_color(), lines["depth"].get_marker()) == ("blue", "s")
    xs = [r.points[point_id("llama-7b", "depth", m, 12, 128)]["latency_s"] for m in (1, 8, 64, 256, 384)]
    assert list(lines["depth"].get_xdata()) == xs
    labels = [t.get_text() for t in ax.texts]
    assert [lab for lab in labels if lab.startswith("M")][:5] == ["M1", "M8", "M64", "M256", "M384"]


def test_oom_points_are_absent_and_noted(raw):
    ax = make_figure(results_from_dict(raw, "r.json")).axes[2]  # vicuna-13b in 12 out 128
    assert len(_lines(ax)["dense"].get_xdata()) == 3  # M256 and M384 ran out of memory
    notes = [t.get_text() for t in ax.texts if t.get_text().startswith("OOM:")]
    assert len(notes) == 1 and notes[0].startswith("OOM:\ndense ") and notes[0].endswith("B M256, M384")


def test_other_methods_get_distinct_styles_and_axis_extends():
    raw = make_results(sweep(methods=("dense", "wanda", "sparsegpt"), batch_sizes=(1, 384)))
    raw["benchmarks"][1]["extra_info"]["tokens_per_s"] = 20000.0  # beyond 8192
    ax = make_figure(results_from_dict(raw, "r.json")).axes[0]
    lines = _lines(ax)
    styles = {(lines[m].get_color(), lines[m].get_marker()) for m in ("dense", "wanda", "sparsegpt")}
    assert len(styles) == 3
    assert max(ax.get_yticks()) >= 16384


def test_baseline_dashed_and_regressed_point_ringed(raw):
    slow = point_id("llama-7b", "flap", 64, 12, 128)
    base = results_from_dict(raw, "base.json")
    cur = results_from_dict(scale_point(raw, slow, 1.3), "cur.json")
    ax = make_figure(cur, base, compare(cur, base)).axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert {line.get_color() for line in dashed} == {"gray", "black", "green", "blue"}
    [ring] = [c for c in ax.collections if c.get_offsets().shape[0]]
    x, y = ring.get_offsets()[0]
    assert (x, y) == pytest.approx((cur.points[slow]["latency_s"], cur.points[slow]["tokens_per_s"]))
    assert tuple(ring.get_edgecolor()[0][:3]) == (1.0, 0.0, 0.0)
    assert not any(c.get_offsets().shape[0] for ax2 in make_figure(cur, base, compare(cur, base)).axes[1:]
                   for c in ax2.collections)


def test_svg_and_bad_suffix(tmp_path, raw):
    r = results_from_dict(raw, "r.json")
    out = tmp_path / "fig.svg"
    plot(r, out)
    assert b"<svg" in out.read_bytes()[:500]
    with pytest.raises(UserError, match=r"unknown figure format '.pdf'.*valid choices: .png, .svg"):
        plot(r, tmp_path / "fig.pdf")
    assert sorted(os.listdir(tmp_path)) == ["fig.svg"]


def test_newly_oom_point_is_ringed_where_the_baseline_had_it(raw):
    gone = point_id("llama-7b", "depth", 384, 12, 128)
    cur_raw = make_results([dict(b, extra_info=dict(b["extra_info"])) for b in raw["benchmarks"]])
    for b in cur_raw["benchmarks"]:
        if b["extra_info"]["id"] == gone:
            b["extra_info"].update(oom=True, latency_s=None, tokens_per_s=None, rounds_s=None)
    base, cur = results_from_dict(raw, "base.json"), results_from_dict(cur_raw, "cur.json")
    ax = make_figure(cur, base, compare(cur, base)).axes[0]
    [ring] = [c for c in ax.collections if c.get_offsets().shape[0]]
    where = (base.points[gone]["latency_s"], base.points[gone]["tokens_per_s"])
    assert tuple(ring.get_offsets()[0]) == pytest.approx(where)
    notes = [t.get_text() for t in ax.texts if t.get_text().startswith("OOM:")]
    assert len(notes) == 1 and notes[0].startswith("OOM:\ndepth ") and notes[0].endswith("B M384")
