"""LSTM training step (loss and gradients): hand-written BPTT against jax.grad through lax.scan.

    python bench/lstm.py [--T 100] [--B 32] [--I 128] [--H 128] [--json bench/out/lstm.json]

Prints a markdown line: the median step time of each, their ratio (autodiff / manual, > 1
means the hand-written rule is faster) and the ratio of compiled temporary memory.
"""

import argparse
import json
import pathlib
import platform

import jax
import jax.numpy as jnp

from jaxchain import nn, reference, rules
from jaxchain.benchmarks import median_seconds, temp_bytes


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
    result["speedup"] = result["autodiff_seconds"] / result["manual_seconds"]
    result["temp_ratio"] = result["manual_temp_bytes"] / result["autodiff_temp_bytes"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for dim, default in (("T", 100), ("B", 32), ("I", 128), ("H", 128)):
        parser.add_argument(f"--{dim}", type=int, default=default)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args()
    r = run(args.T, args.B, args.I, args.H)
    print("| T | B | I | H | manual ms | autodiff ms | speed-up | temp MiB manual / autodiff |")
    print("|---|---|---|---|---|---|---|---|")
    mib = 2**20
    print(
        f"| {r['T']} | {r['B']} | {r['I']} | {r['H']} | {1e3 * r['manual_seconds']:.2f} "
        f"| {1e3 * r['autodiff_seconds']:.2f} | {r['speedup']:.2f}x "
        f"| {r['manual_temp_bytes'] / mib:.2f} / {r['autodiff_temp_bytes'] / mib:.2f} "
        f"({r['temp_ratio']:.2f}x) |"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        r["machine"] = f"{platform.processor() or platform.machine()}, {jax.devices()[0]}"
        r["jax"] = jax.__version__
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
