"""The perf suite's `--pp-*` options: each one's name, environment variable and help, how its text is
parsed, and the typed records they become (`PerfOptions`: the sweep's, the outputs', the A/B's). Every bad
value is one UserError naming the option and the value, before anything is measured.

The pytest plugin reads the raw text (command line or environment) and builds these once; the A/B's
workers get the sweep's options as JSON (`SweepOptions.to_dict` / `from_dict`).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping

from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import check_seconds

# name, environment variable, help. Every option can come from the command line or the environment.
OPTIONS = [
    ("profile", "PP_PROFILE", "quick (tiny models, CPU) | smoke (llama-7b subset, GPU) | paper (the "
     "reference sweep); default: smoke with a GPU, quick without"),
    ("models", "PP_MODELS", "comma-separated presets or model directories (default: the profile's)"),
    ("methods", "PP_METHODS", "comma-separated methods: dense, depth, llm-pruner, flap"),
    ("batch", "PP_BATCH", "comma-separated batch sizes M"),
    ("in", "PP_IN", "comma-separated input token counts"),
    ("out", "PP_OUT", "comma-separated output token counts"),
    ("backend", "PP_BACKEND", "comma-separated backends: eager (dynamic KV cache) and/or static"),
    ("device", "PP_DEVICE", "auto | cuda | cuda:N | cpu (default auto)"),
    ("dtype", "PP_DTYPE", "float16 | bfloat16 | float32 (default: the profile's)"),
    ("rounds", "PP_ROUNDS", "timed rounds per point (default 5)"),
    ("warmup", "PP_WARMUP", "full warm-up calls at the exact shape per point (default 1)"),
    ("min-round-s", "PP_MIN_ROUND_S", "a timed round is as many calls as last at least this many seconds "
     "(default 1.0; 0: one call per round)"),
    ("shard", "PP_SHARD", "I/N: run only the I-th of N disjoint parts of the matrix"),
    ("points", "PP_POINTS", "comma-separated point ids (model-method-inN-outN-MN-backend): of the points the "
     "other options select, only these"),
    ("log", "PP_LOG", "JSON-lines file every point is appended to as soon as it is measured "
     "(default: the --benchmark-json path with .jsonl, else pruned-perf-points.jsonl). For it and for "
     "--benchmark-json, missing parent directories are created"),
    ("cache-dir", "PP_CACHE_DIR", "where pruning plans are cached (default .pp-cache)"),
    ("compare", "PP_COMPARE", "auto | FILE | DIR: compare against a baseline at the end; "
     "a regression fails the session"),
    ("baselines-dir", "PP_BASELINES_DIR", "the baseline store for --pp-compare auto (default baselines)"),
    ("ab", "PP_AB", "BASE: an interleaved A/B of this tree against BASE, a git revision of its repository "
     "(HEAD, HEAD~1, origin/main, a SHA) or another Python interpreter (this tree in another environment); "
     "each side runs in its own worker process, in pairs of rounds; a regression fails the session"),
    ("ab-pairs", "PP_AB_PAIRS", "A/B: most pairs of rounds per point (default 30)"),
    ("ab-look", "PP_AB_LOOK", "A/B: pairs added between two looks at the verdict (default 6)"),
    ("ab-timeout-s", "PP_AB_TIMEOUT_S", "A/B: a worker that does not answer a round within max(this, 10 x its "
     "warm-up round) seconds, or any other step (a point's build and warm-up) within 60 x this, is killed as "
     "hung (default 30)"),
    ("ab-quiet-s", "PP_AB_QUIET_S", "A/B, on a CPU: before a point, and before a pair that outside load "
     "contended is run again, wait up to this many seconds for the machine to be quiet; still busy, the point "
     "is inconclusive (machine busy) (default 10)"),
]
NAMES = tuple(name for name, _, _ in OPTIONS)
DEFAULT_CACHE_DIR = ".pp-cache"


def from_environment(name: str) -> str | None:
    """The option's value from its environment variable; an empty one means unset (a workflow passes
    empty inputs through as "")."""
    env = next(env for n, env, _ in OPTIONS if n == name)
    return os.environ.get(env) or None


# ---- parsing one value ----

def parse_ints(text: str | None, what: str) -> tuple[int, ...] | None:
    """'1,8,16' -> (1, 8, 16); None stays None (the profile's values)."""
    if text is None:
        return None
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{what} must be comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"{what} must be comma-separated positive integers, got {text!r}")
    return values


