"""Forward-mode rules of the affine layer, the embedding lookup, SwiGLU, LoRA and the two
together.

Products are bilinear, so each JVP is the product rule: one term per factor that moves,
:math:`(x W)^\\cdot = \\dot x W + x \\dot W`.
"""

from functools import partial

import jax

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
    along_last_axis,
    gated,
    gated_low_rank,
    lookup,
    low_rank,
)
from jaxchain._primal.precision import wide


def _bias(b, ndim: int):
    return along_last_axis(wide(b), ndim)


def dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    r"""Affine map over the last axis, :math:`y = x W + b`; JVP
    :math:`\dot y = \dot x W + x \dot W + \dot b`. See :func:`jaxchain.rules.dense`."""
    return _dense(*check_dense("dense", x, w, b))


@jax.custom_jvp
def _dense(x, w, b):
    return affine(x, w, b)


@_dense.defjvp
def _dense_jvp(primals, tangents):
    (x, w, b), (dx, dw, db) = primals, tangents
    dy = wide(dx) @ wide(w) + wide(x) @ wide(dw) + _bias(db, x.ndim)
    return affine(x, w, b), dy.astype(x.dtype)


def embedding(ids: jax.Array, table: jax.Array) -> jax.Array:
    r"""Row lookup, :math:`y = E[\text{ids}]`; linear in the table, so its JVP is the same
    lookup of the table's tangent, :math:`\dot y = \dot E[\text{ids}]` (zero rows where an
    id is invalid, whose output is NaN). See :func:`jaxchain.rules.embedding`."""
    return _embedding(*check_embedding("embedding", ids, table))


@jax.custom_jvp
def _embedding(ids, table):
    return lookup(ids, table)


@_embedding.defjvp
def _embedding_jvp(primals, tangents):
    (ids, table), (_, d_table) = primals, tangents
    return lookup(ids, table), lookup(ids, d_table, fill=0)


def swiglu(x: jax.Array, w_gate: jax.Array, w_up: jax.Array) -> jax.Array:
    r""":math:`y = \operatorname{silu}(a) \odot u`, :math:`a = x W_g`, :math:`u = x W_u`; JVP

    .. math:: \dot a = \dot x W_g + x \dot W_g, \quad \dot u = \dot x W_u + x \dot W_u, \quad
              \dot y = \operatorname{silu}'(a)\,\dot a \odot u + \operatorname{silu}(a)\,\dot u.

    See :func:`jaxchain.rules.swiglu`."""
    return _swiglu(*check_swiglu("swiglu", x, w_gate, w_up))


@jax.custom_jvp
def _swiglu(x, w_gate, w_up):
    return gated(x, w_gate, w_up)[0]


@_swiglu.defjvp
def _swiglu_jvp(primals, tangents):
    (x, w_gate, w_up), (dx, d_gate, d_up) = primals, tangents
    y, a, u = gated(x, w_gate, w_up)
    x_, dx_ = wide(x), wide(dx)
    act, d_act = silu_and_derivative(a)
    da = dx_ @ wide(w_gate) + x_ @ wide(d_gate)
    du = dx_ @ wide(w_up) + x_ @ wide(d_up)
    return y, (d_act * da * u + act * du).astype(x.dtype)


def lora_dense(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array,
    lora_a: jax.Array,
    lora_b: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    r""":math:`y = x W + b + s\,(x A) B` with ``W`` and ``b`` frozen: their tangents are not
    read (constants of the function, as the reverse rule gives them no gradient). JVP

    .. math:: \dot y = \dot x W + s\,\big((\dot x A + x \dot A) B + (x A) \dot B\big).

    See :func:`jaxchain.rules.lora_dense`."""
    x, w, b, lora_a, lora_b, scale = check_lora("lora_dense", x, w, b, lora_a, lora_b, scale)
    return _lora_dense(x, w, b, lora_a, lora_b, scale)


@partial(jax.custom_jvp, nondiff_argnums=(5,))
def _lora_dense(x, w, b, lora_a, lora_b, scale):
    return low_rank(x, w, b, lora_a, lora_b, scale)[0]


@_lora_dense.defjvp
def _lora_dense_jvp(scale, primals, tangents):
    (x, w, b, lora_a, lora_b), (dx, _, _, d_a, d_b) = primals, tangents
    y, h = low_rank(x, w, b, lora_a, lora_b, scale)
    dx_ = wide(dx)
    dh = dx_ @ wide(lora_a) + wide(x) @ wide(d_a)
    dy = dx_ @ wide(w) + scale * (dh @ wide(lora_b) + h @ wide(d_b))
    return y, dy.astype(x.dtype)


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
    r""":math:`y = \operatorname{silu}(a) \odot u`, :math:`a = x W_g + s\,(x A_g) B_g`,
    :math:`u = x W_u + s\,(x A_u) B_u`, with ``W_g`` and ``W_u`` frozen (their tangents are
    not read, as in :func:`lora_dense`). With :math:`h_g = x A_g`, :math:`h_u = x A_u`, JVP

    .. math:: \dot a = \dot x W_g + s\,\big((\dot x A_g + x \dot A_g) B_g + h_g \dot B_g\big),
              \quad \dot u = \dot x W_u + s\,\big((\dot x A_u + x \dot A_u) B_u
              + h_u \dot B_u\big), \quad
              \dot y = \operatorname{silu}'(a)\,\dot a \odot u + \operatorname{silu}(a)\,\dot u.

    See :func:`jaxchain.rules.lora_swiglu`."""
    checked = check_lora_swiglu("lora_swiglu", x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale)
    return _lora_swiglu(*checked)


@partial(jax.custom_jvp, nondiff_argnums=(7,))
def _lora_swiglu(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale):
    return gated_low_rank(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale)[0]


@_lora_swiglu.defjvp
def _lora_swiglu_jvp(scale, primals, tangents):
    x, w_gate, w_up, gate_a, gate_b, up_a, up_b = primals
    dx, _, _, d_ga, d_gb, d_ua, d_ub = tangents  # the frozen weights' tangents: not read
    y, a, u, h_gate, h_up = gated_low_rank(*primals, scale)
    x_, dx_ = wide(x), wide(dx)
    dh_gate = dx_ @ wide(gate_a) + x_ @ wide(d_ga)  # (x A_g)^. (..., R)
    dh_up = dx_ @ wide(up_a) + x_ @ wide(d_ua)
    da = dx_ @ wide(w_gate) + scale * (dh_gate @ wide(gate_b) + h_gate @ wide(d_gb))
    du = dx_ @ wide(w_up) + scale * (dh_up @ wide(up_b) + h_up @ wide(d_ub))
    act, d_act = silu_and_derivative(a)
    return y, (d_act * da * u + act * du).astype(x.dtype)
