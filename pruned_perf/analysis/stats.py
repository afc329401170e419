"""The exact tests the verdicts use, torch-free: the one-sided Mann-Whitney U test of raw rounds (a run
against a stored run), and the Hodges-Lehmann estimate with the exact Wilcoxon signed-rank interval of
paired log-ratios (an interleaved A/B)."""
from __future__ import annotations

import bisect
import functools
import math

# Above this many rank-sum permutations the normal approximation is used (it is good there).
EXACT_MAX_PERMUTATIONS = 200_000


def _mid_ranks_x2(values: list[float]) -> list[int]:
    """Ranks (1-based, ties get their mean) times two, so that mid-ranks stay integers."""
    n = len(values)
    order = sorted(range(n), key=values.__getitem__)
    ranks = [0] * n
    i = 0
    while i < n:
        j = i + 1
        while j < n and values[order[j]] == values[order[i]]:
            j += 1
        for k in range(i, j):  # positions i+1 .. j share the mean rank (i+1+j)/2
            ranks[order[k]] = i + 1 + j
        i = j
    return ranks


@functools.lru_cache(maxsize=256)
def _rank_sum_null(ranks_x2: tuple[int, ...], k: int) -> tuple[list[int], list[int], int]:
    """Exact permutation null distribution of the rank sum of k values drawn from `ranks_x2`.

    Returns (sums ascending, how many k-subsets have each sum, total). Dynamic programming over the
    pooled ranks, so ties (mid-ranks) are handled exactly; cached because without ties every
    comparison of the same sample sizes has the same distribution.
    """
    by_size: list[dict[int, int]] = [{0: 1}] + [{} for _ in range(k)]
    for r in ranks_x2:
        for size in range(k, 0, -1):
            row = by_size[size]
            for s, n in by_size[size - 1].items():
                row[s + r] = row.get(s + r, 0) + n
    sums = sorted(by_size[k])
    counts = [by_size[k][s] for s in sums]
    return sums, counts, sum(counts)


def min_p_value(n_baseline: int, n_current: int) -> float:
    """Smallest one-sided p the exact test can give for these sizes (complete separation, no ties)."""
    return 1.0 / math.comb(n_baseline + n_current, n_current)


def mann_whitney_p(baseline: list[float], current: list[float], alternative: str) -> float:
    """One-sided Mann-Whitney U p-value that `current` is stochastically `greater` / `less`.

    Exact (permutation distribution of the rank sum with mid-ranks) when C(n1+n2, n1) is at most
    EXACT_MAX_PERMUTATIONS, else the normal approximation with tie and continuity correction.
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    n1, n2 = len(baseline), len(current)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks = _mid_ranks_x2(list(baseline) + list(current))
    w_x2 = sum(ranks[n1:])
    if math.comb(n1 + n2, n2) <= EXACT_MAX_PERMUTATIONS:
        return _exact_p(ranks, n2, w_x2, alternative)
    return _normal_p(ranks, n1, n2, w_x2, alternative)


def _exact_p(ranks_x2: list[int], k: int, w_x2: int, alternative: str) -> float:
    sums, counts, total = _rank_sum_null(tuple(sorted(ranks_x2)), k)
    if alternative == "greater":
        tail = sum(counts[bisect.bisect_left(sums, w_x2):])
    else:
        tail = sum(counts[:bisect.bisect_right(sums, w_x2)])
    return tail / total


def _normal_p(ranks_x2: list[int], n1: int, n2: int, w_x2: int, alternative: str) -> float:
    n = n1 + n2
    mean = n2 * (n + 1) / 2
    ties = _tie_sizes(ranks_x2)
    var = n1 * n2 / 12 * ((n + 1) - sum(t**3 - t for t in ties) / (n * (n - 1)))
    if var <= 0:
        return 1.0  # every value equal: no evidence either way
    w = w_x2 / 2
    if alternative == "greater":
        z = (w - mean - 0.5) / math.sqrt(var)
    else:
        z = (mean - w - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _tie_sizes(ranks_x2: list[int]) -> list[int]:
    sizes: dict[int, int] = {}
    for r in ranks_x2:
        sizes[r] = sizes.get(r, 0) + 1
    return [t for t in sizes.values() if t > 1]


# ---------------------------------------------------------------- paired: the signed-rank statistic


@functools.lru_cache(maxsize=None)
def signed_rank_cdf(n: int) -> tuple:
    """P(T+ <= t) for t = 0 .. n(n+1)/2 under the null (each |d| equally likely + or -): exact counts
    of the subsets of {1..n} by their sum, over 2^n."""
    top = n * (n + 1) // 2
    counts = [1] + [0] * top
    for rank in range(1, n + 1):
        for s in range(top, rank - 1, -1):
            counts[s] += counts[s - rank]
    total, running, cdf = 2 ** n, 0, []
    for c in counts:
        running += c
        cdf.append(running / total)
    return tuple(cdf)


def signed_rank_critical(n: int, tail: float) -> int | None:
    """Largest c with P(T+ <= c) <= tail, or None if even T+ = 0 is likelier than that."""
    cdf = signed_rank_cdf(n)
    if cdf[0] > tail:
        return None
    return bisect.bisect_right(cdf, tail) - 1  # cdf increases: the last index with cdf <= tail


def min_pairs(tail: float) -> int:
    """Fewest pairs whose exact interval can be finite at this tail (2^-n <= tail)."""
    return math.ceil(math.log2(1 / tail) - 1e-12)


def walsh_averages(d: list) -> list:
    """(d_i + d_j) / 2 for i <= j, sorted."""
    return sorted([(a + b) / 2 for i, a in enumerate(d) for b in d[i:]])


def median_sorted(values: list) -> float:
    m = len(values)
    return (values[(m - 1) // 2] + values[m // 2]) / 2


def hodges_lehmann(d: list) -> float:
    """The median of the Walsh averages: the center of d, robust to a few wild pairs."""
    return median_sorted(walsh_averages(d))


def wilcoxon_interval(d: list, tail: float, walsh: list | None = None) -> tuple[float, float]:
    """Exact Wilcoxon signed-rank interval for the center of d: each side misses with probability at
    most `tail` (a 1 - 2 tail interval). Infinite where n pairs cannot reach that level (2^-n > tail)."""
    walsh = walsh_averages(d) if walsh is None else walsh
    c = signed_rank_critical(len(d), tail)
    if c is None:
        return -math.inf, math.inf
    return walsh[c], walsh[len(walsh) - 1 - c]
