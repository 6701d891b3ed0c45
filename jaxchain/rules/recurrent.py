"""Whole-sequence recurrent rules: Elman RNN, LSTM and GRU, back-propagated through time.

Shape letters: B batch, T time, I input size, H hidden size, G = k H the stacked gate
pre-activations (k = 1, 4, 3).

Each forward pass is a ``lax.scan`` over time. The LSTM and GRU compute the input projection
``x_t W_x`` inside each step, so that no ``(T, B, G)`` array of all projections exists; the
Elman RNN projects all steps in one product up front (``bench/RESULTS.md`` has both). Each
backward pass is a reverse ``lax.scan`` that carries ``dh`` (and ``dc``) from the last step
to the first and emits the pre-activation gradients ``da_t`` of every step; the weight
gradients are then each one matrix product over all ``B T`` rows: ``dW_x = X^T dA`` and
``dW_h = H_{prev}^T dA``. The LSTM and GRU save the states *before* each step, so that
``H_{prev}`` needs no shifted copy.

Padded batches: with ``lengths``, steps ``t >= lengths[b]`` leave the carry unchanged, output
zeros, and pass the carry's gradient straight through, so they neither receive nor pass
gradient, and the last carry returned is the one at each sequence's length.
"""

import jax
import jax.numpy as jnp
from jax import lax

from jaxchain._primal.recurrent import gru_forward, keep, lstm_forward, rnn_forward, run

# --- shared: checks, projections, masking ----------------------------------------------------


def _project_bwd(xs, w_x, da):
    """Gradients of the input projections ``x_t W_x`` of all steps from ``da (T, B, G)``:
    one product over all B T rows each."""
    b_, t, i = xs.shape
    rows, d = jnp.swapaxes(xs, 0, 1).reshape(t * b_, i), da.reshape(t * b_, da.shape[-1])
    dxs = jnp.swapaxes((d @ w_x.T).reshape(t, b_, i), 0, 1)  # dX = dA W_x^T
    return dxs, rows.T @ d, jnp.sum(d, axis=0)  # dW_x = X^T dA


def _output_cotangent(d_out, mask):
    """The cotangent of :func:`outputs`, time-major ``(T, B, H)``: zero on padding."""
    d = jnp.swapaxes(d_out, 0, 1)
    return d if mask is None else jnp.where(mask[..., None], d, 0)


def _previous(h0, hs):
    """``h_{t-1}`` for every step: ``(T, B, H)``."""
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


# --- Elman RNN -------------------------------------------------------------------------------


def rnn(xs, h0, w_x, w_h, b, lengths=None):
    r"""Elman RNN over a whole sequence, :math:`h_t = \tanh(x_t W_x + h_{t-1} W_h + b)`.

    Back-propagation through time, with :math:`\delta h_t` the gradient reaching
    :math:`h_t` (from the output :math:`y_t = h_t` and from step :math:`t+1`):

    .. math:: da_t = \delta h_t \odot (1 - h_t^2), \qquad
              \delta h_{t-1} = dy_{t-1} + da_t W_h^\top,

    then :math:`dW_x = \sum_t x_t^\top da_t`, :math:`dW_h = \sum_t h_{t-1}^\top da_t`,
    :math:`db = \sum_t da_t`. Saves the hidden states ``(T, B, H)``.

    Args:
      xs: ``(B, T, I)``; h0: ``(B, H)`` or None (zeros); w_x: ``(I, H)``; w_h: ``(H, H)``;
      b: ``(H,)``; lengths: optional ``(B,)`` integers in ``[0, T]``.

    Returns:
      ``(hs, h_last)``: ``(B, T, H)`` (zero past each length) and ``(B, H)``.
    """
    return run("rnn", _rnn, xs, {"h0": h0}, w_x, w_h, {"b": b}, lengths, 1)


@jax.custom_vjp
def _rnn(xs, h0, w_x, w_h, b, mask):
    return rnn_forward(xs, h0, w_x, w_h, b, mask)[0]


def _rnn_bwd(res, cts):
    xs, h0, w_x, w_h, mask, hs = res
    d_out, dh_last = cts

    def step(dh, inputs):
        dy, h, m = inputs
        dh = dh + dy  # delta h_t: from the output and from step t + 1
        da = keep(m, dh * (1 - h * h), 0)  # d tanh(a) = 1 - tanh(a)**2
        return keep(m, da @ w_h.T, dh), da  # delta h_{t-1} (straight through on padding)

    dh0, da = lax.scan(step, dh_last, (_output_cotangent(d_out, mask), hs, mask), reverse=True)
    dxs, dw_x, db = _project_bwd(xs, w_x, da)
    dw_h = jnp.einsum("tbh,tbg->hg", _previous(h0, hs), da)  # dW_h = H_prev^T dA
    return dxs, dh0, dw_x, dw_h, db, None


_rnn.defvjp(rnn_forward, _rnn_bwd)


# --- LSTM ------------------------------------------------------------------------------------


def lstm(xs, h0, c0, w_x, w_h, b, lengths=None):
    r"""LSTM over a whole sequence; gates in the order i, f, g, o (PyTorch's):

    .. math:: [a^i, a^f, a^g, a^o] = x_t W_x + h_{t-1} W_h + b, \quad
              i, f, o = \sigma(a^{i,f,o}), \quad g = \tanh(a^g),
    .. math:: c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t).

    Back-propagation through time, with :math:`\delta h_t, \delta c_t` reaching step t:

    .. math:: \delta c = \delta c_t + \delta h_t \odot o \odot (1 - \tanh^2 c_t), \\
              da^i = \delta c\, g\, i(1-i), \quad da^f = \delta c\, c_{t-1} f(1-f), \quad
              da^g = \delta c\, i (1-g^2), \quad da^o = \delta h_t \tanh(c_t)\, o(1-o), \\
              \delta h_{t-1} = dy_{t-1} + da_t W_h^\top, \qquad \delta c_{t-1} = \delta c \odot f.

    Saves the four activated gates and the states before each step, :math:`h_{t-1}` (for
    :math:`dW_h`) and :math:`c_{t-1}`; :math:`c_t` and :math:`\tanh(c_t)` are recomputed.

    Args:
      xs: ``(B, T, I)``; h0, c0: ``(B, H)`` or None; w_x: ``(I, 4H)``; w_h: ``(H, 4H)``;
      b: ``(4H,)``; lengths: optional ``(B,)`` integers in ``[0, T]``.

    Returns:
      ``(hs, (h_last, c_last))``.
    """
    return run("lstm", _lstm, xs, {"h0": h0, "c0": c0}, w_x, w_h, {"b": b}, lengths, 4)


@jax.custom_vjp
def _lstm(xs, h0, c0, w_x, w_h, b, mask):
    return lstm_forward(xs, h0, c0, w_x, w_h, b, mask)[0]


def _lstm_bwd(res, cts):
    xs, w_x, w_h, mask, h_prev, c_prev, gates = res
    d_out, (dh_last, dc_last) = cts

    def step(carry, inputs):
        (dh, dc), (dy, c_p, (i, f, g, o), m) = carry, inputs
        dh = dh + dy
        tc = jnp.tanh(f * c_p + i * g)  # tanh(c_t), c_t recomputed from c_{t-1} and the gates
        dc_t = dc + dh * o * (1 - tc * tc)  # through h = o tanh(c)
        da = jnp.concatenate(
            [dc_t * g * i * (1 - i), dc_t * c_p * f * (1 - f),  # sigma' = s (1 - s)
             dc_t * i * (1 - g * g), dh * tc * o * (1 - o)],  # tanh' = 1 - g**2
            axis=-1,
        )  # fmt: skip
        da = keep(m, da, 0)
        return (keep(m, da @ w_h.T, dh), keep(m, dc_t * f, dc)), da

    inputs = (_output_cotangent(d_out, mask), c_prev, gates, mask)
    (dh0, dc0), da = lax.scan(step, (dh_last, dc_last), inputs, reverse=True)
    dxs, dw_x, db = _project_bwd(xs, w_x, da)
    dw_h = jnp.einsum("tbh,tbg->hg", h_prev, da)  # dW_h = H_prev^T dA
    return dxs, dh0, dc0, dw_x, dw_h, db, None


