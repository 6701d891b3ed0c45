"""Scaled dot-product attention.

Shape letters: B batch, T query length, S key length, N heads, H head size.
"""

import math

import jax
import jax.numpy as jnp

from jaxchain import _validate

_OP = "dot_product_attention"


def check_attention(q, k, v, mask, is_causal: bool) -> tuple:
    """Validate the arguments and fold ``mask`` and ``is_causal`` into one boolean mask.

    Returns ``(q, k, v, allowed)`` where ``allowed`` is ``None`` (everything may attend) or a
    boolean array broadcastable to ``(B, N, T, S)``, True = may attend.
    """
    q, k, v = (_validate.as_array(_OP, n, a) for n, a in (("q", q), ("k", k), ("v", v)))
    _validate.floating(_OP, q=q, k=k, v=v)
    _validate.rank(_OP, "q", q, 4, "(B, T, N, H)")
    _validate.rank(_OP, "k", k, 4, "(B, S, N, H)")
    b, t, n, h = q.shape
    s = k.shape[1]
    _validate.shape(_OP, "k", k, (b, s, n, h), f"(B, S, N, H) with B, N, H = {b}, {n}, {h} of q")
    _validate.shape(_OP, "v", v, k.shape, "the shape of k")
    allowed = None
    if mask is not None:
        allowed = _validate.as_array(_OP, "mask", mask)
        _validate.boolean(_OP, "mask", allowed)
        _validate.broadcastable(_OP, "mask", allowed, (b, n, t, s), "(B, N, T, S)")
    if is_causal:
        causal = jnp.tril(jnp.ones((1, 1, t, s), dtype=bool))  # query i sees keys j <= i
        allowed = causal if allowed is None else allowed & causal
    return q, k, v, allowed


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    *,
    is_causal: bool = False,
) -> jax.Array:
    r"""Scaled dot-product attention, :math:`O = \operatorname{softmax}(Q K^\top / \sqrt{H}) V`.

    With :math:`S = QK^\top/\sqrt H`, :math:`P = \operatorname{softmax}(S)` row-wise,
    :math:`dO = \partial L/\partial O` and :math:`D = \operatorname{rowsum}(dO \odot O)`:

    .. math:: dV = P^\top dO, \quad dP = dO\,V^\top, \quad dS = P \odot (dP - D), \quad
              dQ = dS\,K / \sqrt H, \quad dK = dS^\top Q / \sqrt H.

    (:math:`D` is :math:`\operatorname{rowsum}(dP \odot P)`, the softmax Jacobian's
    correction, read off the output instead of the ``(T, S)`` matrices.) Saves ``q, k, v``,
    the output and the per-row log-sum-exp ``(B, N, T)``; the probabilities are recomputed
    from the log-sum-exp in the backward pass, so no ``(T, S)`` matrix is kept.

    A query row with nothing to attend to (fully masked) yields zeros and zero gradients.

    Args:
      q: ``(B, T, N, H)`` queries.
      k: ``(B, S, N, H)`` keys.
      v: ``(B, S, N, H)`` values.
      mask: optional boolean, broadcastable to ``(B, N, T, S)``; True = may attend.
      is_causal: if True, query ``i`` attends only to keys ``j <= i``.

    Returns:
      ``(B, T, N, H)``.
    """
    return _attention(*check_attention(q, k, v, mask, is_causal))


def _scores(q, k, allowed):
    s = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])  # (B, N, T, S)
    return s if allowed is None else jnp.where(allowed, s, -jnp.inf)


def _log_sum_exp(s):
    """Row log-sum-exp of ``(B, N, T, S)`` scores; ``+inf`` for a fully masked row, so that
    ``exp(s - lse)`` is 0 there instead of NaN."""
    m = jnp.max(s, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0)
    total = jnp.sum(jnp.exp(s - m), axis=-1)  # (B, N, T)
    return jnp.where(total > 0, m[..., 0] + jnp.log(total), jnp.inf)


@jax.custom_vjp
def _attention(q, k, v, allowed):
    return _attention_fwd(q, k, v, allowed)[0]


def _attention_fwd(q, k, v, allowed):
    s = _scores(q, k, allowed)
    lse = _log_sum_exp(s)  # (B, N, T)
    p = jnp.exp(s - lse[..., None])  # (B, N, T, S)
    o = jnp.einsum("bnts,bsnh->btnh", p, v)  # (B, T, N, H)
    return o, (q, k, v, allowed, o, lse)


def _attention_bwd(res, g):
    q, k, v, allowed, o, lse = res
    p = jnp.exp(_scores(q, k, allowed) - lse[..., None])  # recomputed P   (B, N, T, S)
    dv = jnp.einsum("bnts,btnh->bsnh", p, g)  # dV = P^T dO
    dp = jnp.einsum("btnh,bsnh->bnts", g, v)  # dP = dO V^T
    d = jnp.einsum("btnh,btnh->bnt", g, o)  # D = rowsum(dO * O)
    ds = p * (dp - d[..., None]) / math.sqrt(q.shape[-1])  # dS, with the 1/sqrt(H)
    dq = jnp.einsum("bnts,bsnh->btnh", ds, k)  # dQ = dS K
    dk = jnp.einsum("bnts,btnh->bsnh", ds, q)  # dK = dS^T Q
    return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)
