"""The probabilities of the step finder's tests (pruned_perf.analysis.steps), torch-free: Student's t in
logs, the chance that all but a few values of a short side lie beyond a reference, and the grid's
false-discovery correction."""
from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np


def log_erfc(x: np.ndarray) -> np.ndarray:
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
    return log_erfc(z / math.sqrt(2)) - math.log(2)


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


def log_with_wild(log_q: np.ndarray, wild: np.ndarray | float) -> np.ndarray:
    """log(min(q + wild, 1)) from log q: a tail probability with a share `wild` of values that may lie
    anywhere, in logs, so that a tiny q neither underflows nor takes the log of zero."""
    mixed = np.minimum(np.logaddexp(log_q, np.log(np.maximum(wild, np.finfo(float).tiny))), 0.0)
    return np.where(np.asarray(wild) > 0, mixed, log_q)


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
    log_q = log_erfc((u * ratio + _REF_NODES[None, :] / np.sqrt(n_ref)) / math.sqrt(2)) - math.log(2)
    log_q = log_with_wild(log_q, wild)
    log_terms = (log_binomial_tail(log_q, k, a) + _LOG_WEIGHTS).reshape(*log_q.shape[:-2], -1)
    top = log_terms.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(log_terms - top).sum(axis=-1, keepdims=True)))[..., 0]


@functools.lru_cache(maxsize=None)
def _combinations(top: int) -> np.ndarray:
    """C(n, i) for n, i up to `top`."""
    return np.array([[math.comb(n, i) for i in range(top + 1)] for n in range(top + 1)], dtype=float)


def log_binomial_tail(log_q: np.ndarray, k: np.ndarray, a: np.ndarray) -> np.ndarray:
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
