"""Forward-mode rules of the whole-sequence Elman RNN, LSTM and GRU.

Each JVP is one forward ``lax.scan`` that carries the states and their tangents together:
differentiating a step by the product and chain rules gives the tangent of the new state from
the tangents of the old state, of the input and of the weights. The tangents of the input
projections, :math:`\\dot x_t W_x + x_t \\dot W_x + \\dot b`, are computed for all steps in
one product up front. Padding (``lengths``) holds the state and its tangent, as the rules.
"""

import jax
import jax.numpy as jnp
from jax import lax

from jaxchain._primal.elementwise import sigmoid_and_slope, tanh_and_slope
from jaxchain._primal.recurrent import (
    gru_forward,
    keep,
    lstm_forward,
    outputs,
    project,
    rnn_forward,
    run,
    time_major,
)


def _tangent_projection(xs, dxs, w_x, dw_x, db):
    """:math:`\\dot x_t W_x + x_t \\dot W_x + \\dot b` for every step, ``(T, B, G)``."""
    return project(dxs, w_x, db) + project(xs, dw_x, jnp.zeros_like(db))


def _results(hs, dhs, last, d_last, mask):
    """The op's outputs and their tangents, from the time-major states."""
    return (outputs(hs, mask), last), (outputs(dhs, mask), d_last)


def rnn(xs, h0, w_x, w_h, b, lengths=None):
    r"""Elman RNN over a whole sequence (see :func:`jaxchain.rules.rnn`),
    :math:`h_t = \tanh(a_t)`, :math:`a_t = x_t W_x + h_{t-1} W_h + b`; JVP, forward in time:

    .. math:: \dot a_t = \dot x_t W_x + x_t \dot W_x + \dot b + \dot h_{t-1} W_h
              + h_{t-1} \dot W_h, \qquad \dot h_t = (1 - h_t^2) \odot \dot a_t.
    """
    return run("rnn", _rnn, xs, {"h0": h0}, w_x, w_h, {"b": b}, lengths, 1)


@jax.custom_jvp
def _rnn(xs, h0, w_x, w_h, b, mask):
    return rnn_forward(xs, h0, w_x, w_h, b, mask)[0]


@_rnn.defjvp
def _rnn_jvp(primals, tangents):
    xs, h0, w_x, w_h, b, mask = primals
    dxs, dh0, dw_x, dw_h, db, _ = tangents

    def step(carry, inputs):
        (h, dh), (a_x, da_x, m) = carry, inputs
        h_new, slope = tanh_and_slope(a_x + h @ w_h)
        dh_new = slope * (da_x + dh @ w_h + h @ dw_h)
        h_new, dh_new = keep(m, h_new, h), keep(m, dh_new, dh)
        return (h_new, dh_new), (h_new, dh_new)

    inputs = (project(xs, w_x, b), _tangent_projection(xs, dxs, w_x, dw_x, db), mask)
    (h, dh), (hs, dhs) = lax.scan(step, (h0, dh0), inputs)
    return _results(hs, dhs, h, dh, mask)


def lstm(xs, h0, c0, w_x, w_h, b, lengths=None):
    r"""LSTM over a whole sequence (see :func:`jaxchain.rules.lstm`); JVP, forward in time,
    with :math:`\dot a = \dot x_t W_x + x_t \dot W_x + \dot b + \dot h_{t-1} W_h + h_{t-1}
    \dot W_h` split into the four gates:

    .. math:: \dot i = i(1-i)\,\dot a^i, \quad \dot f = f(1-f)\,\dot a^f, \quad
              \dot g = (1-g^2)\,\dot a^g, \quad \dot o = o(1-o)\,\dot a^o, \\
              \dot c_t = \dot f c_{t-1} + f \dot c_{t-1} + \dot i g + i \dot g, \qquad
              \dot h_t = \dot o \tanh c_t + o\,(1 - \tanh^2 c_t)\,\dot c_t.
    """
    return run("lstm", _lstm, xs, {"h0": h0, "c0": c0}, w_x, w_h, {"b": b}, lengths, 4)


@jax.custom_jvp
def _lstm(xs, h0, c0, w_x, w_h, b, mask):
    return lstm_forward(xs, h0, c0, w_x, w_h, b, mask)[0]


