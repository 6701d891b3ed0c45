"""Layer normalisation and RMS normalisation over the last axis."""

from functools import partial

import jax
import jax.numpy as jnp

from jaxchain._checks import check_layer_norm, check_rms_norm
from jaxchain._primal.linear import along_last_axis
from jaxchain._primal.norm import mean, normalised, rms_normalised, statistics
from jaxchain._primal.precision import wide


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
    mu, r = statistics(wide(x), eps)
    return normalised(x, scale, bias, mu, r), (x, scale, mu, r)


def _layer_norm_bwd(eps, res, g):
    x, scale, mu, r = res
    rows = tuple(range(x.ndim - 1))
    x_hat, g_ = (wide(x) - mu) * r, wide(g)  # x_hat recomputed
    g_hat = g_ * along_last_axis(wide(scale), x.ndim)  # dL/dx_hat
    row_mean = partial(mean, axis=-1)
    dx = r * (g_hat - row_mean(g_hat) - x_hat * row_mean(g_hat * x_hat))
    dscale, dbias = jnp.sum(g_ * x_hat, axis=rows), jnp.sum(g_, axis=rows)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
    r"""Root-mean-square norm over the last axis (Llama's), :math:`y = \hat x \gamma`,
    :math:`\hat x = x\, r`, :math:`r = (\langle x^2 \rangle + \epsilon)^{-1/2}`: layer norm
    without the mean and the bias.

    :math:`\partial r / \partial x_j = -r^3 x_j / D`, so with :math:`\hat g = g \gamma` and
    means :math:`\langle\cdot\rangle` over the last axis,

    .. math:: \frac{\partial L}{\partial x}
              = r \big(\hat g - \hat x \langle \hat g \hat x \rangle\big),
              \quad \frac{\partial L}{\partial \gamma} = \textstyle\sum_{\text{rows}} g \hat x.

    Saves ``x``, ``scale`` (inputs) and ``r`` per row; :math:`\hat x` is recomputed. The
    statistics run in float32 for bfloat16 and float16 (as Hugging Face's ``LlamaRMSNorm``).

    Args:
      x: ``(..., D)``.
      scale: ``(D,)`` (gamma).
      eps: added to the mean square.
    """
    x, scale = check_rms_norm("rms_norm", x, scale)
    return _rms_norm(x, scale, float(eps))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm(x, scale, eps):
    return _rms_norm_fwd(x, scale, eps)[0]


def _rms_norm_fwd(x, scale, eps):
    y, r = rms_normalised(x, scale, eps)
    return y, (x, scale, r)


def _rms_norm_bwd(eps, res, g):
    x, scale, r = res
    rows = tuple(range(x.ndim - 1))
    x_hat, g_ = wide(x) * r, wide(g)  # x_hat recomputed
    g_hat = g_ * along_last_axis(wide(scale), x.ndim)  # dL/dx_hat
    dx = r * (g_hat - x_hat * mean(g_hat * x_hat, -1))
    return dx.astype(x.dtype), jnp.sum(g_ * x_hat, axis=rows).astype(scale.dtype)


_rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)
