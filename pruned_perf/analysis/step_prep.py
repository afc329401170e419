"""A grid of series made ready for the step finder (pruned_perf.analysis.steps), torch-free: values
right-aligned, each series' local scale from its run-to-run differences, and wild values despiked."""
from __future__ import annotations

import numpy as np

from pruned_perf.analysis.step_records import SCALE_EFFICIENCY, SCALE_FLOOR, WILD, WINSOR, WINSOR_FACTOR

def compress(logs: np.ndarray):
    """Each row's values right-aligned (the newest in the last column), NaN before them; the run index
    of every column (-1 where none) and the first column with a value."""
    valid = np.isfinite(logs)
    if valid.all():
        return logs, np.broadcast_to(np.arange(logs.shape[1]), logs.shape), np.zeros(len(logs), int)
    order = np.argsort(valid, axis=1, kind="stable")  # missing first, values in run order after
    x = np.take_along_axis(logs, order, axis=1)
    runs = np.where(np.take_along_axis(valid, order, axis=1), order, -1)
    return x, runs, logs.shape[1] - valid.sum(axis=1)


def starts(start: np.ndarray) -> np.ndarray:
    """The rows' first columns as a column vector, one row of it where all rows share it (so that
    index arrays built from it stay one row: a plain column index, cheap)."""
    return start[:1, None] if len(start) and (start == start[0]).all() else start[:, None]


def gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[r, idx[r, j]] for every row, with idx one row for all rows or one per row."""
    return a[:, idx[0]] if idx.shape[0] == 1 else np.take_along_axis(a, idx, axis=1)


def local_scale(x: np.ndarray, start: np.ndarray, span: int):
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
    first = np.minimum(starts(start), cols - 1)
    if width == cols - 1 and first.shape[0] == 1 and first[0, 0] == 0:  # one window: each whole row
        mean_square = _winsorized(d, _row_medians(np.abs(d))[:, None]).mean(axis=1, keepdims=True)
        return np.broadcast_to(_scale(mean_square), x.shape), np.full(x.shape, SCALE_EFFICIENCY * width)
    lo, hi = _diff_window(np.arange(cols)[None, :], first, cols, width)
    centre_lo, _ = _diff_window(np.arange(cols - 1)[None, :], first, cols, width)
    windows = np.lib.stride_tricks.sliding_window_view(np.abs(d), width, axis=1)
    parts = np.partition(windows, ((width - 1) // 2, width // 2), axis=2)
    medians = (parts[..., (width - 1) // 2] + parts[..., width // 2]) / 2  # NaN where a window reaches no values
    mad = gather(medians, np.broadcast_to(np.minimum(centre_lo, cols - width - 1), (centre_lo.shape[0], cols - 1)))
    short = np.isnan(mad).any(axis=1)  # rows with fewer differences than the span: all of them
    if short.any():
        mad[short] = _row_medians(np.abs(d[short]))[:, None]
    sums = np.concatenate([np.zeros((rows, 1)), np.cumsum(_winsorized(d, mad), axis=1)], axis=1)
    n = np.maximum(hi - lo, 1)
    return _scale((gather(sums, hi) - gather(sums, lo)) / n), np.broadcast_to(SCALE_EFFICIENCY * n, x.shape)


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


def wild_share(wild: np.ndarray, seen: np.ndarray, families: np.ndarray) -> np.ndarray:
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


def despike(x: np.ndarray, start: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
    """Clip every value to within `clip` scales of the median of the five values about it (the five
    nearest within the row); then the last two values of a row, to within `clip` scales of the median
    of the three nearest (as clipped). So one or two wild nights inside a series are pulled back to
    their neighbours, while a step passes untouched, and at the end a new level of two runs survives
    until runs after it say otherwise. Rows of fewer than five values stay as they are. Also returns,
    per row, how many values lay more than WILD scales from that median (wild nights), of how many."""
    rows, cols = x.shape
    if cols < 5:
        return x, np.zeros(rows), np.zeros(rows)
    first = starts(start)
    if first.shape[0] == 1 and first[0, 0] == 0:  # every row full: shifted views, the edges copied in
        med = _median5(*(x[:, k:cols - 4 + k] for k in range(5)))
        med = np.concatenate([med[:, :1], med[:, :1], med, med[:, -1:], med[:, -1:]], axis=1)
    else:
        centre = np.clip(np.arange(cols)[None, :], first + 2, cols - 3)
        med = _median5(*(gather(x, np.clip(centre + k, 0, cols - 1)) for k in range(-2, 3)))
    inner = ((cols - start >= 5)[:, None]) & (np.arange(cols) < cols - 2)[None, :]
    out = np.where(inner, np.clip(x, med - clip * scale, med + clip * scale), x)
    wild = inner & (np.abs(x - med) > WILD * scale)
    last = out[:, -3:]
    med = _median3(last[:, :1], last[:, 1:2], last[:, 2:])
    ends = np.clip(last[:, 1:], med - clip * scale[:, -2:], med + clip * scale[:, -2:])
    out[:, -2:] = np.where((cols - start >= 5)[:, None], ends, out[:, -2:])
    return out, wild.sum(axis=1), inner.sum(axis=1)
