"""Steps in the history of nightly runs: where a series of per-run medians moved to a new level.

Torch-free (numpy). A series is one point's one timing metric over the runs, one value per run, oldest
first; the grid is every series of one call. The method (docs/history-steps.md; the simulation in
tests/test_steps.py chose it and its defaults):

1. Log values. A series' scale is its spread from one run to the next: the winsorized mean square of
   its first differences over `scale_span` values about each position (steps barely count).
2. Despike: each value is clipped to within `clip` scales of the median of the five values about it,
   the last two of a series to the median of the three nearest. One or two wild nights inside a
   series are pulled back to their neighbours; a step passes (medians keep edges), and at the end a
   new level of two runs stands until the runs after it say otherwise.
3. Windowed binary segmentation: a split compares the means of up to `window` values on each side
   within its segment (Student's t with the scale's degrees of freedom). Where a side has fewer than
   `settle` values, its p is that of all its values but (k - 1) // 3 lying beyond the other side's
   mean, allowing for the scale's and that mean's errors and for the grid's share of wild values: one
   wild value cannot make a short side a step. Each segment splits at its strongest candidate that is
   significant at `fdr` alone, Bonferroni over the positions searched; the tail (positions with fewer
   than `settle` values after them) is searched apart, so a new step pays for a few positions, not
   for the whole history. Every split is then tested again between its neighbours.
4. Benjamini-Hochberg across the grid, the tail's hypotheses and the history's apart (each at `fdr`):
   the splits kept whose estimate is beyond the threshold are steps, their commit range widened to
   every position that fits about as well; close splits of one direction that a ramp fits better are
   one `gradual` change.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace
from statistics import NormalDist
from typing import Mapping, Sequence

import numpy as np

from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import is_number

STEP, GRADUAL = "step", "gradual"
# The scale: first differences winsorized at this many robust SDs; the mean square of a winsorized
# standard normal (to undo the winsorizing); degrees of freedom per difference (von Neumann's mean
# square of successive differences has 2/3 per difference for normal data; a little less winsorized).
WINSOR = 2.5
WINSOR_FACTOR = (math.erf(WINSOR / math.sqrt(2)) - 2 * WINSOR * math.exp(-WINSOR ** 2 / 2) / math.sqrt(2 * math.pi)
                 + WINSOR ** 2 * math.erfc(WINSOR / math.sqrt(2)))
SCALE_EFFICIENCY = 0.6
# The commit range of a step: first columns of the new level whose fit is within this many squared
# scales of the best one.
LOCATION = 4.0
# A value this many scales from the median of the five about it is wild: the share of wild values
# over the grid (the machine's) is allowed for in the p of a short side.
WILD = 4.0
# Timings never repeat to better than this (log scale): the floor of a scale, so that a constant or
# quantised series does not divide by zero.
SCALE_FLOOR = 1e-3
# Two-sided level of a step's interval of the ratio.
CI_LEVEL = 0.95


@dataclass(frozen=True)
class StepSettings:
    """How steps are found. Defaults chosen by simulation (docs/history-steps.md)."""

    threshold: float = 0.05  # relative change that counts for a step (the suite's per-metric threshold)
    fdr: float = 0.02  # false-discovery rate across every series of one call
    min_runs: int = 2  # fewest values on each side of a split
    settle: int = 6  # a step with fewer values after it is `at_end`, tested as the tail
    window: int = 30  # values on each side that a split compares
    clip: float = 2.5  # despiking: scales a value may lie from the median of it and its neighbours
    gradual_span: int = 10  # most runs a `gradual` change may spread over
    scale_span: int = 66  # values whose first differences give the local scale

    def __post_init__(self):
        for name, low in (("min_runs", 1), ("settle", 2), ("window", 2), ("gradual_span", 2),
                          ("scale_span", 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"steps: {name} must be an integer >= {low}, got {value!r}")
        if self.settle <= self.min_runs:
            raise UserError(f"steps: settle ({self.settle}) must exceed min_runs ({self.min_runs})")
        if self.window < self.min_runs:
            raise UserError(f"steps: window ({self.window}) must be at least min_runs ({self.min_runs})")
        if not is_number(self.threshold) or not 0 <= self.threshold < 1:
            raise UserError(f"steps: threshold must be a relative change in [0, 1) (0.05 = 5%), got {self.threshold!r}")
        if not is_number(self.fdr) or not 0 < self.fdr < 1:
            raise UserError(f"steps: fdr must be a number in (0, 1), got {self.fdr!r}")
        if not is_number(self.clip) or self.clip <= 0:
            raise UserError(f"steps: clip must be a number of scales > 0, got {self.clip!r}")

    @property
    def lookback(self) -> int:
        """Runs `steps_at_end` reads: the tail's reference window and the scale's span before it."""
        return max(self.scale_span, 2 * self.window + self.settle)


@dataclass(frozen=True)
class Step:
    """A change of level in one series. Ratios are new level / old level."""

    series: str  # the series key the caller passed
    before: int  # index of the last run at the old level
    at: int  # index of the first run at the new level; the commit range is (before, at]
    ratio: float  # exp(difference of the despiked log means of the two sides)
    ci_low: float  # CI_LEVEL interval of the ratio (not corrected for the grid)
    ci_high: float
    p_value: float  # of the split, Bonferroni over the positions searched, before the grid's correction
    q_value: float  # Benjamini-Hochberg adjusted across every hypothesis of the call
    kind: str  # "step" (one commit range) or "gradual" (a drift over several runs)
    env_change: bool  # the run environment changed within (before, at]
    at_end: bool  # fewer than `settle` measured runs from `at` on: the step is suspected, not settled


@dataclass(frozen=True)
class Found:
    """Steps found in a 2-D array of values (rows: series, columns: runs): the array form."""

    row: np.ndarray  # int, the series
    before: np.ndarray  # int, run index of the last value at the old level
    at: np.ndarray  # int, run index of the first value at the new level
    log_ratio: np.ndarray
    half_width: np.ndarray  # of the CI_LEVEL interval of log_ratio
    p_value: np.ndarray
    q_value: np.ndarray
    gradual: np.ndarray  # bool
    at_end: np.ndarray  # bool


# ---- the public functions ----

def find_steps(series: Mapping[str, Sequence[float | None]], env: Sequence[str],
               settings: StepSettings = StepSettings()) -> list[Step]:
    """All steps over the whole history of every series. `series`: key -> one value per run (index i =
    run i, oldest first; None = not measured in that run or ran out of memory), every series as long
    as `env`. `env[i]`: the key of run i's environment (hardware, driver, torch, transformers); where it
    changes between runs, an environment change lies between them. False discoveries are controlled
    across every series passed in one call (the grid), not per series. Sorted by series, then run."""
    keys, values = _checked(series, env)
    return _steps(keys, find_array(values, settings), env)


def steps_at_end(series: Mapping[str, Sequence[float | None]], env: Sequence[str],
                 settings: StepSettings = StepSettings()) -> list[Step]:
    """The `at_end` steps, from the last `settings.lookback` runs only: what the nightly job needs
    after appending a run. The same tests as `find_steps` on that stretch of history (its scale is
    local anyway); the grid's correction then covers only the hypotheses of that stretch, so an answer
    can differ from `find_steps`' at_end steps where earlier splits weigh on the correction."""
    keys, values = _checked(series, env)
    start = max(0, values.shape[1] - settings.lookback)
    found = find_array(values[:, start:], settings)
    return [replace(s, before=s.before + start, at=s.at + start) for s in _steps(keys, found, env[start:])
            if s.at_end]


