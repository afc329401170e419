"""The records of the step finder (pruned_perf.analysis.steps), torch-free: its settings, a step, the
array form of what it found, and the constants its method rests on (docs/history-steps.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass

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
