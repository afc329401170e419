"""Comparison settings from `[tool.pruned_perf]` in a pyproject.toml.

```toml
[tool.pruned_perf]
alpha = 0.008          # significance level of the one-sided Mann-Whitney U test
min_rounds = 5         # fewer timed rounds on either side -> inconclusive
drift_allowance = 1.0  # with < 3 stored runs: how far a time or speedup may drift between runs
probe_tolerance = 0.15 # the steadiness probe this much slower than in the baseline's run: noisy
runqueue_tolerance = 0.1  # threads waited this many s more per s of rounds for a CPU: noisy
others_tolerance = 0.25  # anything else used this many cores more during the rounds: noisy
history_sigmas = 2.0   # with >= 3 stored runs: how many between-run SDs a change must exceed
ab_bias_floor = 0.03   # an A/B's regressed/improved interval must clear this, not only 1 (process bias)

[tool.pruned_perf.thresholds]   # relative change of the median that counts, per metric
latency_s = 0.05
tokens_per_s = 0.05
ttft_s = 0.05
tpot_s = 0.05
speedup_vs_dense = 0.05
peak_mem_bytes = 0.02

[[tool.pruned_perf.groups]]     # per-point overrides; fnmatch on the point id
match = "llama-7b-*"
latency_s = 0.08
min_rounds = 7
```

Groups apply in file order; a later matching group overrides what an earlier one set.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

from pruned_perf.analysis.metrics import DEFAULT_THRESHOLDS
from pruned_perf.core.errors import UserError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# Chosen by simulation (tests/test_compare.py). With 5 rounds a side the exact one-sided test's p-values
# are 1/252 = 0.0040, 2/252 = 0.0079, 4/252 = 0.016, ...: alpha = 0.008 accepts complete separation or
# one swapped pair. Smaller (only complete separation) catches a 20% slowdown at 5% noise in only ~91% of
# runs; 0.008 catches ~97%, and since the exact test is valid, identical distributions give p < alpha
# in at most 0.8% of runs for any sample sizes (the threshold gate lowers that further).
DEFAULT_ALPHA = 0.008
# The protocol's minimum; also the smallest equal sample size that can reach p < alpha (4 a side:
# p >= 1/70). Fewer rounds on either side is inconclusive, never a pass.
DEFAULT_MIN_ROUNDS = 5
# With fewer than MIN_HISTORY stored runs the spread between runs is unknown: a time or speedup must move
# by more than this (1.0: to twice or half) to count. Identical code on a shared CPU under load moves
# nearly that far from one run to the next (chosen from trials: docs/verdict-trials.md).
DEFAULT_DRIFT_ALLOWANCE = 1.0
# The steadiness probe this much slower than in the baseline's run: the machine, not the code, explains a
# slowdown. Above the probe's own run-to-run wander on a quiet machine (about 10%).
DEFAULT_PROBE_TOLERANCE = 0.15
# Thread-seconds of run-queue wait per second of a point's rounds beyond the baseline's (or below it, for
# an improvement) that make a change `noisy`: a quiet machine's threads wait a few hundredths of a second
# per second, threads beside a CPU hog or a parallel test run most of it (docs/verdict-trials.md).
DEFAULT_RUNQUEUE_TOLERANCE = 0.1
# Cores' worth of CPU that anything but this process (other processes; other guests: steal) used during a
# point's rounds beyond the baseline's that make a change `noisy`: a quarter of a core, well above a quiet
# machine's background and well below one busy thread beside the run (docs/verdict-trials.md).
DEFAULT_OTHERS_TOLERANCE = 0.25
# With a history, a change must lie this many between-run standard deviations (pooled over the points of
# the model, from the stored runs) from the history's mean: 2 keeps false alarms of identical code rare
# while a one-thread slowdown is still caught in most runs; a larger value misses real slowdowns
# (chosen from trials against 3-run histories: docs/verdict-trials.md). 0: off.
DEFAULT_HISTORY_SIGMAS = 2.0

# An interleaved A/B: how far two worker processes of identical code read apart on this machine (a process
# bias); a `regressed` interval must clear it, not only 1 (docs/ab-verdicts.md, chosen from A/A trials).
DEFAULT_AB_BIAS_FLOOR = 0.03

_FRACTIONS = ("alpha", "drift_allowance", "probe_tolerance", "runqueue_tolerance", "others_tolerance",
              "history_sigmas", "ab_bias_floor")
TOP_LEVEL_KEYS = ("thresholds", "groups", "min_rounds") + _FRACTIONS
SETTING_KEYS = tuple(DEFAULT_THRESHOLDS) + ("min_rounds",) + _FRACTIONS
GROUP_KEYS = ("match",) + SETTING_KEYS


@dataclass
class Settings:
    """What one point is compared with."""

    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    alpha: float = DEFAULT_ALPHA
    min_rounds: int = DEFAULT_MIN_ROUNDS
    drift_allowance: float = DEFAULT_DRIFT_ALLOWANCE
    probe_tolerance: float = DEFAULT_PROBE_TOLERANCE
    runqueue_tolerance: float = DEFAULT_RUNQUEUE_TOLERANCE
    others_tolerance: float = DEFAULT_OTHERS_TOLERANCE
    history_sigmas: float = DEFAULT_HISTORY_SIGMAS
    ab_bias_floor: float = DEFAULT_AB_BIAS_FLOOR


@dataclass
class Group:
    match: str
    overrides: dict = field(default_factory=dict)


@dataclass
class Config(Settings):
    """The settings of every point, and the groups of points that override some of them."""

    groups: list[Group] = field(default_factory=list)
    source: str = "defaults"

    def settings_for(self, point_id: str) -> Settings:
        thresholds = dict(self.thresholds)
        values = {key: getattr(self, key) for key in ("min_rounds",) + _FRACTIONS}
        for group in self.groups:
            if not fnmatch.fnmatchcase(point_id, group.match):
                continue
            for key, value in group.overrides.items():
                (thresholds if key in thresholds else values)[key] = value
        return Settings(thresholds, **values)


def load_config(pyproject_path: str | os.PathLike | None = None) -> Config:
    """Read `[tool.pruned_perf]`; with no path, ./pyproject.toml if it exists, else the defaults."""
    if pyproject_path is None:
        if not os.path.isfile("pyproject.toml"):
            return Config()
        pyproject_path = "pyproject.toml"
    path = os.fspath(pyproject_path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such pyproject file") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    table = doc.get("tool", {}).get("pruned_perf", {})
    return config_from_table(table, source=path)


def config_from_table(table: dict, source: str = "<table>") -> Config:
    where = f"{source} [tool.pruned_perf]"
    _check_keys(table, TOP_LEVEL_KEYS, where)
    config = Config(source=source)
    thresholds = table.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise UserError(f"{where}: thresholds must be a table, got {thresholds!r}")
    _check_keys(thresholds, tuple(DEFAULT_THRESHOLDS), f"{where}.thresholds")
    for key, value in thresholds.items():
        config.thresholds[key] = _threshold(value, f"{where}.thresholds.{key}")
    for key in ("min_rounds",) + _FRACTIONS:
        if key in table:
            setattr(config, key, _setting(key, table[key], f"{where}.{key}"))
    groups = table.get("groups", [])
    if not isinstance(groups, list):
        raise UserError(f"{where}: groups must be an array of tables ([[tool.pruned_perf.groups]])")
    config.groups = [_group(g, f"{where}.groups[{i}]") for i, g in enumerate(groups)]
    return config


def _group(table, where: str) -> Group:
    if not isinstance(table, dict):
        raise UserError(f"{where}: must be a table, got {table!r}")
    _check_keys(table, GROUP_KEYS, where)
    match = table.get("match")
    if not isinstance(match, str) or not match:
        raise UserError(f"{where}: needs match = \"<fnmatch pattern on the point id>\"")
    overrides = {}
    for key, value in table.items():
        if key in DEFAULT_THRESHOLDS:
            overrides[key] = _threshold(value, f"{where}.{key}")
        elif key != "match":
            overrides[key] = _setting(key, value, f"{where}.{key}")
    return Group(match, overrides)


def _check_keys(table: dict, valid: tuple, where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _threshold(value, where: str) -> float:
    if not _is_number(value) or not 0 <= value < 10:
        raise UserError(f"{where}: threshold must be a relative change >= 0 (0.05 = 5%), got {value!r}")
    return float(value)


# Settings in seconds per second of a point's rounds: what each counts, and its default.
_MACHINE_SHARES = {"runqueue_tolerance": ("seconds of waiting", DEFAULT_RUNQUEUE_TOLERANCE),
                   "others_tolerance": ("cores of CPU used by others", DEFAULT_OTHERS_TOLERANCE)}


def _setting(key: str, value, where: str):
    if key == "min_rounds":
        return _min_rounds(value, where)
    if key == "alpha":
        return _alpha(value, where)
    if key == "history_sigmas":
        return _sigmas(value, where)
    if key in _MACHINE_SHARES:
        return _share(key, value, where)
    return _threshold(value, where)  # drift_allowance, probe_tolerance: relative changes too


def _share(key: str, value, where: str) -> float:
    if not _is_number(value) or value < 0:
        what, default = _MACHINE_SHARES[key]
        raise UserError(f"{where}: {key} must be {what} per second of rounds >= 0 ({default:g}), got {value!r}")
    return float(value)


def _sigmas(value, where: str) -> float:
    if not _is_number(value) or not 0 <= value < 100:
        raise UserError(f"{where}: history_sigmas must be a number of standard deviations >= 0 (0: off), "
                        f"got {value!r}")
    return float(value)


def _alpha(value, where: str) -> float:
    if not _is_number(value) or not 0 < value < 1:
        raise UserError(f"{where}: alpha must be a number in (0, 1), got {value!r}")
    return float(value)


def _min_rounds(value, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{where}: min_rounds must be an integer >= 1, got {value!r}")
    return value