def find_array(values: np.ndarray, settings: StepSettings = StepSettings(),
               families: np.ndarray | None = None, tail_only: bool = False) -> Found:
    """The steps of a 2-D array of positive values (rows: series, columns: runs; NaN: not measured).
    `families`: an integer per row; rows of one family share one false-discovery correction (default:
    all rows one family). Many grids in one call, each its own family, cost little more than one.
    `tail_only`: report only the `at_end` steps (the tests and the correction are the same)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise UserError(f"steps: values must be a 2-D array (series x runs), got shape {values.shape}")
    families = np.zeros(len(values), dtype=int) if families is None else np.asarray(families)
    if families.shape != (len(values),):
        raise UserError(f"steps: families must give one integer per row ({len(values)}), got shape {families.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log(values)
    x, runs, start = _compress(logs)
    scale, df = _local_scale(x, start, settings.scale_span)
    x, wild, seen = _despike(x, start, scale, settings.clip)
    grid = _Grid(x, start, scale, df, _wild_share(wild, seen, families), settings)
    splits, stops = grid.segment()
    return grid.report(splits, stops, runs, families, tail_only)


# ---- input ----

def _checked(series, env) -> tuple[list[str], np.ndarray]:
    if not isinstance(series, Mapping):
        raise UserError(f"steps: series must map keys to lists of values, got {type(series).__name__}")
    n = len(env)
    rows = []
    for key, values in series.items():
        if len(values) != n:
            raise UserError(f"steps: series {key!r} has {len(values)} values, env has {n} runs; they must match")
        row = []
        for i, v in enumerate(values):
            if v is None:
                row.append(math.nan)
            elif isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v) or v <= 0:
                raise UserError(f"steps: series {key!r} run {i}: a value must be a positive time or None, got {v!r}")
            else:
                row.append(float(v))
        rows.append(row)
    return list(series), np.array(rows, dtype=float).reshape(len(rows), n)


def _compress(logs: np.ndarray):
    """Each row's values right-aligned (the newest in the last column), NaN before them; the run index
    of every column (-1 where none) and the first column with a value."""
    valid = np.isfinite(logs)
    if valid.all():
        return logs, np.broadcast_to(np.arange(logs.shape[1]), logs.shape), np.zeros(len(logs), int)
    order = np.argsort(valid, axis=1, kind="stable")  # missing first, values in run order after
    x = np.take_along_axis(logs, order, axis=1)
    runs = np.where(np.take_along_axis(valid, order, axis=1), order, -1)
    return x, runs, logs.shape[1] - valid.sum(axis=1)


def _starts(start: np.ndarray) -> np.ndarray:
    """The rows' first columns as a column vector, one row of it where all rows share it (so that
    index arrays built from it stay one row: a plain column index, cheap)."""
    return start[:1, None] if len(start) and (start == start[0]).all() else start[:, None]


def _gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[r, idx[r, j]] for every row, with idx one row for all rows or one per row."""
    return a[:, idx[0]] if idx.shape[0] == 1 else np.take_along_axis(a, idx, axis=1)


