"""Softmax, log-softmax and the losses: softmax cross-entropy (also fused with the linear layer
before it), sigmoid binary cross-entropy, MSE.

The log-sum-exp is always taken after subtracting the row maximum, so that logits as large
as +-1e4 give finite, exact values and gradients; probabilities are normalised by their sum.
Non-finite logits follow optax: a label whose logit is ``-inf`` (or another logit ``+inf``)
costs ``+inf``; ``+inf`` at the label, or NaN anywhere, gives NaN. bfloat16 and float16 are
computed in float32 and returned in their own dtype.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxchain._checks import check_axis, check_labels, check_pair
from jaxchain._primal.losses import (
    binary_cross_entropy_of,
    chunk_logits,
    chunked_cross_entropy,
    cross_entropy_of,
    log_softmax_of,
    over_chunks,
    over_rows,
    poison_rows,
    softmax_of,
)
from jaxchain._primal.precision import wide

# --- softmax ---------------------------------------------------------------------------------


def softmax(x: jax.Array, axis: int = -1, where: jax.Array | None = None) -> jax.Array:
    r"""Softmax along ``axis``, :math:`y_i = e^{x_i - m} / \sum_j e^{x_j - m}` with
    :math:`m = \max_j x_j`: normalised by the sum itself (not by ``exp(x - logsumexp)``,
    whose ``log`` term is lost to rounding next to a large ``m``), so a row sums to one at any
    finite scale. As :func:`jax.nn.softmax`: an infinite maximum gives NaN, NaN in gives NaN;
    ``where`` (boolean, broadcastable to ``x``) keeps only those elements in the softmax, the
    others give 0 (and a row with none kept is zeros).

    The Jacobian is :math:`\partial y_i / \partial x_j = y_i (\delta_{ij} - y_j)`, so

    .. math:: \frac{\partial L}{\partial x} = y \odot \big(g - \langle g, y \rangle\big)

    (zero where ``y`` is: an element left out gets no gradient). Saves the output ``y``.
    bfloat16 and float16 are computed in float32.
    """
    x, axis, where = check_axis("softmax", x, axis, where)
    return _softmax(x, where, axis)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _softmax(x, where, axis):
    return _softmax_fwd(x, where, axis)[0]


def _softmax_fwd(x, where, axis):
    y = softmax_of(x, where, axis)
    return y, y


def _softmax_bwd(axis, y, g):
    y_, g_ = wide(y), wide(g)
    dx = y_ * (g_ - jnp.sum(g_ * y_, axis=axis, keepdims=True))  # y (g - <g, y>)
    return dx.astype(y.dtype), None


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


def log_softmax(x: jax.Array, axis: int = -1, where: jax.Array | None = None) -> jax.Array:
    r"""Log-softmax along ``axis``, :math:`y = (x - m) - \log \sum_j e^{x_j - m}`,
    :math:`m = \max_j x_j` (the shift is exact, so ``y`` is exact to rounding at any scale);
    ``where`` (boolean, broadcastable to ``x``) keeps only those elements, the others give
    ``-inf``, as :func:`jax.nn.log_softmax`.

    .. math:: \frac{\partial L}{\partial x} = g - e^{y} \textstyle\sum_j g_j

    (sums over the kept elements; an element left out gets no gradient). Saves the output
    ``y`` (``e^y`` is the softmax). bfloat16 and float16 are computed in float32.
    """
    x, axis, where = check_axis("log_softmax", x, axis, where)
    return _log_softmax(x, where, axis)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _log_softmax(x, where, axis):
    return _log_softmax_fwd(x, where, axis)[0]


def _log_softmax_fwd(x, where, axis):
    y = log_softmax_of(x, where, axis)
    return y, (y, where)


def _log_softmax_bwd(axis, res, g):
    y, where = res
    g_ = wide(g) if where is None else jnp.where(where, wide(g), 0)  # outputs left out: -inf
    dx = g_ - jnp.exp(wide(y)) * jnp.sum(g_, axis=axis, keepdims=True)  # g - softmax sum(g)
    return dx.astype(y.dtype), None


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


@jax.custom_vjp
def _softmax_cross_entropy(logits, labels):
    return _softmax_cross_entropy_fwd(logits, labels)[0]


def _softmax_cross_entropy_fwd(logits, labels):
    loss, m, total = cross_entropy_of(logits, labels)
    return loss, (logits, labels, m, total)


def _softmax_cross_entropy_bwd(res, g):
    logits, labels, m, total = res
    y_hat = jnp.exp(wide(logits) - m) / total  # softmax, recomputed; rows sum to one
    y = jax.nn.one_hot(labels, logits.shape[-1], dtype=y_hat.dtype)
    return (wide(g)[..., None] * (y_hat - y)).astype(logits.dtype), None  # y_hat - y


_softmax_cross_entropy.defvjp(_softmax_cross_entropy_fwd, _softmax_cross_entropy_bwd)


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
    return over_rows(_linear_ce, x, w, labels, chunk_size)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _linear_ce(x, w, labels, chunk):
    return _linear_ce_fwd(x, w, labels, chunk)[0]


def _linear_ce_fwd(x, w, labels, chunk):
    loss, m, total = chunked_cross_entropy(x, w, labels, chunk)
    return loss, (x, w, labels, m, total)


def _linear_ce_bwd(chunk, res, g):
    x, w, labels, m, total = res
    g_ = wide(g)
    # x^T once for every chunk's weight gradient x^T dz (see _primal.linear.rows_t_times)
    x_t = lax.optimization_barrier(wide(x).T)

    def grads(carry, start, size):
        dx, dw = carry
        w_c = lax.dynamic_slice_in_dim(w, start, size, axis=1)
        y_hat = jnp.exp(chunk_logits(x, w_c) - m[:, None]) / total[:, None]  # recomputed
        columns = jnp.asarray(start, labels.dtype) + jnp.arange(size, dtype=labels.dtype)
        y = (labels[:, None] == columns[None, :]).astype(y_hat.dtype)  # one-hot of the chunk
        dz = g_[:, None] * (y_hat - y)  # y_hat - y
        dx = dx + dz @ wide(w_c).T
        dw_c = (x_t @ dz).astype(w.dtype)
        return dx, lax.dynamic_update_slice_in_dim(dw, dw_c, start, axis=1)

    zeros = (jnp.zeros(x.shape, g_.dtype), jnp.zeros_like(w))
    dx, dw = over_chunks(w.shape[1], chunk, grads, zeros)
    return dx.astype(x.dtype), dw, None


_linear_ce.defvjp(_linear_ce_fwd, _linear_ce_bwd)


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Elementwise binary cross-entropy of ``sigmoid(logits)`` against targets in ``[0, 1]``.

    :math:`\ell = -z \log \sigma(x) - (1 - z) \log(1 - \sigma(x))
    = \operatorname{softplus}(x) - z x`,
    computed as :math:`[x > 0](1 - z) x - [x \le 0] z x + \log(1 + e^{-|x|})` (so that
    ``x = +inf`` with ``z = 0`` costs ``+inf``, as optax), so

    .. math:: \frac{\partial \ell}{\partial x} = \sigma(x) - z, \qquad
              \frac{\partial \ell}{\partial z} = -x.

    Saves the inputs. bfloat16 and float16 are computed in float32.
    """
    names = ("logits", "labels")
    return _sigmoid_bce(*check_pair("sigmoid_binary_cross_entropy", names, logits, labels))


