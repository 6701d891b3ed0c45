"""Timing and compiled memory, the same way for every benchmark."""

import statistics
import time
from collections.abc import Callable, Mapping

import jax


def median_seconds(
    fs: Mapping[str, Callable], *args, warmup: int = 3, rounds: int = 30
) -> dict[str, float]:
    """Median wall time of each (jitted) ``f(*args)`` after ``warmup`` calls. The functions
    take turns, round after round, so that a slow spell of the machine hits them alike."""
    for f in fs.values():
        for _ in range(warmup):
            jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {name: [] for name in fs}
    for _ in range(rounds):
        for name, f in fs.items():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def temp_bytes(f: Callable, *args) -> int:
    """Temporary memory XLA allocates for ``jit(f)(*args)``, from ``memory_analysis()``."""
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes
