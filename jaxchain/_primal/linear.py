"""The affine map, the embedding lookup, SwiGLU's gated product, LoRA's low-rank sum and the
two together."""

import math

import jax
import jax.numpy as jnp

from jaxchain._primal.precision import wide


def affine(x, w, b):
    """``x W + b``, in float32 for narrower inputs."""
    return (wide(x) @ wide(w) + along_last_axis(wide(b), x.ndim)).astype(x.dtype)


def valid_ids(ids, table):
    return (ids >= 0) & (ids < table.shape[0])


def lookup(ids, table, fill=jnp.nan):
    """The rows of ``table`` at ``ids``; rows of ``fill`` at invalid ids (NaN for the op; 0
    for its tangent, in :mod:`jaxchain.tangents`)."""
    rows = jnp.take(table, jnp.clip(ids, 0, max(table.shape[0] - 1, 0)), axis=0)
    return jnp.where(valid_ids(ids, table)[..., None], rows, fill)


def gated(x, w_gate, w_up):
    """``(silu(a) u, a, u)`` with ``a = x W_g``, ``u = x W_u``; ``y`` in x's dtype, the
    pre-activations in float32 for narrower inputs."""
    x_ = wide(x)
    a, u = x_ @ wide(w_gate), x_ @ wide(w_up)
    return (a * jax.nn.sigmoid(a) * u).astype(x.dtype), a, u


def low_rank(x, w, b, lora_a, lora_b, scale):
    """``(x W + b + s (x A) B, x A)``, in float32 for narrower inputs."""
    x_ = wide(x)
    h = x_ @ wide(lora_a)  # (..., R)
    y = x_ @ wide(w) + along_last_axis(wide(b), x.ndim) + scale * (h @ wide(lora_b))
    return y.astype(x.dtype), h


def gated_low_rank(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale):
    """``(silu(a) u, a, u, h_g, h_u)`` with ``h_g = x A_g``, ``a = x W_g + s h_g B_g`` and
    likewise for up; ``y`` in x's dtype, the rest in float32 for narrower inputs."""
    x_ = wide(x)
    h_gate, h_up = x_ @ wide(gate_a), x_ @ wide(up_a)  # (..., R)
    a = x_ @ wide(w_gate) + scale * (h_gate @ wide(gate_b))  # (..., F)
    u = x_ @ wide(w_up) + scale * (h_up @ wide(up_b))
    return (a * jax.nn.sigmoid(a) * u).astype(x.dtype), a, u, h_gate, h_up


def rows_t_times(x, g):
    """``x^T g`` over the rows (every leading axis) of ``x (..., I)`` and ``g (..., O)``: the
    weight gradient of ``x W``, ``(I, O)``.

    Formed as a product whose left operand is read as it is: XLA:CPU's default library,
    YNNPACK, refuses a product with a transposed left operand, and Eigen's is slower than a
    copy and YNNPACK's product together (``bench/RESULTS.md``). The narrower of ``x`` and
    ``g`` is the one transposed, behind optimisation barriers: when ``g`` is, the product is
    ``(g^T x)^T``, whose own transpose is a small ``(O, I)``. The wider one is often an
    activation, which XLA would recompute inside the transposing copy, element by element
    in transposed order (MiniLM's GELU: the step 12% slower)."""
    rows = math.prod(x.shape[:-1])  # explicit: a reshape to -1 fails on a zero width
    x2, g2 = x.reshape(rows, x.shape[-1]), g.reshape(rows, g.shape[-1])
    if g2.shape[1] < x2.shape[1]:
        return _barrier(_transposed(g2) @ x2).T
    return _transposed(x2) @ g2


def _transposed(a):
    return _barrier(_barrier(a).T)


_barrier = jax.lax.optimization_barrier


def along_last_axis(v: jax.Array, ndim: int) -> jax.Array:
    """A ``(D,)`` vector shaped ``(1, ..., 1, D)`` to broadcast against a rank-``ndim`` array
    (explicitly, so that code runs under ``jax_numpy_rank_promotion='raise'``)."""
    return jnp.reshape(v, (1,) * (ndim - 1) + (-1,))
