"""Forward-mode rules of the elementwise activations and of dropout.

An elementwise op's Jacobian is diagonal, so its JVP is the tangent times the local
derivative, :math:`\\dot y = f'(x)\\,\\dot x`: the same derivative the reverse rule multiplies
the cotangent by (a diagonal matrix is its own transpose).
"""

from collections.abc import Callable
from functools import partial

import jax

from jaxchain._checks import check_dropout, check_unary
from jaxchain._primal.elementwise import (
    dropped,
    gelu_and_derivative,
    relu_and_slope,
    sigmoid_and_slope,
    silu_and_derivative,
    tanh_and_slope,
)
from jaxchain._primal.precision import wide


def _diagonal(value_and_slope: Callable) -> Callable:
    """A ``custom_jvp`` of ``y = f(x)`` with JVP ``f'(x) * dx``, from ``value_and_slope(x) ->
    (f(x), f'(x))`` (computed in float32 for narrower inputs, returned in the input dtype)."""

    @jax.custom_jvp
    def op(x):
        return value_and_slope(wide(x))[0].astype(x.dtype)

    @op.defjvp
    def jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        y, slope = value_and_slope(wide(x))
        return y.astype(x.dtype), (wide(dx) * slope).astype(x.dtype)

    return op


_relu, _sigmoid, _tanh = (_diagonal(f) for f in (relu_and_slope, sigmoid_and_slope, tanh_and_slope))
_silu = _diagonal(silu_and_derivative)
_gelu = {a: _diagonal(partial(gelu_and_derivative, approximate=a)) for a in (False, True)}


def relu(x: jax.Array) -> jax.Array:
    r"""Rectified linear unit, :math:`\max(x, 0)`; JVP :math:`\dot y = [x > 0]\,\dot x`."""
    return _relu(check_unary("relu", x))


def sigmoid(x: jax.Array) -> jax.Array:
    r"""Logistic sigmoid; JVP :math:`\dot y = \sigma(x)(1 - \sigma(x))\,\dot x`."""
    return _sigmoid(check_unary("sigmoid", x))


def tanh(x: jax.Array) -> jax.Array:
    r"""Hyperbolic tangent; JVP :math:`\dot y = (1 - \tanh^2 x)\,\dot x`."""
    return _tanh(check_unary("tanh", x))


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    r"""Gaussian error linear unit; JVP :math:`\dot y = (\Phi(x) + x\varphi(x))\,\dot x`
    (exact), or the tanh form's derivative (``approximate=True``, see
    :func:`jaxchain.rules.gelu`)."""
    return _gelu[bool(approximate)](check_unary("gelu", x))


def silu(x: jax.Array) -> jax.Array:
    r"""Sigmoid linear unit :math:`x\sigma(x)`; JVP
    :math:`\dot y = \sigma(x)(1 + x(1 - \sigma(x)))\,\dot x`."""
    return _silu(check_unary("silu", x))


def dropout(x: jax.Array, key: jax.Array, rate: float) -> jax.Array:
    r"""Inverted dropout, :math:`y = m \odot x / (1 - p)` with the mask of
    :func:`jaxchain.rules.dropout` (the same key gives the same mask); linear in ``x``, so its
    JVP is the same op on the tangent: :math:`\dot y = m \odot \dot x / (1 - p)`."""
    x, key, rate = check_dropout("dropout", x, key, rate)
    return x if rate == 0 else _dropout(x, key, rate)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _dropout(x, key, rate):
    return dropped(x, key, rate)


@_dropout.defjvp
def _dropout_jvp(rate, primals, tangents):
    (x, key), (dx, _) = primals, tangents
    return dropped(x, key, rate), dropped(dx, key, rate)  # the same mask
