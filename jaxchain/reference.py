"""The autodiff twins: the names and signatures of :mod:`jaxchain.rules`, in plain
``jax.numpy``, differentiated by ``jax.grad``.

They are the oracle every hand-written rule is checked against, and they can be passed
wherever a rule set is accepted (``ops=jaxchain.reference``). They validate their arguments
with the same checks as the rules, so both fail alike on bad input.
"""

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from jaxchain._validate import along_last_axis
from jaxchain.rules.attention import check_attention
from jaxchain.rules.elementwise import _checked
from jaxchain.rules.linear import check_dense
from jaxchain.rules.losses import check_axis, check_labels, check_pair
from jaxchain.rules.norm import check_layer_norm

__all__ = [
    "dense",
    "dot_product_attention",
    "gelu",
    "layer_norm",
    "log_softmax",
    "mse",
    "relu",
    "sigmoid",
    "sigmoid_binary_cross_entropy",
    "softmax",
    "softmax_cross_entropy",
    "tanh",
]


def dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """``x @ w + b``; x ``(..., I)``, w ``(I, O)``, b ``(O,)``."""
    x, w, b = check_dense("dense", x, w, b)
    return x @ w + along_last_axis(b, x.ndim)


def relu(x: jax.Array) -> jax.Array:
    return jnp.maximum(_checked("relu", x), 0)


def sigmoid(x: jax.Array) -> jax.Array:
    return 0.5 * (1 + jnp.tanh(0.5 * _checked("sigmoid", x)))  # = 1 / (1 + e^-x), stably


def tanh(x: jax.Array) -> jax.Array:
    return jnp.tanh(_checked("tanh", x))


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    x = _checked("gelu", x)
    if approximate:
        return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _logsumexp(x: jax.Array, axis: int) -> jax.Array:
    m = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return m + jnp.log(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True))


def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    x, axis = check_axis("softmax", x, axis)
    return jnp.exp(x - _logsumexp(x, axis))


def log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    x, axis = check_axis("log_softmax", x, axis)
    return x - _logsumexp(x, axis)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example ``-log softmax(logits)[label]``; logits ``(..., V)``, labels ``(...,)``."""
    logits, labels = check_labels("softmax_cross_entropy", logits, labels)
    log_p = logits - _logsumexp(logits, -1)
    return -jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Elementwise ``-z log sigmoid(x) - (1 - z) log(1 - sigmoid(x))``."""
    x, z = check_pair("sigmoid_binary_cross_entropy", ("logits", "labels"), logits, labels)
    return -z * jax.nn.log_sigmoid(x) - (1 - z) * jax.nn.log_sigmoid(-x)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    pred, target = check_pair("mse", ("pred", "target"), pred, target)
    return jnp.mean((pred - target) ** 2)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    x, scale, bias = check_layer_norm("layer_norm", x, scale, bias)
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    scale, bias = along_last_axis(scale, x.ndim), along_last_axis(bias, x.ndim)
    return (x - mu) / jnp.sqrt(var + eps) * scale + bias


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    *,
    is_causal: bool = False,
) -> jax.Array:
    """``softmax(q k^T / sqrt(H)) v`` per head; q ``(B, T, N, H)``, k and v ``(B, S, N, H)``."""
    q, k, v, allowed = check_attention(q, k, v, mask, is_causal)
    s = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])  # (B, N, T, S)
    if allowed is not None:
        s = jnp.where(allowed, s, jnp.finfo(s.dtype).min)
    p = jnp.exp(s - _logsumexp(s, -1))
    if allowed is not None:
        p = jnp.where(allowed, p, 0)  # a fully masked row attends to nothing
    return jnp.einsum("bnts,bsnh->btnh", p, v)
