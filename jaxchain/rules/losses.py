"""Softmax, log-softmax and the losses: softmax cross-entropy, sigmoid binary cross-entropy, MSE.

The log-sum-exp is always taken after subtracting the row maximum, so that logits as large
as +-1e4 give finite, exact values and gradients.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import _validate


def logsumexp(x: jax.Array, axis: int) -> jax.Array:
    """``log(sum(exp(x)))`` along ``axis`` (kept), stable for large ``|x|``."""
    m = jnp.max(x, axis=axis, keepdims=True)
    return m + jnp.log(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True))


def check_axis(op: str, x, axis: int) -> tuple[jax.Array, int]:
    x = _validate.as_array(op, "x", x)
    _validate.floating(op, x=x)
    if not -x.ndim <= axis < x.ndim or x.ndim == 0:
        raise ValueError(f"{op}: axis {axis} is out of range for x of shape {x.shape}")
    return x, axis % x.ndim


def check_labels(op: str, logits, labels) -> tuple[jax.Array, jax.Array]:
    """logits ``(..., V)`` floating, labels ``(...,)`` integer in ``[0, V)``."""
    logits = _validate.as_array(op, "logits", logits)
    labels = _validate.as_array(op, "labels", labels)
    _validate.floating(op, logits=logits)
    _validate.min_rank(op, "logits", logits, 1)
    _validate.integer(op, "labels", labels)
    _validate.shape(op, "labels", labels, logits.shape[:-1], "logits.shape[:-1]")
    _validate.labels_in_range(op, labels, logits.shape[-1])
    return logits, labels


def check_pair(op: str, names: tuple[str, str], a, b) -> tuple[jax.Array, jax.Array]:
    """Two floating arrays of one shape and dtype (no broadcasting)."""
    a, b = (_validate.as_array(op, n, v) for n, v in zip(names, (a, b), strict=True))
    _validate.floating(op, **{names[0]: a, names[1]: b})
    _validate.shape(op, names[1], b, a.shape, f"the shape of {names[0]}")
    return a, b


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
      ``(...,)`` losses.
    """
    return _softmax_cross_entropy(*check_labels("softmax_cross_entropy", logits, labels))


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
