"""The timing harness: the median of a step's times after warm-up (several implementations
interleaved, round by round), XLA's compiled temporary memory, the machine's matmul rate, and
the :class:`Row` a benchmark reports."""

import dataclasses
import functools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxchain import _malloc
from jaxchain.benchmarks import kernels
from jaxchain.benchmarks.peer import TorchPeer
from jaxchain.train import backends

F32 = jnp.float32  # every benchmark runs in float32
#: A step is timed over at least this many seconds of its own (more rounds for short ones),
MIN_SECONDS = 0.25
#: but never more rounds than this.
MAX_ROUNDS = 60


def median_seconds(
    fs: Mapping[str, Callable],
    *args,
    warmup: int = 2,
    rounds: int = 10,
    peers: Mapping[str, Callable[[], float]] | None = None,
) -> dict[str, float]:
    """Median wall time of each (jitted) ``f(*args)`` after ``warmup`` calls (and one more,
    timed to count the rounds), and of each of
    ``peers``: functions that run one step elsewhere (another process) and return its
    seconds, measured there. All take turns, round after round, so that a slow spell of the
    machine hits them alike. Steps so short that ``rounds`` of the slowest take under
    :data:`MIN_SECONDS` get more rounds (at most :data:`MAX_ROUNDS`)."""
    peers = peers or {}
    slowest = 0.0
    for f in fs.values():
        for _ in range(warmup):
            jax.block_until_ready(f(*args))
        start = time.perf_counter()  # one more call, timed, for the count of rounds
        jax.block_until_ready(f(*args))
        slowest = max(slowest, time.perf_counter() - start)
    rounds = max(rounds, min(MAX_ROUNDS, math.ceil(MIN_SECONDS / max(slowest, 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in [*fs, *peers]}
    for _ in range(rounds):
        for name, f in fs.items():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - start)
        for name, step in peers.items():
            times[name].append(step())
    return {name: statistics.median(t) for name, t in times.items()}


def temp_bytes(f: Callable, *args, compiler_options: Mapping | None = None) -> int:
    """Temporary memory XLA allocates for ``jit(f)(*args)``, from ``memory_analysis()``."""
    compiled = jax.jit(f).lower(*args).compile(compiler_options=compiler_options or None)
    return compiled.memory_analysis().temp_size_in_bytes


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
    #: the compiler options each implementation was compiled with, by name (``default``:
    #: none; ``onednn``: :data:`jaxchain.train.backends.ONEDNN`)
    backends: dict[str, str] = dataclasses.field(default_factory=dict)
    #: each implementation's matrix products (:func:`~jaxchain.benchmarks.kernels.products`)
    products: dict[str, list[kernels.Product]] = dataclasses.field(default_factory=dict)
    #: each implementation's seconds in products, its products timed alone
    product_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, fields: dict) -> "Row":
        """A row from its JSON (:func:`~jaxchain.benchmarks.report.to_json`)."""
        products = {
            name: [kernels.Product.from_json(p) for p in found]
            for name, found in fields.get("products", {}).items()
        }
        return cls(**{**fields, "products": products})

    def kernels(self, name: str) -> dict[str, int]:
        """``name``'s products per step by library (empty: not listed)."""
        return kernels.by_library(self.products.get(name, ()))

    def product_share(self, name: str) -> float | None:
        """The share of ``name``'s step time in its matrix products (None: not measured)."""
        if name not in self.product_seconds:
            return None
        return self.product_seconds[name] / self.seconds[name]

    def ratio(self, name: str, to: str = "autodiff") -> float:
        """How many times faster ``name`` is than ``to`` (> 1: faster)."""
        return self.seconds[to] / self.seconds[name]

    def memory(self, name: str) -> float | None:
        """``name``'s compiled temporary memory over autodiff's (None for PyTorch's)."""
        return self.temp[name] / max(self.temp["autodiff"], 1) if name in self.temp else None


def _compile_all(calls, variants) -> tuple[dict, dict]:
    """Each call compiled under each backend of ``variants`` (the first keeps the call's
    name, the others are named ``name (backend)``), and each one's backend."""
    compiled, backend_of = {}, {}
    for name, (f, a) in calls.items():
        for b in variants:
            key = name if b == variants[0] else f"{name} ({b})"
            options = backends.compiler_options(b)
            compiled[key] = (jax.jit(f).lower(*a).compile(compiler_options=options), a)
            backend_of[key] = b
            if options:
                kernels.ALIVE.append(compiled[key][0])
    return compiled, backend_of


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
    backend: str | tuple[str, ...] = "default",
) -> Row:
    """Time and compile ``value_and_grad``-style ``steps`` (each ``f(*args)``), ``others``
    (``name: (f, its args)``), and, with a ``peer``, PyTorch's ``case`` of the same
    ``config`` (as ``torch``), all interleaved; each compiled with the compiler options of
    ``backend`` (:data:`jaxchain.train.backends.BACKENDS`; several: each step under each,
    named ``manual (onednn)``), its products listed and timed alone
    (:mod:`~jaxchain.benchmarks.kernels`)."""
    calls = {name: (f, args) for name, f in steps.items()} | dict(others or {})
    variants = (backend,) if isinstance(backend, str) else tuple(backend)
    compiled, backend_of = _compile_all(calls, variants)
    peers = {}
    if peer is not None and case is not None:
        peer.setup(case, **config)
        peers["torch"] = peer.step
    jitted = {name: functools.partial(c, *a) for name, (c, a) in compiled.items()}
    seconds = median_seconds(jitted, rounds=rounds, peers=peers)
    temp = {name: c.memory_analysis().temp_size_in_bytes for name, (c, _) in compiled.items()}
    found = {name: kernels.products(c) for name, (c, _) in compiled.items()}
    options = {name: backends.compiler_options(b) for name, b in backend_of.items()}
    return Row(
        bench,
        config,
        seconds,
        temp,
        flops,
        backends=backend_of,
        products=found,
        product_seconds={n: kernels.seconds_in_products(p, options[n]) for n, p in found.items()},
    )


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows of it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What a run's numbers depend on: the CPU, how many cores this process may use, the
    device, versions, ``XLA_FLAGS`` and how memory is allocated."""
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "malloc": _malloc_setting(),
    }


def _malloc_setting() -> str:
    """How the allocator serves XLA's temporary buffers (:mod:`jaxchain._malloc`)."""
    if _malloc.SETTING is not None:
        return _malloc.SETTING
    tunables = os.environ.get("GLIBC_TUNABLES")
    return f"GLIBC_TUNABLES={tunables}" if tunables else "the C library's defaults"
