"""Simulated histories of nightly runs for tests/test_steps.py: noise models of a point's per-run
medians and the grid they fill (docs/history-steps.md).

A history is H x points x metrics x runs of log deviations from each series' level (exp of them:
the times, level 1), and points x runs of the log deviations of each point's steadiness probe. Two
machines:

- `Steady`: a dedicated GPU runner. Each point's median spreads 3-5% from run to run (lognormal, its
  own SD drawn per point), its three timing metrics move together (TTFT and TPOT with latency), and
  all points of a run share a small common factor (the machine's state that night), which the probe
  sees too.
- `RealNoise`: this project's shared 2-core CPU, resampled from real runs of identical code
  (tests/data/cpu_between_runs.json): a night is one real run's common mode plus, per point, the
  point's own deviation (its three metrics and its probe together) from a real run, each relative to
  its machine's mean; a smoothed bootstrap (kernel jitter) so that a handful of runs do not repeat
  exactly; plus `Outliers`, the heavy tails the docs describe and a few runs cannot show.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

POINTS = 24  # the quick profile's grid
METRICS = ("latency_s", "ttft_s", "tpot_s")
DATA = Path(__file__).resolve().parent / "data" / "cpu_between_runs.json"


@dataclass(frozen=True)
class Steady:
    """A dedicated GPU runner."""

    low: float = 0.03  # SD of a point's log median from run to run, drawn per point in [low, high]
    high: float = 0.05
    shared: float = 0.7  # share of that variance the point's three metrics have in common
    common: float = 0.01  # SD of the run's factor shared by every point (and its probe)
    probe: float = 0.01  # SD of a probe's own noise

    def draw(self, rng: np.random.Generator, histories: int, runs: int, points: int = POINTS):
        """(values H x points x 3 x runs, probes H x points x runs): log deviations."""
        sd = rng.uniform(self.low, self.high, (histories, points, 1, 1))
        point = rng.standard_normal((histories, points, 1, runs))
        own = rng.standard_normal((histories, points, len(METRICS), runs))
        common = self.common * rng.standard_normal((histories, 1, runs))
        values = sd * (math.sqrt(self.shared) * point + math.sqrt(1 - self.shared) * own) + common[:, :, None, :]
        probes = common + self.probe * rng.standard_normal((histories, points, runs))
        return values, probes


@dataclass(frozen=True)
class Outliers:
    """Heavy tails of a shared machine (docs/verdict-trials.md: latency 0.72x-1.61x between runs, a
    probe at 0.57x the speed of the run before): whole nights and single points much slower, which
    the probe timed beside them catches only some of the time."""

    night: float = 0.02  # share of runs in which the whole machine is slower
    night_factor: tuple = (1.1, 1.75)  # by a factor log-uniform in this range
    point: float = 0.01  # share of a run's points hit alone (its three metrics together)
    point_factor: tuple = (1.1, 1.6)
    slower: float = 0.8  # share of single-point outliers that slow down (the rest speed up)
    probe_sees: float = 0.5  # chance that the point's probe caught the same factor

    def add(self, rng: np.random.Generator, values: np.ndarray, probes: np.ndarray) -> None:
        """Add the outliers to `values` and `probes` (log deviations), in place."""
        h, p, _, r = values.shape
        night = (rng.random((h, 1, r)) < self.night) * rng.uniform(*np.log(self.night_factor), (h, 1, r))
        sign = np.where(rng.random((h, p, r)) < self.slower, 1.0, -1.0)
        point = (rng.random((h, p, r)) < self.point) * sign * rng.uniform(*np.log(self.point_factor), (h, p, r))
        values += (night + point)[:, :, None, :]
        probes += night * (rng.random((h, 1, r)) < self.probe_sees) + point * (rng.random((h, p, r)) < self.probe_sees)


@dataclass(frozen=True)
class RealNoise:
    """This machine's noise, resampled from the real runs of `path` (see the module's docstring)."""

    path: Path = DATA
    # Kernel jitter, in SDs of what it jitters (the variance kept: shrunk by sqrt(1 + b^2)); None:
    # Silverman's rule for the number of real runs, (4 / 3n)^(1/5), 0.74 for 6 runs.
    bandwidth: float | None = None
    outliers: Outliers | None = field(default_factory=Outliers)

    def deviations(self):
        """(common per run x [probe, metrics...], per-point residuals runs x [probe, metrics...] x
        points, the point ids): each run's log deviation from its machine's mean, scaled by
        sqrt(n / (n - 1)) so that deviations from a mean of n runs have the spread of single runs."""
        runs = json.loads(Path(self.path).read_text())
        quantities = ("probe",) + METRICS
        points = sorted(set.intersection(*(set(run[q]) for run in runs for q in quantities)))
        logs = np.log([[[run[q][p] for p in points] for q in quantities] for run in runs])
        machines = [run["machine"] for run in runs]
        dev = np.empty_like(logs)
        for machine in set(machines):
            mine = np.array([m == machine for m in machines])
            n = mine.sum()
            if n < 2:
                raise ValueError(f"{self.path}: machine {machine!r} has {n} run; deviations need at least 2")
            dev[mine] = (logs[mine] - logs[mine].mean(axis=0)) * math.sqrt(n / (n - 1))
        common = dev.mean(axis=2)
        return common, dev - common[:, :, None], points

    def draw(self, rng: np.random.Generator, histories: int, runs: int):
        """(values H x points x 3 x runs, probes H x points x runs): log deviations."""
        common, residual, points = self.deviations()
        n_real, _, n_points = residual.shape
        h = (4 / (3 * n_real)) ** 0.2 if self.bandwidth is None else self.bandwidth
        shrink = 1 / math.sqrt(1 + h ** 2)
        night = rng.integers(n_real, size=(histories, runs))
        c = common[night] + h * common.std(axis=0) * rng.standard_normal((histories, runs, 1))
        source = rng.integers(n_real, size=(histories, runs, n_points))
        res = residual[source, :, np.arange(n_points)]  # H x runs x points x quantities
        jitter = rng.standard_normal((histories, runs, n_points, 2))  # one for the metrics, one for the probe
        sd = residual.std(axis=0).T  # points x quantities
        res = res + h * sd * np.concatenate([jitter[..., 1:], np.repeat(jitter[..., :1], 3, -1)], -1)
        dev = shrink * (c[:, :, None, :] + res)  # H x runs x points x quantities
        values = dev[..., 1:].transpose(0, 2, 3, 1).copy()
        probes = dev[..., 0].transpose(0, 2, 1).copy()
        if self.outliers is not None:
            self.outliers.add(rng, values, probes)
        return values, probes


@dataclass(frozen=True)
class Change:
    """A real change in a simulated history: from run `at` on, `points` are `ratio` times slower."""

    history: int
    at: int
    points: tuple
    ratio: float


def histories(noise, rng: np.random.Generator, count: int, runs: int, ratios=(1.15, 1.30), points: int = 3,
              first: int = 70, last: int = 190, apart: int = 20, normalize: bool = False):
    """`count` histories of `runs` runs from `noise` (Steady or RealNoise), each with one change per
    ratio in `ratios`: `points` random points (all three metrics) from a random run in [first, last),
    the changes `apart` runs apart at least, on disjoint points. `normalize`: every value divided by its
    point's probe in that run. Returns (log values H x series x runs, series in point-major order
    (point, metric); each point's true log level H x points x runs; the changes)."""
    values, probes = noise.draw(rng, count, runs)
    n_points = values.shape[1]
    level = np.zeros((count, n_points, runs))
    changes = []
    for h in range(count):
        chosen = rng.permutation(n_points)
        while True:
            at = np.sort(rng.integers(first, last, len(ratios)))
            if len(at) < 2 or np.diff(at).min() >= apart:
                break
        for i, (ratio, run) in enumerate(zip(ratios, rng.permutation(at))):
            mine = tuple(int(p) for p in chosen[i * points:(i + 1) * points])
            level[h, list(mine), run:] += math.log(ratio)
            changes.append(Change(h, int(run), mine, ratio))
    logs = values + level[:, :, None, :]
    if normalize:
        logs = logs - probes[:, :, None, :]
    return logs.reshape(count, n_points * len(METRICS), runs), level, changes
