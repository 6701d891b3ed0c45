"""Scaled dot-product attention, a drop-in for :func:`jax.nn.dot_product_attention`:
straightforward for short sequences, blockwise (memory-efficient, "flash") for long ones.

Shape letters: B batch, T query length, S key length, N query heads, K key/value heads,
G = N / K query heads per key/value head, H head size.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxchain._checks import check_attention
from jaxchain.rules._precision import finite_or_zero, wide

_OP = "dot_product_attention"

BLOCKWISE_FROM = 1024  # block_size=None: blockwise when T or S is at least this long
BLOCK = (512, 256)  # the default (queries, keys) block of the blockwise path


class Span(NamedTuple):
    """The keys a query ``i`` may see by position: ``i - left <= j <= i + right`` (None =
    unbounded), and ``j < keys`` (the real, unpadded keys). Causality is ``right = 0``."""

    left: int | None
    right: int | None
    keys: int


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
    blocks of queries by keys (512 by 256 by default; the forward pass, which holds fewer
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
        both, or ``(queries, keys)``); ``None`` chooses: blocks of ``(512, 256)`` when ``T`` or
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


def attend(
    whole,
    blocks,
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
):
    """:func:`dot_product_attention`'s checks and layout around its kernels,
    ``whole(q, k, v, bias, allowed, scale)`` and ``blocks(q, k, v, bias, mask, q_len, kv_len,
    scale, span, bq, bk)`` (shared with :mod:`jaxchain.tangents`)."""
    a = check_attention(
        query,
        key,
        value,
        bias,
        mask,
        scale,
        query_seq_lengths,
        key_value_seq_lengths,
        local_window_size,
    )
    b, t, n, h = a.query.shape
    s, kv = a.key.shape[1], a.key.shape[2]
    q = a.query.reshape(b, t, kv, n // kv, h)  # (B, T, K, G, H): query head n = k G + g
    bias, mask = _grouped(a.bias, kv), _grouped(a.mask, kv)
    left, right = a.window or (None, None)
    if is_causal:
        right = 0 if right is None else min(right, 0)
    span = Span(left, right, s)
    lengths = (a.query_seq_lengths, a.key_value_seq_lengths)
    if block_size is None and max(t, s) >= BLOCKWISE_FROM:
        block_size = BLOCK
    if block_size is None or min(t, s) == 0:  # nothing to split into blocks
        allowed = _allowed(span, mask, *lengths, 0, 0, t, s)
        o = whole(q, a.key, a.value, bias, allowed, a.scale)
    else:
        sizes = block_size if isinstance(block_size, tuple) else (block_size, block_size)
        if len(sizes) != 2 or not all(_positive_int(x) for x in sizes):
            raise ValueError(
                f"{_OP}: block_size must be a positive int, a pair of them, or None, "
                f"got {block_size!r}"
            )
        sizes = (min(sizes[0], t), min(sizes[1], s))
        o = blocks(q, a.key, a.value, bias, mask, *lengths, a.scale, span, *sizes)
    o = o.reshape(b, t, n, h)
    return o if a.batched else o[0]


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _grouped(x, kv: int):
    """A ``(B|1, N|1, T|1, S|1)`` bias or mask in the logits' layout,
    ``(B|1, K|1, T|1, G|1, S|1)``."""
    if x is None:
        return None
    b1, n1, t1, s1 = x.shape
    if n1 == 1:
        return x[:, :, :, None]
    return jnp.moveaxis(x.reshape(b1, kv, n1 // kv, t1, s1), 2, 3)


def _and(a, b):
    return b if a is None else a & b


def _allowed(span: Span, mask, q_len, kv_len, q0, k0, tq: int, tk: int, padded=False):
    """What queries ``q0 ..< q0 + tq`` may see of keys ``k0 ..< k0 + tk`` (``padded``: some
    lie past the real keys): boolean, broadcastable to ``(B, K, tq, G, tk)``; None when
    everything may be seen."""
    q_idx, k_idx = q0 + jnp.arange(tq)[:, None], k0 + jnp.arange(tk)[None, :]
    ok = None
    if span.right is not None:
        ok = _and(ok, k_idx <= q_idx + span.right)
    if span.left is not None:
        ok = _and(ok, k_idx >= q_idx - span.left)
    if padded:
        ok = _and(ok, k_idx < span.keys)
    ok = None if ok is None else _positions(ok)
    if q_len is not None:
        ok = _and(ok, _positions(q_idx) < q_len[:, None, None, None, None])
    if kv_len is not None:
        ok = _and(ok, _positions(k_idx) < kv_len[:, None, None, None, None])
    if mask is not None:
        ok = _and(ok, _block_of(mask, q0, k0, tq, tk))
    return ok


def _positions(x):
    """A ``(tq|1, tk|1)`` array in the logits' layout, ``(1, 1, tq|1, 1, tk|1)``."""
    return x[None, None, :, None, :]


