"""The reference-style figure: layout, log2 axis, styles, labels, OOM notes, baseline and regressions."""
import copy
import itertools
import math
import os

import pytest

from pruned_perf.analysis.comparison import Comparison, PointVerdict
from pruned_perf.analysis.verdicts import NEWLY_OOM, REGRESSED
from pruned_perf.analysis.plot import make_figure, plot
from pruned_perf.analysis.results import results_from_dict
from pruned_perf.core.errors import UserError

try:
    from tests.synthetic_results import make_point, make_results, point_id, refresh_summary, scale_point, sweep
except ImportError:
    from synthetic_results import make_point, make_results, point_id, refresh_summary, scale_point, sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _comparison(results, statuses: dict) -> Comparison:
    """Verdicts as compare would give them (point id -> status, of points of `results`): the figure draws
    statuses, how they are reached is test_compare's business (and changes with the statistics)."""
    return Comparison([PointVerdict(results.points[pid].point, status) for pid, status in statuses.items()])


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
    xs = [r.points[point_id("llama-7b", "depth", m, 12, 128)].latency_s for m in (1, 8, 64, 256, 384)]
    assert list(lines["depth"].get_xdata()) == xs
    labels = [t.get_text() for t in ax.texts]
    assert [lab for lab in labels if lab.startswith("M")][:5] == ["M1", "M8", "M64", "M256", "M384"]


