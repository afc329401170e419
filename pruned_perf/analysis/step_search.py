"""The step finder's search (pruned_perf.analysis.steps), torch-free: windowed binary segmentation of the
despiked series, every split tested again between its neighbours, the grid's false-discovery correction,
and each kept split's commit range and size, or a ramp where that fits better (a gradual change)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields

import numpy as np

from pruned_perf.analysis.step_prep import gather, starts
from pruned_perf.analysis.step_records import CI_LEVEL, LOCATION, Found, StepSettings
from pruned_perf.analysis.step_tails import (benjamini_hochberg, log_at_least, log_binomial_tail, log_erfc,
                                             log_upper_tail, log_with_wild, t_quantile)


@dataclass(frozen=True)
class _Tests:
    """Two-sample tests at positions: (row, column) of the split and what it found."""

    row: np.ndarray
    col: np.ndarray
    delta: np.ndarray  # mean after - mean before (despiked logs)
    se: np.ndarray  # its standard error
    p: np.ndarray  # Bonferroni over the positions searched


class Grid:
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
        log_q = log_with_wild(log_erfc(u / math.sqrt(2)) - math.log(2), wild)
        log_p = math.log(2) + log_binomial_tail(log_q, k, k - misses)
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
        first = starts(self.start[rows])
        lo, hi = np.maximum(first, col - w), np.minimum(cols, col + w)
        n1, n2 = col - lo, hi - col
        ok = np.broadcast_to((n1 >= m) & (n2 >= m), (len(rows), cols))
        prefix = self.prefix[rows]
        at = prefix[:, :cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = ((gather(prefix, hi) - at) / n2 - (at - gather(prefix, lo)) / n1) / (
                self.scale[rows] * np.sqrt(1 / n1 + 1 / n2))
        strength = np.where(ok, np.abs(t), -1.0)
        parts = []
        for zone in (slice(0, max(self.first_tail, 0)), slice(max(self.first_tail, 0), cols)):
            counts = ok[:, zone].sum(axis=1)
            has = np.flatnonzero(counts)
            if len(has):  # argmax over a zone without columns (a short history) has nothing to pick
                parts.append((has, np.argmax(strength[has, zone], axis=1) + zone.start, counts[has]))
        if not parts:
            return _empty(), np.zeros(0, bool)
        i, c, counts = (np.concatenate(v) for v in zip(*parts))
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