def _block_of(x, q0, k0, tq: int, tk: int):
    """The ``(.., tq|1, tk|1)`` block of a bias or mask at queries ``q0``, keys ``k0``."""
    if x.shape[2] > 1:
        x = lax.dynamic_slice_in_dim(x, q0, tq, axis=2)
    if x.shape[4] > 1:
        x = lax.dynamic_slice_in_dim(x, k0, tk, axis=4)
    return x


def _sum_to(x, shape):
    """``x`` summed over the axes that ``shape`` broadcasts (size 1 there)."""
    axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, shape, strict=True)) if b == 1 < a)
    return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def _rows(x):
    """Queries ``(B, T, K, G, H)`` as rows of their key/value head, ``(B, K, T G, H)``: the
    products with keys are then plain batched matrix products, whose ``(T G, S)`` results
    need no transposing (reshaped to ``(B, K, T, G, S)`` for free)."""
    b, t, kv, g, h = x.shape
    return jnp.moveaxis(x, 1, 2).reshape(b, kv, t * g, h)


def _unrows(x, t: int, g: int):
    """The inverse of :func:`_rows`."""
    b, kv, _, h = x.shape
    return jnp.moveaxis(x.reshape(b, kv, t, g, h), 2, 1)


def _flat(p):
    """``(B, K, T, G, S) -> (B, K, T G, S)`` (free)."""
    b, kv, t, g, s = p.shape
    return p.reshape(b, kv, t * g, s)


def _logits(q, k, bias, allowed, scale):
    """``Z = c Q K^T + B`` ``(B, K, T, G, S)``, ``-inf`` where a query may not see a key."""
    b, t, kv, g, _ = q.shape
    z = jnp.einsum("bkqh,bskh->bkqs", _rows(wide(q)), wide(k)).reshape(b, kv, t, g, k.shape[1])
    z = z * scale
    if bias is not None:
        z = z + wide(bias).astype(z.dtype)
    return z if allowed is None else jnp.where(allowed, z, -jnp.inf)


def _log_normaliser(l):
    """``log l``, and ``+inf`` for a row with nothing to attend to (``l = 0``)."""
    return jnp.where(l > 0, jnp.log(jnp.where(l > 0, l, 1)), jnp.inf)


def _probabilities(z, m, log_l):
    """``P = exp((z - m) - log l)``: the shift by the row maximum is exact and ``log l`` is
    small, so rows sum to one to rounding at any scale (``exp(z - (m + log l))`` would round
    ``m + log l`` first); a row with nothing to attend to is zeros."""
    return jnp.exp((z - m[..., None]) - log_l[..., None])


def _gradients(p, g, q, k, v, d_out, scale):
    """The backward pass of one block of queries by keys, from its probabilities ``p``:
    ``(dQ, dK, dV, dZ)``, ``dQ`` in ``(B, T, K, G, H)``, ``dK, dV`` summed over the group."""
    g_ = _rows(g)
    dv = jnp.einsum("bkqs,bkqh->bskh", _flat(p), g_)  # dV = P^T dO
    dp = jnp.einsum("bkqh,bskh->bkqs", g_, wide(v)).reshape(p.shape)  # dP = dO V^T
    dz = p * (dp - d_out[..., None])  # dZ = P (dP - D)
    dq = _unrows(jnp.einsum("bkqs,bskh->bkqh", _flat(dz), wide(k)), *g.shape[1:4:2]) * scale
    dk = jnp.einsum("bkqs,bkqh->bskh", _flat(dz), _rows(wide(q))) * scale  # dK = c dZ^T Q
    return dq, dk, dv, dz