_lstm.defvjp(lstm_forward, _lstm_bwd)


# --- GRU -------------------------------------------------------------------------------------


def gru(xs, h0, w_x, w_h, b_x, b_h, lengths=None):
    r"""GRU over a whole sequence; gates in the order r, z, n (PyTorch's and flax's):

    .. math:: [a^r, a^z, a^n] = x_t W_x + b_x, \quad [u^r, u^z, u^n] = h_{t-1} W_h + b_h, \\
              r = \sigma(a^r + u^r), \quad z = \sigma(a^z + u^z), \quad
              n = \tanh(a^n + r \odot u^n), \quad h_t = (1 - z) \odot n + z \odot h_{t-1}.

    Back-propagation through time, with :math:`\delta h_t` reaching step t and
    :math:`dn^{pre} = \delta h_t (1 - z)(1 - n^2)`:

    .. math:: da^n = dn^{pre}, \quad du^n = dn^{pre} \odot r, \quad
              da^r = du^r = dn^{pre} u^n\, r(1-r), \quad
              da^z = du^z = \delta h_t (h_{t-1} - n)\, z(1-z), \\
              \delta h_{t-1} = dy_{t-1} + \delta h_t \odot z + du_t W_h^\top.

    Saves r, z, n, :math:`u^n` and :math:`h_{t-1}`.

    Args:
      xs: ``(B, T, I)``; h0: ``(B, H)`` or None; w_x: ``(I, 3H)``; w_h: ``(H, 3H)``;
      b_x, b_h: ``(3H,)``; lengths: optional ``(B,)`` integers in ``[0, T]``.

    Returns:
      ``(hs, h_last)``.
    """
    biases = {"b_x": b_x, "b_h": b_h}
    return run("gru", _gru, xs, {"h0": h0}, w_x, w_h, biases, lengths, 3)


@jax.custom_vjp
def _gru(xs, h0, w_x, w_h, b_x, b_h, mask):
    return gru_forward(xs, h0, w_x, w_h, b_x, b_h, mask)[0]


def _gru_bwd(res, cts):
    xs, w_x, w_h, mask, h_prev, saved = res
    d_out, dh_last = cts

    def step(dh, inputs):
        dy, h_prev, (r, z, n, u_n), m = inputs
        dh = dh + dy
        dn = dh * (1 - z) * (1 - n * n)  # through h = (1 - z) n + z h_prev, n = tanh(.)
        dr = dn * u_n * r * (1 - r)
        dz = dh * (h_prev - n) * z * (1 - z)
        da = keep(m, jnp.concatenate([dr, dz, dn], axis=-1), 0)  # input pre-activations
        du = keep(m, jnp.concatenate([dr, dz, dn * r], axis=-1), 0)  # recurrent ones
        return keep(m, dh * z + du @ w_h.T, dh), (da, du)

    inputs = (_output_cotangent(d_out, mask), h_prev, saved, mask)
    dh0, (da, du) = lax.scan(step, dh_last, inputs, reverse=True)
    dxs, dw_x, db_x = _project_bwd(xs, w_x, da)
    dw_h = jnp.einsum("tbh,tbg->hg", h_prev, du)  # dW_h = H_prev^T dU
    return dxs, dh0, dw_x, dw_h, db_x, jnp.sum(du, axis=(0, 1)), None


_gru.defvjp(gru_forward, _gru_bwd)
