"""Timing and compiled memory, the same way for every benchmark."""

import statistics
import time
from collections.abc import Callable

import jax


def median_seconds(f: Callable, *args, warmup: int = 3, runs: int = 20) -> float:
    """Median wall time of ``f(*args)`` (already jitted) after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(f(*args))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def temp_bytes(f: Callable, *args) -> int:
    """Temporary memory XLA allocates for ``jit(f)(*args)``, from ``memory_analysis()``."""
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes
