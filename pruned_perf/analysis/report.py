"""Results tables: one per (model, input tokens, output tokens), a row per method, size and batch.

With a comparison, each row also shows the latency change against the baseline and the point's
verdict; regressions come first, both as their own table at the top and within each table.
"""
from __future__ import annotations

from dataclasses import dataclass

from tabulate import tabulate

from pruned_perf.analysis.compare import MIN_HISTORY
from pruned_perf.analysis.comparison import Comparison, PointVerdict
from pruned_perf.analysis.verdicts import (IMPROVED, INCONCLUSIVE, MISSING, NEW, NEWLY_OOM, NO_LONGER_OOM, NOISY,
                                           REGRESSED, UNCHANGED, Judgement)
from pruned_perf.analysis.metrics import METRICS, Metric
from pruned_perf.analysis.results import Results, method_rank
from pruned_perf.core.errors import choice_error
from pruned_perf.core.formatting import format_params
from pruned_perf.core.schema import Measurement

FORMATS = {"github": "github", "plain": "simple"}
# GitHub refuses a step summary over 1 MiB; keep some room for what the workflow adds around it.
SUMMARY_LIMIT_BYTES = 1024 * 1024 - 16 * 1024
# Verdicts in the order rows are listed: what needs attention first.
_ROW_ORDER = (REGRESSED, NEWLY_OOM, INCONCLUSIVE, NOISY, MISSING, NEW, IMPROVED, NO_LONGER_OOM, UNCHANGED)


@dataclass
class Row:
    """One table row before formatting; `key` places it in its table, `rank` orders it."""

    key: tuple
    rank: tuple
    cells: list
    regression: bool = False


def render(results: Results, comparison: Comparison | None = None, fmt: str = "github",
           summary: bool = False, summary_limit_bytes: int = SUMMARY_LIMIT_BYTES) -> str:
    """The report as text; `summary` keeps it under GitHub's step-summary limit."""
    if fmt not in FORMATS:
        raise choice_error("report format", fmt, FORMATS)
    header = _header(results, comparison, fmt)
    regressions = _regressions_table(comparison, fmt)
    groups = _group_tables(results, comparison, fmt)
    full = _join([header, regressions, *(text for _, text in groups)])
    if not summary or len(full.encode()) <= summary_limit_bytes:
        return full
    return _cut(header, regressions, results, comparison, fmt, summary_limit_bytes, len(full.encode()))


class BaselineJudgement(Judgement):
    """A run's tables, held against stored runs where a comparison was made (None: the tables alone)."""

    def __init__(self, results: Results, comparison: Comparison | None = None, baseline: Results | None = None):
        self.results, self.comparison, self.baseline = results, comparison, baseline

    @property
    def has_regression(self) -> bool:
        return self.comparison is not None and self.comparison.has_regression

    def render(self, fmt: str = "github", summary: bool = False) -> str:
        return render(self.results, self.comparison, fmt=fmt, summary=summary)

    def to_dict(self) -> dict:
        return self.comparison.to_dict() if self.comparison is not None else {"has_regression": False}

    def plot(self, out_path, quality: bool = False):
        from pruned_perf.analysis.plot import plot, save_figure

        if quality:
            from pruned_perf.analysis.plot_quality import make_quality_figure

            return save_figure(make_quality_figure(self.results), out_path)
        return plot(self.results, out_path, baseline=self.baseline, comparison=self.comparison)


# ---------------------------------------------------------------- header


def _header(results: Results, comparison: Comparison | None, fmt: str) -> str:
    fp = results.fingerprint
    n_oom = sum(1 for p in results.points.values() if p.oom)
    software = ", ".join(f"{k} {getattr(fp, k)}" for k in ("driver", "cuda", "torch", "transformers")
                         if getattr(fp, k))
    title = f"pruned_perf results: profile {results.profile}, {len(results.points)} points ({n_oom} OOM)"
    lines = [f"## {title}" if fmt == "github" else title,
             f"Hardware {fp.slug} ({fp.name or fp.device or '?'}); {software or 'no versions'}"]
    if results.from_log:
        lines.append(f"From the point log {results.path}, run {results.meta.run_id}: the points it logged, "
                     f"whether or not it finished")
    if comparison is not None:
        counts = comparison.counts()
        listed = ", ".join(f"{counts[s]} {s}" for s in _ROW_ORDER if counts.get(s))
        verdict = "REGRESSION" if comparison.has_regression else "no regression"
        lines.append(f"Baseline {comparison.baseline_path or '?'}: {verdict}; {listed}")
        lines.append(_history_line(comparison))
        lines.extend(f"warning: {w}" for w in comparison.warnings)
    sep = "  \n" if fmt == "github" else "\n"  # two spaces: a markdown line break
    return lines[0] + "\n\n" + sep.join(lines[1:])


def _history_line(comparison: Comparison) -> str:
    runs = comparison.history_runs
    if runs < MIN_HISTORY:
        text = (f"Baseline history: {runs} run(s), fewer than {MIN_HISTORY}: the spread between runs is unknown, "
                f"so times and speedups count only beyond the drift allowance; memory and perplexity gate as usual")
    else:
        text = f"Baseline history: {runs} runs; a change must lie beyond every stored run's median"
        latency = {model: sds["latency_s"] for model, sds in sorted(comparison.between_run_sd.items())
                   if "latency_s" in sds}
        if comparison.history_sigmas > 0 and latency:
            listed = ", ".join(f"{model} {sd:.0%}" for model, sd in latency.items())
            text += (f" and over {comparison.history_sigmas:g} between-run SDs from their mean "
                     f"(SD of latency: {listed})")
    factor = comparison.machine_factor
    if factor is not None:
        text += f". Steadiness probe: this run's machine was {factor:.2f}x the baseline run's time"
    if comparison.others_cpu is not None:
        now, then = comparison.others_cpu
        text += f". Other work on the CPUs during the rounds: {now:.2f} cores (baseline's run {then:.2f}), median of points"
    return text


def _join(parts: list[str]) -> str:
    return "\n\n".join(p for p in parts if p) + "\n"


# ---------------------------------------------------------------- regressions


def _regressions_table(comparison: Comparison | None, fmt: str, limit: int | None = None) -> str:
    rows = _regression_rows(comparison)
    if not rows:
        return ""
    shown = rows if limit is None else rows[:limit]
    headers = ["point", "metric", "baseline", "current", "change", "p"]
    title = f"Regressions ({len(rows)})"
    text = _title(title, fmt) + "\n\n" + tabulate(shown, headers, tablefmt=FORMATS[fmt], disable_numparse=True)
    if len(shown) < len(rows):
        text += f"\n\n({len(rows) - len(shown)} more regressions cut)"
    return text


def _regression_rows(comparison: Comparison | None) -> list[list[str]]:
    if comparison is None:
        return []
    rows = []
    for pv in comparison.points:
        if pv.status == NEWLY_OOM:
            rows.append([pv.id, "oom", "ran", "OOM", "", ""])
        for m in pv.metrics:
            if m.verdict == REGRESSED:
                rows.append([pv.id, m.metric, _num(m.baseline_median), _num(m.current_median),
                             _pct(m.change), "" if m.p_value is None else f"{m.p_value:.3g}"])
    return rows


def _title(text: str, fmt: str) -> str:
    return f"### {text}" if fmt == "github" else f"{text}\n{'-' * len(text)}"


# ---------------------------------------------------------------- tables per (model, in, out)


def _group_tables(results: Results, comparison: Comparison | None, fmt: str,
                  row_limit: int | None = None) -> list[tuple[tuple, str]]:
    """[(group key, table text)], groups with regressions first; row_limit caps rows in total."""
    rows = _rows(results, comparison)
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.key, []).append(row)
    order = sorted(groups, key=lambda k: (not any(r.regression for r in groups[k]), k))
    headers = _headers(comparison)
    tables = []
    budget = row_limit
    for key in order:
        group_rows = sorted(groups[key], key=lambda r: r.rank)
        if budget is not None:
            if budget <= 0:
                break
            group_rows = group_rows[:budget]
            budget -= len(group_rows)
        title = _title(f"{key[0]} in {key[1]} out {key[2]}", fmt)
        body = tabulate([r.cells for r in group_rows], headers, tablefmt=FORMATS[fmt],
                        disable_numparse=True, colalign=_align(headers))
        fit = largest_batch_line([p for p in results.points.values() if _group_key(p) == key],
                                 list(results.methods))
        tables.append((key, title + "\n\n" + body + (f"\n\n{fit}" if fit else "")))
    return tables


def largest_batch_line(points: list[Measurement], order: list[str]) -> str:
    """The largest batch that fit per method, size and backend: in the paper's figure only where a line
    ends. A series with no OOM fit every batch measured, and maybe larger ones ("the largest measured").
    Methods in `order` come first, in that order."""
    series: dict[tuple, list[Measurement]] = {}
    for p in points:
        series.setdefault((p.method, p.params, p.backend), []).append(p)
    methods, backends = [m for m, _ in {k[:2] for k in series}], {k[2] for k in series}
    parts = []
    for (method, params, backend), members in sorted(series.items(), key=lambda kv: _series_rank(kv[0], order)):
        label = method if methods.count(method) == 1 else f"{method} {_params(params)}"
        label += f" {backend}" if len(backends) > 1 else ""
        fit = [p.batch_size for p in members if not p.oom]
        oom = [p.batch_size for p in members if p.oom]
        if not fit:
            parts.append(f"{label} none (OOM from M{min(oom)})")
        elif not oom:
            parts.append(f"{label} M{max(fit)} (the largest measured; no OOM)")
        else:
            parts.append(f"{label} M{max(fit)} (OOM at M{min([b for b in oom if b > max(fit)] or oom)})")
    return "Largest batch that fit: " + "; ".join(parts) if parts else ""


def _series_rank(key: tuple, order: list[str]) -> tuple:
    method, params, backend = key
    return (method_rank(method, order), -params, backend)


def _group_key(p: Measurement) -> tuple:
    """The table a point goes in."""
    return (p.model, p.input_tokens, p.output_tokens)


def _headers(comparison: Comparison | None) -> list[str]:
    headers = ["method", "params", "M", "backend", *(m.header for m in METRICS)]
    if comparison is not None:
        headers += ["Δ latency", "verdict"]
    return headers


def _align(headers: list[str]) -> list[str]:
    return ["left" if h in ("method", "backend", "verdict") else "right" for h in headers]


def _rows(results: Results, comparison: Comparison | None) -> list[Row]:
    verdicts = comparison.by_id() if comparison is not None else {}
    order = list(results.methods)
    rows = [_row(p, verdicts.get(pid), comparison is not None, order) for pid, p in results.points.items()]
    for pv in verdicts.values():
        if pv.status == MISSING:  # only in the baseline: its measurement there places the row, no numbers
            p = pv.baseline
            cells = [p.method, _params(p.params), p.batch_size, p.backend] + ["-"] * len(METRICS)
            rows.append(_make_row(p, cells, pv, MISSING, True, order))
    return rows


def _row(p: Measurement, pv: PointVerdict | None, with_verdict: bool, order: list[str]) -> Row:
    status = pv.status if pv is not None else (NEW if with_verdict else UNCHANGED)
    cells = [p.method, _params(p.params), p.batch_size, p.backend] + [_cell(m, p) for m in METRICS]
    return _make_row(p, cells, pv, status, with_verdict, order)


def _cell(metric: Metric, p: Measurement) -> str:
    """The metric's value as its table shows it. An OOM point has no times but keeps its variant's
    perplexity; the dense point is the 1.00x every speedup of its shape is over."""
    value = metric.value(p)
    if metric.name == "speedup_vs_dense" and p.method == "dense" and not p.oom:
        value = 1.0
    if value is None and p.oom:
        return "" if metric.name == "speedup_vs_dense" else "OOM"
    return metric.cell(value)


def _make_row(p: Measurement, cells: list, pv: PointVerdict | None, status: str, with_verdict: bool,
              order: list[str]) -> Row:
    if with_verdict:
        cells = cells + [_latency_change(pv), _verdict_text(pv, status)]
    rank = (_ROW_ORDER.index(status) if with_verdict else 0, method_rank(p.method, order), p.params, p.backend,
            p.batch_size)
    return Row(_group_key(p), rank, cells, status in (REGRESSED, NEWLY_OOM))


def _latency_change(pv: PointVerdict | None) -> str:
    m = pv.metric("latency_s") if pv is not None else None
    return _pct(m.change) if m is not None else ""


def _verdict_text(pv: PointVerdict | None, status: str) -> str:
    if pv is None or status not in (REGRESSED, IMPROVED, INCONCLUSIVE, NOISY):
        return status
    names = [m.metric for m in pv.metrics if m.verdict == status]
    return f"{status} ({', '.join(names)})"


def _params(params) -> str:
    return "" if not params else format_params(params)


def _num(value) -> str:
    return "" if value is None else f"{value:.4g}"


def _pct(change) -> str:
    if change is None:
        return ""
    return f"{change:+.1%}"


# ---------------------------------------------------------------- summary cut


def _cut(header: str, regressions: str, results: Results, comparison: Comparison | None, fmt: str,
         limit_bytes: int, full_bytes: int) -> str:
    """Header, regressions and as many top rows as fit, with a note saying what was cut."""
    total_rows = len(_rows(results, comparison))
    note_room = 512
    n_reg = len(_regression_rows(comparison))
    reg_text = regressions
    while reg_text and len((header + reg_text).encode()) + note_room > limit_bytes and n_reg > 0:
        n_reg //= 2  # halve until the regressions themselves fit: huge regression lists are rare
        reg_text = _regressions_table(comparison, fmt, limit=n_reg)
    fixed = len((header + reg_text).encode()) + note_room
    shown, tables = _fit_rows(results, comparison, fmt, limit_bytes - fixed, total_rows)
    note = (f"Cut to fit GitHub's 1 MiB step-summary limit: the full report is "
            f"{full_bytes // 1024} KiB; showing the header, the regressions and the top {shown} of "
            f"{total_rows} rows. Run `pruned-perf report RESULTS.json` for everything.")
    note = f"> {note}" if fmt == "github" else f"NOTE: {note}"
    return _join([header, reg_text, note, *tables])


def _fit_rows(results, comparison, fmt, budget_bytes: int, total_rows: int) -> tuple[int, list[str]]:
    """The most rows (from the top) whose tables fit in budget_bytes, and those tables.

    Rendering is the slow part, so start from the average row size and shrink; rows have similar
    widths, so this takes two or three renders where a binary search would take a dozen.
    """
    rows = total_rows
    while rows > 0:
        tables = [t for _, t in _group_tables(results, comparison, fmt, row_limit=rows)]
        size = len(_join(tables).encode())
        if size <= budget_bytes:
            return rows, tables
        rows = min(rows - 1, int(rows * budget_bytes / size * 0.99))
    return 0, []
