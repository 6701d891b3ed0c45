"""The affine layer ``y = x W + b``, the embedding lookup, the SwiGLU unit and LoRA's
low-rank update of a frozen affine layer."""

from functools import partial

import jax
import jax.numpy as jnp

from jaxchain._checks import check_dense, check_embedding, check_lora, check_swiglu
from jaxchain._primal.elementwise import silu_and_derivative
from jaxchain._primal.linear import affine, gated, lookup, low_rank, valid_ids
from jaxchain._primal.precision import wide


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
    return affine(x, w, b), (x, w)


def _dense_bwd(res, g):
    x, w = res
    rows = tuple(range(x.ndim - 1))  # the leading axes: every row of x is one example
    x_, w_, g_ = wide(x), wide(w), wide(g)
    dx = g_ @ w_.T  # dL/dx = g W^T            (..., I)
    # dL/dW = x^T g, formed as (g^T x)^T, as autodiff's transpose does: XLA lays out g for
    # the product and reads x as it is, with no transposing copy of x (which would recompute
    # x's producer, a gelu's erfc, inside the copy; bench/RESULTS.md)
    dw = jnp.tensordot(g_, x_, axes=(rows, rows)).T  # (I, O)
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


@jax.custom_vjp
def _embedding(ids, table):
    return lookup(ids, table)


def _embedding_fwd(ids, table):
    return _embedding(ids, table), (ids, table)


def _embedding_bwd(res, g):
    ids, table = res  # the table (an input, alive anyway) only for its shape
    rows = jnp.where(valid_ids(ids, table), ids, table.shape[0])  # an invalid id: dropped
    d_table = jnp.zeros(table.shape, wide(g).dtype).at[rows].add(wide(g), mode="drop")
    return None, d_table.astype(table.dtype)  # scatter-added rows of g (float32 sums)


_embedding.defvjp(_embedding_fwd, _embedding_bwd)


def swiglu(x: jax.Array, w_gate: jax.Array, w_up: jax.Array) -> jax.Array:
    r"""The gated feed-forward unit of Llama, :math:`y = \operatorname{silu}(x W_g) \odot x W_u`.

    With :math:`a = x W_g`, :math:`u = x W_u`, :math:`g = \partial L / \partial y` and the
    leading axes of ``x`` flattened into rows:

    .. math:: du = g \odot \operatorname{silu}(a), \quad
              da = g \odot u \odot \operatorname{silu}'(a), \quad
              \frac{\partial L}{\partial W_g} = x^\top da, \quad
              \frac{\partial L}{\partial W_u} = x^\top du, \quad
              \frac{\partial L}{\partial x} = da\, W_g^\top + du\, W_u^\top,

    :math:`\operatorname{silu}'(a) = \sigma(a)(1 + a(1 - \sigma(a)))`. Saves ``x``, the
    weights (inputs) and the two pre-activations ``a`` and ``u`` (recomputing them would be
    two more products); ``silu(a)`` and its derivative are recomputed from one sigmoid.
    bfloat16 and float16 are multiplied in float32.

    Args:
      x: ``(..., D)``.
      w_gate: ``(D, F)``.
      w_up: ``(D, F)``.

    Returns:
      ``(..., F)``; the down projection that follows is a :func:`dense` (or a matmul).
    """
    return _swiglu(*check_swiglu("swiglu", x, w_gate, w_up))


@jax.custom_vjp
def _swiglu(x, w_gate, w_up):
    return _swiglu_fwd(x, w_gate, w_up)[0]


def _swiglu_fwd(x, w_gate, w_up):
    y, a, u = gated(x, w_gate, w_up)
    return y, (x, w_gate, w_up, a.astype(x.dtype), u.astype(x.dtype))


def _swiglu_bwd(res, g):
    x, w_gate, w_up, a, u = res
    rows = tuple(range(x.ndim - 1))
    x_, g_ = wide(x), wide(g)
    act, d_act = silu_and_derivative(wide(a))
    du = g_ * act  # dL/du = g silu(a)
    da = g_ * wide(u) * d_act  # dL/da = g u silu'(a)
    dw_gate = jnp.tensordot(x_, da, axes=(rows, rows))  # x^T da
    dw_up = jnp.tensordot(x_, du, axes=(rows, rows))  # x^T du
    dx = da @ wide(w_gate).T + du @ wide(w_up).T
    return dx.astype(x.dtype), dw_gate.astype(w_gate.dtype), dw_up.astype(w_up.dtype)


_swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


def lora_dense(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array,
    lora_a: jax.Array,
    lora_b: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    r"""A frozen affine layer with a trainable low-rank update (LoRA),
    :math:`y = x W + b + s\,(x A) B`.

    ``W`` and ``b`` are frozen: the backward pass computes no gradient for them (their
    cotangents are symbolic zeros), which is LoRA's saving. With :math:`g = \partial L/\partial
    y`, :math:`h = x A` ``(..., R)`` and rows as in :func:`dense`:

    .. math:: \frac{\partial L}{\partial B} = s\,h^\top g, \quad
              \frac{\partial L}{\partial A} = s\,x^\top (g B^\top), \quad
              \frac{\partial L}{\partial x} = g W^\top + s\,(g B^\top) A^\top.

    Saves ``x``, the weights (inputs) and ``h``, ``R`` numbers per row. bfloat16 and float16
    are multiplied in float32.

    Args:
      x: ``(..., I)``.
      w: ``(I, O)`` frozen weights.
      b: ``(O,)`` frozen bias.
      lora_a: ``(I, R)`` (LoRA initialises it random).
      lora_b: ``(R, O)`` (LoRA initialises it zero, so that training starts at ``x W + b``).
      scale: :math:`s`, LoRA's ``alpha / R``.

    Returns:
      ``(..., O)``.
    """
    x, w, b, lora_a, lora_b, scale = check_lora("lora_dense", x, w, b, lora_a, lora_b, scale)
    return _lora_dense(x, w, b, lora_a, lora_b, scale)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _lora_dense(x, w, b, lora_a, lora_b, scale):
    return _lora_dense_fwd(x, w, b, lora_a, lora_b, scale)[0]


def _lora_dense_fwd(x, w, b, lora_a, lora_b, scale):
    y, h = low_rank(x, w, b, lora_a, lora_b, scale)
    return y, (x, w, lora_a, lora_b, h.astype(x.dtype))


def _lora_dense_bwd(scale, res, g):
    x, w, lora_a, lora_b, h = res
    rows = tuple(range(x.ndim - 1))
    g_ = wide(g)
    gb = g_ @ wide(lora_b).T  # g B^T  (..., R)
    d_b = scale * jnp.tensordot(wide(h), g_, axes=(rows, rows))  # s h^T g   (R, O)
    d_a = scale * jnp.tensordot(wide(x), gb, axes=(rows, rows))  # s x^T g B^T   (I, R)
    dx = g_ @ wide(w).T + scale * (gb @ wide(lora_a).T)
    return dx.astype(x.dtype), None, None, d_a.astype(lora_a.dtype), d_b.astype(lora_b.dtype)


_lora_dense.defvjp(_lora_dense_fwd, _lora_dense_bwd)
