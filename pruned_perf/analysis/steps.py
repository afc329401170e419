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

import math
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np

from pruned_perf.analysis.step_prep import compress, despike, local_scale, wild_share
from pruned_perf.analysis.step_records import GRADUAL, STEP, Found, Step, StepSettings
from pruned_perf.analysis.step_search import Grid
from pruned_perf.core.errors import UserError

__all__ = ["GRADUAL", "STEP", "Found", "Step", "StepSettings", "find_array", "find_steps", "steps_at_end"]

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
    x, runs, start = compress(logs)
    scale, df = local_scale(x, start, settings.scale_span)
    x, wild, seen = despike(x, start, scale, settings.clip)
    grid = Grid(x, start, scale, df, wild_share(wild, seen, families), settings)
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
