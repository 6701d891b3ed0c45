"""Softmax, log-softmax and the losses: softmax cross-entropy (also fused with the linear layer
before it), sigmoid binary cross-entropy, MSE.

The log-sum-exp is always taken after subtracting the row maximum, so that logits as large
as +-1e4 give finite, exact values and gradients.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxchain._checks import check_axis, check_labels, check_linear_labels, check_pair


def logsumexp(x: jax.Array, axis: int) -> jax.Array:
    """``log(sum(exp(x)))`` along ``axis`` (kept), stable for large ``|x|``."""
    m = jnp.max(x, axis=axis, keepdims=True)
    return m + jnp.log(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True))


# --- softmax ---------------------------------------------------------------------------------


def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    r"""Softmax along ``axis``, :math:`y_i = e^{x_i} / \sum_j e^{x_j}`.

    The Jacobian is :math:`\partial y_i / \partial x_j = y_i (\delta_{ij} - y_j)`, so

    .. math:: \frac{\partial L}{\partial x} = y \odot \big(g - \langle g, y \rangle\big).

    Saves the output ``y``.
    """
    x, axis = check_axis("softmax", x, axis)
    return _softmax(x, axis)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(x, axis):
    return jnp.exp(x - logsumexp(x, axis))


def _softmax_fwd(x, axis):
    y = _softmax(x, axis)
    return y, y


def _softmax_bwd(axis, y, g):
    return (y * (g - jnp.sum(g * y, axis=axis, keepdims=True)),)  # y (g - <g, y>)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


def log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    r"""Log-softmax along ``axis``, :math:`y = x - \operatorname{logsumexp}(x)`.

    .. math:: \frac{\partial L}{\partial x} = g - e^{y} \textstyle\sum_j g_j.

    Saves the output ``y`` (``e^y`` is the softmax).
    """
    x, axis = check_axis("log_softmax", x, axis)
    return _log_softmax(x, axis)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _log_softmax(x, axis):
    return x - logsumexp(x, axis)


def _log_softmax_fwd(x, axis):
    y = _log_softmax(x, axis)
    return y, y


def _log_softmax_bwd(axis, y, g):
    return (g - jnp.exp(y) * jnp.sum(g, axis=axis, keepdims=True),)  # g - softmax sum(g)


_log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


# --- losses ----------------------------------------------------------------------------------


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Per-example cross-entropy of ``softmax(logits)`` against integer ``labels``.

    :math:`\ell = \operatorname{logsumexp}(z) - z_y`, and the famous

    .. math:: \frac{\partial \ell}{\partial z}
              = \operatorname{softmax}(z) - \operatorname{onehot}(y) = \hat y - y.

    Saves the logits (an input) and two numbers per row (the maximum and the log of the
    shifted sum, whose sum is the log-sum-exp); the softmax is recomputed.

    Args:
      logits: ``(..., V)``.
      labels: ``(...,)`` integers in ``[0, V)``.

    Returns:
      ``(...,)`` losses; NaN (and NaN gradients) for a label outside ``[0, V)``, which only
      traced labels can be (inside ``jit``; concrete ones are refused).
    """
    logits, labels = check_labels("softmax_cross_entropy", logits, labels)
    return _softmax_cross_entropy(poison_rows(logits, labels, logits.shape[-1]), labels)


def poison_rows(x, labels, v: int):
    """``x (..., D)`` with NaN rows where ``labels`` lie outside ``[0, v)``: the loss and every
    gradient through those rows become NaN (an addition, so its gradient passes them on)."""
    nan = jnp.where((labels >= 0) & (labels < v), 0, jnp.nan).astype(x.dtype)
    return x + nan[..., None]


@jax.custom_vjp
def _softmax_cross_entropy(logits, labels):
    return _softmax_cross_entropy_fwd(logits, labels)[0]


def _softmax_cross_entropy_fwd(logits, labels):
    m = jnp.max(logits, axis=-1, keepdims=True)  # (..., 1)
    log_total = jnp.log(jnp.sum(jnp.exp(logits - m), axis=-1, keepdims=True))  # lse - m
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)
    loss = (m - picked) + log_total  # lse - z_y, without rounding lse near large logits
    return loss[..., 0], (logits, labels, m, log_total)


def _softmax_cross_entropy_bwd(res, g):
    logits, labels, m, log_total = res
    y_hat = jnp.exp((logits - m) - log_total)  # softmax, recomputed
    y = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return g[..., None] * (y_hat - y), None  # d loss / d logits = y_hat - y


_softmax_cross_entropy.defvjp(_softmax_cross_entropy_fwd, _softmax_cross_entropy_bwd)


CHUNK = 2048  # the default vocabulary chunk of linear_softmax_cross_entropy


