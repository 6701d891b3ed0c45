"""Layer and RMS normalisation: the row statistics and the normalised rows."""

import jax
import jax.numpy as jnp

from jaxchain._primal.linear import along_last_axis
from jaxchain._primal.precision import wide


def mean(x, axis):
    """The mean along ``axis`` (kept); 0 along an empty axis (nothing to normalise)."""
    return jnp.sum(x, axis=axis, keepdims=True) / max(x.shape[axis], 1)


def statistics(x, eps):
    """The row mean and ``r = (var + eps)^(-1/2)``, kept."""
    mu = mean(x, -1)
    var = mean(jnp.square(x - mu), -1)
    return mu, jax.lax.rsqrt(var + eps)


def normalised(x, scale, bias, mu, r):
    """``(x - mu) r scale + bias`` from the statistics, in float32 for narrower inputs."""
    scale_, bias_ = (along_last_axis(wide(a), x.ndim) for a in (scale, bias))
    return ((wide(x) - mu) * r * scale_ + bias_).astype(x.dtype)


def rms_normalised(x, scale, eps):
    """``(x r scale, r)``, ``r = (<x^2> + eps)^(-1/2)``, in float32 for narrower inputs."""
    x_ = wide(x)
    r = jax.lax.rsqrt(mean(jnp.square(x_), -1) + eps)
    return (x_ * r * along_last_axis(wide(scale), x.ndim)).astype(x.dtype), r
