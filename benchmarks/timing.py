"""Timing helpers shared by the benchmark scripts."""

import argparse
import statistics
import time


def model_benchmark_args(description: str, repeats: int = 3) -> argparse.Namespace:
    """The options the model benchmarks share: threads, repeats, input size, batch."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    return parser.parse_args()


def timed(fn) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(ours, theirs, repeats: int) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``theirs``, run alternately ``repeats`` + 1 times with
    the first round dropped (warm-up)."""
    mine, ref = [], []
    for _ in range(repeats + 1):
        mine.append(timed(ours))
        ref.append(timed(theirs))
    return statistics.median(mine[1:]), statistics.median(ref[1:])