def _row_dot(g, o):
    """``D = rowsum(dO * O)`` ``(B, K, T, G)``."""
    return jnp.einsum("btkgh,btkgh->bktg", g, wide(o))


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attention(q, k, v, bias, allowed, scale):
    return _attention_fwd(q, k, v, bias, allowed, scale)[0]


def _weights(q, k, bias, allowed, scale):
    """``P`` ``(B, K, T, G, S)``, the row maximum ``m`` and ``log l`` ``(B, K, T, G)``."""
    z = _logits(q, k, bias, allowed, scale)
    m = finite_or_zero(jnp.max(z, axis=-1, initial=-jnp.inf))
    log_l = _log_normaliser(jnp.sum(jnp.exp(z - m[..., None]), axis=-1))
    return _probabilities(z, m, log_l), m, log_l


def _weighted(p, v):
    """``P V``: probabilities ``(B, K, T, G, S)`` times values ``(B, S, K, H)``, in the queries'
    layout ``(B, T, K, G, H)``."""
    return _unrows(jnp.einsum("bkqs,bskh->bkqh", _flat(p), wide(v)), p.shape[2], p.shape[3])


def _attention_fwd(q, k, v, bias, allowed, scale):
    p, m, log_l = _weights(q, k, bias, allowed, scale)
    o = _weighted(p, v).astype(q.dtype)  # O = P V   (B, T, K, G, H)
    return o, (q, k, v, bias, allowed, o, m, log_l)


def _attention_bwd(scale, res, g):
    q, k, v, bias, allowed, o, m, log_l = res
    p = _probabilities(_logits(q, k, bias, allowed, scale), m, log_l)  # recomputed P
    dq, dk, dv, dz = _gradients(p, wide(g), q, k, v, _row_dot(wide(g), o), scale)
    db = None if bias is None else _sum_to(dz, bias.shape).astype(bias.dtype)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), db, None


_attention.defvjp(_attention_fwd, _attention_bwd)


# --- blockwise ("flash") attention ------------------------------------------------------------


def _pad_to(x, axis: int, size: int, value=0):
    """``x`` padded with ``value`` along ``axis`` to ``size`` (unchanged if already there)."""
    if x is None or x.shape[axis] in (1, size):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