def linear_softmax_cross_entropy(
    x: jax.Array, w: jax.Array, labels: jax.Array, *, chunk_size: int | None = None
) -> jax.Array:
    r"""Per-example cross-entropy of ``softmax(x W)`` against ``labels``, computed a chunk of
    the vocabulary at a time: the ``(N, V)`` logits never exist, forward or backward.

    With :math:`z = x W`, :math:`\ell = \operatorname{logsumexp}(z) - z_y` and
    :math:`dz = g\,(\operatorname{softmax}(z) - \operatorname{onehot}(y))`:

    .. math:: \frac{\partial L}{\partial x} = dz\, W^\top = \sum_c dz_c W_c^\top, \qquad
              \frac{\partial L}{\partial W_c} = x^\top dz_c,

    for each chunk :math:`c` of columns. The forward pass keeps a running maximum and
    normaliser over the chunks (an online log-sum-exp) and saves only the log-sum-exp, one
    number per row; the backward pass recomputes each chunk's logits :math:`z_c = x W_c`, its
    softmax :math:`e^{z_c - \ell}` and :math:`dz_c`, adds :math:`dz_c W_c^\top` into
    :math:`dx` and writes :math:`x^\top dz_c` into its columns of :math:`dW`. One more matrix
    product than the plain layer's backward (the recomputed logits), in exchange for memory
    of ``(N, chunk)`` instead of ``(N, V)``.

    Args:
      x: ``(..., D)`` features.
      w: ``(D, V)`` the output layer's weights (no bias).
      labels: ``(...,)`` integers in ``[0, V)``.
      chunk_size: vocabulary columns per chunk (default 2048).

    Returns:
      ``(...,)`` losses.
    """
    op = "linear_softmax_cross_entropy"
    x, w, labels = check_linear_labels(op, x, w, labels)
    chunk = CHUNK if chunk_size is None else chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{op}: chunk_size must be a positive int or None, got {chunk_size!r}")
    lead = x.shape[:-1]
    rows = poison_rows(x, labels, w.shape[1]).reshape(-1, x.shape[-1])
    loss = _linear_ce(rows, w, labels.reshape(-1), min(chunk, w.shape[1]))
    return loss.reshape(lead)


def _over_chunks(v: int, chunk: int, body, carry):
    """``body(carry, start, size)`` over the columns ``[0, v)`` in chunks: a loop over the
    whole chunks (static bounds, so the rule stays differentiable) and one remainder."""
    full, rest = divmod(v, chunk)
    if full:
        carry = lax.fori_loop(0, full, lambda c, carry: body(carry, c * chunk, chunk), carry)
    if rest:
        carry = body(carry, full * chunk, rest)
    return carry


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _linear_ce(x, w, labels, chunk):
    return _linear_ce_fwd(x, w, labels, chunk)[0]


def _linear_ce_fwd(x, w, labels, chunk):
    def online(carry, start, size):
        m, total = carry  # running max and sum of exp(z - m), per row
        z = x @ lax.dynamic_slice_in_dim(w, start, size, axis=1)  # (N, size)
        m_new = jnp.maximum(m, jnp.max(z, axis=-1))
        total = total * jnp.exp(m - m_new) + jnp.sum(jnp.exp(z - m_new[:, None]), axis=-1)
        return m_new, total

    n = x.shape[0]
    start = (jnp.full((n,), -jnp.inf, x.dtype), jnp.zeros((n,), x.dtype))
    m, total = _over_chunks(w.shape[1], chunk, online, start)
    picked = jnp.einsum("nd,dn->n", x, jnp.take(w, labels, axis=1))  # z_y
    log_total = jnp.log(total)
    return (m - picked) + log_total, (x, w, labels, m + log_total)


def _linear_ce_bwd(chunk, res, g):
    x, w, labels, lse = res

    def grads(carry, start, size):
        dx, dw = carry
        w_c = lax.dynamic_slice_in_dim(w, start, size, axis=1)
        y_hat = jnp.exp(x @ w_c - lse[:, None])  # softmax of the chunk, recomputed
        columns = jnp.asarray(start, labels.dtype) + jnp.arange(size, dtype=labels.dtype)
        y = (labels[:, None] == columns[None, :]).astype(x.dtype)  # one-hot of the chunk
        dz = g[:, None] * (y_hat - y)  # y_hat - y
        dx = dx + dz @ w_c.T
        return dx, lax.dynamic_update_slice_in_dim(dw, x.T @ dz, start, axis=1)

    dx, dw = _over_chunks(w.shape[1], chunk, grads, (jnp.zeros_like(x), jnp.zeros_like(w)))
    return dx, dw, None


_linear_ce.defvjp(_linear_ce_fwd, _linear_ce_bwd)


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Elementwise binary cross-entropy of ``sigmoid(logits)`` against targets in ``[0, 1]``.

    :math:`\ell = -z \log \sigma(x) - (1 - z) \log(1 - \sigma(x))
    = \operatorname{softplus}(x) - z x`,
    computed as :math:`\max(x, 0) - z x + \log(1 + e^{-|x|})`, so

    .. math:: \frac{\partial \ell}{\partial x} = \sigma(x) - z, \qquad
              \frac{\partial \ell}{\partial z} = -x.

    Saves the inputs.
    """
    names = ("logits", "labels")
    return _sigmoid_bce(*check_pair("sigmoid_binary_cross_entropy", names, logits, labels))


@jax.custom_vjp
def _sigmoid_bce(x, z):
    return jnp.maximum(x, 0) - z * x + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _sigmoid_bce_fwd(x, z):
    return _sigmoid_bce(x, z), (x, z)


def _sigmoid_bce_bwd(res, g):
    x, z = res
    return g * (jax.nn.sigmoid(x) - z), g * -x  # (sigma(x) - z, -x)


_sigmoid_bce.defvjp(_sigmoid_bce_fwd, _sigmoid_bce_bwd)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    r"""Mean squared error over all elements, :math:`\frac1n \sum (p - t)^2`.

    .. math:: \frac{\partial L}{\partial p} = \frac{2}{n}(p - t) = -\frac{\partial L}{\partial t}

    (the sign is the classic mistake). Saves the inputs.
    """
    return _mse(*check_pair("mse", ("pred", "target"), pred, target))


@jax.custom_vjp
def _mse(p, t):
    return jnp.mean((p - t) ** 2)


def _mse_fwd(p, t):
    return _mse(p, t), (p, t)


def _mse_bwd(res, g):
    p, t = res
    dp = g * (2 / max(np.size(p), 1)) * (p - t)  # 2 (p - t) / n
    return dp, -dp


_mse.defvjp(_mse_fwd, _mse_bwd)
