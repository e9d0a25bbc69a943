"""Small helpers shared by the benchmark groups."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], *, repeat: int = 200, warmup: int = 20) -> float:
    """Run *fn* ``warmup`` times, then return the median of ``repeat`` timed runs in ms."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)
