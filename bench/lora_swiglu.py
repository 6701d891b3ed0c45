"""A decoder's LoRA fine-tuning step with the fused ``lora_swiglu`` rule against the path it
replaces (two ``lora_dense``, a silu and a product for the adapted SwiGLU unit), and the full
fine-tuning step (no adapters, the fused ``swiglu``) for scale::

    .venv/bin/python bench/lora_swiglu.py [--rounds 10] [--calls 5]

A step is the loss, its gradient and an AdamW update of what is trained (the adapters, or
every weight), jitted. The decoder is ``jaxchain bench --only decoder``'s (V = 1024, D = 192,
4 layers, B = 16, T = 128), with adapters of rank 8 on every target. The three steps run
interleaved: each round times ``--calls`` calls of each after a warm-up; the medians over the
rounds are printed in milliseconds, with their ratios.
"""

import argparse
import os
import platform
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxchain import nn, rules
from jaxchain.train import tasks

B, T, D, LAYERS, V, RANK = 16, 128, 192, 4, 1024, 8


def _old_lora_swiglu(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, *, scale):
    """What ``nn.decoder._feed_forward`` did with ``gate`` and ``up`` adapted before
    ``lora_swiglu``: each a ``lora_dense`` with a zero bias, then ``silu(gate) * up``."""
    zero = jnp.zeros((w_gate.shape[1],), x.dtype)
    gate = rules.lora_dense(x, w_gate, zero, gate_a, gate_b, scale=scale)
    return rules.silu(gate) * rules.lora_dense(x, w_up, zero, up_a, up_b, scale=scale)


#: The rules, with the adapted SwiGLU unit computed as before the fused rule.
OLD = types.SimpleNamespace(**{n: getattr(rules, n) for n in rules.__all__})
OLD.lora_swiglu = _old_lora_swiglu


def lora_step(ops, params, optimizer):
    """``(adapters, state, x, y) -> (adapters, state, loss)``: one AdamW step on the adapters."""

    def step(adapters, state, x, y):
        def loss(a):
            return nn.decoder.loss(params, x, y, lora=a, ops=ops)

        value, grads = jax.value_and_grad(loss)(adapters)
        updates, state = optimizer.update(grads, state, adapters)
        return optax.apply_updates(adapters, updates), state, value

    return jax.jit(step)


def full_step(optimizer):
    """``(params, state, x, y) -> (params, state, loss)``: one AdamW step on every weight."""

    def step(params, state, x, y):
        value, grads = jax.value_and_grad(nn.decoder.loss)(params, x, y)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    return jax.jit(step)


def timed(step, trained, state, x, y, calls: int) -> float:
    """The median of ``calls`` calls in milliseconds, each on the step's own output."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        trained, state, _ = jax.block_until_ready(step(trained, state, x, y))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or "unknown"


def steps(x, y) -> dict:
    """Each step with what it trains and its optimizer state, by name."""
    params = nn.decoder.init(jax.random.key(0), V, **tasks.decoder_dims(D, LAYERS))
    adapters = nn.lora.init(jax.random.key(1), params, RANK)
    optimizer = optax.adamw(1e-3)
    runs = {
        "LoRA, lora_swiglu (fused)": (lora_step(rules, params, optimizer), adapters),
        "LoRA, two lora_dense + silu": (lora_step(OLD, params, optimizer), adapters),
        "full fine-tuning": (full_step(optimizer), params),
    }
    return {name: (step, w, optimizer.init(w)) for name, (step, w) in runs.items()}


def measure(runs: dict, x, y, rounds: int, calls: int) -> dict:
    """The median over ``rounds`` of each step's median of ``calls``, interleaved."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (step, w, s) in runs.items():
            timed(step, w, s, x, y, 1)  # warm again after the others ran
            times[name].append(timed(step, w, s, x, y, calls))
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    tokens = jax.random.randint(jax.random.key(2), (B, T + 1), 0, V)
    x, y = tokens[:, :-1], tokens[:, 1:]
    runs = steps(x, y)
    losses = {name: float(step(w, s, x, y)[2]) for name, (step, w, s) in runs.items()}
    medians = measure(runs, x, y, args.rounds, args.calls)
    print(f"nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, jax {jax.__version__}")
    print(f"B={B} T={T} D={D} layers={LAYERS} V={V} rank={RANK}; medians of {args.rounds}")
    print(f"rounds of {args.calls} calls each, interleaved")
    for name, m in medians.items():
        print(f"{name:30} {m:8.1f} ms   first loss {losses[name]:.6f}")
    fused, old, full = medians.values()
    print(f"fused / old LoRA step:        {fused / old:.3f}")
    print(f"fused LoRA / full step:       {fused / full:.3f}")
    print(f"old LoRA / full step:         {old / full:.3f}")


if __name__ == "__main__":
    main()
