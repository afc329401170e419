"""Synthetic results files in the results schema (docs/results-schema.md), for tests of compare,
report, plot and the CLI. Timings follow a crude decode model (a fixed prefill plus per-token steps
that grow with the batch), with noisy rounds drawn from a seeded RNG so tests are reproducible.
"""
from __future__ import annotations

import copy
import json
import math
import random
import statistics

from pruned_perf.analysis.speedups import add_speedups_to_benchmarks
from pruned_perf.pruning.methods import styles
from pruned_perf.core.schema import Measurement

FINGERPRINT = {
    "device": "cuda",
    "name": "NVIDIA H200",
    "memory_bytes": 150754820096,
    "driver": "570.124.06",
    "cuda": "12.8",
    "torch": "2.11.0",
    "transformers": "5.17.0",
    "slug": "nvidia-h200-140gb",
}
# Relative speed and size of each variant, roughly as in the reference figure (7B scale).
METHOD_SPEED = {"dense": 1.0, "llm-pruner": 0.9, "flap": 0.95, "depth": 0.72}
METHOD_PARAMS = {"dense": 6_738_415_616, "llm-pruner": 4_900_000_000, "flap": 4_900_000_000,
                 "depth": 4_916_965_376}
MODEL_SCALE = {"llama-7b": 1.0, "vicuna-13b": 1.9}
BATCH_SIZES = (1, 8, 16, 32, 64, 128, 256, 384)
# Every field of a point, as docs/results-schema.md lists them: what a Measurement serialises to.
SCHEMA_FIELDS = {
    "schema", "id", "model", "method", "params", "weight_bytes", "batch_size", "input_tokens", "output_tokens",
    "backend", "dtype", "device", "oom", "oom_skipped", "latency_s", "latency_iqr_s", "latency_min_s",
    "tokens_per_s", "ttft_s", "tpot_s", "itl_p50_s", "itl_p90_s", "itl_max_s", "peak_mem_bytes", "rounds_s",
    "ttft_rounds_s", "tpot_rounds_s", "warmup_s", "calls_per_round", "probe_s", "probe_rounds_s",
    "runqueue_wait_rounds_s", "runqueue_wait_frac", "others_cpu_rounds_s", "others_cpu_frac", "peer_cpu_rounds_s",
    "peer_cpu_frac", "speedup_vs_dense",
    "speedup_rounds", "dense_probe_s", "decode_bw_frac", "device_copy_bytes_per_s", "layers",
    "ppl", "ppl_source", "ppl_tokens", "plan_dtype", "structure_from_random_weights",
}
# The steadiness probe's time on a steady machine (seconds).
PROBE_S = 0.02


def point_id(model, method, batch_size, input_tokens, output_tokens, backend="eager") -> str:
    return f"{model}-{method}-in{input_tokens}-out{output_tokens}-M{batch_size}-{backend}"


def measurement(**fields) -> Measurement:
    """A typed point with only the given fields set (the identity fields default to a tiny model)."""
    identity = {"model": "m", "method": "dense", "params": 1000, "weight_bytes": 2000, "batch_size": 1,
                "input_tokens": 1, "output_tokens": 1, "backend": "eager", "dtype": "float32", "device": "cpu"}
    return Measurement(**{**identity, **fields})


def noisy(rng: random.Random, center: float, cv: float, n: int, noise: str = "lognormal") -> list[float]:
    """n draws with median ~center and coefficient of variation cv."""
    if noise == "normal":
        return [rng.gauss(center, cv * center) for _ in range(n)]
    sigma = math.sqrt(math.log(1 + cv * cv))
    return [center * math.exp(rng.gauss(0.0, sigma)) for _ in range(n)]


def model_times(model, method, batch_size, input_tokens, output_tokens, backend="eager"):
    """(ttft_s, latency_s) of the crude decode model."""
    scale = MODEL_SCALE.get(model, 1.0) * METHOD_SPEED.get(method, 0.85)
    step_s = 0.022 * scale * (1 + batch_size / 96) * (0.6 if backend == "static" else 1.0)
    ttft_s = 0.012 * scale * (1 + batch_size * input_tokens / 2048)
    return ttft_s, ttft_s + (output_tokens - 1) * step_s


