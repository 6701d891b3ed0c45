"""The blockwise attention path's block sizes: one attention layer's loss and gradients
(``B = N = 1``, ``H = 64``, float32) at each ``block_size`` — (queries, keys) per block —
with XLA's compiled temporary memory, and with ``--torch PYTHON`` PyTorch's
``scaled_dot_product_attention`` interleaved, one round of each after the other::

    .venv/bin/python bench/attention_blocks.py --torch ../jaxchain-torch/bin/python

Medians of 7 rounds after warm-up, in milliseconds (``bench/RESULTS.md``). The default block
is :data:`jaxchain._primal.attention.BLOCK`'s; ``jaxchain bench`` measures only it.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import benchmarks, rules

SIZES = {
    1024: ((512, 256), (512, 512), (1024, 512), (1024, 1024)),
    2048: ((512, 256), (512, 512), (1024, 512), (1024, 1024)),
    4096: ((512, 256), (512, 512), (1024, 512), (1024, 1024), (2048, 1024), (1024, 2048)),
}
ROUNDS = 7


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torch", metavar="PYTHON", help="an interpreter with torch")
    args = p.parse_args()
    peer = benchmarks.TorchPeer(args.torch) if args.torch else None
    print("| T | causal | block | ms | temp MiB | torch ms |\n|---|---|---|---|---|---|")
    for t, blocks in SIZES.items():
        keys = jax.random.split(jax.random.key(0), 4)
        q, k, v, ct = (jax.random.normal(key, (1, t, 1, 64), jnp.float32) for key in keys)
        for causal in (False, True):
            if peer is not None:
                peer.setup("attention", T=t, causal=causal, B=1, N=1, H=64)
            for block in blocks:

                def loss(q, k, v, block=block, causal=causal, ct=ct):
                    out = rules.dot_product_attention(q, k, v, is_causal=causal, block_size=block)
                    return jnp.sum(out * ct)

                step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
                temp = step.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes
                for _ in range(2):
                    jax.block_until_ready(step(q, k, v))
                mine, theirs = [], []
                for _ in range(ROUNDS):
                    start = time.perf_counter()
                    jax.block_until_ready(step(q, k, v))
                    mine.append(time.perf_counter() - start)
                    if peer is not None:
                        theirs.append(peer.step())
                torch_ms = f"{1e3 * np.median(theirs):.1f}" if theirs else "-"
                print(
                    f"| {t} | {causal} | {block} | {1e3 * np.median(mine):.1f} | "
                    f"{temp / 2**20:.1f} | {torch_ms} |",
                    flush=True,
                )
    if peer is not None:
        peer.close()


if __name__ == "__main__":
    main()
