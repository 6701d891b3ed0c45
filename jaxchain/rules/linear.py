"""The affine layer ``y = x W + b``."""

import jax
import jax.numpy as jnp

from jaxchain import _validate


def check_dense(op: str, x, w, b) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Validate ``dense``'s arguments: x ``(..., I)``, w ``(I, O)``, b ``(O,)``."""
    x, w, b = (_validate.as_array(op, n, a) for n, a in (("x", x), ("w", w), ("b", b)))
    _validate.floating(op, x=x, w=w, b=b)
    _validate.min_rank(op, "x", x, 1)
    _validate.rank(op, "w", w, 2, "(I, O)")
    _validate.shape(op, "w", w, (x.shape[-1], w.shape[1]), f"I = x.shape[-1] = {x.shape[-1]}")
    _validate.shape(op, "b", b, (w.shape[1],), f"O = w.shape[1] = {w.shape[1]}")
    return x, w, b


def dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    r"""Affine map over the last axis, :math:`y = x W + b`.

    With :math:`g = \partial L / \partial y` and the leading axes of ``x`` flattened into rows,

    .. math:: \frac{\partial L}{\partial x} = g W^\top, \quad
              \frac{\partial L}{\partial W} = x^\top g, \quad
              \frac{\partial L}{\partial b} = \textstyle\sum_{\text{rows}} g.

    Saves the inputs ``x`` and ``w`` (alive anyway); nothing new.

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
    return x @ w + _validate.along_last_axis(b, x.ndim)


def _dense_fwd(x, w, b):
    return _dense(x, w, b), (x, w)


def _dense_bwd(res, g):
    x, w = res
    rows = tuple(range(x.ndim - 1))  # the leading axes: every row of x is one example
    dx = g @ w.T  # dL/dx = g W^T            (..., I)
    dw = jnp.tensordot(x, g, axes=(rows, rows))  # dL/dW = x^T g     (I, O)
    db = jnp.sum(g, axis=rows)  # dL/db = sum_rows g      (O,)
    return dx, dw, db


_dense.defvjp(_dense_fwd, _dense_bwd)


def check_embedding(op: str, ids, table) -> tuple[jax.Array, jax.Array]:
    """ids: integers in ``[0, V)``; table: floating ``(V, D)``."""
    ids, table = _validate.as_array(op, "ids", ids), _validate.as_array(op, "table", table)
    _validate.integer(op, "ids", ids)
    _validate.rank(op, "table", table, 2, "(V, D)")
    _validate.floating(op, table=table)
    _validate.labels_in_range(op, ids, table.shape[0], name="ids")
    return ids, table


def embedding(ids: jax.Array, table: jax.Array) -> jax.Array:
    r"""Row lookup, :math:`y_{\ldots} = E[\text{ids}_{\ldots}]` — a product with a one-hot matrix.

    .. math:: \frac{\partial L}{\partial E_v} = \sum_{\text{positions with id } v} g

    (a scatter-add of the cotangent rows). Saves the ids (and refers to the table, an input,
    for its shape).

    Args:
      ids: integer array of any shape, values in ``[0, V)``.
      table: ``(V, D)``.

    Returns:
      ``ids.shape + (D,)``.
    """
    return _embedding(*check_embedding("embedding", ids, table))


@jax.custom_vjp
def _embedding(ids, table):
    return jnp.take(table, ids, axis=0)


def _embedding_fwd(ids, table):
    return _embedding(ids, table), (ids, table)


def _embedding_bwd(res, g):
    ids, table = res  # the table (an input, alive anyway) only for its shape
    return None, jnp.zeros_like(table).at[ids].add(g)  # scatter-add the rows of g


_embedding.defvjp(_embedding_fwd, _embedding_bwd)
