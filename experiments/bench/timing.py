"""Median wall time of a call, after warm-up calls (no heavy imports: the peers share it)."""

import statistics
import time


def median_seconds(fn, warmup: int = 1, iters: int = 5) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)