def parse_int(text: str | None, what: str) -> int | None:
    """'30' -> 30, a positive integer; None stays None (the default)."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{what} must be a positive integer, got {text!r}")
    return value


def parse_seconds(text: str | None, what: str) -> float | None:
    """'0.5' -> 0.5 (seconds, 0 or more); None stays None (the default)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{what} must be a finite number of seconds >= 0, got {text!r}") from None
    check_seconds(what, value)
    return value


def parse_names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/4' -> (2, 4): the second of four shards (1-based, as CI matrices count)."""
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--pp-shard must look like I/N (e.g. 1/4), got {text!r}") from None
    if not 1 <= index <= count:
        raise UserError(f"--pp-shard {text!r}: I must lie in 1..{count} (N = {count})")
    return index, count


# ---- the records ----

@dataclass(frozen=True)
class SweepOptions:
    """Which points a run measures and how: the sweep's options, parsed (None: the profile's value or the
    default)."""

    profile: str | None = None
    models: tuple | None = None
    methods: tuple | None = None
    batch: tuple | None = None
    inputs: tuple | None = None
    outputs: tuple | None = None
    backends: tuple | None = None
    device: str | None = None
    dtype: str | None = None
    rounds: int | None = None
    warmup: int | None = None
    min_round_s: float | None = None
    shard: tuple | None = None
    points: tuple | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, str | None]) -> "SweepOptions":
        return cls(profile=raw.get("profile"), models=parse_names(raw.get("models")),
                   methods=parse_names(raw.get("methods")), batch=parse_ints(raw.get("batch"), "--pp-batch"),
                   inputs=parse_ints(raw.get("in"), "--pp-in"), outputs=parse_ints(raw.get("out"), "--pp-out"),
                   backends=parse_names(raw.get("backend")), device=raw.get("device"), dtype=raw.get("dtype"),
                   rounds=parse_int(raw.get("rounds"), "--pp-rounds"),
                   warmup=parse_int(raw.get("warmup"), "--pp-warmup"),
                   min_round_s=parse_seconds(raw.get("min-round-s"), "--pp-min-round-s"),
                   shard=parse_shard(raw.get("shard")), points=parse_names(raw.get("points")))

    def with_absolute_models(self) -> "SweepOptions":
        """The options as another process in another directory reads them: a model given as a directory
        becomes an absolute path."""
        if not self.models:
            return self
        return dataclasses.replace(self, models=tuple(os.path.abspath(m) if os.path.isdir(m) else m
                                                      for m in self.models))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepOptions":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class ABOptions:
    """`--pp-ab BASE` and the options of the A/B's schedule (None: the default)."""

    base: str
    max_pairs: int | None = None
    pairs_per_look: int | None = None
    timeout_s: float | None = None
    quiet_s: float | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, str | None]) -> "ABOptions | None":
        if not raw.get("ab"):
            return None
        return cls(raw["ab"], max_pairs=parse_int(raw.get("ab-pairs"), "--pp-ab-pairs"),
                   pairs_per_look=parse_int(raw.get("ab-look"), "--pp-ab-look"),
                   timeout_s=parse_seconds(raw.get("ab-timeout-s"), "--pp-ab-timeout-s"),
                   quiet_s=parse_seconds(raw.get("ab-quiet-s"), "--pp-ab-quiet-s"))


@dataclass(frozen=True)
class PerfOptions:
    """Every `--pp-*` option of a perf session, parsed."""

    sweep: SweepOptions
    cache_dir: str = DEFAULT_CACHE_DIR
    log: str | None = None
    compare: str | None = None
    baselines_dir: str = "baselines"
    ab: ABOptions | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, str | None]) -> "PerfOptions":
        unknown = sorted(set(raw) - set(NAMES))
        if unknown:
            raise UserError(f"unknown option(s) {', '.join(unknown)}; valid choices: {', '.join(NAMES)}")
        return cls(SweepOptions.parse(raw), cache_dir=raw.get("cache-dir") or DEFAULT_CACHE_DIR, log=raw.get("log"),
                   compare=raw.get("compare"), baselines_dir=raw.get("baselines-dir") or "baselines",
                   ab=ABOptions.parse(raw))
