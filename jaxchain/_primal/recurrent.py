"""The whole-sequence recurrences: the checks and masks around them, and the forward scans
of the Elman RNN, the LSTM and the GRU, each with what its backward pass saves.

Shape letters: B batch, T time, I input size, H hidden size, G = k H the stacked gate
pre-activations (k = 1, 4, 3).
"""

import jax
import jax.numpy as jnp
from jax import lax

from jaxchain._checks import check_recurrent
from jaxchain._primal.precision import wide


def prepare(xs, carry: tuple, w_h, lengths):
    """Zero initial states where None, and the time mask: None, or boolean ``(T, B)``, True
    where ``t < lengths[b]``. bfloat16 and float16 are computed in float32: the
    whole-sequence rules see float32 arrays, and :func:`narrow` casts their results back.
    A sequence whose length lies outside ``[0, T]`` (possible only for traced lengths, which
    the checks cannot see) gets NaN inputs: NaN outputs and gradients, never a silently
    clipped length."""
    b, t, _ = xs.shape
    xs = wide(xs)
    carry = tuple(jnp.zeros((b, w_h.shape[0]), xs.dtype) if c is None else wide(c) for c in carry)
    if lengths is None:
        return xs, carry, None
    lengths = jnp.asarray(lengths)
    valid = (lengths >= 0) & (lengths <= t)
    xs = jnp.where(valid[:, None, None], xs, jnp.nan)  # every step of it runs, on NaN
    steps = jnp.arange(t, dtype=lengths.dtype)[:, None]
    return xs, carry, (steps < lengths[None, :]) | ~valid[None, :]


def run(op: str, kernel, xs, carry: dict, w_x, w_h, biases: dict, lengths, gates: int):
    """A whole-sequence op: its checks, :func:`prepare`, ``kernel(xs, *states, w_x, w_h,
    *biases, mask)`` in float32 for narrower inputs, and :func:`narrow`."""
    xs = check_recurrent(op, xs, carry, w_x, w_h, biases, lengths, gates)
    xs, states, mask = prepare(xs, tuple(carry.values()), w_h, lengths)
    weights = (wide(a) for a in (w_x, w_h, *biases.values()))
    return narrow(kernel(xs, *states, *weights, mask), w_h.dtype)


def narrow(outputs, dtype):
    """The rule's float32 results in the input dtype (their gradients come back cast)."""
    return jax.tree.map(lambda a: a.astype(dtype), outputs)


def project(xs, w_x, b):
    """Input pre-activations of every step at once, ``(B, T, I) -> (T, B, G)``: one
    ``(T B, I) x (I, G)`` product (the Elman RNN's; the LSTM and GRU project inside each
    step)."""
    b_, t, i = xs.shape
    return (time_major(xs).reshape(t * b_, i) @ w_x + b[None, :]).reshape(t, b_, w_x.shape[1])


def time_major(xs):
    """``(B, T, I) -> (T, B, I)``: the scans run over the leading axis."""
    return jnp.swapaxes(xs, 0, 1)


def keep(m, new, old):
    """``new`` where the step is real (``m`` True), else ``old``; ``m (B,)`` or None."""
    return new if m is None else jnp.where(m[:, None], new, old)


def outputs(hs, mask):
    """Time-major carries ``(T, B, H)`` to batch-major outputs, zero past each length."""
    ys = hs if mask is None else jnp.where(mask[..., None], hs, 0)
    return jnp.swapaxes(ys, 0, 1)  # (B, T, H)


def rnn_forward(xs, h0, w_x, w_h, b, mask):
    def step(h, inputs):
        a_x, m = inputs
        h = keep(m, jnp.tanh(a_x + h @ w_h), h)
        return h, h

    h_last, hs = lax.scan(step, h0, (project(xs, w_x, b), mask))  # hs (T, B, H)
    return (outputs(hs, mask), h_last), (xs, h0, w_x, w_h, mask, hs)


def lstm_forward(xs, h0, c0, w_x, w_h, b, mask):
    def step(carry, inputs):
        (h, c), (x, m) = carry, inputs
        a_i, a_f, a_g, a_o = jnp.split(x @ w_x + h @ w_h + b[None], 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(a_i), jax.nn.sigmoid(a_f), jnp.tanh(a_g), jax.nn.sigmoid(a_o)
        c_new = keep(m, f * c + i * g, c)
        h_new = keep(m, o * jnp.tanh(c_new), h)
        return (h_new, c_new), (h, c, (i, f, g, o))  # the states before the step, its gates

    last, (h_prev, c_prev, gates) = lax.scan(step, (h0, c0), (time_major(xs), mask))
    hs = jnp.concatenate([h_prev, last[0][None]])[1:]  # h_t, fused into the output transpose
    return (outputs(hs, mask), last), (xs, w_x, w_h, mask, h_prev, c_prev, gates)


def gru_forward(xs, h0, w_x, w_h, b_x, b_h, mask):
    def step(h, inputs):
        x, m = inputs
        a_r, a_z, a_n = jnp.split(x @ w_x + b_x[None, :], 3, axis=-1)
        u_r, u_z, u_n = jnp.split(h @ w_h + b_h[None, :], 3, axis=-1)
        r, z = jax.nn.sigmoid(a_r + u_r), jax.nn.sigmoid(a_z + u_z)
        n = jnp.tanh(a_n + r * u_n)
        h_new = keep(m, n + z * (h - n), h)
        return h_new, (h, (r, z, n, u_n))  # h_{t-1}, and what the backward needs

    h_last, (h_prev, saved) = lax.scan(step, h0, (time_major(xs), mask))
    hs = jnp.concatenate([h_prev, h_last[None]])[1:]  # h_t, fused into the output transpose
    return (outputs(hs, mask), h_last), (xs, w_x, w_h, mask, h_prev, saved)