def _local_scale(x: np.ndarray, start: np.ndarray, span: int):
    """Per column: the SD of one value and its degrees of freedom, from the first differences among
    the `span` values about the column (shifted to stay within the row; a shorter row: all of it).
    Each difference is winsorized at WINSOR robust SDs (from the median absolute difference about it)
    before the mean square is taken: steps and outliers barely count, and the estimate keeps most of
    the efficiency of a mean square (von Neumann's, of successive differences: about 2/3 n degrees of
    freedom against the MAD's 0.37 n)."""
    rows, cols = x.shape
    if cols < 2:
        return np.full(x.shape, SCALE_FLOOR), np.ones(x.shape)
    d = np.diff(x, axis=1)  # column i: x[i+1] - x[i]; NaN before a row's values
    width = min(span - 1, cols - 1)
    first = np.minimum(_starts(start), cols - 1)
    if width == cols - 1 and first.shape[0] == 1 and first[0, 0] == 0:  # one window: each whole row
        mean_square = _winsorized(d, _row_medians(np.abs(d))[:, None]).mean(axis=1, keepdims=True)
        return np.broadcast_to(_scale(mean_square), x.shape), np.full(x.shape, SCALE_EFFICIENCY * width)
    lo, hi = _diff_window(np.arange(cols)[None, :], first, cols, width)
    centre_lo, _ = _diff_window(np.arange(cols - 1)[None, :], first, cols, width)
    windows = np.lib.stride_tricks.sliding_window_view(np.abs(d), width, axis=1)
    parts = np.partition(windows, ((width - 1) // 2, width // 2), axis=2)
    medians = (parts[..., (width - 1) // 2] + parts[..., width // 2]) / 2  # NaN where a window reaches no values
    mad = _gather(medians, np.broadcast_to(np.minimum(centre_lo, cols - width - 1), (centre_lo.shape[0], cols - 1)))
    short = np.isnan(mad).any(axis=1)  # rows with fewer differences than the span: all of them
    if short.any():
        mad[short] = _row_medians(np.abs(d[short]))[:, None]
    sums = np.concatenate([np.zeros((rows, 1)), np.cumsum(_winsorized(d, mad), axis=1)], axis=1)
    n = np.maximum(hi - lo, 1)
    return _scale((_gather(sums, hi) - _gather(sums, lo)) / n), np.broadcast_to(SCALE_EFFICIENCY * n, x.shape)


def _winsorized(d: np.ndarray, mad: np.ndarray) -> np.ndarray:
    """Squared differences, each at most (WINSOR robust SDs)^2; 0 where a difference is missing."""
    return np.where(np.isfinite(d), np.minimum(np.nan_to_num(d) ** 2, (WINSOR * 1.4826 * mad) ** 2), 0.0)


def _scale(mean_square: np.ndarray) -> np.ndarray:
    """The SD of one value from the winsorized mean square of first differences (each has twice its
    variance), at least SCALE_FLOOR."""
    return np.maximum(np.sqrt(mean_square / (2 * WINSOR_FACTOR)), SCALE_FLOOR)


def _diff_window(centre: np.ndarray, first: np.ndarray, cols: int, width: int):
    """The window [lo, hi) of differences about each `centre`: `width` of them within the row, or
    all of a row that has fewer."""
    lo = np.maximum(np.minimum(centre - width // 2, cols - 1 - width), first)
    return lo, np.minimum(lo + width, cols - 1)


def _row_medians(d: np.ndarray) -> np.ndarray:
    """Median of each row's non-NaN values (NaN sorts last); NaN for a row without any."""
    if not np.isnan(d).any():
        return np.median(d, axis=1)
    n = np.isfinite(d).sum(axis=1)
    s = np.sort(d, axis=1)
    idx = np.arange(len(d))
    return np.where(n > 0, (s[idx, np.maximum((n - 1) // 2, 0)] + s[idx, np.maximum(n // 2, 0)]) / 2, np.nan)


def _wild_share(wild: np.ndarray, seen: np.ndarray, families: np.ndarray) -> np.ndarray:
    """Per row: the share of wild values over all rows of its family (a property of the machine, so
    the whole grid estimates it)."""
    _, inverse = np.unique(families, return_inverse=True)
    return (np.bincount(inverse, wild) / np.maximum(np.bincount(inverse, seen), 1))[inverse]


def _median3(a, b, c):
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def _median5(a, b, c, d, e):
    """Elementwise median of five arrays (a comparison network: the median of c, the larger of the
    minima of (a, b) and (d, e), and the smaller of their maxima)."""
    return _median3(c, np.maximum(np.minimum(a, b), np.minimum(d, e)), np.minimum(np.maximum(a, b), np.maximum(d, e)))


def _despike(x: np.ndarray, start: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
    """Clip every value to within `clip` scales of the median of the five values about it (the five
    nearest within the row); then the last two values of a row, to within `clip` scales of the median
    of the three nearest (as clipped). So one or two wild nights inside a series are pulled back to
    their neighbours, while a step passes untouched, and at the end a new level of two runs survives
    until runs after it say otherwise. Rows of fewer than five values stay as they are. Also returns,
    per row, how many values lay more than WILD scales from that median (wild nights), of how many."""
    rows, cols = x.shape
    if cols < 5:
        return x, np.zeros(rows), np.zeros(rows)
    first = _starts(start)
    if first.shape[0] == 1 and first[0, 0] == 0:  # every row full: shifted views, the edges copied in
        med = _median5(*(x[:, k:cols - 4 + k] for k in range(5)))
        med = np.concatenate([med[:, :1], med[:, :1], med, med[:, -1:], med[:, -1:]], axis=1)
    else:
        centre = np.clip(np.arange(cols)[None, :], first + 2, cols - 3)
        med = _median5(*(_gather(x, np.clip(centre + k, 0, cols - 1)) for k in range(-2, 3)))
    inner = ((cols - start >= 5)[:, None]) & (np.arange(cols) < cols - 2)[None, :]
    out = np.where(inner, np.clip(x, med - clip * scale, med + clip * scale), x)
    wild = inner & (np.abs(x - med) > WILD * scale)
    last = out[:, -3:]
    med = _median3(last[:, :1], last[:, 1:2], last[:, 2:])
    ends = np.clip(last[:, 1:], med - clip * scale[:, -2:], med + clip * scale[:, -2:])
    out[:, -2:] = np.where((cols - start >= 5)[:, None], ends, out[:, -2:])
    return out, wild.sum(axis=1), inner.sum(axis=1)


# ---- tail probabilities ----

def _log_erfc(x: np.ndarray) -> np.ndarray:
    """log of the complementary error function, relative error of erfc below 1.2e-7 (Numerical
    Recipes' erfcc), without underflow far into the tail."""
    z = np.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    log_r = np.log(t) + poly
    return np.where(x >= 0, log_r, np.log(2 - np.exp(log_r)))


def log_upper_tail(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """log P(T >= t) for Student's t with `df` degrees of freedom, by Wallace's normal equivalent
    z = (8 df + 1) / (8 df + 3) * sqrt(df log(1 + t^2 / df)) (good to a few % far into the tail)."""
    t, df = np.asarray(t, dtype=float), np.asarray(df, dtype=float)
    z = np.sign(t) * (8 * df + 1) / (8 * df + 3) * np.sqrt(df * np.log1p(t * t / df))
    return _log_erfc(z / math.sqrt(2)) - math.log(2)


@functools.lru_cache(maxsize=1024)
def t_quantile(level: float, df: float) -> float:
    """The two-sided `level` quantile of Student's t, inverting Wallace's approximation."""
    z = NormalDist().inv_cdf((1 + level) / 2)
    return math.sqrt(df * math.expm1((z * (8 * df + 3) / (8 * df + 1)) ** 2 / df))


# Gauss-Hermite nodes and weights (probabilists'): expectations over a standard normal, for the
# estimated scale (first axis) and the reference mean's error (second).
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(16)
_REF_NODES, _REF_WEIGHTS = np.polynomial.hermite_e.hermegauss(8)
_LOG_WEIGHTS = np.log(_WEIGHTS / _WEIGHTS.sum())[:, None] + np.log(_REF_WEIGHTS / _REF_WEIGHTS.sum())[None, :]


def log_at_least(u: np.ndarray, df: np.ndarray, n_ref: np.ndarray, k: np.ndarray, a: np.ndarray,
                 wild: np.ndarray | float = 0.0) -> np.ndarray:
    """log P(at least a of k values lie u or more estimated SDs above the mean of n_ref others), each
    normal but for a share `wild` of wild values that may lie anywhere; the SD estimated with `df`
    degrees of freedom: the binomial tail given the scale's and the reference mean's errors (both
    shared by the k values), averaged over their distributions (Wilson-Hilferty's cube-root normal
    for chi-square; Gauss-Hermite)."""
    u, df, n_ref, k, a, wild = (np.asarray(v, dtype=float)[..., None, None] for v in (u, df, n_ref, k, a, wild))
    c = 2 / (9 * df)
    ratio = np.maximum(1 - c + _NODES[:, None] * np.sqrt(c), 1e-3) ** 1.5  # estimated SD / true SD
    log_q = _log_erfc((u * ratio + _REF_NODES[None, :] / np.sqrt(n_ref)) / math.sqrt(2)) - math.log(2)
    log_q = np.where(wild > 0, np.log(np.minimum(np.exp(log_q) + wild, 1.0)), log_q)
    log_terms = (_log_binomial_tail(log_q, k, a) + _LOG_WEIGHTS).reshape(*log_q.shape[:-2], -1)
    top = log_terms.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(log_terms - top).sum(axis=-1, keepdims=True)))[..., 0]


@functools.lru_cache(maxsize=None)
def _combinations(top: int) -> np.ndarray:
    """C(n, i) for n, i up to `top`."""
    return np.array([[math.comb(n, i) for i in range(top + 1)] for n in range(top + 1)], dtype=float)


def _log_binomial_tail(log_q: np.ndarray, k: np.ndarray, a: np.ndarray) -> np.ndarray:
    """log P(at least a of k independent events), each of probability exp(log_q)."""
    q = np.exp(log_q)
    top_k = int(k.max()) if k.size else 0
    combs = _combinations(top_k)
    total = np.zeros(q.shape)
    for i in range(int(a.min()) if a.size else 0, top_k + 1):
        use = (i >= a) & (i <= k)
        term = combs[k.astype(int), i] * q ** np.maximum(i - a, 0) * (1 - q) ** np.maximum(k - i, 0)
        total += np.where(use, term, 0.0)
    return a * log_q + np.log(total)


# ---- segmentation ----

@dataclass(frozen=True)
class _Tests:
    """Two-sample tests at positions: (row, column) of the split and what it found."""

    row: np.ndarray
    col: np.ndarray
    delta: np.ndarray  # mean after - mean before (despiked logs)
    se: np.ndarray  # its standard error
    p: np.ndarray  # Bonferroni over the positions searched


class _Grid:
    """The despiked series (right-aligned rows) and their windowed binary segmentation."""

    def __init__(self, x, start, scale, df, wild, settings: StepSettings):
        self.x, self.start, self.scale, self.df, self.wild, self.s = x, start, scale, df, wild, settings
        self.prefix = np.concatenate([np.zeros((len(x), 1)), np.cumsum(np.nan_to_num(x), axis=1)], axis=1)
        self.cols = x.shape[1]
        self.first_tail = self.cols - settings.settle + 1  # columns from here on have < settle values after
        self.splits = np.zeros(x.shape, bool)
        self.dropped = np.zeros(x.shape, bool)  # splits dropped once are never taken again

    def _bounds(self, rows):
        """Per column of `rows`: the start of its segment (the last split at or before it, or the row's
        first value) and the next split after it (or the end)."""
        splits, col = self.splits[rows], np.arange(self.cols)
        prev = np.maximum(np.maximum.accumulate(np.where(splits, col, 0), axis=1), self.start[rows, None])
        after = np.concatenate([np.where(splits[:, 1:], col[1:], self.cols),
                                np.full((len(rows), 1), self.cols)], axis=1)
        return prev, np.minimum.accumulate(after[:, ::-1], axis=1)[:, ::-1]

    def _means(self, row, col, prev, nxt):
        """t of the difference of the means of up to `window` values from `col` on (before `nxt`) and
        before it (from `prev` on), with the local scale; and (mean before, mean after, n before,
        n after)."""
        w = self.s.window
        lo, hi = np.maximum(prev, col - w), np.minimum(nxt, col + w)
        n1, n2 = col - lo, hi - col
        at = self.prefix[row, col]
        before, after = (at - self.prefix[row, lo]) / n1, (self.prefix[row, hi] - at) / n2
        return (after - before) / (self.scale[row, col] * np.sqrt(1 / n1 + 1 / n2)), (before, after, n1, n2)

    def _log_p(self, row, col, prev, nxt, limit):
        """The split at (row, col) between its segment's bounds: the difference of the means of up to
        `window` values after and before it, its standard error, and the log of its two-sided p at
        this one position (only p below exp(`limit`) in full). Where a side has fewer than `settle`
        values, the p is `_short_side`'s."""
        settle = self.s.settle
        t, (before, after, n1, n2) = self._means(row, col, prev, nxt)
        delta, se = after - before, self.scale[row, col] * np.sqrt(1 / n1 + 1 / n2)
        log_p = math.log(2) + log_upper_tail(np.abs(t), self.df[row, col])
        short = np.flatnonzero(np.minimum(n1, n2) < settle)
        if len(short):
            a, b = n1[short], n2[short]
            right = b <= a
            log_p[short] = self._short_side(row[short], col[short], right, np.where(right, b, a),
                                            np.where(right, before[short], after[short]), np.where(right, a, b),
                                            limit[short])
        return delta, se, np.minimum(log_p, 0.0)

    def _short_side(self, row, col, right, k, reference, n_ref, limit):
        """log two-sided p of a short side of k values against the other side's mean: that all of its
        values lie beyond the reference but (k - 1) // 3 of them (one for 4-6 values), that is that
        its (misses + 1)-th value from the reference does, each a normal value with the local scale.
        One wild value cannot make a short side a step; a new level at the end must hold. Only p
        below exp(`limit`) are computed in full."""
        offsets = np.arange(self.s.settle)[None, :]
        pos = np.where(right[:, None], col[:, None] + offsets, col[:, None] - 1 - offsets)
        inside = offsets < k[:, None]
        values = self.x[row[:, None], np.clip(pos, 0, self.cols - 1)]
        z = np.sort(np.where(inside, (values - reference[:, None]) / self.scale[row, col][:, None], np.nan), axis=1)
        misses = (k - 1) // 3
        idx = np.arange(len(k))
        u = np.maximum(z[idx, misses], -z[idx, k - 1 - misses])
        # First with the scale and the reference mean taken as known, which gives a smaller p (the
        # tail is convex there); only where that one could count is the full p computed.
        wild = self.wild[row]
        log_q = np.log(np.minimum(np.exp(_log_erfc(u / math.sqrt(2)) - math.log(2)) + wild, 1.0))
        log_p = math.log(2) + _log_binomial_tail(log_q, k, k - misses)
        close = np.flatnonzero(log_p <= limit)
        if len(close):
            log_p[close] = math.log(2) + log_at_least(u[close], self.df[row, col][close], n_ref[close],
                                                      k[close], (k - misses)[close], wild[close])
        return log_p

    def _tests(self, row, col, prev, nxt, searched) -> _Tests:
        """The tests at (row, col), Bonferroni over `searched` positions: exact enough where the p
        can be significant (up to twice `fdr`)."""
        limit = np.log(2 * self.s.fdr / searched)
        delta, se, log_p = self._log_p(row, col, prev, nxt, limit)
        return _Tests(row, col, delta, se, np.minimum(1.0, searched * np.exp(log_p)))

    def scan(self, rows) -> tuple[_Tests, np.ndarray]:
        """Each segment's best candidate in the history zone and in the tail zone of `rows`,
        Bonferroni over the zone's positions in the segment; and for each, whether the segment
        splits there: the strongest of its candidates significant at `fdr`."""
        if not (self.splits[rows].any() or self.dropped[rows].any()):
            return self._scan_whole(rows)
        m, cols = self.s.min_runs, self.cols
        col = np.arange(cols)[None, :]
        prev, nxt = self._bounds(rows)
        ok = (col - prev >= m) & (nxt - col >= m) & ~self.splits[rows] & ~self.dropped[rows]
        i, c = np.nonzero(ok)
        if not len(i):
            return _empty(), np.zeros(0, bool)
        before, after = prev[i, c], nxt[i, c]
        strength = np.abs(self._means(rows[i], c, before, after)[0])
        keys = (i * (cols + 1) + before) * 2 + (c >= self.first_tail)  # non-decreasing in row-major order
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        counts = np.diff(np.r_[starts, len(keys)])
        group = np.repeat(np.arange(len(starts)), counts)
        hit = np.flatnonzero(strength == np.maximum.reduceat(strength, starts)[group])
        best = hit[np.unique(group[hit], return_index=True)[1]]
        found = self._tests(rows[i[best]], c[best], before[best], after[best], counts)
        segment = keys[best] // 2
        # the split: the strongest of the segment's significant candidates (the likeliest position)
        p = found.p
        rank = np.where(p <= self.s.fdr, -strength[best], np.inf)
        order = np.lexsort((rank, segment))
        leader = np.zeros(len(best), bool)
        leader[order[np.r_[True, segment[order][1:] != segment[order][:-1]]]] = True
        return found, leader & (p <= self.s.fdr)

    def _scan_whole(self, rows) -> tuple[_Tests, np.ndarray]:
        """`scan` for rows without splits yet (one segment each), on whole arrays: the same result."""
        m, w, cols = self.s.min_runs, self.s.window, self.cols
        col = np.arange(cols)[None, :]
        first = _starts(self.start[rows])
        lo, hi = np.maximum(first, col - w), np.minimum(cols, col + w)
        n1, n2 = col - lo, hi - col
        ok = np.broadcast_to((n1 >= m) & (n2 >= m), (len(rows), cols))
        prefix = self.prefix[rows]
        at = prefix[:, :cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = ((_gather(prefix, hi) - at) / n2 - (at - _gather(prefix, lo)) / n1) / (
                self.scale[rows] * np.sqrt(1 / n1 + 1 / n2))
        strength = np.where(ok, np.abs(t), -1.0)
        parts = []
        for zone in (slice(0, max(self.first_tail, 0)), slice(max(self.first_tail, 0), cols)):
            counts = ok[:, zone].sum(axis=1)
            has = np.flatnonzero(counts)
            best = np.argmax(strength[has, zone], axis=1) + zone.start
            parts.append((has, best, counts[has]))
        i, c, counts = (np.concatenate(v) for v in zip(*parts))
        if not len(i):
            return _empty(), np.zeros(0, bool)
        found = self._tests(rows[i], c, self.start[rows[i]], np.full(len(i), cols), counts)
        rank = np.where(found.p <= self.s.fdr, -strength[i, c], np.inf)
        order = np.lexsort((rank, i))
        leader = np.zeros(len(i), bool)
        leader[order[np.r_[True, i[order][1:] != i[order][:-1]]]] = True
        return found, leader & (found.p <= self.s.fdr)

    def split_tests(self, rows) -> _Tests:
        """Every split of `rows` tested between its neighbouring splits, Bonferroni over the positions
        of its zone between them."""
        m = self.s.min_runs
        i, c = np.nonzero(self.splits[rows])
        prev, nxt = self._bounds(rows)
        before, after = prev[i, c - 1], nxt[i, c]
        lo, hi = before + m, after - m
        history_n = np.minimum(hi, self.first_tail - 1) - lo + 1
        tail_n = hi - np.maximum(lo, self.first_tail) + 1
        searched = np.maximum(np.where(c >= self.first_tail, tail_n, history_n), 1)
        return self._tests(rows[i], c, before, after, searched)

    def refine(self, rows) -> None:
        """Drop, one per row at a time, the least significant of the splits of `rows` no longer
        significant at `fdr` between their neighbours, until all are."""
        while len(rows):
            tests = self.split_tests(rows)
            weak = np.flatnonzero(tests.p > self.s.fdr)
            if not len(weak):
                return
            weak = weak[np.lexsort((-tests.p[weak], tests.row[weak]))]
            first = weak[np.r_[True, tests.row[weak][1:] != tests.row[weak][:-1]]]
            self.splits[tests.row[first], tests.col[first]] = False
            self.dropped[tests.row[first], tests.col[first]] = True
            rows = np.unique(tests.row[first])

    def segment(self) -> tuple[_Tests, _Tests]:
        """Split while any segment's best candidate is significant at `fdr` (rows whose segments all
        stopped are done). Returns the splits' final tests and the best non-split candidates of the
        final segments: every hypothesis tested."""
        rows = np.flatnonzero(self.cols - self.start >= 2 * self.s.min_runs)
        stops = []
        while len(rows):
            found, new = self.scan(rows)
            changed = np.unique(found.row[new])
            stops.append(_select(found, ~np.isin(found.row, changed)))
            self.splits[found.row[new], found.col[new]] = True
            self.refine(changed)
            rows = changed
        return self.split_tests(np.arange(len(self.x))), _concat(stops)

    # ---- what is reported ----

    def report(self, splits: _Tests, stops: _Tests, runs, families, tail_only: bool) -> Found:
        """Benjamini-Hochberg over every hypothesis (the splits and the final segments' best
        candidates) within each family; the kept splits beyond the threshold, close ones of one
        direction merged into a gradual change where a ramp fits them better."""
        tail = np.concatenate([splits.col, stops.col]) >= self.first_tail
        fam = np.concatenate([families[splits.row], families[stops.row]]) * 2 + tail
        q = benjamini_hochberg(np.concatenate([splits.p, stops.p]), fam)[:len(splits.p)]
        kept = q <= self.s.fdr
        near_end = splits.col >= self.first_tail - self.s.gradual_span  # a change ending here can be at_end
        rows = np.unique(splits.row[kept & near_end] if tail_only else splits.row[kept])
        order = np.flatnonzero(np.isin(splits.row, rows))
        order = order[np.lexsort((splits.col[order], splits.row[order]))]
        out = []
        for mine in np.split(order, np.flatnonzero(np.diff(splits.row[order])) + 1) if len(order) else []:
            r = int(splits.row[mine[0]])
            for group in self._groups(splits, mine):
                if kept[group].any() and (not tail_only or near_end[group[-1]]):
                    out += self._change(splits, q, kept, group, r, tail_only)
        if not out:
            return Found(*(np.zeros(0, int),) * 3, *(np.zeros(0),) * 4, *(np.zeros(0, bool),) * 2)
        row, before, at, delta, half, p, qv, gradual, at_end = map(np.array, zip(*out))
        run = runs[row]
        return Found(row, run[np.arange(len(row)), before], run[np.arange(len(row)), at], delta, half, p, qv,
                     gradual.astype(bool), at_end.astype(bool))

    def _groups(self, splits: _Tests, mine: np.ndarray) -> list[list[int]]:
        """The row's splits (`mine`, by column) in runs of one direction whose gaps are within
        `gradual_span`."""
        groups: list[list[int]] = []
        for i in mine:
            last = groups[-1][-1] if groups else None
            if (last is not None and splits.col[i] - splits.col[last] <= self.s.gradual_span
                    and np.sign(splits.delta[i]) == np.sign(splits.delta[last])):
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _change(self, splits: _Tests, q, kept, group: list[int], r: int, tail_only: bool) -> list[tuple]:
        """The reported changes of a group of splits, each (row, column before, column at, log ratio,
        CI half width, p, q, gradual, at_end): one gradual change where a ramp fits the group better
        than its steps and none of its runs moves beyond the threshold while the whole does, else every
        `kept` split beyond the threshold (`tail_only`: only the at_end ones)."""
        bound, settle = math.log1p(self.s.threshold), self.s.settle
        level = t_quantile(CI_LEVEL, float(self.df[r, splits.col[group[0]]]))
        others = np.flatnonzero(self.splits[r])
        ramp = self._ramp(splits, group, r, others)
        if ramp is not None:
            s, e, delta, se = ramp
            at_end = self.cols - e < settle
            mine = [i for i in group if kept[i]]
            return [(r, s, e, delta, level * se, splits.p[mine].min(), q[mine].min(), True, at_end)
                    ] if at_end or not tail_only else []
        return [(r, *self._location(r, splits.col[i], others), splits.delta[i], level * splits.se[i],
                 splits.p[i], q[i], False, self.cols - splits.col[i] < settle)
                for i in group if kept[i] and abs(splits.delta[i]) >= bound
                and (self.cols - splits.col[i] < settle or not tail_only)]

    def _location(self, r: int, c: int, others: np.ndarray) -> tuple[int, int]:
        """The columns (before, at) around the split at column c: every first column of the new level
        whose two-mean fit of the split's stretch is within LOCATION of the best one (in squared
        scales), so that the commit range (before, at] holds the change when a value next to it is
        ambiguous."""
        lo, hi = self._stretch(r, c, c, others)
        y = self.x[r, lo:hi]
        cum = np.cumsum(y)
        j = np.arange(1, len(y))
        fit = cum[j - 1] ** 2 / j + (cum[-1] - cum[j - 1]) ** 2 / (len(y) - j)
        near = np.flatnonzero(fit >= fit.max() - LOCATION * self.scale[r, c] ** 2) + 1 + lo
        return min(int(near.min()), c) - 1, max(int(near.max()), c)

    def _stretch(self, r: int, first: int, last: int, others: np.ndarray) -> tuple[int, int]:
        """The columns [lo, hi) about splits `first`..`last` of row r: up to `window` values on each
        side, within the neighbouring splits (`others`: the row's splits)."""
        lo = max(int(others[others < first].max(initial=self.start[r])), first - self.s.window, self.start[r])
        return lo, min(int(others[others > last].min(initial=self.cols)), last + self.s.window)

    def _ramp(self, splits: _Tests, group: list[int], r: int, others: np.ndarray):
        """The best gradual ramp (old level up to column s, a straight line, new level from column e
        on, 2 <= e - s <= gradual_span, the whole beyond the threshold but no run's share of it) over
        the group's stretch, if it beats the group's steps by the Bayesian information criterion
        (known scale): (s, e, log ratio, its standard error) or None."""
        first, cols = splits.col[group[0]], splits.col[group]
        lo, hi = self._stretch(r, first, cols[-1], others)
        y = self.x[r, lo:hi]
        n = len(y)
        s, e = _ramp_pairs(n, self.s.min_runs, self.s.gradual_span)
        if not len(s):
            return None
        p0 = np.concatenate([[0.0], np.cumsum(y)])
        a, b, rss, var = _ramp_fits(y, p0, s, e)
        bound = math.log1p(self.s.threshold)
        gradual = (np.abs(b - a) >= bound) & (np.abs(b - a) < bound * (e - s))  # no run beyond, the whole is
        if not gradual.any():
            return None
        best = int(np.flatnonzero(gradual)[np.argmin(rss[gradual])])
        cuts = np.concatenate([[0], cols - lo, [n]])
        steps_rss = (y * y).sum() - (np.diff(p0[cuts]) ** 2 / np.diff(cuts)).sum()
        sigma2 = self.scale[r, first] ** 2
        if rss[best] / sigma2 + 4 * math.log(n) >= steps_rss / sigma2 + (2 * len(group) + 1) * math.log(n):
            return None
        return lo + s[best], lo + e[best], b[best] - a[best], self.scale[r, first] * math.sqrt(var[best])


@functools.lru_cache(maxsize=256)
def _ramp_pairs(n: int, m: int, longest: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (s, e) with m values up to s, m from e on, and 2 <= e - s <= longest, in n values."""
    spans = range(2, longest + 1)
    s = np.concatenate([np.arange(m - 1, n - m - k + 1) for k in spans])
    e = s + np.concatenate([np.full(max(n - 2 * m - k + 2, 0), k) for k in spans])
    return s, e


def _ramp_fits(y: np.ndarray, p0: np.ndarray, s: np.ndarray, e: np.ndarray):
    """Least squares of y = a (1 - f) + b f with f = 0 up to index s, 1 from e on and a straight line
    between, for every pair (s, e): (a, b, residual sum of squares, the variance of b - a in units of
    one value's), from prefix sums (p0 of y)."""
    n = len(y)
    p1 = np.concatenate([[0.0], np.cumsum(np.arange(n) * y)])
    span = (e - s).astype(float)
    inner = span - 1  # values on the line, s+1 .. e-1
    su = inner / 2  # sums over the line of u = (i - s) / span and of u^2
    suu = inner * (2 * span - 1) / (6 * span)
    sy_line = p0[e] - p0[s + 1]
    suy = (p1[e] - p1[s + 1] - s * sy_line) / span
    after = n - e
    sff = suu + after
    sgg = (s + 1) + inner - 2 * su + suu
    sgf = su - suu
    syf = suy + p0[n] - p0[e]
    syg = p0[n] - syf
    det = sgg * sff - sgf * sgf
    a = (syg * sff - syf * sgf) / det
    b = (syf * sgg - syg * sgf) / det
    return a, b, (y * y).sum() - a * syg - b * syf, (sff + sgg + 2 * sgf) / det


def _empty() -> _Tests:
    return _Tests(*(np.zeros(0, int),) * 2, *(np.zeros(0),) * 3)


def _select(tests: _Tests, keep: np.ndarray) -> _Tests:
    return _Tests(*(getattr(tests, f.name)[keep] for f in fields(_Tests)))


def _concat(parts: list[_Tests]) -> _Tests:
    if not parts:
        return _empty()
    return _Tests(*(np.concatenate([getattr(t, f.name) for t in parts]) for f in fields(_Tests)))


def benjamini_hochberg(p: np.ndarray, families: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q) within each family: a hypothesis is rejected at FDR
    level f when its q <= f."""
    q = np.ones(len(p))
    for fam in np.unique(families):
        idx = np.flatnonzero(families == fam)
        order = idx[np.argsort(p[idx], kind="stable")]
        m = len(order)
        adjusted = p[order] * m / np.arange(1, m + 1)
        q[order] = np.minimum(1.0, np.minimum.accumulate(adjusted[::-1])[::-1])
    return q


def _steps(keys: list[str], found: Found, env: Sequence[str]) -> list[Step]:
    """The array form's steps as records, with the environment changes within each one's range."""
    changed = np.r_[0, np.cumsum([a != b for a, b in zip(env[:-1], env[1:])])]
    out = [Step(keys[r], int(b), int(a), math.exp(d), math.exp(d - h), math.exp(d + h), float(p), float(q),
                GRADUAL if g else STEP, bool(changed[a] > changed[b]), bool(e))
           for r, b, a, d, h, p, q, g, e in zip(found.row, found.before, found.at, found.log_ratio,
                                                found.half_width, found.p_value, found.q_value, found.gradual,
                                                found.at_end)]
    order = {key: i for i, key in enumerate(keys)}
    return sorted(out, key=lambda s: (order[s.series], s.at))
