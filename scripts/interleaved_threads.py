"""Time one point of the quick profile at two thread counts in alternating rounds, in one process:
the A/B of the verdict trials (scripts/verdict_trials.py threads) with the drift between runs taken out.

    python scripts/interleaved_threads.py [--model smollm2-135m] [--batch-size 8] [--threads 2 1] [--pairs 8]

Each pair times one generate call (12 tokens in, 32 out, as the quick profile) at each thread count,
the order alternating from pair to pair, after one untimed call at each. Prints the median call at
each count and the ratio second/first within each pair (median, min, max). `--threads 2 2` is the A/A.
Run it twice to see how far two processes a minute apart differ. Exit status 0; 2 for bad input.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from pruned_perf.bench.measure import full_call, make_inputs
from pruned_perf.errors import UserError
from pruned_perf.models import build_model
from pruned_perf.schema import Point

INPUT_TOKENS, OUTPUT_TOKENS = 12, 32


def interleaved(model_name: str, batch_size: int, threads: tuple[int, int], pairs: int) -> list[tuple[float, float]]:
    """(seconds at threads[0], seconds at threads[1]) of each pair of calls."""
    model = build_model(model_name).eval()
    point = Point(model_name, "dense", INPUT_TOKENS, OUTPUT_TOKENS, batch_size)
    call = full_call(model, point, make_inputs(point, model.config.vocab_size, "cpu"), OUTPUT_TOKENS)
    previous = torch.get_num_threads()

    def timed(count: int) -> float:
        torch.set_num_threads(count)
        start_s = time.perf_counter()
        call()
        return time.perf_counter() - start_s

    try:
        with torch.inference_mode():
            for count in threads:
                timed(count)  # the first call at a shape is slower: not the thread count's doing
            timings = []
            for i in range(pairs):
                if i % 2 == 0:  # alternate which count goes first, so a drift within a pair favours neither
                    first = timed(threads[0])
                    second = timed(threads[1])
                else:
                    second = timed(threads[1])
                    first = timed(threads[0])
                timings.append((first, second))
            return timings
    finally:
        torch.set_num_threads(previous)


def summary(threads: tuple[int, int], timings: list[tuple[float, float]]) -> str:
    ratios = [second / first for first, second in timings]
    medians = [statistics.median(t[i] for t in timings) for i in (0, 1)]
    return (f"{threads[0]} thread(s): median {medians[0]:.3f} s; {threads[1]} thread(s): median {medians[1]:.3f} s; "
            f"ratio within a pair: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
            f"max {max(ratios):.3f} ({len(ratios)} pairs)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs=2, default=[2, 1])
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        if min(args.threads) < 1 or args.pairs < 1 or args.batch_size < 1:
            raise UserError(f"--threads, --pairs and --batch-size must be at least 1, got --threads "
                            f"{' '.join(map(str, args.threads))} --pairs {args.pairs} --batch-size {args.batch_size}")
        threads = tuple(args.threads)
        print(summary(threads, interleaved(args.model, args.batch_size, threads, args.pairs)))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
