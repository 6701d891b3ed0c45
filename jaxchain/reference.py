"""The autodiff twins: the names and signatures of :mod:`jaxchain.rules`, in plain
``jax.numpy``, differentiated by ``jax.grad``.

They are the oracle every hand-written rule is checked against, and they can be passed
wherever a rule set is accepted (``ops=jaxchain.reference``). So that a bug in the rules
cannot hide in the oracle, this module imports nothing from :mod:`jaxchain.rules`: it shares
only the argument checks of :mod:`jaxchain._checks`, which raise and compute nothing, so
both fail alike on bad input. Masks, padding and the NaN given for out-of-range integers
inside ``jit`` are written here again, on purpose.
"""

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from jaxchain._checks import (
    check_attention,
    check_axis,
    check_dense,
    check_embedding,
    check_labels,
    check_layer_norm,
    check_linear_labels,
    check_pair,
    check_recurrent,
    check_unary,
)

__all__ = [
    "dense",
    "dot_product_attention",
    "embedding",
    "gelu",
    "gru",
    "layer_norm",
    "linear_softmax_cross_entropy",
    "log_softmax",
    "lstm",
    "mse",
    "relu",
    "rnn",
    "sigmoid",
    "sigmoid_binary_cross_entropy",
    "softmax",
    "softmax_cross_entropy",
    "tanh",
]


def dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """``x @ w + b``; x ``(..., I)``, w ``(I, O)``, b ``(O,)``."""
    x, w, b = check_dense("dense", x, w, b)
    return x @ w + b.reshape((1,) * (x.ndim - 1) + b.shape)


def embedding(ids: jax.Array, table: jax.Array) -> jax.Array:
    """``table[ids]``; ids integers in ``[0, V)``, table ``(V, D)``."""
    ids, table = check_embedding("embedding", ids, table)
    v = table.shape[0]
    valid = (ids >= 0) & (ids < v)  # an invalid id (traced only): a NaN row
    return jnp.where(valid[..., None], table[jnp.clip(ids, 0, max(v - 1, 0))], jnp.nan)


def relu(x: jax.Array) -> jax.Array:
    return jnp.maximum(check_unary("relu", x), 0)


def sigmoid(x: jax.Array) -> jax.Array:
    return 0.5 * (1 + jnp.tanh(0.5 * check_unary("sigmoid", x)))  # = 1 / (1 + e^-x), stably


def tanh(x: jax.Array) -> jax.Array:
    return jnp.tanh(check_unary("tanh", x))


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    x = check_unary("gelu", x)
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
    logits = _nan_rows(logits, labels, logits.shape[-1])
    log_p = logits - _logsumexp(logits, -1)
    return -jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]


def _nan_rows(x, labels, v):
    """NaN rows (values and gradients) where a label lies outside ``[0, v)``."""
    return x + jnp.where((labels >= 0) & (labels < v), 0, jnp.nan).astype(x.dtype)[..., None]


def linear_softmax_cross_entropy(
    x: jax.Array, w: jax.Array, labels: jax.Array, *, chunk_size: int | None = None
) -> jax.Array:
    """``softmax_cross_entropy(x @ w, labels)``: the whole ``(..., V)`` logits (``chunk_size``
    is accepted, for the rule's signature, and ignored)."""
    x, w, labels = check_linear_labels("linear_softmax_cross_entropy", x, w, labels)
    return softmax_cross_entropy(x @ w, labels)


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
    lead = (1,) * (x.ndim - 1)
    scale, bias = scale.reshape(lead + scale.shape), bias.reshape(lead + bias.shape)
    return (x - mu) / jnp.sqrt(var + eps) * scale + bias


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    *,
    is_causal: bool = False,
    block_size: int | tuple[int, int] | None = None,
) -> jax.Array:
    """``softmax(q k^T / sqrt(H)) v`` per head; q ``(B, T, N, H)``, k and v ``(B, S, N, H)``.
    Always the whole ``(T, S)`` computation: ``block_size`` is accepted (the signature is the
    rule's) and ignored."""
    q, k, v, allowed = check_attention(q, k, v, mask)
    t, s_ = q.shape[1], k.shape[1]
    if is_causal:
        causal = (jnp.arange(s_)[None, :] <= jnp.arange(t)[:, None])[None, None]  # j <= i
        if allowed is not None:
            allowed = allowed.reshape((1,) * (4 - allowed.ndim) + allowed.shape) & causal
        else:
            allowed = causal
    s = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])  # (B, N, T, S)
    if allowed is not None:
        s = jnp.where(allowed, s, jnp.finfo(s.dtype).min)
    p = jnp.exp(s - _logsumexp(s, -1))
    if allowed is not None:
        p = jnp.where(allowed, p, 0)  # a fully masked row attends to nothing
    return jnp.einsum("bnts,bsnh->btnh", p, v)


