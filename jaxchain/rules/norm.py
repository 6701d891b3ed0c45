"""Layer normalisation over the last axis."""

from functools import partial

import jax
import jax.numpy as jnp

from jaxchain import _validate
from jaxchain._checks import check_layer_norm
from jaxchain.rules._precision import wide


def _mean(x, axis):
    """The mean along ``axis`` (kept); 0 along an empty axis (nothing to normalise)."""
    return jnp.sum(x, axis=axis, keepdims=True) / max(x.shape[axis], 1)


def _statistics(x, eps):
    mu = _mean(x, -1)
    var = _mean(jnp.square(x - mu), -1)
    return mu, jax.lax.rsqrt(var + eps)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    r"""Layer norm over the last axis, :math:`y = \hat x \gamma + \beta`,
    :math:`\hat x = (x - \mu)\, r`, :math:`r = (\sigma^2 + \epsilon)^{-1/2}`.

    With :math:`\hat g = g \gamma` and means :math:`\langle\cdot\rangle` over the last axis,

    .. math:: \frac{\partial L}{\partial x}
              = r \big(\hat g - \langle \hat g \rangle - \hat x \langle \hat g \hat x \rangle\big),
              \quad \frac{\partial L}{\partial \gamma} = \textstyle\sum_{\text{rows}} g \hat x,
              \quad \frac{\partial L}{\partial \beta} = \textstyle\sum_{\text{rows}} g.

    Saves ``x``, ``scale`` (inputs) and the per-row mean and ``r``; :math:`\hat x` is
    recomputed. The statistics and the backward's row means run in float32 for bfloat16 and
    float16; a row of ``D = 0`` features is empty (its mean is never taken).

    Args:
      x: ``(..., D)``.
      scale: ``(D,)`` (gamma).
      bias: ``(D,)`` (beta).
      eps: added to the variance.
    """
    x, scale, bias = check_layer_norm("layer_norm", x, scale, bias)
    return _layer_norm(x, scale, bias, float(eps))


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, eps):
    return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
    x_ = wide(x)
    mu, r = _statistics(x_, eps)
    scale_, bias_ = (_validate.along_last_axis(wide(a), x.ndim) for a in (scale, bias))
    return ((x_ - mu) * r * scale_ + bias_).astype(x.dtype), (x, scale, mu, r)


def _layer_norm_bwd(eps, res, g):
    x, scale, mu, r = res
    rows = tuple(range(x.ndim - 1))
    x_hat, g_ = (wide(x) - mu) * r, wide(g)  # x_hat recomputed
    g_hat = g_ * _validate.along_last_axis(wide(scale), x.ndim)  # dL/dx_hat
    mean = partial(_mean, axis=-1)
    dx = r * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))
    dscale, dbias = jnp.sum(g_ * x_hat, axis=rows), jnp.sum(g_, axis=rows)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)
