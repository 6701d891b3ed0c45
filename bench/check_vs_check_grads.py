"""check_vjp (with and without a reference) against jax.test_util.check_grads(order=2,
modes=["rev"]) on (64, 64) and (512, 512) inputs, cold (first call: compiling) and warm
(the median of five more calls). Run: .venv/bin/python bench/check_vs_check_grads.py"""

import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from jax.test_util import check_grads

from jaxchain import check

jax.config.update("jax_enable_x64", True)


def f(x):
    return jnp.tanh(x) * x  # elementwise, smooth


def ref(x):
    return jnp.tanh(x) * x


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if "model name" in line]
        return names[0]
    except (OSError, IndexError):
        return platform.processor() or "unknown CPU"


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def warm_seconds(run, repeats: int = 5) -> float:
    return statistics.median(seconds(run) for _ in range(repeats))


def main() -> None:
    print(f"nproc {os.cpu_count()}, {cpu_model()}, jax {jax.__version__}")
    print(f"{'shape':<12} {'what':<26} {'cold s':>8} {'warm s':>8} {'warm / check_grads':>20}")
    for shape in ((64, 64), (512, 512)):
        x = jax.random.normal(jax.random.key(0), shape)
        runs = {
            "check_grads(order=2)": lambda x=x: check_grads(f, (x,), order=2, modes=["rev"]),
            "check_vjp(reference)": lambda x=x: check.check_vjp(f, ref, x),
            "check_vjp(None)": lambda x=x: check.check_vjp(f, None, x),
        }
        times = {k: (seconds(r), warm_seconds(r)) for k, r in runs.items()}
        base = times["check_grads(order=2)"][1]
        for k, (cold, warm) in times.items():
            print(f"{shape!s:<12} {k:<26} {cold:>8.2f} {warm:>8.2f} {warm / base:>20.2f}")


if __name__ == "__main__":
    main()
