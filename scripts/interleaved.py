"""Time one point of the quick profile two ways in alternating rounds: the A/B of the verdict trials
(scripts/verdict_trials.py) with the drift between runs taken out.

    python scripts/interleaved.py threads [--threads 2 1] [--model smollm2-135m] [--batch-size 8] [--pairs 8]
    python scripts/interleaved.py processes [--b-env KEY=VALUE ...] [--model ...] [--batch-size ...] [--pairs ...]

`threads`: one process, one model, the two thread counts in turn (`--threads 2 2` is the A/A).
`processes`: two worker processes of this script, A with this environment and B with `--b-env` added
(`OMP_NUM_THREADS=1`; `PP_SLOW_MLP_TIMES=2`: every LLaMA MLP runs twice, scripts/slow_mlp.py); no
`--b-env` is the A/A. Each loads the model and warms it up; then they take turns, as an interleaved
comparison of two code versions would run (asv's `continuous` runs the two commits' rounds in turn).

Each pair times one generate call (12 tokens in, 32 out, as the quick profile) on each side, the order
alternating from pair to pair, after an untimed call on each. Prints the median call of each side and
the ratio B/A within each pair (median, min, max). Exit status 0; 2 for bad input.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

import torch

from pruned_perf.bench.measure import full_call, make_inputs, time_once
from pruned_perf.core.errors import UserError, exit_status
from pruned_perf.llama.models import build_model, model_config
from pruned_perf.core.schema import Point

INPUT_TOKENS, OUTPUT_TOKENS = 12, 32


def _call(model_name: str, batch_size: int):
    model = build_model(model_name).eval()
    point = Point(model_name, "dense", INPUT_TOKENS, OUTPUT_TOKENS, batch_size)
    return full_call(model, point, make_inputs(point, model.config.vocab_size, "cpu"), OUTPUT_TOKENS)


def in_turns(side_a, side_b, pairs: int) -> list[tuple[float, float]]:
    """(seconds of A, seconds of B) of each pair; which side goes first alternates, so that a drift
    within a pair favours neither."""
    timings = []
    for i in range(pairs):
        if i % 2 == 0:
            a = side_a()
            b = side_b()
        else:
            b = side_b()
            a = side_a()
        timings.append((a, b))
    return timings


def threads(model_name: str, batch_size: int, counts: tuple[int, int], pairs: int) -> list[tuple[float, float]]:
    """One model in this process, timed at each thread count in turn; the process's count is restored."""
    call = _call(model_name, batch_size)
    previous = torch.get_num_threads()

    def side(count: int):
        def timed() -> float:
            torch.set_num_threads(count)
            return time_once(call)
        return timed

    try:
        with torch.inference_mode():
            for count in counts:
                side(count)()  # the first call at a shape is slower: not the thread count's doing
            return in_turns(side(counts[0]), side(counts[1]), pairs)
    finally:
        torch.set_num_threads(previous)


def processes(model_name: str, batch_size: int, b_env: dict, pairs: int) -> tuple[list, list[str]]:
    """The pairs' timings, and each worker's own account of its setup (threads, MLP repeats)."""
    worker = [sys.executable, os.path.abspath(__file__), "worker", "--model", model_name,
              "--batch-size", str(batch_size)]
    envs = (dict(os.environ), {**os.environ, **b_env})
    workers = [subprocess.Popen(worker, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for env in envs]
    try:
        states = []
        for proc in workers:
            ready = proc.stdout.readline().split(maxsplit=1)
            if not ready or ready[0] != "ready":
                raise RuntimeError(f"worker {proc.args} did not start (exit {proc.wait()})")
            states.append(ready[1].strip() if len(ready) > 1 else "")

        def side(proc):
            def timed() -> float:
                proc.stdin.write("call\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                if not line:  # its error, if any, went to stderr
                    raise RuntimeError(f"worker {proc.args} stopped (exit {proc.wait()})")
                return float(line)
            return timed

        return in_turns(side(workers[0]), side(workers[1]), pairs), states
    finally:
        for proc in workers:
            proc.stdin.close()
            proc.wait()


def worker(model_name: str, batch_size: int) -> None:
    """One side of `processes`: load, warm up, say `ready` with what it runs, then time one call per
    `call` line."""
    mlp_times = 1
    if "PP_SLOW_MLP_TIMES" in os.environ:
        import slow_mlp  # patches LlamaMLP.forward (this script's directory is on sys.path)
        mlp_times = slow_mlp.TIMES
    call = _call(model_name, batch_size)
    with torch.inference_mode():
        call()
        print(f"ready threads={torch.get_num_threads()} mlp_times={mlp_times}", flush=True)
        for line in sys.stdin:
            if line.strip() == "call":
                print(repr(time_once(call)), flush=True)


def summary(labels: tuple[str, str], timings: list[tuple[float, float]]) -> str:
    ratios = [b / a for a, b in timings]
    medians = [statistics.median(t[i] for t in timings) for i in (0, 1)]
    return (f"{labels[0]}: median {medians[0]:.3f} s; {labels[1]}: median {medians[1]:.3f} s; "
            f"ratio within a pair: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
            f"max {max(ratios):.3f} ({len(ratios)} pairs)")


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("threads", "processes", "worker"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs=2, default=[2, 1], help="threads: A's and B's thread count")
    parser.add_argument("--b-env", type=_env_pair, nargs="*", default=[], help="processes: B's extra environment")
    args = parser.parse_args(argv)
    return exit_status(lambda: _run(args))


def _run(args) -> None:
    if min(args.threads) < 1 or args.pairs < 1 or args.batch_size < 1:
        raise UserError(f"--threads, --pairs and --batch-size must be at least 1, got --threads "
                        f"{' '.join(map(str, args.threads))} --pairs {args.pairs} --batch-size {args.batch_size}")
    model_config(args.model)  # an unknown model: one error here, not one per worker
    if args.mode == "worker":
        worker(args.model, args.batch_size)
    elif args.mode == "threads":
        counts = tuple(args.threads)
        timings = threads(args.model, args.batch_size, counts, args.pairs)
        print(summary((f"{counts[0]} thread(s)", f"{counts[1]} thread(s)"), timings))
    else:
        timings, states = processes(args.model, args.batch_size, dict(args.b_env), args.pairs)
        print(summary((f"A ({states[0]})", f"B ({states[1]})"), timings))


if __name__ == "__main__":
    sys.exit(main())
