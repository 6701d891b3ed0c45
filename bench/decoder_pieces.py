"""Where the decoder step of ``jaxchain bench --only decoder`` spends its time: the whole
step's forward and gradient, then one block's pieces, each as its forward and gradient (the
rules against autodiff of their twins), and the matrix products the step is made of, against
the float32 matmul rate::

    .venv/bin/python bench/decoder_pieces.py

Medians of 15 calls after two warm-up calls, in milliseconds (``bench/RESULTS.md``).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxchain import nn, reference, rules
from jaxchain.train import tasks

B, T, D, LAYERS, V = 16, 128, 192, 4, 1024  # bench_decoder's defaults


def ms(f, *args, n: int = 15) -> float:
    for _ in range(2):
        jax.block_until_ready(f(*args))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def pieces(ops, params, x, y, block, h, positions, q, k) -> dict:
    """Each piece as ``(function, arguments)``: the step's loss first, then one block's."""
    s = params["settings"]

    def loss(p):
        return nn.decoder.loss(p, x, y, ops=ops)

    def head(w, h):
        return ops.linear_softmax_cross_entropy(h.reshape(-1, D), w, y.reshape(-1))

    return {
        "step loss (forward)": (loss, (params,)),
        "one block": (
            lambda b, h: nn.decoder.apply_block(b, h, positions, settings=s, ops=ops)[0],
            (block, h),
        ),
        "SwiGLU and W_down": (
            lambda b, h: nn.decoder._feed_forward(ops, b, h, {}, 1.0),
            (block, h),
        ),
        "attention (GQA, causal)": (
            lambda q, k: ops.dot_product_attention(q, k, k, is_causal=True),
            (q, k),
        ),
        "q projection": (lambda w, h: nn.decoder._project(ops, h, w), (block["w_q"], h)),
        "RMSNorm": (lambda w, h: ops.rms_norm(h, w, 1e-6), (block["norm1"], h)),
        "RoPE": (lambda h: ops.rope(h, positions), (q,)),
        "head and cross-entropy": (head, (params["head"], h)),
    }


def main() -> None:
    params = nn.decoder.init(jax.random.key(0), V, **tasks.decoder_dims(D, LAYERS))
    tokens = jax.random.randint(jax.random.key(1), (B, T + 1), 0, V)
    x, y = tokens[:, :-1], tokens[:, 1:]
    block, h = params["blocks"][0], jax.random.normal(jax.random.key(2), (B, T, D))
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    heads, kv = block["w_q"].shape[1], block["w_k"].shape[1]
    q = jax.random.normal(jax.random.key(3), (B, T, heads, 64))
    k = jax.random.normal(jax.random.key(4), (B, T, kv, 64))
    print(f"{'':8} {'piece':28} {'forward':>8} {'gradient':>8}")
    for name, ops in (("rules", rules), ("autodiff", reference)):
        for piece, (f, args) in pieces(ops, params, x, y, block, h, positions, q, k).items():
            if piece.startswith("step"):  # the loss is a scalar already
                grad = jax.jit(jax.grad(f))
            else:
                grad = jax.jit(
                    jax.grad(lambda *a, f=f: jnp.sum(f(*a) ** 2), argnums=tuple(range(len(args))))
                )
            print(f"{name:8} {piece:28} {ms(jax.jit(f), *args):8.2f} {ms(grad, *args):8.2f}")
    tx = optax.adamw(1e-3)
    print(f"adamw update {ms(jax.jit(tx.update), params, tx.init(params), params):.2f}")
    m, f = B * T, tasks.decoder_dims(D, LAYERS)["d_ff"]
    a, b, g = (
        jax.random.normal(jax.random.key(i), s) for i, s in enumerate(((m, D), (D, f), (m, f)))
    )
    for label, fn, args in (
        ("x W", lambda a, b: a @ b, (a, b)),
        ("g W^T", lambda g, b: g @ b.T, (g, b)),
        ("x^T g", lambda a, g: a.T @ g, (a, g)),
    ):
        t = ms(jax.jit(fn), *args, n=30)
        print(f"matmul {label:6} ({m}x{D}x{f}): {t:.3f} ms, {2 * m * D * f / t / 1e6:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