@_lstm.defjvp
def _lstm_jvp(primals, tangents):
    xs, h0, c0, w_x, w_h, b, mask = primals
    dxs, dh0, dc0, dw_x, dw_h, db, _ = tangents

    def step(carry, inputs):
        (h, c, dh, dc), (x, da_x, m) = carry, inputs
        a_i, a_f, a_g, a_o = jnp.split(x @ w_x + h @ w_h + b[None], 4, axis=-1)
        da_i, da_f, da_g, da_o = jnp.split(da_x + dh @ w_h + h @ dw_h, 4, axis=-1)
        (i, si), (f, sf), (o, so) = (sigmoid_and_slope(z) for z in (a_i, a_f, a_o))
        g, sg = tanh_and_slope(a_g)
        di, df, dg, do = si * da_i, sf * da_f, sg * da_g, so * da_o
        c_new = f * c + i * g
        dc_new = df * c + f * dc + di * g + i * dg
        tc, s_tc = tanh_and_slope(c_new)
        h_new, dh_new = o * tc, do * tc + o * s_tc * dc_new
        h_new, c_new = keep(m, h_new, h), keep(m, c_new, c)
        dh_new, dc_new = keep(m, dh_new, dh), keep(m, dc_new, dc)
        return (h_new, c_new, dh_new, dc_new), (h_new, dh_new)

    inputs = (time_major(xs), _tangent_projection(xs, dxs, w_x, dw_x, db), mask)
    (h, c, dh, dc), (hs, dhs) = lax.scan(step, (h0, c0, dh0, dc0), inputs)
    return _results(hs, dhs, (h, c), (dh, dc), mask)


def gru(xs, h0, w_x, w_h, b_x, b_h, lengths=None):
    r"""GRU over a whole sequence (see :func:`jaxchain.rules.gru`); JVP, forward in time, with
    :math:`\dot a = \dot x_t W_x + x_t \dot W_x + \dot b_x` and :math:`\dot u = \dot h_{t-1}
    W_h + h_{t-1} \dot W_h + \dot b_h`:

    .. math:: \dot r = r(1-r)(\dot a^r + \dot u^r), \quad
              \dot z = z(1-z)(\dot a^z + \dot u^z), \quad
              \dot n = (1-n^2)(\dot a^n + \dot r\, u^n + r\, \dot u^n), \\
              \dot h_t = \dot n + \dot z\,(h_{t-1} - n) + z\,(\dot h_{t-1} - \dot n).
    """
    biases = {"b_x": b_x, "b_h": b_h}
    return run("gru", _gru, xs, {"h0": h0}, w_x, w_h, biases, lengths, 3)


@jax.custom_jvp
def _gru(xs, h0, w_x, w_h, b_x, b_h, mask):
    return gru_forward(xs, h0, w_x, w_h, b_x, b_h, mask)[0]


@_gru.defjvp
def _gru_jvp(primals, tangents):
    xs, h0, w_x, w_h, b_x, b_h, mask = primals
    dxs, dh0, dw_x, dw_h, db_x, db_h, _ = tangents

    def step(carry, inputs):
        (h, dh), (a_x, da_x, m) = carry, inputs
        a_r, a_z, a_n = jnp.split(a_x, 3, axis=-1)
        da_r, da_z, da_n = jnp.split(da_x, 3, axis=-1)
        u_r, u_z, u_n = jnp.split(h @ w_h + b_h[None], 3, axis=-1)
        du_r, du_z, du_n = jnp.split(dh @ w_h + h @ dw_h + db_h[None], 3, axis=-1)
        (r, sr), (z, sz) = sigmoid_and_slope(a_r + u_r), sigmoid_and_slope(a_z + u_z)
        n, sn = tanh_and_slope(a_n + r * u_n)
        dr, dz = sr * (da_r + du_r), sz * (da_z + du_z)
        dn = sn * (da_n + dr * u_n + r * du_n)
        h_new = keep(m, n + z * (h - n), h)
        dh_new = keep(m, dn + dz * (h - n) + z * (dh - dn), dh)
        return (h_new, dh_new), (h_new, dh_new)

    inputs = (project(xs, w_x, b_x), _tangent_projection(xs, dxs, w_x, dw_x, db_x), mask)
    (h, dh), (hs, dhs) = lax.scan(step, (h0, dh0), inputs)
    return _results(hs, dhs, h, dh, mask)
