"""Forward-mode rules of softmax, log-softmax and the losses.

The JVP of a softmax is its Jacobian :math:`\\operatorname{diag}(y) - y y^\\top` applied to
the tangent, :math:`\\dot y = y \\odot (\\dot x - \\langle y, \\dot x \\rangle)` — the reverse
rule's formula with the tangent where the cotangent was (the Jacobian is symmetric). A loss
is a scalar per row, so its JVP is a dot product of its gradient with the tangent.
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


def softmax(x: jax.Array, axis: int = -1, where: jax.Array | None = None) -> jax.Array:
    r"""Softmax along ``axis`` (see :func:`jaxchain.rules.softmax`); JVP
    :math:`\dot y = y \odot (\dot x - \langle y, \dot x \rangle)` (zero where ``y`` is: an
    element left out by ``where`` does not move)."""
    x, axis, where = check_axis("softmax", x, axis, where)
    return _softmax(x, where, axis)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _softmax(x, where, axis):
    return softmax_of(x, where, axis)


@_softmax.defjvp
def _softmax_jvp(axis, primals, tangents):
    (x, where), (dx, _) = primals, tangents
    y = softmax_of(x, where, axis)
    y_, dx_ = wide(y), _zero_where_left_out(wide(dx), where)
    dy = y_ * (dx_ - jnp.sum(y_ * dx_, axis=axis, keepdims=True))  # y (dx - <y, dx>)
    return y, dy.astype(x.dtype)


def _zero_where_left_out(dx, where):
    """The tangent with the elements that ``where`` leaves out at 0."""
    return dx if where is None else jnp.where(where, dx, 0)


def log_softmax(x: jax.Array, axis: int = -1, where: jax.Array | None = None) -> jax.Array:
    r"""Log-softmax along ``axis`` (see :func:`jaxchain.rules.log_softmax`); JVP
    :math:`\dot y = \dot x - \langle e^{y}, \dot x \rangle` over the kept elements (an element
    left out stays at ``-inf``: its tangent is 0)."""
    x, axis, where = check_axis("log_softmax", x, axis, where)
    return _log_softmax(x, where, axis)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _log_softmax(x, where, axis):
    return log_softmax_of(x, where, axis)


@_log_softmax.defjvp
def _log_softmax_jvp(axis, primals, tangents):
    (x, where), (dx, _) = primals, tangents
    y = log_softmax_of(x, where, axis)
    dx_ = _zero_where_left_out(wide(dx), where)
    dy = _zero_where_left_out(
        dx_ - jnp.sum(jnp.exp(wide(y)) * dx_, axis=axis, keepdims=True), where
    )
    return y, dy.astype(x.dtype)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Per-example cross-entropy :math:`\ell = \operatorname{logsumexp}(z) - z_y` (see
    :func:`jaxchain.rules.softmax_cross_entropy`); JVP
    :math:`\dot\ell = \langle \operatorname{softmax}(z), \dot z \rangle - \dot z_y`."""
    logits, labels = check_labels("softmax_cross_entropy", logits, labels)
    return _cross_entropy(poison_rows(logits, labels, logits.shape[-1]), labels)


@jax.custom_jvp
def _cross_entropy(logits, labels):
    return cross_entropy_of(logits, labels)[0]


@_cross_entropy.defjvp
def _cross_entropy_jvp(primals, tangents):
    (logits, labels), (dz, _) = primals, tangents
    loss, m, total = cross_entropy_of(logits, labels)
    y_hat, dz_ = jnp.exp(wide(logits) - m) / total, wide(dz)  # the softmax
    picked = jnp.take_along_axis(dz_, labels[..., None], axis=-1)[..., 0]  # dz_y
    return loss, (jnp.sum(y_hat * dz_, axis=-1) - picked).astype(logits.dtype)


def linear_softmax_cross_entropy(
    x: jax.Array, w: jax.Array, labels: jax.Array, *, chunk_size: int | None = None
) -> jax.Array:
    r"""Per-example cross-entropy of ``softmax(x W)``, a chunk of the vocabulary at a time
    (see :func:`jaxchain.rules.linear_softmax_cross_entropy`). With :math:`z = xW`,
    :math:`\dot z = \dot x W + x \dot W`:

    .. math:: \dot\ell = \sum_c \langle \operatorname{softmax}(z)_c, \dot z_c \rangle
              - (\dot x\, W_{:,y} + x\, \dot W_{:,y}).

    The forward pass's online log-sum-exp gives :math:`\ell` and the normaliser; a second
    pass over the chunks recomputes each chunk's logits and softmax and accumulates the dot
    products, so neither the ``(N, V)`` logits nor their tangents ever exist."""
    return over_rows(_linear_ce, x, w, labels, chunk_size)


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _linear_ce(x, w, labels, chunk):
    return chunked_cross_entropy(x, w, labels, chunk)[0]


@_linear_ce.defjvp
def _linear_ce_jvp(chunk, primals, tangents):
    (x, w, labels), (dx, dw, _) = primals, tangents
    loss, m, total = chunked_cross_entropy(x, w, labels, chunk)
    x_, dx_ = wide(x), wide(dx)

    def dot(acc, start, size):
        w_c, dw_c = (lax.dynamic_slice_in_dim(a, start, size, axis=1) for a in (w, dw))
        y_hat = jnp.exp(chunk_logits(x, w_c) - m[:, None]) / total[:, None]
        dz = dx_ @ wide(w_c) + x_ @ wide(dw_c)  # the chunk's tangent logits
        return acc + jnp.sum(y_hat * dz, axis=-1)

    expected = over_chunks(w.shape[1], chunk, dot, jnp.zeros(x.shape[0], x_.dtype))
    w_y, dw_y = (wide(jnp.take(a, labels, axis=1)) for a in (w, dw))  # (D, N)
    picked = jnp.einsum("nd,dn->n", dx_, w_y) + jnp.einsum("nd,dn->n", x_, dw_y)  # dz_y
    return loss, (expected - picked).astype(x.dtype)


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r""":math:`\ell = \operatorname{softplus}(x) - z x` elementwise (see
    :func:`jaxchain.rules.sigmoid_binary_cross_entropy`); JVP
    :math:`\dot\ell = (\sigma(x) - z)\,\dot x - x\,\dot z`."""
    names = ("logits", "labels")
    return _binary(*check_pair("sigmoid_binary_cross_entropy", names, logits, labels))


@jax.custom_jvp
def _binary(x, z):
    return binary_cross_entropy_of(x, z)


@_binary.defjvp
def _binary_jvp(primals, tangents):
    (x, z), (dx, dz) = primals, tangents
    x_ = wide(x)
    d = (jax.nn.sigmoid(x_) - wide(z)) * wide(dx) - x_ * wide(dz)
    return binary_cross_entropy_of(x, z), d.astype(x.dtype)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    r"""Mean squared error :math:`\frac1n \sum (p - t)^2` (see :func:`jaxchain.rules.mse`);
    JVP :math:`\dot L = \frac2n \sum (p - t)(\dot p - \dot t)`."""
    return _mse(*check_pair("mse", ("pred", "target"), pred, target, nonempty=True))


@jax.custom_jvp
def _mse(p, t):
    return jnp.mean((wide(p) - wide(t)) ** 2).astype(p.dtype)


@_mse.defjvp
def _mse_jvp(primals, tangents):
    (p, t), (dp, dt) = primals, tangents
    d = (2 / np.size(p)) * jnp.sum((wide(p) - wide(t)) * (wide(dp) - wide(dt)))
    return _mse(p, t), d.astype(p.dtype)