@jax.custom_vjp
def _sigmoid_bce(x, z):
    return _sigmoid_bce_fwd(x, z)[0]


def _sigmoid_bce_fwd(x, z):
    return binary_cross_entropy_of(x, z), (x, z)


def _sigmoid_bce_bwd(res, g):
    x, z = res
    x_, g_ = wide(x), wide(g)
    dx, dz = g_ * (jax.nn.sigmoid(x_) - wide(z)), g_ * -x_  # (sigma(x) - z, -x)
    return dx.astype(x.dtype), dz.astype(z.dtype)


_sigmoid_bce.defvjp(_sigmoid_bce_fwd, _sigmoid_bce_bwd)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    r"""Mean squared error over all elements, :math:`\frac1n \sum (p - t)^2`.

    .. math:: \frac{\partial L}{\partial p} = \frac{2}{n}(p - t) = -\frac{\partial L}{\partial t}

    (the sign is the classic mistake). Saves the inputs. The mean is taken in float32 for
    narrower inputs. Empty inputs are refused (the mean of nothing is undefined).
    """
    return _mse(*check_pair("mse", ("pred", "target"), pred, target, nonempty=True))


@jax.custom_vjp
def _mse(p, t):
    return _mse_fwd(p, t)[0]


def _mse_fwd(p, t):
    return jnp.mean((wide(p) - wide(t)) ** 2).astype(p.dtype), (p, t)


def _mse_bwd(res, g):
    p, t = res
    dp = wide(g) * (2 / np.size(p)) * (wide(p) - wide(t))  # 2 (p - t) / n
    return dp.astype(p.dtype), (-dp).astype(t.dtype)


_mse.defvjp(_mse_fwd, _mse_bwd)
