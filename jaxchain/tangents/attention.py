"""Forward-mode rule of scaled dot-product attention, straightforward and blockwise."""

from functools import partial

import jax
import jax.numpy as jnp

from jaxchain._primal.attention import attend, logits, online, weighted, weights


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    block_size: int | tuple[int, int] | None = None,
) -> jax.Array:
    r"""Scaled dot-product attention, :math:`O = PV`, :math:`P = \operatorname{softmax}(Z)`,
    :math:`Z = c\,QK^\top + B`, with the signature and semantics of
    :func:`jaxchain.rules.dot_product_attention` (a drop-in for
    :func:`jax.nn.dot_product_attention`). JVP, with :math:`S = P \odot \dot Z`:

    .. math:: \dot Z = c\,(\dot Q K^\top + Q \dot K^\top) + \dot B, \qquad
              \dot P = S - P \odot \operatorname{rowsum}(S), \qquad
              \dot O = \dot P V + P \dot V = S V + P \dot V - \operatorname{rowsum}(S)\,O.

    The blockwise path computes it in the forward pass's single sweep over key blocks: the
    online softmax rescales :math:`S V + P \dot V` and :math:`\operatorname{rowsum}(S)` as it
    rescales the output, so no ``(T, S)`` array (of values or of tangents) exists.
    """
    return attend(
        _attention,
        _blockwise,
        query,
        key,
        value,
        bias,
        mask,
        scale,
        is_causal,
        query_seq_lengths,
        key_value_seq_lengths,
        local_window_size,
        block_size,
    )


@partial(jax.custom_jvp, nondiff_argnums=(5,))
def _attention(q, k, v, bias, allowed, scale):
    return weighted(weights(q, k, bias, allowed, scale)[0], v).astype(q.dtype)


@_attention.defjvp
def _attention_jvp(scale, primals, tangents):
    (q, k, v, bias, allowed), (dq, dk, dv, d_bias, _) = primals, tangents
    p = weights(q, k, bias, allowed, scale)[0]  # (B, K, T, G, S), zero where hidden
    o = weighted(p, v)  # (B, T, K, G, H)
    dz = logits(dq, k, d_bias, None, scale) + logits(q, dk, None, None, scale)
    s = p * dz
    do = weighted(s, v) + weighted(p, dv) - jnp.moveaxis(jnp.sum(s, -1), 2, 1)[..., None] * o
    return o.astype(q.dtype), do.astype(q.dtype)


@partial(jax.custom_jvp, nondiff_argnums=(7, 8, 9, 10))
def _blockwise(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk):
    return online(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk)[0]


@_blockwise.defjvp
def _blockwise_jvp(scale, span, bq, bk, primals, tangents):
    q, k, v, bias, mask, q_len, kv_len = primals
    o, _, _, do = online(
        q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk, tangents=tangents[:4]
    )
    return o, do.astype(q.dtype)