# --- recurrent: a plain lax.scan over the cell -------------------------------------------------


def _keep(m, new, old):
    return new if m is None else jnp.where(m[:, None], new, old)


def _inputs(xs, carry, w_h, lengths):
    """Zero states where None; the mask ``(T, B)`` of real steps; NaN inputs for a sequence
    whose (traced) length lies outside ``[0, T]``."""
    b, t, _ = xs.shape
    carry = tuple(jnp.zeros((b, w_h.shape[0]), xs.dtype) if c is None else c for c in carry)
    if lengths is None:
        return xs, carry, None
    lengths = jnp.asarray(lengths)
    bad = (lengths < 0) | (lengths > t)
    xs = jnp.where(bad[:, None, None], jnp.nan, xs)
    real = jnp.arange(t, dtype=lengths.dtype)[:, None] < lengths[None, :]
    return xs, carry, real | bad[None, :]  # a bad sequence runs every step, on NaN


def _scan_cell(cell, carry, xs, mask):
    """Run ``cell(carry, x_t) -> carry`` over ``xs (B, T, I)``; on padding (``mask`` False)
    the carry is kept and the output is zero. The output of a step is the carry's first
    element (``h``)."""

    def step(carry, inputs):
        x, m = inputs
        new = jax.tree.map(lambda n, o: _keep(m, n, o), cell(carry, x), carry)
        h = jax.tree.leaves(new)[0]
        return new, h if m is None else jnp.where(m[:, None], h, 0)

    last, ys = jax.lax.scan(step, carry, (jnp.swapaxes(xs, 0, 1), mask))
    return jnp.swapaxes(ys, 0, 1), last


def rnn(xs, h0, w_x, w_h, b, lengths=None):
    """Elman RNN ``h_t = tanh(x_t W_x + h_{t-1} W_h + b)``; returns ``(hs, h_last)``."""
    xs = check_recurrent("rnn", xs, {"h0": h0}, w_x, w_h, {"b": b}, lengths, 1)
    xs, (h0,), mask = _inputs(xs, (h0,), w_h, lengths)
    hs, (h,) = _scan_cell(lambda c, x: (jnp.tanh(x @ w_x + c[0] @ w_h + b[None]),), (h0,), xs, mask)
    return hs, h


def lstm(xs, h0, c0, w_x, w_h, b, lengths=None):
    """LSTM, gates i, f, g, o; returns ``(hs, (h_last, c_last))``."""
    carry = {"h0": h0, "c0": c0}
    xs = check_recurrent("lstm", xs, carry, w_x, w_h, {"b": b}, lengths, 4)
    xs, carry, mask = _inputs(xs, (h0, c0), w_h, lengths)

    def cell(carry, x):
        h, c = carry
        a_i, a_f, a_g, a_o = jnp.split(x @ w_x + h @ w_h + b[None], 4, axis=-1)
        c = sigmoid(a_f) * c + sigmoid(a_i) * jnp.tanh(a_g)
        return sigmoid(a_o) * jnp.tanh(c), c

    return _scan_cell(cell, carry, xs, mask)


def gru(xs, h0, w_x, w_h, b_x, b_h, lengths=None):
    """GRU, gates r, z, n; returns ``(hs, h_last)``."""
    biases = {"b_x": b_x, "b_h": b_h}
    xs = check_recurrent("gru", xs, {"h0": h0}, w_x, w_h, biases, lengths, 3)
    xs, (h0,), mask = _inputs(xs, (h0,), w_h, lengths)

    def cell(carry, x):
        (h,) = carry
        a_r, a_z, a_n = jnp.split(x @ w_x + b_x[None], 3, axis=-1)
        u_r, u_z, u_n = jnp.split(h @ w_h + b_h[None], 3, axis=-1)
        r, z = sigmoid(a_r + u_r), sigmoid(a_z + u_z)
        n = jnp.tanh(a_n + r * u_n)
        return ((1 - z) * n + z * h,)

    hs, (h,) = _scan_cell(cell, (h0,), xs, mask)
    return hs, h
