"""The timing harness: the median of a step's times after warm-up (several implementations
interleaved, round by round), XLA's compiled temporary memory, the machine's matmul rate, and
the :class:`Row` a benchmark reports."""

import dataclasses
import functools
import math
import platform
import statistics
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxchain.benchmarks.peer import TorchPeer

F32 = jnp.float32  # every benchmark runs in float32


def median_seconds(
    fs: Mapping[str, Callable],
    *args,
    warmup: int = 2,
    rounds: int = 10,
    peers: Mapping[str, Callable[[], float]] | None = None,
) -> dict[str, float]:
    """Median wall time of each (jitted) ``f(*args)`` after ``warmup`` calls, and of each of
    ``peers``: functions that run one step elsewhere (another process) and return its
    seconds, measured there. All take turns, round after round, so that a slow spell of the
    machine hits them alike."""
    peers = peers or {}
    for f in fs.values():
        for _ in range(warmup):
            jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {name: [] for name in [*fs, *peers]}
    for _ in range(rounds):
        for name, f in fs.items():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - start)
        for name, step in peers.items():
            times[name].append(step())
    return {name: statistics.median(t) for name, t in times.items()}


def temp_bytes(f: Callable, *args) -> int:
    """Temporary memory XLA allocates for ``jit(f)(*args)``, from ``memory_analysis()``."""
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


def matmul_flops_per_second(n: int = 2048, rounds: int = 10) -> float:
    """The machine's float32 matrix-multiply rate: ``2 n^3`` flops per ``(n, n) @ (n, n)``,
    over the fastest of ``rounds`` calls (a peak, not a median)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, a))
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(f(a, a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


@dataclasses.dataclass
class Row:
    """One benchmark: implementations by name, their median step seconds and temp bytes."""

    bench: str
    config: dict
    seconds: dict[str, float]
    temp: dict[str, int]
    flops: float | None = None  # of one step, where it is a matter of matrix products

    def ratio(self, name: str, to: str = "autodiff") -> float:
        """How many times faster ``name`` is than ``to`` (> 1: faster)."""
        return self.seconds[to] / self.seconds[name]

    def memory(self, name: str) -> float | None:
        """``name``'s compiled temporary memory over autodiff's (None for PyTorch's)."""
        return self.temp[name] / max(self.temp["autodiff"], 1) if name in self.temp else None


def measure(
    bench: str,
    config: dict,
    steps: Mapping[str, Callable],
    *args,
    flops=None,
    rounds: int = 10,
    peer: TorchPeer | None = None,
    case: str | None = None,
    others: Mapping[str, tuple[Callable, tuple]] | None = None,
) -> Row:
    """Time and compile ``value_and_grad``-style ``steps`` (each ``f(*args)``), ``others``
    (``name: (f, its args)``), and, with a ``peer``, PyTorch's ``case`` of the same
    ``config`` (as ``torch``), all interleaved."""
    calls = {name: (f, args) for name, f in steps.items()} | dict(others or {})
    jitted = {name: functools.partial(jax.jit(f), *a) for name, (f, a) in calls.items()}
    peers = {}
    if peer is not None and case is not None:
        peer.setup(case, **config)
        peers["torch"] = peer.step
    seconds = median_seconds(jitted, rounds=rounds, peers=peers)
    temp = {name: temp_bytes(f, *a) for name, (f, a) in calls.items()}
    return Row(bench, config, seconds, temp, flops)


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }
