"""Scaled dot-product attention, a drop-in for :func:`jax.nn.dot_product_attention`:
straightforward for short sequences, blockwise (memory-efficient, "flash") for long ones.

Shape letters: B batch, T query length, S key length, N query heads, K key/value heads,
G = N / K query heads per key/value head, H head size.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxchain._primal.attention import (
    Layout,
    as_rows,
    attend,
    block_of,
    flat,
    from_rows,
    logits,
    online,
    pad_to,
    probabilities,
    sliced,
    weighted,
    weights,
)
from jaxchain._primal.precision import wide


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
    r"""Scaled dot-product attention, :math:`O = \operatorname{softmax}(c\,Q K^\top + B)\,V`
    per head, with the signature and semantics of :func:`jax.nn.dot_product_attention`.

    With logits :math:`Z = c\,QK^\top + B` (:math:`c` the ``scale``, :math:`B` the ``bias``),
    :math:`P = \operatorname{softmax}(Z)` row-wise over the keys each query may see,
    :math:`dO = \partial L/\partial O` and :math:`D = \operatorname{rowsum}(dO \odot O)`:

    .. math:: dV = P^\top dO, \quad dP = dO\,V^\top, \quad dZ = P \odot (dP - D), \quad
              dB = dZ, \quad dQ = c\,dZ\,K, \quad dK = c\,dZ^\top Q.

    (:math:`D` is :math:`\operatorname{rowsum}(dP \odot P)`, the softmax Jacobian's
    correction, read off the output instead of the ``(T, S)`` matrices.) A bias broadcast
    over an axis gets :math:`dZ` summed over it. **Grouped-query attention**: query head
    ``n`` uses key/value head ``n // G``; a key/value head serves ``G`` query heads, so its
    :math:`dK, dV` are the sums of the group's. Saves ``query, key, value, bias``, the output
    and two numbers per row, the row maximum ``m`` and the log of the normaliser
    ``l = sum exp(Z - m)``; the probabilities are recomputed as :math:`P = e^{(Z - m) - \log l}`
    in the backward pass (the shift by ``m`` is exact and ``log l`` small, so rows sum to one
    to rounding at any scale), and no ``(T, S)`` matrix is kept. Logits, probabilities and
    accumulators run in float32 for bfloat16 and float16 inputs.

    What a query may see is the intersection of ``mask``, causality (key ``j <= i``), the
    window (``i - left <= j <= i + right``) and the sequence lengths. **One difference from
    jax.nn**: a query row with nothing to see yields zeros and zero gradients (jax.nn averages
    every value there, except for queries past ``query_seq_lengths``, which it zeroes too).

    **Blockwise** (``block_size``, or by default when ``T`` or ``S`` >= 1024): the same rule on
    blocks of queries by keys (512 by 512 by default; the forward pass, which holds fewer
    block-sized arrays, uses key blocks twice as long), so that no ``(T, S)`` array ever
    exists (unless ``bias`` is one). The forward pass runs over key blocks with an online
    softmax (a running row maximum ``m``, normaliser ``l`` and unnormalised output, rescaled
    by ``exp(m_old - m_new)`` as the maximum grows) and saves only the output and the
    log-sum-exp; the backward pass loops over key blocks, and within each over query blocks,
    recomputing each block's :math:`P`, accumulating :math:`dK, dV` for the key block and
    adding into :math:`dQ` (and :math:`dB`). Blocks that causality, the window or the
    sequence lengths hide entirely are skipped: about half the work when causal.

    Args:
      query: ``(B, T, N, H)`` (or ``(T, N, H)``, unbatched, as jax.nn).
      key: ``(B, S, K, H)``, ``N`` a multiple of ``K`` (``K = 1``: multi-query attention).
      value: ``(B, S, K, H)``.
      bias: optional, added to the logits; broadcastable to ``(B, N, T, S)``.
      mask: optional boolean, broadcastable to ``(B, N, T, S)``; True = may attend.
      scale: the logits' scale; ``None`` is ``1 / sqrt(H)``.
      is_causal: if True, query ``i`` attends only to keys ``j <= i``.
      query_seq_lengths: optional integers ``(B,)``: queries from this position on see
        nothing (their output is zero).
      key_value_seq_lengths: optional integers ``(B,)``: keys from this position on are hidden.
      local_window_size: optional ``(left, right)`` (an int for both): query ``i`` sees keys
        ``i - left`` to ``i + right``.
      block_size: the blockwise path with blocks of this many queries and keys (an int for
        both, or ``(queries, keys)``); ``None`` chooses: blocks of ``(512, 512)`` when ``T`` or
        ``S`` is at least 1024, else the straightforward path.

    Returns:
      The shape of ``query``.
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


def _sum_to(x, shape):
    """``x`` summed over the axes that ``shape`` broadcasts (size 1 there)."""
    axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, shape, strict=True)) if b == 1 < a)
    return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def _gradients(p, g, q_cols, g_cols, k, v, d_out, scale):
    """The backward pass of one block of queries by keys, from its probabilities ``p``:
    ``(dQ, dK^T, dV^T, dZ)``, ``dQ`` in ``(B, T, K, G, H)``, ``dK^T, dV^T`` in ``(B, K, H, S)``
    summed over the group.

    ``dV = P^T dO`` and ``dK = c dZ^T Q`` contract over the queries, the rows of both
    operands: a product with a transposed left operand, which XLA:CPU's YNNPACK refuses
    (Eigen then runs it at half the rate). Formed as ``dV^T = dO^T P`` and ``dK^T = c Q^T dZ``
    from the queries and ``dO`` transposed once for all blocks (``q_cols``, ``g_cols``:
    :func:`_columns`), every product is one YNNPACK takes."""
    g_ = as_rows(g)
    dv_t = jnp.einsum("bkhq,bkqs->bkhs", g_cols, flat(p))  # dV^T = dO^T P
    dp = jnp.einsum("bkqh,bskh->bkqs", g_, wide(v)).reshape(p.shape)  # dP = dO V^T
    dz = p * (dp - d_out[..., None])  # dZ = P (dP - D)
    dq = from_rows(jnp.einsum("bkqs,bskh->bkqh", flat(dz), wide(k)), *g.shape[1:4:2]) * scale
    dk_t = jnp.einsum("bkhq,bkqs->bkhs", q_cols, flat(dz)) * scale  # dK^T = c Q^T dZ
    return dq, dk_t, dv_t, dz


def _columns(x):
    """Queries (or their cotangents) ``(B, T, K, G, H)`` as columns, ``(B, K, H, T G)``: the
    rows of :func:`as_rows` transposed, materialised behind an optimisation barrier so that
    XLA cannot fold the transpose back into the products that read it."""
    return lax.optimization_barrier(jnp.swapaxes(as_rows(wide(x)), 2, 3))


def _keys_last(a_t):
    """``(B, K, H, S) -> (B, S, K, H)``."""
    return jnp.transpose(a_t, (0, 3, 1, 2))


def _row_dot(g, o):
    """``D = rowsum(dO * O)`` ``(B, K, T, G)``."""
    return jnp.einsum("btkgh,btkgh->bktg", g, wide(o))


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attention(q, k, v, bias, allowed, scale):
    return _attention_fwd(q, k, v, bias, allowed, scale)[0]


def _attention_fwd(q, k, v, bias, allowed, scale):
    p, m, log_l = weights(q, k, bias, allowed, scale)
    o = weighted(p, v).astype(q.dtype)  # O = P V   (B, T, K, G, H)
    return o, (q, k, v, bias, allowed, o, m, log_l)


def _attention_bwd(scale, res, g):
    q, k, v, bias, allowed, o, m, log_l = res
    p = probabilities(logits(q, k, bias, allowed, scale), m, log_l)  # recomputed P
    d_out = _row_dot(wide(g), o)
    dq, dk_t, dv_t, dz = _gradients(p, wide(g), _columns(q), _columns(g), k, v, d_out, scale)
    db = None if bias is None else _sum_to(dz, bias.shape).astype(bias.dtype)
    dk, dv = _keys_last(dk_t).astype(k.dtype), _keys_last(dv_t).astype(v.dtype)
    return dq.astype(q.dtype), dk, dv, db, None


_attention.defvjp(_attention_fwd, _attention_bwd)


# --- blockwise ("flash") attention ------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def _blockwise(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk):
    return _blockwise_fwd(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk)[0]


def _blockwise_fwd(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk):
    o, m, log_l, _ = online(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk)
    return o, (q, k, v, bias, mask, q_len, kv_len, o, m, log_l)  # m, log_l: T padded


def _blockwise_bwd(scale, span, bq, bk, res, g):
    q, k, v, bias, mask, q_len, kv_len, o, m, log_l = res
    b, t, kv, _, h = q.shape
    layout = Layout(t, span, bq, bk, q_len, kv_len)
    qp, kp, vp, bp, mp = layout.pad(q, k, v, bias, mask)
    gp = pad_to(wide(g), 1, layout.tp)
    d = pad_to(_row_dot(wide(g), o), 2, layout.tp)  # D = rowsum(dO * O)
    q_cols, g_cols = _columns(qp), _columns(gp)
    rows = bq * q.shape[3]  # a block of queries: its bq G rows of as_rows, columns here

    def key_block(carry, j):
        k_j, v_j = sliced(kp, j * bk, bk), sliced(vp, j * bk, bk)

        def query_block(i, carry):
            return layout.skip_hidden(i, j, partial(visible_block, i), carry)

        def visible_block(i, carry):
            dq, db, dk_j, dv_j = carry
            q_i, g_i = sliced(qp, i * bq, bq), sliced(gp, i * bq, bq)
            m_i, log_l_i, d_i = (sliced(a, i * bq, bq, axis=2) for a in (m, log_l, d))
            b_ij = None if bp is None else block_of(bp, i * bq, j * bk, bq, bk)
            z = logits(q_i, k_j, b_ij, layout.allowed(mp, i, j), scale)
            p = probabilities(z, m_i, log_l_i)  # recomputed P of the block
            q_c, g_c = (sliced(a, i * rows, rows, axis=3) for a in (q_cols, g_cols))
            dq_i, dk, dv, dz = _gradients(p, g_i, q_c, g_c, k_j, v_j, d_i, scale)
            dq = lax.dynamic_update_slice_in_dim(dq, sliced(dq, i * bq, bq) + dq_i, i * bq, 1)
            if db is not None:  # add dZ, summed to the bias's shape, into its block
                starts = (
                    0,
                    0,
                    i * bq if db.shape[2] > 1 else 0,
                    0,
                    j * bk if db.shape[4] > 1 else 0,
                )
                part = _sum_to(dz, b_ij.shape) + lax.dynamic_slice(db, starts, b_ij.shape)
                db = lax.dynamic_update_slice(db, part, starts)
            return dq, db, dk_j + dk, dv_j + dv

        dq, db = carry
        zeros = jnp.zeros((b, kv, h, bk), gp.dtype)  # dK^T, dV^T of the key block
        dq, db, dk_j, dv_j = lax.fori_loop(0, layout.nq, query_block, (dq, db, zeros, zeros))
        return (dq, db), (dk_j, dv_j)

    db = None if bp is None else jnp.zeros(bp.shape, gp.dtype)
    (dq, db), (dk, dv) = lax.scan(
        key_block, (jnp.zeros(qp.shape, gp.dtype), db), jnp.arange(layout.nk)
    )
    s = k.shape[1]
    # (nk, B, K, H, bk) -> (B, nk bk, K, H)
    dk, dv = (
        jnp.transpose(a, (1, 0, 4, 2, 3)).reshape(b, layout.sp, kv, h)[:, :s] for a in (dk, dv)
    )
    if db is not None:
        db = db[:, :, : bias.shape[2], :, : bias.shape[4]].astype(bias.dtype)
    return (dq[:, :t].astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), db, None, None, None)


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)
