"""Forward-mode rules of layer norm and RMS norm over the last axis."""

from functools import partial

import jax

from jaxchain._checks import check_layer_norm, check_rms_norm
from jaxchain._primal.linear import along_last_axis
from jaxchain._primal.norm import mean, normalised, rms_normalised, statistics
from jaxchain._primal.precision import wide


def _along(a, ndim: int):
    return along_last_axis(wide(a), ndim)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    r"""Layer norm, :math:`y = \hat x \gamma + \beta`, :math:`\hat x = (x - \mu) r`; with
    means :math:`\langle\cdot\rangle` over the last axis, :math:`\dot\mu = \langle \dot x
    \rangle` and :math:`\dot r = -r^2 \langle \hat x \dot x \rangle`, so

    .. math:: \dot{\hat x} = r\big(\dot x - \langle \dot x \rangle
              - \hat x \langle \hat x \dot x \rangle\big), \qquad
              \dot y = \dot{\hat x} \gamma + \hat x \dot\gamma + \dot\beta

    (the reverse rule's formula with the roles of input and output swapped: the Jacobian of
    :math:`\hat x` is symmetric). See :func:`jaxchain.rules.layer_norm`."""
    x, scale, bias = check_layer_norm("layer_norm", x, scale, bias)
    return _layer_norm(x, scale, bias, float(eps))


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, eps):
    return normalised(x, scale, bias, *statistics(wide(x), eps))


@_layer_norm.defjvp
def _layer_norm_jvp(eps, primals, tangents):
    (x, scale, bias), (dx, d_scale, d_bias) = primals, tangents
    mu, r = statistics(wide(x), eps)
    x_hat, dx_ = (wide(x) - mu) * r, wide(dx)
    row_mean = partial(mean, axis=-1)
    dx_hat = r * (dx_ - row_mean(dx_) - x_hat * row_mean(x_hat * dx_))
    dy = dx_hat * _along(scale, x.ndim) + x_hat * _along(d_scale, x.ndim)
    dy = dy + _along(d_bias, x.ndim)
    return normalised(x, scale, bias, mu, r), dy.astype(x.dtype)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
    r"""RMS norm, :math:`y = \hat x \gamma`, :math:`\hat x = x r`,
    :math:`r = (\langle x^2 \rangle + \epsilon)^{-1/2}`; :math:`\dot r = -r^2 \langle \hat x
    \dot x \rangle`, so

    .. math:: \dot{\hat x} = r\big(\dot x - \hat x \langle \hat x \dot x \rangle\big), \qquad
              \dot y = \dot{\hat x} \gamma + \hat x \dot\gamma.

    See :func:`jaxchain.rules.rms_norm`."""
    x, scale = check_rms_norm("rms_norm", x, scale)
    return _rms_norm(x, scale, float(eps))


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _rms_norm(x, scale, eps):
    return rms_normalised(x, scale, eps)[0]


@_rms_norm.defjvp
def _rms_norm_jvp(eps, primals, tangents):
    (x, scale), (dx, d_scale) = primals, tangents
    y, r = rms_normalised(x, scale, eps)
    x_hat, dx_ = wide(x) * r, wide(dx)
    dx_hat = r * (dx_ - x_hat * mean(x_hat * dx_, -1))
    dy = dx_hat * _along(scale, x.ndim) + x_hat * _along(d_scale, x.ndim)
    return y, dy.astype(x.dtype)