class _Layout:
    """Block bookkeeping shared by the forward and backward passes: ``nq`` blocks of ``bq``
    queries by ``nk`` blocks of ``bk`` keys, T and S padded up to whole blocks."""

    def __init__(self, t: int, span: Span, bq: int, bk: int, q_len, kv_len):
        self.span, self.bq, self.bk, self.q_len, self.kv_len = span, bq, bk, q_len, kv_len
        self.nq, self.nk = -(-t // bq), -(-span.keys // bk)
        self.tp, self.sp = self.nq * bq, self.nk * bk

    def visible(self, i, j):
        """Whether query block ``i`` may see anything of key block ``j``: False for blocks
        that the causal diagonal, the window or the sequence lengths hide entirely; None when
        nothing hides any block."""
        span, bq, bk = self.span, self.bq, self.bk
        seen = []
        if span.right is not None:  # the block's first key within the last query's reach
            seen.append(j * bk <= (i + 1) * bq - 1 + span.right)
        if span.left is not None:  # the block's last key within the first query's reach
            seen.append((j + 1) * bk - 1 >= i * bq - span.left)
        if self.kv_len is not None:
            seen.append(j * bk < jnp.max(self.kv_len))
        if self.q_len is not None:
            seen.append(i * bq < jnp.max(self.q_len))
        return None if not seen else jnp.all(jnp.stack(seen))

    def skip_hidden(self, i, j, body, carry):
        """``body(carry)``, or ``carry`` unchanged for a hidden block. Loops have static bounds
        and skip with ``lax.cond``, so that the rule stays differentiable (second order)."""
        seen = self.visible(i, j)
        return body(carry) if seen is None else lax.cond(seen, body, lambda c: c, carry)

    def allowed(self, mask, i, j):
        return _allowed(
            self.span,
            mask,
            self.q_len,
            self.kv_len,
            i * self.bq,
            j * self.bk,
            self.bq,
            self.bk,
            padded=self.span.keys % self.bk != 0,
        )

    def pad(self, q, k, v, bias, mask):
        """T and S padded to whole blocks: zero queries and keys, zero bias, a False mask."""
        q, k, v = _pad_to(q, 1, self.tp), _pad_to(k, 1, self.sp), _pad_to(v, 1, self.sp)
        bias = _pad_to(_pad_to(bias, 2, self.tp), 4, self.sp)
        mask = _pad_to(_pad_to(mask, 2, self.tp, False), 4, self.sp, False)
        return q, k, v, bias, mask


def _slice(x, start, size: int, axis: int = 1):
    return lax.dynamic_slice_in_dim(x, start, size, axis=axis)


@partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def _blockwise(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk):
    return _blockwise_fwd(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk)[0]


def _blockwise_fwd(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk):
    o, m, log_l, _ = online(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk)
    return o, (q, k, v, bias, mask, q_len, kv_len, o, m, log_l)  # m, log_l: T padded


def _rescaled(acc, r):
    """An accumulator in the queries' layout ``(B, bq, K, G, H)`` or the rows' ``(B, K, bq,
    G)``, times the row factors ``r`` ``(B, K, bq, G)``."""
    return acc * (r if acc.ndim == r.ndim else jnp.moveaxis(r, 2, 1)[..., None])


def online(q, k, v, bias, mask, q_len, kv_len, scale, span, bq, bk, tangents=None):
    r"""The blockwise forward pass: ``(O, m, log l, dO)``, ``m`` and ``log l`` with T padded.

    With ``tangents`` ``(dQ, dK, dV, dB)`` it also computes the JVP ``dO`` in the same pass
    (for :mod:`jaxchain.tangents`): with :math:`\dot Z = c(\dot Q K^\top + Q \dot
    K^\top) + \dot B` and :math:`S = P \odot \dot Z` of each block, it accumulates
    :math:`S V + P \dot V` and :math:`\operatorname{rowsum} S`, rescaled as the output is,
    and :math:`\dot O = (S V + P \dot V) / l - (\operatorname{rowsum} S / l)\, O`; else
    ``dO`` is None."""
    b, t, kv, g, h = q.shape
    # key blocks twice as long as the backward's: the forward holds two block-sized arrays
    # (logits, probabilities) where the backward holds four, so its peak stays below
    bk = min(2 * bk, span.keys)
    layout = _Layout(t, span, bq, bk, q_len, kv_len)
    qp, kp, vp, bp, mp = layout.pad(q, k, v, bias, mask)
    if tangents is not None:
        dqp, dkp, dvp, dbp, _ = layout.pad(*tangents, None)
    f = wide(q).dtype  # float32 accumulators for narrower inputs

    def query_block(i):
        q_i = _slice(qp, i * bq, bq)

        def key_block(j, carry):
            return layout.skip_hidden(i, j, partial(visible_block, j), carry)

        def visible_block(j, carry):
            m, l, acc, *more = carry  # (B, K, bq, G), (B, K, bq, G), (B, bq, K, G, H)
            k_j, v_j = _slice(kp, j * bk, bk), _slice(vp, j * bk, bk)
            b_ij = None if bp is None else _block_of(bp, i * bq, j * bk, bq, bk)
            z = _logits(q_i, k_j, b_ij, layout.allowed(mp, i, j), scale)
            m_new = jnp.maximum(m, jnp.max(z, axis=-1))
            m_safe = finite_or_zero(m_new)  # a row with nothing seen yet
            p = jnp.exp(z - m_safe[..., None])
            rescale = jnp.exp(m - m_safe)  # 0 while m is -inf
            l = l * rescale + jnp.sum(p, axis=-1)
            acc = _rescaled(acc, rescale) + _weighted(p, v_j)
            if tangents is None:
                return m_new, l, acc
            t_acc, t_sum = more  # the tangent's: S V + P dV and rowsum S
            db_ij = None if dbp is None else _block_of(dbp, i * bq, j * bk, bq, bk)
            dz = _logits(_slice(dqp, i * bq, bq), k_j, db_ij, None, scale)
            s = p * (dz + _logits(q_i, _slice(dkp, j * bk, bk), None, None, scale))
            t_acc = _rescaled(t_acc, rescale) + _weighted(s, v_j)
            t_acc = t_acc + _weighted(p, _slice(dvp, j * bk, bk))
            return m_new, l, acc, t_acc, t_sum * rescale + jnp.sum(s, axis=-1)

        rows, out = jnp.zeros((b, kv, bq, g), f), jnp.zeros((b, bq, kv, g, h), f)
        init = (jnp.full((b, kv, bq, g), -jnp.inf, f), rows, out)
        m, l, acc, *more = lax.fori_loop(
            0, layout.nk, key_block, init if tangents is None else (*init, out, rows)
        )
        l_out = jnp.moveaxis(jnp.where(l > 0, l, 1), 2, 1)[..., None]
        o = acc / l_out  # normalised by l
        do = None if tangents is None else (more[0] - _rescaled(o, more[1])) / l_out
        return o.astype(q.dtype), (finite_or_zero(m), _log_normaliser(l)), do

    o, (m, log_l), do = lax.map(query_block, jnp.arange(layout.nq))  # (nq, B, bq, K, G, H)
    o, do = (
        None if a is None else jnp.moveaxis(a, 0, 1).reshape(b, layout.tp, kv, g, h)[:, :t]
        for a in (o, do)
    )
    m, log_l = (jnp.moveaxis(a, 0, 2).reshape(b, kv, layout.tp, g) for a in (m, log_l))
    return o, m, log_l, do


def _blockwise_bwd(scale, span, bq, bk, res, g):
    q, k, v, bias, mask, q_len, kv_len, o, m, log_l = res
    b, t, kv, _, h = q.shape
    layout = _Layout(t, span, bq, bk, q_len, kv_len)
    qp, kp, vp, bp, mp = layout.pad(q, k, v, bias, mask)
    gp = _pad_to(wide(g), 1, layout.tp)
    d = _pad_to(_row_dot(wide(g), o), 2, layout.tp)  # D = rowsum(dO * O)

    def key_block(carry, j):
        k_j, v_j = _slice(kp, j * bk, bk), _slice(vp, j * bk, bk)

        def query_block(i, carry):
            return layout.skip_hidden(i, j, partial(visible_block, i), carry)

        def visible_block(i, carry):
            dq, db, dk_j, dv_j = carry
            q_i, g_i = _slice(qp, i * bq, bq), _slice(gp, i * bq, bq)
            m_i, log_l_i, d_i = (_slice(a, i * bq, bq, axis=2) for a in (m, log_l, d))
            b_ij = None if bp is None else _block_of(bp, i * bq, j * bk, bq, bk)
            z = _logits(q_i, k_j, b_ij, layout.allowed(mp, i, j), scale)
            p = _probabilities(z, m_i, log_l_i)  # recomputed P of the block
            dq_i, dk, dv, dz = _gradients(p, g_i, q_i, k_j, v_j, d_i, scale)
            dq = lax.dynamic_update_slice_in_dim(dq, _slice(dq, i * bq, bq) + dq_i, i * bq, 1)
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
        zeros = jnp.zeros((b, bk, kv, h), gp.dtype)
        dq, db, dk_j, dv_j = lax.fori_loop(0, layout.nq, query_block, (dq, db, zeros, zeros))
        return (dq, db), (dk_j, dv_j)

    db = None if bp is None else jnp.zeros(bp.shape, gp.dtype)
    (dq, db), (dk, dv) = lax.scan(
        key_block, (jnp.zeros(qp.shape, gp.dtype), db), jnp.arange(layout.nk)
    )
    s = k.shape[1]
    dk, dv = (jnp.moveaxis(a, 0, 1).reshape(b, layout.sp, kv, h)[:, :s] for a in (dk, dv))
    if db is not None:
        db = db[:, :, : bias.shape[2], :, : bias.shape[4]].astype(bias.dtype)
    return (dq[:, :t].astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), db, None, None, None)


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)