def make_point(model="llama-7b", method="dense", batch_size=1, input_tokens=12, output_tokens=128,
               backend="eager", *, rng=None, cv=0.05, rounds=5, noise="lognormal", latency_s=None,
               ttft_s=None, oom=False, oom_skipped=False, peak_mem_bytes=None, params=None) -> dict:
    """One pytest-benchmark entry with extra_info of one point."""
    rng = rng or random.Random(0)
    pid = point_id(model, method, batch_size, input_tokens, output_tokens, backend)
    params = params or int(METHOD_PARAMS.get(method, 5e9) * MODEL_SCALE.get(model, 1.0))
    info = {
        "schema": 2, "id": pid, "model": model, "method": method, "params": params,
        "weight_bytes": 2 * params, "batch_size": batch_size, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "backend": backend, "dtype": "float16", "device": "cuda",
        "oom": oom or oom_skipped, "oom_skipped": oom_skipped, "layers": [],
        "device_copy_bytes_per_s": 4.3e12, "calls_per_round": 1,
    }
    if oom or oom_skipped:
        info.update({k: None for k in ("latency_s", "latency_iqr_s", "latency_min_s", "tokens_per_s",
                                       "ttft_s", "tpot_s", "itl_p50_s", "itl_p90_s", "itl_max_s",
                                       "peak_mem_bytes", "probe_s", "speedup_vs_dense", "dense_probe_s",
                                       "decode_bw_frac")})
        info.update({k: [] for k in ("rounds_s", "ttft_rounds_s", "tpot_rounds_s", "warmup_s", "probe_rounds_s",
                                     "speedup_rounds")})
        return _entry(info, None)
    model_ttft_s, model_latency_s = model_times(model, method, batch_size, input_tokens, output_tokens, backend)
    latency_s = latency_s or model_latency_s
    ttft_s = ttft_s or model_ttft_s
    info["rounds_s"] = noisy(rng, latency_s, cv, rounds, noise)
    # from the same calls as the rounds, as the suite measures them: a first token never after its call's end
    info["ttft_rounds_s"] = [min(t, r) for t, r in zip(noisy(rng, ttft_s, cv, rounds, noise), info["rounds_s"])]
    info["probe_rounds_s"] = noisy(rng, PROBE_S, 0.02, 6, noise)
    info["warmup_s"] = [3 * latency_s]
    info["peak_mem_bytes"] = peak_mem_bytes if peak_mem_bytes is not None else int(
        2 * params + batch_size * (input_tokens + output_tokens) * 524_288)
    refresh_summary(info)
    return _entry(info, info["rounds_s"])


def refresh_summary(info: dict) -> None:
    """Recompute the summary fields of a point from its raw rounds (as the perf suite does)."""
    rounds = sorted(info["rounds_s"])
    info["latency_s"] = statistics.median(rounds)
    q = statistics.quantiles(rounds, n=4) if len(rounds) > 1 else [rounds[0]] * 3
    info["latency_iqr_s"] = q[2] - q[0]
    info["latency_min_s"] = rounds[0]
    info["tokens_per_s"] = info["batch_size"] * info["output_tokens"] / info["latency_s"]
    info["ttft_s"] = statistics.median(info["ttft_rounds_s"])
    steps = max(info["output_tokens"] - 1, 1)
    info["tpot_rounds_s"] = [(r - t) / steps for r, t in zip(info["rounds_s"], info["ttft_rounds_s"])]
    info["tpot_s"] = statistics.median(info["tpot_rounds_s"])
    info["itl_p50_s"] = info["itl_p90_s"] = info["itl_max_s"] = info["tpot_s"]
    info["probe_s"] = statistics.median(info["probe_rounds_s"])
    step_bytes = info["weight_bytes"]
    info["decode_bw_frac"] = step_bytes / info["tpot_s"] / info["device_copy_bytes_per_s"]


def _entry(info: dict, rounds) -> dict:
    name = f"test_generate[{info['id']}]"
    entry = {
        "group": None, "name": name, "fullname": f"perf/test_generate.py::{name}",
        "params": {"point": info["id"]}, "param": info["id"], "extra_info": info,
        "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5, "max_time": 1.0,
                    "min_time": 5e-06, "warmup": False},
        "stats": None,
    }
    if rounds:
        entry["stats"] = _stats(rounds)
    return entry


