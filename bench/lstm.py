"""LSTM training step (loss and gradients): hand-written BPTT against jax.grad through lax.scan.

    python bench/lstm.py [--T 100] [--B 32] [--I 128] [--H 128] [--json bench/out/lstm.json]

Prints a markdown line: the median step time of each, their ratio (autodiff / manual, > 1
means the hand-written rule is faster) and the ratio of compiled temporary memory.
"""

import argparse
import pathlib

import jax
import jax.numpy as jnp

from jaxchain import nn, reference, rules
from jaxchain.benchmarks import median_seconds, report, temp_bytes


def step(ops):
    def loss(params, xs):
        hs, (h, c) = nn.lstm.apply(params, xs, ops=ops)
        return jnp.mean(hs**2) + jnp.mean(h * c)

    return jax.value_and_grad(loss)


def run(t: int, b: int, i: int, h: int) -> dict:
    params = nn.lstm.init(jax.random.key(0), i, h)
    xs = jax.random.normal(jax.random.key(1), (b, t, i), jnp.float32)
    result = {"T": t, "B": b, "I": i, "H": h}
    steps = {"manual": step(rules), "autodiff": step(reference)}
    seconds = median_seconds({k: jax.jit(f) for k, f in steps.items()}, params, xs, rounds=30)
    for name, f in steps.items():
        result[f"{name}_seconds"] = seconds[name]
        result[f"{name}_temp_bytes"] = temp_bytes(f, params, xs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for dim, default in (("T", 100), ("B", 32), ("I", 128), ("H", 128)):
        parser.add_argument(f"--{dim}", type=int, default=default)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args()
    report(run(args.T, args.B, args.I, args.H), ["T", "B", "I", "H"], args.json)


if __name__ == "__main__":
    main()
