"""Dropout as the models apply it while training."""

import jax

from jaxchain.ops import Ops


def maybe(ops: Ops, x: jax.Array, rate: float, key: jax.Array | None, index: int = 0):
    """``ops.dropout`` of ``x`` with the ``index``-th key folded from ``key``; ``x`` itself
    without a key or at rate 0 (evaluation)."""
    if key is None or rate == 0:
        return x
    return ops.dropout(x, jax.random.fold_in(key, index), rate)
