"""Scaled dot-product attention's forward computations: the checks and layout around the
kernels, the logits and probabilities, and the blockwise ("flash") sweep over key blocks with
an online softmax, which also carries the JVP when given tangents.

Shape letters: B batch, T query length, S key length, N query heads, K key/value heads,
G = N / K query heads per key/value head, H head size.
"""

from functools import partial
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from jaxchain._checks import check_attention
from jaxchain._primal.precision import finite_or_zero, wide

_OP = "dot_product_attention"


BLOCKWISE_FROM = 1024  # block_size=None: blockwise when T or S is at least this long


BLOCK = (512, 512)  # the default (queries, keys) block of the blockwise path


class Span(NamedTuple):
    """The keys a query ``i`` may see by position: ``i - left <= j <= i + right`` (None =
    unbounded), and ``j < keys`` (the real, unpadded keys). Causality is ``right = 0``."""

    left: int | None
    right: int | None
    keys: int


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
    scale, span, bq, bk)``."""
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
        ok = _and(ok, block_of(mask, q0, k0, tq, tk))
    return ok


def _positions(x):
    """A ``(tq|1, tk|1)`` array in the logits' layout, ``(1, 1, tq|1, 1, tk|1)``."""
    return x[None, None, :, None, :]


def block_of(x, q0, k0, tq: int, tk: int):
    """The ``(.., tq|1, tk|1)`` block of a bias or mask at queries ``q0``, keys ``k0``."""
    if x.shape[2] > 1:
        x = lax.dynamic_slice_in_dim(x, q0, tq, axis=2)
    if x.shape[4] > 1:
        x = lax.dynamic_slice_in_dim(x, k0, tk, axis=4)
    return x


def as_rows(x):
    """Queries ``(B, T, K, G, H)`` as rows of their key/value head, ``(B, K, T G, H)``: the
    products with keys are then plain batched matrix products, whose ``(T G, S)`` results
    need no transposing (reshaped to ``(B, K, T, G, S)`` for free)."""
    b, t, kv, g, h = x.shape
    return jnp.moveaxis(x, 1, 2).reshape(b, kv, t * g, h)


def from_rows(x, t: int, g: int):
    """The inverse of :func:`as_rows`."""
    b, kv, _, h = x.shape
    return jnp.moveaxis(x.reshape(b, kv, t, g, h), 2, 1)


def flat(p):
    """``(B, K, T, G, S) -> (B, K, T G, S)`` (free)."""
    b, kv, t, g, s = p.shape
    return p.reshape(b, kv, t * g, s)


def logits(q, k, bias, allowed, scale):
    """``Z = c Q K^T + B`` ``(B, K, T, G, S)``, ``-inf`` where a query may not see a key."""
    b, t, kv, g, _ = q.shape
    z = jnp.einsum("bkqh,bskh->bkqs", as_rows(wide(q)), wide(k)).reshape(b, kv, t, g, k.shape[1])
    z = z * scale
    if bias is not None:
        z = z + wide(bias).astype(z.dtype)
    return z if allowed is None else jnp.where(allowed, z, -jnp.inf)


def _log_normaliser(l):
    """``log l``, and ``+inf`` for a row with nothing to attend to (``l = 0``)."""
    return jnp.where(l > 0, jnp.log(jnp.where(l > 0, l, 1)), jnp.inf)


def probabilities(z, m, log_l):
    """``P = exp((z - m) - log l)``: the shift by the row maximum is exact and ``log l`` is
    small, so rows sum to one to rounding at any scale (``exp(z - (m + log l))`` would round
    ``m + log l`` first); a row with nothing to attend to is zeros."""
    return jnp.exp((z - m[..., None]) - log_l[..., None])


def weights(q, k, bias, allowed, scale):
    """``P`` ``(B, K, T, G, S)``, the row maximum ``m`` and ``log l`` ``(B, K, T, G)``."""
    z = logits(q, k, bias, allowed, scale)
    m = finite_or_zero(jnp.max(z, axis=-1, initial=-jnp.inf))
    log_l = _log_normaliser(jnp.sum(jnp.exp(z - m[..., None]), axis=-1))
    return probabilities(z, m, log_l), m, log_l


def weighted(p, v):
    """``P V``: probabilities ``(B, K, T, G, S)`` times values ``(B, S, K, H)``, in the queries'
    layout ``(B, T, K, G, H)``."""
    return from_rows(jnp.einsum("bkqs,bskh->bkqh", flat(p), wide(v)), p.shape[2], p.shape[3])


def pad_to(x, axis: int, size: int, value=0):
    """``x`` padded with ``value`` along ``axis`` to ``size`` (unchanged if already there)."""
    if x is None or x.shape[axis] in (1, size):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


class Layout:
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
        q, k, v = pad_to(q, 1, self.tp), pad_to(k, 1, self.sp), pad_to(v, 1, self.sp)
        bias = pad_to(pad_to(bias, 2, self.tp), 4, self.sp)
        mask = pad_to(pad_to(mask, 2, self.tp, False), 4, self.sp, False)
        return q, k, v, bias, mask


def sliced(x, start, size: int, axis: int = 1):
    return lax.dynamic_slice_in_dim(x, start, size, axis=axis)


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
    layout = Layout(t, span, bq, bk, q_len, kv_len)
    qp, kp, vp, bp, mp = layout.pad(q, k, v, bias, mask)
    if tangents is not None:
        dqp, dkp, dvp, dbp, _ = layout.pad(*tangents, None)
    f = wide(q).dtype  # float32 accumulators for narrower inputs

    def query_block(i):
        q_i = sliced(qp, i * bq, bq)

        def key_block(j, carry):
            return layout.skip_hidden(i, j, partial(visible_block, j), carry)

        def visible_block(j, carry):
            m, l, acc, *more = carry  # (B, K, bq, G), (B, K, bq, G), (B, bq, K, G, H)
            k_j, v_j = sliced(kp, j * bk, bk), sliced(vp, j * bk, bk)
            b_ij = None if bp is None else block_of(bp, i * bq, j * bk, bq, bk)
            z = logits(q_i, k_j, b_ij, layout.allowed(mp, i, j), scale)
            m_new = jnp.maximum(m, jnp.max(z, axis=-1))
            m_safe = finite_or_zero(m_new)  # a row with nothing seen yet
            p = jnp.exp(z - m_safe[..., None])
            rescale = jnp.exp(m - m_safe)  # 0 while m is -inf
            l = l * rescale + jnp.sum(p, axis=-1)
            acc = _rescaled(acc, rescale) + weighted(p, v_j)
            if tangents is None:
                return m_new, l, acc
            t_acc, t_sum = more  # the tangent's: S V + P dV and rowsum S
            db_ij = None if dbp is None else block_of(dbp, i * bq, j * bk, bq, bk)
            dz = logits(sliced(dqp, i * bq, bq), k_j, db_ij, None, scale)
            s = p * (dz + logits(q_i, sliced(dkp, j * bk, bk), None, None, scale))
            t_acc = _rescaled(t_acc, rescale) + weighted(s, v_j)
            t_acc = t_acc + weighted(p, sliced(dvp, j * bk, bk))
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