def _stats(rounds: list[float]) -> dict:
    data = sorted(rounds)
    q = statistics.quantiles(data, n=4) if len(data) > 1 else [data[0]] * 3
    mean = statistics.fmean(data)
    return {
        "min": data[0], "max": data[-1], "mean": mean,
        "stddev": statistics.stdev(data) if len(data) > 1 else 0.0,
        "rounds": len(data), "median": statistics.median(data), "iqr": q[2] - q[0], "q1": q[0], "q3": q[2],
        "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": data[0], "hd15iqr": data[-1],
        "ops": 1 / mean, "total": sum(data), "iterations": 1,
    }


def make_results(benchmarks: list[dict], profile="smoke", fingerprint=None, schema=2, run_id="run-1",
                 failed=(), **fingerprint_changes) -> dict:
    """A whole results file (pytest-benchmark JSON with machine_info.pruned_perf), speedups over dense
    filled in as the perf suite does."""
    fp = dict(fingerprint or FINGERPRINT)
    fp.update(fingerprint_changes)
    add_speedups_to_benchmarks(benchmarks)
    return {
        "machine_info": {
            "node": "gpu-runner-1", "processor": "x86_64", "machine": "x86_64",
            "python_implementation": "CPython", "python_version": "3.11.7", "system": "Linux",
            "release": "6.8.0", "cpu": {"brand_raw": "AMD EPYC"},
            "pruned_perf": {"schema": schema, "profile": profile, "fingerprint": fp, "run_id": run_id,
                            "methods": styles(), "session": {"failed": list(failed)}},
        },
        "commit_info": {"id": "0" * 40, "time": "2025-01-01T00:00:00+00:00", "dirty": False,
                        "project": "pruned_perf", "branch": "main"},
        "benchmarks": benchmarks,
        "datetime": "2025-01-01T00:00:00.000000+00:00",
        "version": "5.3.1",
    }


def sweep(models=("llama-7b",), methods=("dense", "llm-pruner", "flap", "depth"), io_pairs=((12, 128),),
          batch_sizes=(1, 8, 16, 32, 64), backend="eager", seed=0, cv=0.03, rounds=5,
          oom_from: dict | None = None) -> list[dict]:
    """A grid of points like the reference sweep. oom_from maps (model, method) or model to the first
    batch size that runs out of memory; larger ones of the series are oom_skipped, as measure does."""
    rng = random.Random(seed)
    oom_from = oom_from or {}
    out = []
    for model in models:
        for input_tokens, output_tokens in io_pairs:
            for method in methods:
                first_oom = oom_from.get((model, method), oom_from.get(model))
                for bs in batch_sizes:
                    oom = first_oom is not None and bs == first_oom
                    skipped = first_oom is not None and bs > first_oom
                    out.append(make_point(model, method, bs, input_tokens, output_tokens, backend, rng=rng,
                                          cv=cv, rounds=rounds, oom=oom, oom_skipped=skipped))
    return out


def scale_point(results: dict, pid: str, factor: float, ttft_factor: float = 1.0, probe_factor: float = 1.0) -> dict:
    """A deep copy of results with one point's full rounds multiplied by factor (1.3 = 30% slower),
    its first-token times by ttft_factor and its steadiness probe by probe_factor (a slower machine)."""
    results = copy.deepcopy(results)
    for bench in results["benchmarks"]:
        info = bench["extra_info"]
        if info["id"] == pid:
            info["rounds_s"] = [r * factor for r in info["rounds_s"]]
            info["ttft_rounds_s"] = [min(t * ttft_factor, r) for t, r in zip(info["ttft_rounds_s"], info["rounds_s"])]
            info["probe_rounds_s"] = [r * probe_factor for r in info["probe_rounds_s"]]
            refresh_summary(info)
            bench["stats"] = _stats(info["rounds_s"])
            add_speedups_to_benchmarks(results["benchmarks"])
            return results
    raise KeyError(pid)


def write(path, obj) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    return str(path)
