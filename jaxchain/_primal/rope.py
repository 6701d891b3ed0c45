"""Rotary position embedding: each pair of features rotated by a position's angle."""

import jax.numpy as jnp

from jaxchain._primal.precision import wide


def _cos_sin(positions, h: int, base: float, dtype):
    """``cos θ`` and ``sin θ``, ``(B|1, T, 1, H/2)``, each angle's computed once.

    Left alone, XLA:CPU fuses ``cos`` and ``sin`` into the rotation that reads them and
    evaluates both for every element of ``x``: ``N`` heads times (and ``B`` times for
    positions ``(1, T)``) the angles there are. A gather is a fusion boundary it keeps, so
    each table is read through one at indices ``0 ..< T`` (the rope of a decoder step's
    queries and keys runs 3.7x faster, ``bench/RESULTS.md``)."""
    inverse = base ** (-jnp.arange(0, h, 2, dtype=dtype) / h)  # beta^(-2j/H)
    theta = positions[..., None].astype(dtype) * inverse[None, None]  # (B|1, T, H/2)
    every = jnp.arange(theta.shape[1])
    cos, sin = (jnp.take(f(theta), every, axis=1, mode="clip") for f in _TRIG)
    return cos[:, :, None], sin[:, :, None]


_TRIG = (jnp.cos, jnp.sin)


def _rotate(x, cos, sin):
    """Each pair ``(x_j, x_{j+H/2})`` rotated by the angle whose cosine and sine are given."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def rotated(x, positions, base: float, sign: int = 1):
    """``x`` rotated by the angles at ``positions`` (by minus them for ``sign=-1``)."""
    x_ = wide(x)
    cos, sin = _cos_sin(positions, x.shape[-1], base, x_.dtype)
    return _rotate(x_, cos, sign * sin).astype(x.dtype)
