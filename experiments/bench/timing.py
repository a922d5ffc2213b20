"""Median wall time of a call, and the best matmul rate (no heavy imports: the peers share it)."""

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


def best_matmul_rate(matmul, shapes, repeats: int = 5) -> float:
  """Best FLOP/s over `shapes` (m, k, n) and repeats; `matmul(m, k, n)` returns a blocking call."""
  best = 0.0
  for m, k, n in shapes:
    run = matmul(m, k, n)
    run()
    for _ in range(repeats):
      start = time.perf_counter()
      run()
      best = max(best, 2 * m * k * n / (time.perf_counter() - start))
  return best
