"""The exact one-sided Mann-Whitney U test the verdicts use on raw rounds. Torch-free."""
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
