"""The affine layer ``y = x W + b``, the embedding lookup, the SwiGLU unit, LoRA's low-rank
update of a frozen affine layer, and the SwiGLU unit with LoRA on its two projections."""

from functools import partial

import jax
import jax.numpy as jnp

from jaxchain._checks import (
    check_dense,
    check_embedding,
    check_lora,
    check_lora_swiglu,
    check_swiglu,
)
from jaxchain._primal.elementwise import silu_and_derivative
from jaxchain._primal.linear import (
    affine,
    gated,
    gated_low_rank,
    lookup,
    low_rank,
    rows_t_times,
    valid_ids,
)
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
    dw = rows_t_times(x_, g_)  # dL/dW = x^T g  (I, O)
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


def lora_swiglu(
    x: jax.Array,
    w_gate: jax.Array,
    w_up: jax.Array,
    gate_a: jax.Array,
    gate_b: jax.Array,
    up_a: jax.Array,
    up_b: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    r"""SwiGLU with LoRA on both projections, :math:`y = \operatorname{silu}(a) \odot u`,
    :math:`a = x W_g + s\,(x A_g) B_g`, :math:`u = x W_u + s\,(x A_u) B_u`: one rule for
    what would be two :func:`lora_dense` calls, a silu and a product.

    ``W_g`` and ``W_u`` are frozen (symbolic zero cotangents, as in :func:`lora_dense`). With
    :math:`g = \partial L / \partial y`, :math:`h_g = x A_g`, :math:`h_u = x A_u` ``(..., R)``
    and rows as in :func:`dense`:

    .. math:: du = g \odot \operatorname{silu}(a), \quad
              da = g \odot u \odot \operatorname{silu}'(a), \\
              \frac{\partial L}{\partial B_g} = s\,h_g^\top da, \quad
              \frac{\partial L}{\partial A_g} = s\,x^\top (da\, B_g^\top), \quad
              \frac{\partial L}{\partial B_u} = s\,h_u^\top du, \quad
              \frac{\partial L}{\partial A_u} = s\,x^\top (du\, B_u^\top), \\
              \frac{\partial L}{\partial x} = da\, W_g^\top + du\, W_u^\top
                  + s\,(da\, B_g^\top) A_g^\top + s\,(du\, B_u^\top) A_u^\top.

    Saves ``x``, the weights (inputs), the pre-activations ``a`` and ``u`` and ``h_g``,
    ``h_u`` (``R`` numbers per row each); ``silu(a)`` and its derivative are recomputed from
    one sigmoid, as in :func:`swiglu`. bfloat16 and float16 are multiplied in float32.

    Args:
      x: ``(..., D)``.
      w_gate: ``(D, F)`` frozen.
      w_up: ``(D, F)`` frozen.
      gate_a: ``(D, R)``, the gate's :math:`A_g`.
      gate_b: ``(R, F)``, the gate's :math:`B_g`.
      up_a: ``(D, R')``, the up projection's :math:`A_u`.
      up_b: ``(R', F)``, the up projection's :math:`B_u`.
      scale: :math:`s`, LoRA's ``alpha / R``.

    Returns:
      ``(..., F)``.
    """
    checked = check_lora_swiglu("lora_swiglu", x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale)
    return _lora_swiglu(*checked)


@partial(jax.custom_vjp, nondiff_argnums=(7,))
def _lora_swiglu(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale):
    return _lora_swiglu_fwd(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale)[0]


def _lora_swiglu_fwd(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale):
    y, *kept = gated_low_rank(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale)
    a, u, h_gate, h_up = (t.astype(x.dtype) for t in kept)
    return y, (x, w_gate, w_up, gate_a, gate_b, up_a, up_b, a, u, h_gate, h_up)


def _lora_swiglu_bwd(scale, res, g):
    x, w_gate, w_up, gate_a, gate_b, up_a, up_b, a, u, h_gate, h_up = res
    rows = tuple(range(x.ndim - 1))
    g_ = wide(g)
    act, d_act = silu_and_derivative(wide(a))
    du = g_ * act  # dL/du = g silu(a)
    da = g_ * wide(u) * d_act  # dL/da = g u silu'(a)
    d_ga, d_gb, dx_gate = _adapter_bwd(scale, x, h_gate, gate_a, gate_b, da, rows)
    d_ua, d_ub, dx_up = _adapter_bwd(scale, x, h_up, up_a, up_b, du, rows)
    # da W_g^T + du W_u^T as one product [da | du] [W_g | W_u]^T: the sum of two products
    # made the unit 1.7-2x slower than two lora_dense on XLA's CPU; the one, 0.7-0.9x
    d_gu = jnp.concatenate([da, du], axis=-1)  # (..., 2F)
    dx = d_gu @ wide(jnp.concatenate([w_gate, w_up], axis=1)).T + dx_gate + dx_up  # no dW
    return dx.astype(x.dtype), None, None, d_ga, d_gb, d_ua, d_ub


def _adapter_bwd(scale, x, h, lora_a, lora_b, d, rows):
    """The adapter's part of the backward of ``z = x W + s (x A) B`` under ``d = dL/dz``:
    ``(dA, dB, dx's low-rank term)``; weight gradients as :func:`dense` forms them."""
    d_bt = d @ wide(lora_b).T  # d B^T  (..., R)
    d_b = scale * jnp.tensordot(d, wide(h), axes=(rows, rows)).T  # s h^T d  (R, F)
    d_a = scale * jnp.tensordot(d_bt, wide(x), axes=(rows, rows)).T  # s x^T (d B^T)  (D, R)
    dx = scale * (d_bt @ wide(lora_a).T)  # s (d B^T) A^T  (..., D)
    return d_a.astype(lora_a.dtype), d_b.astype(lora_b.dtype), dx


_lora_swiglu.defvjp(_lora_swiglu_fwd, _lora_swiglu_bwd)
