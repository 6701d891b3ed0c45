"""Scaled dot-product attention: straightforward for short sequences, blockwise (memory-
efficient, "flash") for long ones.

Shape letters: B batch, T query length, S key length, N heads, H head size.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxchain._checks import check_attention
from jaxchain.rules._precision import finite_or_zero, wide

_OP = "dot_product_attention"


def with_causal(allowed, t: int, s: int):
    """``allowed`` and the causal mask: query ``i`` sees keys ``j <= i``."""
    causal = jnp.tril(jnp.ones((1, 1, t, s), dtype=bool))
    return causal if allowed is None else allowed & causal


BLOCKWISE_FROM = 1024  # block_size=None: blockwise when T or S is at least this long
BLOCK = (512, 256)  # the default (queries, keys) block of the blockwise path


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    *,
    is_causal: bool = False,
    block_size: int | tuple[int, int] | None = None,
) -> jax.Array:
    r"""Scaled dot-product attention, :math:`O = \operatorname{softmax}(Q K^\top / \sqrt{H}) V`.

    With :math:`S = QK^\top/\sqrt H`, :math:`P = \operatorname{softmax}(S)` row-wise,
    :math:`dO = \partial L/\partial O` and :math:`D = \operatorname{rowsum}(dO \odot O)`:

    .. math:: dV = P^\top dO, \quad dP = dO\,V^\top, \quad dS = P \odot (dP - D), \quad
              dQ = dS\,K / \sqrt H, \quad dK = dS^\top Q / \sqrt H.

    (:math:`D` is :math:`\operatorname{rowsum}(dP \odot P)`, the softmax Jacobian's
    correction, read off the output instead of the ``(T, S)`` matrices.) Saves ``q, k, v``,
    the output and two numbers per row, the row maximum ``m`` and the log of the normaliser
    ``l = sum exp(S - m)`` ``(B, N, T)``; the probabilities are recomputed as
    :math:`P = e^{(S - m) - \log l}` in the backward pass (the shift by ``m`` is exact and
    ``log l`` small, so rows sum to one to rounding at any scale), and no ``(T, S)`` matrix is
    kept. Scores, probabilities and
    accumulators run in float32 for bfloat16 and float16 inputs.

    A query row with nothing to attend to (fully masked) yields zeros and zero gradients.

    **Blockwise** (``block_size``, or by default when ``T`` or ``S`` >= 1024): the same rule on
    blocks of queries by keys (512 by 256 by default; the forward pass, which holds fewer
    block-sized arrays, uses key blocks twice as long), so that no ``(T, S)`` array ever
    exists. The forward pass runs over key blocks with an online softmax (a running row
    maximum ``m``, normaliser ``l`` and unnormalised output, rescaled by ``exp(m_old - m_new)``
    as the maximum grows) and saves only the output and the log-sum-exp; the backward pass
    loops over key blocks, and within each over query blocks, recomputing each block's
    :math:`P = \exp(S - \ell)`, accumulating :math:`dK, dV` for the key block and adding into
    :math:`dQ`. With ``is_causal``, blocks entirely above the diagonal are skipped: about half
    the work.

    Args:
      q: ``(B, T, N, H)`` queries.
      k: ``(B, S, N, H)`` keys.
      v: ``(B, S, N, H)`` values.
      mask: optional boolean, broadcastable to ``(B, N, T, S)``; True = may attend.
      is_causal: if True, query ``i`` attends only to keys ``j <= i``.
      block_size: the blockwise path with blocks of this many queries and keys (an int for
        both, or ``(queries, keys)``); ``None`` chooses: blocks of ``(512, 256)`` when ``T`` or
        ``S`` is at least 1024, else the straightforward path.

    Returns:
      ``(B, T, N, H)``.
    """
    q, k, v, allowed = check_attention(q, k, v, mask)
    t, s = q.shape[1], k.shape[1]
    if block_size is None and max(t, s) >= BLOCKWISE_FROM:
        block_size = BLOCK
    if block_size is None or min(t, s) == 0:  # nothing to split into blocks
        return _attention(q, k, v, with_causal(allowed, t, s) if is_causal else allowed)
    sizes = block_size if isinstance(block_size, tuple) else (block_size, block_size)
    if len(sizes) != 2 or not all(_positive_int(b) for b in sizes):
        raise ValueError(
            f"{_OP}: block_size must be a positive int, a pair of them, or None, got {block_size!r}"
        )
    return _blockwise(q, k, v, allowed, is_causal, min(sizes[0], t), min(sizes[1], s))


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _scores(q, k, allowed):
    s = jnp.einsum("btnh,bsnh->bnts", wide(q), wide(k)) / math.sqrt(q.shape[-1])  # (B,N,T,S)
    return s if allowed is None else jnp.where(allowed, s, -jnp.inf)


def _log_normaliser(l):
    """``log l``, and ``+inf`` for a row with nothing to attend to (``l = 0``)."""
    return jnp.where(l > 0, jnp.log(jnp.where(l > 0, l, 1)), jnp.inf)


def _probabilities(s, m, log_l):
    """``P = exp((s - m) - log l)``: the shift by the row maximum is exact and ``log l`` is
    small, so rows sum to one to rounding at any scale (``exp(s - (m + log l))`` would round
    ``m + log l`` first); a row with nothing to attend to is zeros."""
    return jnp.exp((s - m[..., None]) - log_l[..., None])


@jax.custom_vjp
def _attention(q, k, v, allowed):
    return _attention_fwd(q, k, v, allowed)[0]


def _attention_fwd(q, k, v, allowed):
    s = _scores(q, k, allowed)
    m = finite_or_zero(jnp.max(s, axis=-1, initial=-jnp.inf))  # (B, N, T)
    log_l = _log_normaliser(jnp.sum(jnp.exp(s - m[..., None]), axis=-1))  # (B, N, T)
    p = _probabilities(s, m, log_l)  # (B, N, T, S)
    o = jnp.einsum("bnts,bsnh->btnh", p, wide(v)).astype(q.dtype)  # (B, T, N, H)
    return o, (q, k, v, allowed, o, m, log_l)


def _attention_bwd(res, g):
    q, k, v, allowed, o, m, log_l = res
    p, g_ = _probabilities(_scores(q, k, allowed), m, log_l), wide(g)  # recomputed P (B,N,T,S)
    dv = jnp.einsum("bnts,btnh->bsnh", p, g_)  # dV = P^T dO
    dp = jnp.einsum("btnh,bsnh->bnts", g_, wide(v))  # dP = dO V^T
    d = jnp.einsum("btnh,btnh->bnt", g_, wide(o))  # D = rowsum(dO * O)
    ds = p * (dp - d[..., None]) / math.sqrt(q.shape[-1])  # dS, with the 1/sqrt(H)
    dq = jnp.einsum("bnts,bsnh->btnh", ds, wide(k))  # dQ = dS K
    dk = jnp.einsum("bnts,btnh->bsnh", ds, wide(q))  # dK = dS^T Q
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_attention.defvjp(_attention_fwd, _attention_bwd)


# --- blockwise ("flash") attention ------------------------------------------------------------


def _pad_to(x, axis: int, size: int, value=0):
    """``x`` padded with ``value`` along ``axis`` to ``size`` (unchanged if already there)."""
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _blocks(n: int, size: int) -> int:
    return -(-n // size)


class _Layout:
    """Block bookkeeping shared by the forward and backward passes."""

    def __init__(self, t: int, s: int, bq: int, bk: int, is_causal: bool):
        self.t, self.s, self.bq, self.bk, self.is_causal = t, s, bq, bk, is_causal
        self.nq, self.nk = _blocks(t, bq), _blocks(s, bk)

    def visible(self, i, j):
        """Whether query block ``i`` sees anything of key block ``j`` (False only for blocks
        entirely above the causal diagonal, which are skipped)."""
        return (j * self.bk <= (i + 1) * self.bq - 1) if self.is_causal else True

    def skip_hidden(self, i, j, body, carry):
        """``body(carry)``, or ``carry`` unchanged for a hidden block. Loops have static bounds
        and skip with ``lax.cond``, so that the rule stays differentiable (second order)."""
        if not self.is_causal:
            return body(carry)
        return lax.cond(self.visible(i, j), body, lambda c: c, carry)

    def allowed(self, allowed, i, j):
        """``(B|1, N|1, bq, bk)`` boolean: real keys, the user's mask and causality; None when
        everything may attend (no mask, not causal, no padded keys)."""
        padded = self.s % self.bk != 0
        if allowed is None and not self.is_causal and not padded:
            return None
        q_idx = i * self.bq + jnp.arange(self.bq)[:, None]
        k_idx = j * self.bk + jnp.arange(self.bk)[None, :]
        ok = k_idx < self.s
        if self.is_causal:
            ok = ok & (k_idx <= q_idx)
        ok = ok[None, None]
        if allowed is not None:
            if allowed.shape[2] > 1:
                allowed = lax.dynamic_slice_in_dim(allowed, i * self.bq, self.bq, axis=2)
            if allowed.shape[3] > 1:
                allowed = lax.dynamic_slice_in_dim(allowed, j * self.bk, self.bk, axis=3)
            ok = ok & allowed
        return ok


def _pad_inputs(q, k, v, allowed, layout):
    """Pad T and S up to whole blocks: zero queries, zero keys that nothing may attend to."""
    tp, sp = layout.nq * layout.bq, layout.nk * layout.bk
    q = _pad_to(q, 1, tp)
    k, v = _pad_to(k, 1, sp), _pad_to(v, 1, sp)
    if allowed is not None:
        allowed = allowed.reshape((1,) * (4 - allowed.ndim) + allowed.shape)
        allowed = _pad_to(allowed, 2, tp, True) if allowed.shape[2] > 1 else allowed
        allowed = _pad_to(allowed, 3, sp, False) if allowed.shape[3] > 1 else allowed
    return q, k, v, allowed


def _block_scores(q_i, k_j, ok, scale):
    s = jnp.einsum("bqnh,bknh->bnqk", wide(q_i), wide(k_j)) * scale  # (B, N, bq, bk)
    return s if ok is None else jnp.where(ok, s, -jnp.inf)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _blockwise(q, k, v, allowed, is_causal, bq, bk):
    return _blockwise_fwd(q, k, v, allowed, is_causal, bq, bk)[0]


def _blockwise_fwd(q, k, v, allowed, is_causal, bq, bk):
    b, t, n, h = q.shape
    # key blocks twice as long as the backward's: the forward holds two block-sized arrays
    # (scores, probabilities) where the backward holds four, so its peak stays below
    bk = min(2 * bk, k.shape[1])
    layout = _Layout(t, k.shape[1], bq, bk, is_causal)
    qp, kp, vp, okp = _pad_inputs(q, k, v, allowed, layout)
    scale = 1 / math.sqrt(h)

    def query_block(i):
        q_i = lax.dynamic_slice_in_dim(qp, i * bq, bq, axis=1)

        def key_block(j, carry):
            return layout.skip_hidden(i, j, partial(visible_block, j), carry)

        def visible_block(j, carry):
            m, l, acc = carry  # (B, N, bq), (B, N, bq), (B, bq, N, H)
            k_j = lax.dynamic_slice_in_dim(kp, j * bk, bk, axis=1)
            v_j = lax.dynamic_slice_in_dim(vp, j * bk, bk, axis=1)
            s = _block_scores(q_i, k_j, layout.allowed(okp, i, j), scale)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0)  # a row with nothing seen yet
            p = jnp.exp(s - m_safe[..., None])
            rescale = jnp.exp(m - m_safe)  # 0 while m is -inf
            l = l * rescale + jnp.sum(p, axis=-1)
            acc = acc * jnp.moveaxis(rescale, 2, 1)[..., None]
            acc = acc + jnp.einsum("bnqk,bknh->bqnh", p, wide(v_j))
            return m_new, l, acc

        f = wide(q).dtype  # float32 accumulators for narrower inputs
        init = (jnp.full((b, n, bq), -jnp.inf, f), jnp.zeros((b, n, bq), f),
                jnp.zeros((b, bq, n, h), f))  # fmt: skip
        m, l, acc = lax.fori_loop(0, layout.nk, key_block, init)
        o = acc / jnp.moveaxis(jnp.where(l > 0, l, 1), 2, 1)[..., None]  # normalised by l
        return o.astype(q.dtype), (finite_or_zero(m), _log_normaliser(l))

    o, (m, log_l) = lax.map(query_block, jnp.arange(layout.nq))  # (nq,B,bq,N,H), (nq,B,N,bq)
    o = jnp.moveaxis(o, 0, 1).reshape(b, layout.nq * bq, n, h)[:, :t]
    m, log_l = (jnp.moveaxis(a, 0, 2).reshape(b, n, layout.nq * bq) for a in (m, log_l))
    return o, (q, k, v, allowed, o, m, log_l)  # m, log_l: (B, N, T padded)


def _blockwise_bwd(is_causal, bq, bk, res, g):
    q, k, v, allowed, o, m, log_l = res
    b, t, n, h = q.shape
    layout = _Layout(t, k.shape[1], bq, bk, is_causal)
    qp, kp, vp, okp = _pad_inputs(q, k, v, allowed, layout)
    tp = layout.nq * bq
    gp = _pad_to(wide(g), 1, tp)
    d = _pad_to(jnp.einsum("btnh,btnh->bnt", wide(g), wide(o)), 2, tp)  # D = rowsum(dO * O)
    scale = 1 / math.sqrt(h)

    def key_block(dq, j):
        k_j = lax.dynamic_slice_in_dim(kp, j * bk, bk, axis=1)
        v_j = lax.dynamic_slice_in_dim(vp, j * bk, bk, axis=1)

        def query_block(i, carry):
            return layout.skip_hidden(i, j, partial(visible_block, i), carry)

        def visible_block(i, carry):
            dq, dk_j, dv_j = carry
            q_i = lax.dynamic_slice_in_dim(qp, i * bq, bq, axis=1)
            g_i = lax.dynamic_slice_in_dim(gp, i * bq, bq, axis=1)
            m_i, log_l_i, d_i = (
                lax.dynamic_slice_in_dim(a, i * bq, bq, axis=2) for a in (m, log_l, d)
            )
            s = _block_scores(q_i, k_j, layout.allowed(okp, i, j), scale)
            p = _probabilities(s, m_i, log_l_i)  # recomputed P of the block
            dv_j = dv_j + jnp.einsum("bnqk,bqnh->bknh", p, g_i)  # dV = P^T dO
            dp = jnp.einsum("bqnh,bknh->bnqk", g_i, wide(v_j))  # dP = dO V^T
            ds = p * (dp - d_i[..., None]) * scale  # dS, with the 1/sqrt(H)
            dk_j = dk_j + jnp.einsum("bnqk,bqnh->bknh", ds, wide(q_i))  # dK = dS^T Q
            dq_i = lax.dynamic_slice_in_dim(dq, i * bq, bq, axis=1)
            dq_i = dq_i + jnp.einsum("bnqk,bknh->bqnh", ds, wide(k_j))  # dQ = dS K
            return lax.dynamic_update_slice_in_dim(dq, dq_i, i * bq, axis=1), dk_j, dv_j

        zeros = jnp.zeros((b, bk, n, h), gp.dtype)
        dq, dk_j, dv_j = lax.fori_loop(0, layout.nq, query_block, (dq, zeros, zeros))
        return dq, (dk_j, dv_j)

    dq, (dk, dv) = lax.scan(key_block, jnp.zeros(qp.shape, gp.dtype), jnp.arange(layout.nk))
    s = k.shape[1]
    dk = jnp.moveaxis(dk, 0, 1).reshape(b, layout.nk * bk, n, h)[:, :s]
    dv = jnp.moveaxis(dv, 0, 1).reshape(b, layout.nk * bk, n, h)[:, :s]
    return dq[:, :t].astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)
