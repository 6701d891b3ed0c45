"""Softmax, log-softmax and the losses' values: shifted by the row maximum, float32 for
narrower inputs; the fused linear cross-entropy a vocabulary chunk at a time."""

import jax.numpy as jnp
from jax import lax

from jaxchain._checks import check_linear_labels
from jaxchain._primal.precision import finite_or_zero, row_max, wide

CHUNK = 2048  # the default vocabulary chunk of linear_softmax_cross_entropy


def _minus_inf_where_left_out(z, where):
    """``z`` with the elements left out by ``where`` at ``-inf``."""
    return z if where is None else jnp.where(where, z, -jnp.inf)


def softmax_of(x, where, axis: int):
    """The softmax itself, in x's dtype."""
    z = _minus_inf_where_left_out(wide(x), where)
    m = row_max(z, axis)
    e = jnp.exp(z - (m if where is None else finite_or_zero(m)))  # a row with none kept: 0
    total = jnp.sum(e, axis=axis, keepdims=True)
    y = e / (total if where is None else jnp.where(total > 0, total, 1))
    return y.astype(x.dtype)


def log_softmax_of(x, where, axis: int):
    """The log-softmax itself, in x's dtype."""
    z = _minus_inf_where_left_out(wide(x), where)
    m = row_max(z, axis) if where is None else finite_or_zero(row_max(z, axis))
    shifted = z - m
    y = shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))
    return (y if where is None else jnp.where(where, y, -jnp.inf)).astype(x.dtype)  # none: -inf


def poison_rows(x, labels, v: int):
    """``x (..., D)`` with NaN rows where ``labels`` lie outside ``[0, v)``: the loss and every
    gradient through those rows become NaN (an addition, so its gradient passes them on)."""
    nan = jnp.where((labels >= 0) & (labels < v), 0, jnp.nan).astype(x.dtype)
    return x + nan[..., None]


def cross_entropy_of(logits, labels):
    """``(loss, m, total)``: the losses in the logits' dtype, the row maximum and the shifted
    normaliser ``sum exp(z - m)`` (kept, float32 for narrower logits)."""
    z = wide(logits)
    m = finite_or_zero(row_max(z, -1))  # (..., 1)
    total = jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True)  # e^(lse - m)
    picked = jnp.take_along_axis(z, labels[..., None], axis=-1)  # z_y
    loss = (m - picked) + jnp.log(total)  # lse - z_y, without rounding lse near large logits
    return loss[..., 0].astype(logits.dtype), m, total


def over_rows(kernel, x, w, labels, chunk_size):
    """:func:`linear_softmax_cross_entropy`'s checks around ``kernel(rows, w, labels,
    chunk)`` on the rows of ``x`` flattened."""
    op = "linear_softmax_cross_entropy"
    x, w, labels = check_linear_labels(op, x, w, labels)
    chunk = CHUNK if chunk_size is None else chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{op}: chunk_size must be a positive int or None, got {chunk_size!r}")
    lead = x.shape[:-1]
    rows = poison_rows(x, labels, w.shape[1]).reshape(-1, x.shape[-1])
    loss = kernel(rows, w, labels.reshape(-1), min(chunk, w.shape[1]))
    return loss.reshape(lead)


def over_chunks(v: int, chunk: int, body, carry):
    """``body(carry, start, size)`` over the columns ``[0, v)`` in chunks: a loop over the
    whole chunks (static bounds, so the rule stays differentiable) and one remainder."""
    full, rest = divmod(v, chunk)
    if full:
        carry = lax.fori_loop(0, full, lambda c, carry: body(carry, c * chunk, chunk), carry)
    if rest:
        carry = body(carry, full * chunk, rest)
    return carry


def chunk_logits(x, w_c):
    """A chunk's logits, in float32 for narrower inputs."""
    return wide(x) @ wide(w_c)


def chunked_cross_entropy(x, w, labels, chunk: int):
    """``(loss, m, total)`` a chunk of columns at a time (an online log-sum-exp)."""

    def online(carry, start, size):
        m, total = carry  # running max and sum of exp(z - m), per row
        z = chunk_logits(x, lax.dynamic_slice_in_dim(w, start, size, axis=1))  # (N, size)
        m_new = jnp.maximum(m, jnp.max(z, axis=-1, initial=-jnp.inf))
        shift = finite_or_zero(m_new)
        total = total * jnp.exp(finite_or_zero(m) - shift) + jnp.sum(
            jnp.exp(z - shift[:, None]), axis=-1
        )
        return m_new, total

    n, f = x.shape[0], wide(x).dtype
    start = (jnp.full((n,), -jnp.inf, f), jnp.zeros((n,), f))
    m, total = over_chunks(w.shape[1], chunk, online, start)
    m = finite_or_zero(m)
    picked = jnp.einsum("nd,dn->n", wide(x), wide(jnp.take(w, labels, axis=1)))  # z_y
    loss = (m - picked) + jnp.log(total)
    return loss.astype(x.dtype), m, total


def binary_cross_entropy_of(x, z):
    """The losses themselves, in x's dtype."""
    x_, z_ = wide(x), wide(z)
    linear = jnp.where(x_ > 0, (1 - z_) * x_, -z_ * x_)  # max(x, 0) - z x
    return (linear + jnp.log1p(jnp.exp(-jnp.abs(x_)))).astype(x.dtype)
