"""The activations' values and derivatives, and dropout's masked scaling."""

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc

from jaxchain._primal.precision import wide

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


_GELU_CUBIC = 0.044715


def gelu_and_derivative(x, approximate):
    """``gelu(x)`` and its derivative."""
    if approximate:
        t = jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3))
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)  # du/dx
        return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
    cdf = 0.5 * erfc(x * -(1 / math.sqrt(2)))  # Phi(x)
    pdf = jnp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))  # phi(x)
    return x * cdf, cdf + x * pdf  # d [x Phi(x)] = Phi(x) + x phi(x)


def silu_and_derivative(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``silu(x)`` and its derivative, from one sigmoid."""
    s = jax.nn.sigmoid(x)
    return x * s, s * (1 + x * (1 - s))


def dropout_mask(key, rate, shape):
    return jax.random.bernoulli(key, 1 - rate, shape)


def dropped(x, key, rate: float):
    """``m * x / (1 - rate)`` with the mask ``m`` drawn from ``key``: the forward pass, and
    (dropout being linear) its backward and its JVP, on the cotangent or the tangent."""
    kept = dropout_mask(key, rate, x.shape)
    return jnp.where(kept, wide(x) / (1 - rate) if rate < 1 else 0, 0).astype(x.dtype)


def sigmoid_and_slope(x):
    """``sigma(x)`` and its derivative (also the recurrent JVPs' gates)."""
    y = jax.nn.sigmoid(x)
    return y, y * (1 - y)  # d sigma = sigma (1 - sigma)


def tanh_and_slope(x):
    """``tanh(x)`` and its derivative (also the recurrent JVPs' gates)."""
    y = jnp.tanh(x)
    return y, 1 - y * y  # d tanh = 1 - tanh**2


def relu_and_slope(x):
    return jnp.maximum(x, 0), (x > 0).astype(x.dtype)  # d relu(x) = [x > 0]
