"""Elementwise activations: relu, sigmoid, tanh, gelu, silu; and dropout.

Each backward pass is the cotangent ``g`` times the local derivative. Where the derivative is
a function of the output (relu, sigmoid, tanh), the forward saves only its output ``y``;
gelu's derivative is not, so the forward computes it next to ``y`` (sharing ``erf``) and saves
the derivative itself: one array either way, and the backward is a single product.
"""

from functools import partial

import jax
import jax.numpy as jnp

from jaxchain._checks import check_dropout, check_unary
from jaxchain._primal.elementwise import dropped, gelu_and_derivative, silu_and_derivative
from jaxchain._primal.precision import wide


def relu(x: jax.Array) -> jax.Array:
    r"""Rectified linear unit, :math:`\max(x, 0)`.

    .. math:: \frac{\partial y}{\partial x} = [x > 0]

    Saves the output ``y`` (``y > 0`` exactly where ``x > 0``). The derivative at 0 is 0.

    >>> relu(jnp.array([-1.0, 2.0])).tolist()
    [0.0, 2.0]
    """
    return _relu(check_unary("relu", x))


@jax.custom_vjp
def _relu(x):
    return _relu_fwd(x)[0]


def _relu_fwd(x):
    y = jnp.maximum(x, 0)
    return y, y


def _relu_bwd(y, g):
    return (jnp.where(y > 0, g, 0),)  # d relu(x) = [x > 0]


_relu.defvjp(_relu_fwd, _relu_bwd)


def sigmoid(x: jax.Array) -> jax.Array:
    r"""Logistic sigmoid, :math:`\sigma(x) = 1 / (1 + e^{-x})`.

    .. math:: \frac{\partial \sigma}{\partial x} = \sigma(x)\,(1 - \sigma(x))

    Saves the output ``y``.
    """
    return _sigmoid(check_unary("sigmoid", x))


@jax.custom_vjp
def _sigmoid(x):
    return _sigmoid_fwd(x)[0]


def _sigmoid_fwd(x):
    y = jax.nn.sigmoid(wide(x)).astype(x.dtype)
    return y, y


def _sigmoid_bwd(y, g):
    y_ = wide(y)
    return ((wide(g) * y_ * (1 - y_)).astype(y.dtype),)  # d sigma(x) = sigma (1 - sigma)


_sigmoid.defvjp(_sigmoid_fwd, _sigmoid_bwd)


def tanh(x: jax.Array) -> jax.Array:
    r"""Hyperbolic tangent.

    .. math:: \frac{\partial \tanh x}{\partial x} = 1 - \tanh^2 x

    Saves the output ``y``.
    """
    return _tanh(check_unary("tanh", x))


@jax.custom_vjp
def _tanh(x):
    return _tanh_fwd(x)[0]


def _tanh_fwd(x):
    y = jnp.tanh(wide(x)).astype(x.dtype)
    return y, y


def _tanh_bwd(y, g):
    y_ = wide(y)
    return ((wide(g) * (1 - y_ * y_)).astype(y.dtype),)  # d tanh(u) = 1 - tanh(u)**2


_tanh.defvjp(_tanh_fwd, _tanh_bwd)


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    r"""Gaussian error linear unit.

    Exact: :math:`y = x\,\Phi(x)`, with :math:`\Phi` the standard normal CDF and
    :math:`\varphi` its density,

    .. math:: \frac{\partial y}{\partial x} = \Phi(x) + x\,\varphi(x).

    ``approximate=True``: :math:`y = \tfrac12 x (1 + \tanh u)`,
    :math:`u = \sqrt{2/\pi}\,(x + 0.044715\,x^3)`,

    .. math:: \frac{\partial y}{\partial x} = \tfrac12 (1 + \tanh u)
              + \tfrac12 x\,(1 - \tanh^2 u)\,\sqrt{2/\pi}\,(1 + 3 \cdot 0.044715\,x^2).

    Saves the derivative :math:`\partial y / \partial x`, computed in the forward pass from
    the same ``erfc`` (or ``tanh``) as ``y``; :math:`\Phi(x) = \tfrac12
    \operatorname{erfc}(-x/\sqrt2)` keeps its relative precision for negative ``x``, where
    ``1 + erf`` cancels. The value returned is the one this forward pass computes.
    bfloat16 and float16 are computed in float32.
    """
    return _gelu(check_unary("gelu", x), bool(approximate))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gelu(x, approximate):
    return _gelu_fwd(x, approximate)[0]


def _gelu_fwd(x, approximate):
    y, dy = gelu_and_derivative(wide(x), approximate)
    return y.astype(x.dtype), dy.astype(x.dtype)


def _gelu_bwd(approximate, derivative, g):
    return ((wide(g) * wide(derivative)).astype(g.dtype),)


_gelu.defvjp(_gelu_fwd, _gelu_bwd)


def silu(x: jax.Array) -> jax.Array:
    r"""Sigmoid linear unit (swish), :math:`y = x\,\sigma(x)`.

    .. math:: \frac{\partial y}{\partial x} = \sigma(x) + x\,\sigma(x)(1 - \sigma(x))
              = \sigma(x)\,\big(1 + x\,(1 - \sigma(x))\big)

    Saves the input ``x`` (the derivative is not a function of ``y``); :math:`\sigma(x)` is
    recomputed. bfloat16 and float16 are computed in float32.
    """
    return _silu(check_unary("silu", x))


@jax.custom_vjp
def _silu(x):
    return _silu_fwd(x)[0]


def _silu_fwd(x):
    return (wide(x) * jax.nn.sigmoid(wide(x))).astype(x.dtype), x


def _silu_bwd(x, g):
    _, dy = silu_and_derivative(wide(x))  # sigma (1 + x (1 - sigma))
    return ((wide(g) * dy).astype(x.dtype),)


_silu.defvjp(_silu_fwd, _silu_bwd)


def dropout(x: jax.Array, key: jax.Array, rate: float) -> jax.Array:
    r"""Inverted dropout: each element is kept with probability :math:`1 - p` and scaled by
    :math:`1 / (1 - p)`, else zeroed: :math:`y = m \odot x / (1 - p)`,
    :math:`m \sim \operatorname{Bernoulli}(1 - p)` drawn from ``key``.

    .. math:: \frac{\partial L}{\partial x} = m \odot g / (1 - p)

    Saves only the key: the backward pass draws the mask again from it (the same key gives
    the same mask), instead of keeping a mask the size of ``x``. The mask is
    ``jax.random.bernoulli(key, 1 - rate, x.shape)``, as :class:`flax.linen.Dropout` draws it
    from the ``rng`` it is given, so the two agree element for element. ``rate = 0`` is the
    identity and ``rate = 1`` gives zeros, as flax.

    Args:
      x: any floating array.
      key: a PRNG key (``jax.random.key(seed)``, or a raw ``PRNGKey``).
      rate: the probability of dropping an element, a Python number in ``[0, 1]``.
    """
    x, key, rate = check_dropout("dropout", x, key, rate)
    if rate == 0:
        return x
    return _dropout(x, key, rate)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dropout(x, key, rate):
    return _dropout_fwd(x, key, rate)[0]


def _dropout_fwd(x, key, rate):
    return dropped(x, key, rate), key


def _dropout_bwd(rate, key, g):
    return dropped(g, key, rate), None  # the mask, drawn again from the key


_dropout.defvjp(_dropout_fwd, _dropout_bwd)
