"""Held-out perplexity against throughput: what pruning buys in speed and costs in quality, in the
reference figure's colours, markers and labels (`pruned-perf plot --quality`)."""
from __future__ import annotations

from pruned_perf.analysis.metrics import BY_NAME
from pruned_perf.analysis.plot import legend, panel_notes, plottable, series_key, series_styles
from pruned_perf.analysis.plot_text import POINT_SIZE, TITLE_FONTSIZE, PanelMarks, figure_title, place_labels, wrap_title
from pruned_perf.analysis.results import Results
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import Measurement, is_number


def make_quality_figure(results: Results):
    """Held-out perplexity (y) against throughput (x, log2), one panel per (model, input, output) of
    the models that have a perplexity. A variant has one perplexity, so its line is level: a marker per
    batch size, labelled M<n>. Pruning that buys speed moves a line right; what it costs in quality,
    up. Same colours, markers and legend labels as make_figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [p for p in results.points.values() if plottable(p) and is_number(p.ppl)]
    if not points:
        raise UserError(f"{results.path}: no measured point has a held-out perplexity (ppl); only models "
                        f"with a tokenizer get one")
    models = sorted({p.model for p in points})
    pairs = sorted({(p.input_tokens, p.output_tokens) for p in points})
    fig = Figure(figsize=(4.4 * len(pairs), 3.4 * len(models) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), len(pairs), squeeze=False)
    styles = series_styles(results, None)
    panels = [_quality_panel(axes[r][c], points, model, inp, out, styles[model])
              for r, model in enumerate(models) for c, (inp, out) in enumerate(pairs)]
    for r, model in enumerate(models):
        used = {series_key(p) for p in points if p.model == model}
        legend(axes[r][-1], {k: v for k, v in styles[model].items() if k in used}, False, False)
    title = f"held-out perplexity against throughput · {figure_title(results)}"
    fig.suptitle(wrap_title(title, fig.get_figwidth()), fontsize=TITLE_FONTSIZE, wrap=True)
    place_labels(fig, panels)
    return fig


def _quality_panel(ax, points: list[Measurement], model: str, inp: int, out: int, styles: dict) -> PanelMarks:
    marks = PanelMarks(ax)
    mine = [p for p in points if (p.model, p.input_tokens, p.output_tokens) == (model, inp, out)]
    for key in styles:
        series = sorted((p for p in mine if series_key(p) == key), key=lambda p: p.batch_size)
        xs, ys = [p.tokens_per_s for p in series], [p.ppl for p in series]
        if not series:
            continue
        ax.plot(xs, ys, markersize=POINT_SIZE, linewidth=1.4, zorder=3, **styles[key])
        marks.markers += [(x, y, POINT_SIZE) for x, y in zip(xs, ys)]
        marks.labels += [(f"M{p.batch_size}", (x, y), styles[key]["color"]) for p, x, y in zip(series, xs, ys)]
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 64, not 2^6: read as the main figure
    ys = [m[1] for m in marks.markers]
    if ys:  # room above and below the levels, so labels fit beside the markers
        pad = (max(ys) - min(ys)) * 0.15 or 0.1 * max(ys)
        ax.set_ylim(max(min(ys) - pad, 0.0), max(ys) + pad)
    ax.set_title(f"{model} in {inp} out {out}", fontsize=10)
    ax.set_xlabel(BY_NAME["tokens_per_s"].axis_label)
    ax.set_ylabel(BY_NAME["ppl"].axis_label)
    ax.grid(True, which="major", alpha=0.3)
    panel_notes(ax, [], not marks.labels, marks)
    return marks
