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
