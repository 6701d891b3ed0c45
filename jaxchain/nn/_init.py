"""Initialisers shared by the models (from ``jax.nn.initializers``).

* Glorot/Xavier uniform, :math:`U(\\pm\\sqrt{6 / (\\text{fan}_{in} + \\text{fan}_{out})})`,
  for layers followed by tanh or sigmoid, and for output layers: it keeps the variance of
  activations and of gradients roughly constant through a linear-ish layer.
* He normal, :math:`N(0, 2 / \\text{fan}_{in})`, for layers followed by ReLU (or GELU), which
  zero half of their inputs.
* Orthogonal recurrent weights (one orthogonal ``(H, H)`` block per gate): all singular values
  1, so repeated multiplication by ``W_h`` through time neither explodes nor vanishes at the
  start of training.
"""

import jax
import jax.numpy as jnp

glorot = jax.nn.initializers.glorot_uniform()
he = jax.nn.initializers.he_normal()
_orthogonal = jax.nn.initializers.orthogonal()


def orthogonal_gates(key: jax.Array, hidden: int, gates: int, dtype) -> jax.Array:
    """``(H, gates H)``: one orthogonal ``(H, H)`` block per gate (made in float32, as the QR
    it takes has no bfloat16 or float16 kernel, then cast)."""
    keys = jax.random.split(key, gates)
    blocks = [_orthogonal(k, (hidden, hidden), jnp.float32) for k in keys]
    return jnp.concatenate(blocks, axis=1).astype(dtype)


def by_activation(activation: str):
    """He for ReLU-like activations, Glorot for saturating ones."""
    return he if activation in ("relu", "gelu") else glorot