def test_a_method_looks_as_its_module_says_and_the_results_carry_it(raw):
    """STYLE lives in the method's module; the results carry it, so the torch-free plot needs no registry."""
    restyled = copy.deepcopy(raw)
    methods = restyled["machine_info"]["pruned_perf"]["methods"]
    methods["flap"] = {"color": "tab:red", "marker": "D"}
    methods = dict(reversed(methods.items()))  # the file's order is the legend's order
    restyled["machine_info"]["pruned_perf"]["methods"] = methods
    fig = make_figure(results_from_dict(restyled, "r.json"))
    lines = _lines(fig.axes[0])
    assert (lines["flap"].get_color(), lines["flap"].get_marker()) == ("tab:red", "D")
    legend = [t.get_text().split(" ")[0] for t in fig.axes[1].get_legend().get_texts()]
    assert legend[:4] == ["flap", "llm-pruner", "depth", "dense"]
    # results that describe no method: every method takes an automatic style, one of its own
    bare = copy.deepcopy(raw)
    del bare["machine_info"]["pruned_perf"]["methods"]
    lines = _lines(make_figure(results_from_dict(bare, "r.json")).axes[0])
    styles = {(line.get_color(), line.get_marker()) for line in lines.values()}
    assert len(styles) == 4 and not styles & {("gray", "x"), ("green", "o"), ("blue", "s"), ("black", "x")}


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
    verdicts = _comparison(cur, {slow: REGRESSED})
    ax = make_figure(cur, base, verdicts).axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert {line.get_color() for line in dashed} == {"gray", "black", "green", "blue"}
    [ring] = [c for c in ax.collections if c.get_offsets().shape[0]]
    x, y = ring.get_offsets()[0]
    assert (x, y) == pytest.approx((cur.points[slow].latency_s, cur.points[slow].tokens_per_s))
    assert tuple(ring.get_edgecolor()[0][:3]) == (1.0, 0.0, 0.0)
    assert not any(c.get_offsets().shape[0] for ax2 in make_figure(cur, base, verdicts).axes[1:]
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
            b["extra_info"].update(oom=True, latency_s=None, tokens_per_s=None, rounds_s=[])
    base, cur = results_from_dict(raw, "base.json"), results_from_dict(cur_raw, "cur.json")
    ax = make_figure(cur, base, _comparison(cur, {gone: NEWLY_OOM})).axes[0]
    [ring] = [c for c in ax.collections if c.get_offsets().shape[0]]
    where = (base.points[gone].latency_s, base.points[gone].tokens_per_s)
    assert tuple(ring.get_offsets()[0]) == pytest.approx(where)
    notes = [t.get_text() for t in ax.texts if t.get_text().startswith("OOM:")]
    assert len(notes) == 1 and notes[0].startswith("OOM:\ndepth ") and notes[0].endswith("B M384")


# ---------------------------------------------------------------- helpers


def _data_xy(ax):
    """(xs, ys) of every data line of a panel: current and baseline medians, no rounds or leaders."""
    xs, ys = [], []
    for line in ax.get_lines():
        if len(line.get_xdata()) and (not line.get_label().startswith("_") or line.get_linestyle() == "--"):
            xs += list(line.get_xdata())
            ys += list(line.get_ydata())
    return xs, ys


def _draw(fig, dpi=None):
    """Render with the Agg renderer (at dpi, if given), so that window extents are those drawn."""
    if dpi:
        fig.set_dpi(dpi)
    fig.canvas.draw()


def _label_boxes(ax):
    """Window extents of the point labels (M<n>) of a panel as last drawn."""
    return {t: t.get_window_extent() for t in ax.texts if t.get_text().startswith("M")}


def _overlapping(boxes) -> list:
    return [(a.get_text(), b.get_text()) for (a, ba), (b, bb) in itertools.combinations(boxes.items(), 2)
            if ba.overlaps(bb)]


def _coinciding(methods=("dense", "llm-pruner", "flap", "depth"), batch_sizes=(1, 8, 16, 32, 64, 128, 256, 384)):
    """Every method with the same timings: all their points (and "M8" labels) fall on one spot."""
    return make_results([make_point("llama-7b", m, bs, latency_s=1.0 + bs / 50) for m in methods
                         for bs in batch_sizes])


# ---------------------------------------------------------------- issue 9


def test_point_labels_do_not_overlap_each_other_or_the_oom_note(raw):
    fig = make_figure(results_from_dict(raw, "r.json"))
    for dpi in (100, 130):  # the figure is saved at 130 dpi: placement must hold at any dpi
        _draw(fig, dpi)
        for ax in fig.axes:
            boxes = _label_boxes(ax)
            plottable = sum(len(line.get_xdata()) for line in _lines(ax).values())
            assert len(boxes) == plottable  # every measured point is labelled here
            assert _overlapping(boxes) == []
            panel = ax.get_window_extent()
            assert all(panel.x0 <= b.x0 and b.x1 <= panel.x1 and panel.y0 <= b.y0 and b.y1 <= panel.y1
                       for b in boxes.values())
            notes = [t.get_window_extent() for t in ax.texts if t.get_text().startswith("OOM:")]
            assert not any(b.overlaps(n) for b in boxes.values() for n in notes)


def test_labels_of_coinciding_points_are_spread_not_stacked():
    # The "M8M8" case of the issue, at its worst: four lines on top of each other.
    fig = make_figure(results_from_dict(_coinciding(), "same.json"))
    ax = fig.axes[0]
    _draw(fig)
    boxes = _label_boxes(ax)
    assert _overlapping(boxes) == []
    assert len(boxes) >= 0.75 * 4 * 8  # crowded as it is, nearly every point keeps its label
    leaders = [line for line in ax.get_lines() if line.get_label() == "_label leader"]
    assert leaders and set(_lines(ax)) == {"dense", "llm-pruner", "flap", "depth"}  # leaders are no data


def test_labels_stay_apart_in_the_saved_png(tmp_path):
    # The file is what readers see: placement must survive savefig (its dpi, no second layout pass).
    fig = plot(results_from_dict(_coinciding(("dense", "llm-pruner"), (1, 8)), "r.json"), tmp_path / "f.png")
    ax = fig.axes[0]
    _draw(fig, 130)
    assert _overlapping(_label_boxes(ax)) == []
    assert sorted(t.get_text() for t in ax.texts) == ["M1", "M1", "M8", "M8"]


@pytest.mark.parametrize("tokens_per_s", [(20.0, 20000.0), (200.0, 250.0), (256.0, 256.0), (0.3, 0.9)])
def test_y_axis_is_fitted_to_the_data_at_powers_of_two(tokens_per_s):
    points = [make_point(method=m, batch_size=b, latency_s=1.0 + b) for m in ("dense", "flap") for b in (1, 8)]
    for point, y in zip(points, itertools.cycle(tokens_per_s)):
        point["extra_info"]["tokens_per_s"] = y
    ax = make_figure(results_from_dict(make_results(points), "r.json")).axes[0]
    lo, hi = ax.get_ylim()
    low, high = min(tokens_per_s), max(tokens_per_s)
    assert low / 2 <= lo < low and high < hi <= high * 2  # brackets the data, with a margin, tightly
    ticks = list(ax.get_yticks())
    assert len(ticks) >= 2 and all(lo <= t <= hi for t in ticks)
    assert all(math.log2(t) == round(math.log2(t)) for t in ticks)


def test_y_axis_of_the_reference_sweep_is_not_padded_to_a_fixed_range(raw):
    for ax in make_figure(results_from_dict(raw, "r.json")).axes:
        _, ys = _data_xy(ax)
        lo, hi = ax.get_ylim()
        assert min(ys) / 2 <= lo < min(ys) and max(ys) < hi <= 2 * max(ys)


def test_title_names_hardware_profile_and_date(raw):
    fig = make_figure(results_from_dict(raw, "r.json"))
    title = fig.get_suptitle()
    for part in ("NVIDIA H200", "nvidia-h200-140gb", "profile smoke", "measured 2025-01-01 00:00 UTC"):
        assert part in title
    assert "baseline" not in title


def test_title_names_the_baseline_date_and_other_hardware(raw):
    base_raw = make_results(raw["benchmarks"], name="NVIDIA H100 80GB HBM3", slug="nvidia-h100-80gb")
    base_raw["datetime"] = "2024-12-24T18:30:00+02:00"
    cur, base = results_from_dict(raw, "r.json"), results_from_dict(base_raw, "b.json")
    title = make_figure(cur, base).get_suptitle()
    assert "baseline measured 2024-12-24 16:30 UTC on NVIDIA H100 80GB HBM3 (nvidia-h100-80gb)" in title
    same_hw = make_figure(cur, results_from_dict(raw, "b.json")).get_suptitle()
    assert "baseline measured 2025-01-01 00:00 UTC" in same_hw and "on NVIDIA" not in same_hw
    undated = dict(raw)
    del undated["datetime"]
    assert "date unknown" in make_figure(results_from_dict(undated, "r.json")).get_suptitle()


def test_baseline_with_one_very_slow_round_keeps_the_axes_on_the_medians():
    raw = make_results(sweep(batch_sizes=(1, 8, 16, 32, 64)))
    base_raw = copy.deepcopy(raw)
    for bench in base_raw["benchmarks"]:
        info = bench["extra_info"]
        info["rounds_s"][0] *= 100  # one round 100x slower in every point: the medians barely move
        refresh_summary(info)
    cur, base = results_from_dict(raw, "cur.json"), results_from_dict(base_raw, "base.json")
    ax = make_figure(cur, base).axes[0]
    medians = [p.latency_s for r in (cur, base) for p in r.points.values()]
    lo, hi = ax.get_xlim()
    assert min(medians) / 1.5 <= lo <= min(medians) and max(medians) <= hi <= 1.5 * max(medians)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert sorted(x for line in dashed for x in line.get_xdata()) == sorted(
        p.latency_s for p in base.points.values())  # the baseline is drawn at its own medians
    rounds = [line for line in ax.get_lines() if line.get_label() == "_baseline rounds"]
    assert sum(len(line.get_xdata()) for line in rounds) == 5 * len(base.points)  # faint ticks, off-limits too
    assert all(line.get_alpha() <= 0.3 for line in rounds)


def test_plot_without_a_baseline_needs_none(tmp_path, raw):
    # What `plot --baseline auto` falls back to when the store has no baseline for this hardware.
    out = tmp_path / "fig.png"
    fig = plot(results_from_dict(raw, "r.json"), out, baseline=None, comparison=None)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert not any(c.get_offsets().shape[0] for ax in fig.axes for c in ax.collections)


@pytest.mark.parametrize("skipped", [False, True])
def test_results_without_a_measured_point_write_no_figure(tmp_path, skipped):
    points = [make_point(batch_size=b, oom=not skipped or b == 1, oom_skipped=skipped and b > 1)
              for b in (1, 8, 64)]
    results = results_from_dict(make_results(points), "oom.json")
    with pytest.raises(UserError, match=r"oom\.json: nothing to plot: 3 points, all out of memory"):
        plot(results, tmp_path / "fig.png")
    assert os.listdir(tmp_path) == []


def test_a_panel_with_every_point_oom_says_so():
    raw = make_results(sweep(models=("llama-7b", "vicuna-13b"), batch_sizes=(1, 8), oom_from={"vicuna-13b": 1}))
    ax = make_figure(results_from_dict(raw, "r.json")).axes[1]
    texts = [t.get_text() for t in ax.texts]
    assert "no measured points" in texts and any(t.startswith("OOM:") for t in texts)


def test_only_regressions_are_ringed(raw):
    # Any other status (improved, inconclusive, noisy, ...) is not a regression and gets no ring.
    r = results_from_dict(raw, "r.json")
    pid = point_id("llama-7b", "flap", 64, 12, 128)
    for status, rings in (("noisy", 0), ("inconclusive", 0), ("regressed", 1)):
        ax = make_figure(r, r, Comparison([PointVerdict(r.points[pid].point, status)])).axes[0]
        assert sum(c.get_offsets().shape[0] for c in ax.collections) == rings
