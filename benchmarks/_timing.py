"""The benchmarks' timing: warm up once, then alternate the contenders for several repeats
and take each one's median (the machines are noisy; alternation spreads the noise evenly)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternate(bare: Callable[[], object], pipeline: Callable[[], object],
              repeats: int) -> tuple[float, float]:
    """Median seconds of ``bare`` and of ``pipeline``, measured alternately."""
    bare(), pipeline()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, acc in zip((bare, pipeline), times, strict=True):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])
