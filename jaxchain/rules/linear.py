"""The affine layer ``y = x W + b``."""

import jax
import jax.numpy as jnp

from jaxchain import _validate
from jaxchain._checks import check_dense, check_embedding
from jaxchain.rules._precision import wide


def dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    r"""Affine map over the last axis, :math:`y = x W + b`.

    With :math:`g = \partial L / \partial y` and the leading axes of ``x`` flattened into rows,

    .. math:: \frac{\partial L}{\partial x} = g W^\top, \quad
              \frac{\partial L}{\partial W} = x^\top g, \quad
              \frac{\partial L}{\partial b} = \textstyle\sum_{\text{rows}} g.

    Saves the inputs ``x`` and ``w`` (alive anyway); nothing new. bfloat16 and float16 are
    multiplied in float32 (the CPU has no float16 product that accumulates in float32).

    Args:
      x: ``(..., I)`` inputs.
      w: ``(I, O)`` weights.
      b: ``(O,)`` bias.

    Returns:
      ``(..., O)``.

    >>> dense(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.zeros(4)).shape
    (2, 4)
    """
    return _dense(*check_dense("dense", x, w, b))


@jax.custom_vjp
def _dense(x, w, b):
    return _dense_fwd(x, w, b)[0]


def _dense_fwd(x, w, b):
    y = wide(x) @ wide(w) + _validate.along_last_axis(wide(b), x.ndim)
    return y.astype(x.dtype), (x, w)


def _dense_bwd(res, g):
    x, w = res
    rows = tuple(range(x.ndim - 1))  # the leading axes: every row of x is one example
    x_, w_, g_ = wide(x), wide(w), wide(g)
    dx = g_ @ w_.T  # dL/dx = g W^T            (..., I)
    dw = jnp.tensordot(x_, g_, axes=(rows, rows))  # dL/dW = x^T g     (I, O)
    db = jnp.sum(g_, axis=rows)  # dL/db = sum_rows g      (O,)
    return dx.astype(x.dtype), dw.astype(w.dtype), db.astype(w.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def embedding(ids: jax.Array, table: jax.Array) -> jax.Array:
    r"""Row lookup, :math:`y_{\ldots} = E[\text{ids}_{\ldots}]` — a product with a one-hot matrix.

    .. math:: \frac{\partial L}{\partial E_v} = \sum_{\text{positions with id } v} g

    (a scatter-add of the cotangent rows). Saves the ids (and refers to the table, an input,
    for its shape). An id outside ``[0, V)`` (possible only inside ``jit``, where the checks
    cannot see values) gives a NaN row and adds nothing to the table's gradient.

    Args:
      ids: integer array of any shape, values in ``[0, V)``.
      table: ``(V, D)``.

    Returns:
      ``ids.shape + (D,)``.
    """
    return _embedding(*check_embedding("embedding", ids, table))


def _valid(ids, table):
    return (ids >= 0) & (ids < table.shape[0])


@jax.custom_vjp
def _embedding(ids, table):
    rows = jnp.take(table, jnp.clip(ids, 0, max(table.shape[0] - 1, 0)), axis=0)
    return jnp.where(_valid(ids, table)[..., None], rows, jnp.nan)


def _embedding_fwd(ids, table):
    return _embedding(ids, table), (ids, table)


def _embedding_bwd(res, g):
    ids, table = res  # the table (an input, alive anyway) only for its shape
    rows = jnp.where(_valid(ids, table), ids, table.shape[0])  # an invalid id: dropped
    d_table = jnp.zeros(table.shape, wide(g).dtype).at[rows].add(wide(g), mode="drop")
    return None, d_table.astype(table.dtype)  # scatter-added rows of g (float32 sums)


_embedding.defvjp(_embedding_fwd, _embedding_bwd)
