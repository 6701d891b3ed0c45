"""Same weights in flax.nnx (an implementation nobody here wrote): same outputs, same
gradients. float32, within the tolerance table."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxchain import nn
from jaxchain.check import assert_close, tolerance

TOL = tolerance(jnp.float32)
B, T, I, H = 3, 5, 4, 6


def _assert_close(got, want):
    """Within the float32 tolerance, each leaf relative to its largest value (floored at 1% of
    the largest of the whole tree: the key bias of attention has a gradient that is zero up to
    rounding)."""
    assert_close(got, want, tol=TOL)


def _set(module, path, value):
    """Assign ``value`` to the nnx Param at the dotted ``path`` of ``module``."""
    *parents, leaf = path.split(".")
    for p in parents:
        module = getattr(module, p)
    getattr(module, leaf).set_value(value)


def _compare(ours, theirs, params, *inputs, unused=()):
    """Outputs, and gradients with respect to params (but those ``unused`` by flax) and the
    first input, of ``sum(out * ct)`` through both implementations."""
    out = ours(params, *inputs)
    ct = jax.random.normal(jax.random.key(9), out.shape, out.dtype)
    _assert_close(out, theirs(params, *inputs))
    loss = lambda f: lambda p, x, *rest: jnp.sum(f(p, x, *rest) * ct)  # noqa: E731
    want = jax.grad(loss(theirs), (0, 1))(params, *inputs)
    got = jax.grad(loss(ours), (0, 1))(params, *inputs)
    drop = lambda grads: ({k: v for k, v in grads[0].items() if k not in unused}, grads[1])  # noqa: E731
    _assert_close(drop(got), drop(want))


def _sequence():
    return jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)


def _lengths():
    return jnp.array([T, 2, 4])


def _flax_rnn(make_cell, assign):
    def run(params, xs, lengths):
        cell = make_cell()
        assign(cell, params)
        ys = nnx.RNN(cell)(xs, seq_lengths=lengths)
        valid = jnp.arange(T)[None, :, None] < lengths[:, None, None]
        return jnp.where(valid, ys, 0)  # flax leaves padded outputs unspecified

    return run


def _lstm_blocks(cell, params, names_x, names_h):
    w_x, w_h, b = (jnp.split(params[k], 4, axis=-1) for k in ("w_x", "w_h", "b"))
    for n, w in zip(names_x, w_x, strict=True):
        _set(cell, f"{n}.kernel", w)
    for n, w, bias in zip(names_h, w_h, b, strict=True):
        _set(cell, f"{n}.kernel", w)
        _set(cell, f"{n}.bias", bias)


LSTM_CELLS = {
    "OptimizedLSTMCell": (
        lambda: nnx.OptimizedLSTMCell(I, H, rngs=nnx.Rngs(0)),
        lambda c, p: [
            _set(c, "dense_i.kernel", p["w_x"]),
            _set(c, "dense_h.kernel", p["w_h"]),
            _set(c, "dense_h.bias", p["b"]),
        ],
    ),
    "LSTMCell": (
        lambda: nnx.LSTMCell(I, H, rngs=nnx.Rngs(0)),
        lambda c, p: _lstm_blocks(c, p, ("ii", "if_", "ig", "io"), ("hi", "hf", "hg", "ho")),
    ),
}


@pytest.mark.parametrize("cell", sorted(LSTM_CELLS))
def test_lstm_matches_flax(cell):
    params = nn.lstm.init(jax.random.key(0), I, H)
    params["b"] = jax.random.normal(jax.random.key(2), params["b"].shape, jnp.float32)
    ours = lambda p, xs, lengths: nn.lstm.apply(p, xs, lengths=lengths)[0]  # noqa: E731
    _compare(ours, _flax_rnn(*LSTM_CELLS[cell]), params, _sequence(), _lengths())


def test_gru_matches_flax():
    params = nn.gru.init(jax.random.key(0), I, H)
    params["b_x"] = jax.random.normal(jax.random.key(2), params["b_x"].shape, jnp.float32)
    # flax's GRUCell has no recurrent bias: b_h stays zero

    def assign(cell, p):
        _set(cell, "dense_i.kernel", p["w_x"])
        _set(cell, "dense_i.bias", p["b_x"])
        _set(cell, "dense_h.kernel", p["w_h"])

    theirs = _flax_rnn(lambda: nnx.GRUCell(I, H, rngs=nnx.Rngs(0)), assign)
    ours = lambda p, xs, lengths: nn.gru.apply(p, xs, lengths=lengths)[0]  # noqa: E731
    _compare(ours, theirs, params, _sequence(), _lengths(), unused=("b_h",))


@pytest.mark.parametrize("is_causal", [False, True])
def test_attention_matches_flax(is_causal):
    d, n = 8, 2
    params = nn.attention.init(jax.random.key(0), d, n)
    noise = jax.random.normal(jax.random.key(3), (d,), jnp.float32)[0]  # a nonzero scalar
    params = {k: v + 0.1 * noise * jnp.ones_like(v) for k, v in params.items()}
    x = jax.random.normal(jax.random.key(1), (B, T, d), jnp.float32)
    mask = jnp.arange(T)[None, :] < _lengths()[:, None]

    def theirs(p, x, mask):
        m = nnx.MultiHeadAttention(n, d, decode=False, rngs=nnx.Rngs(0))
        for ours_name, path in (("q", "query"), ("k", "key"), ("v", "value")):
            _set(m, f"{path}.kernel", p[f"w_{ours_name}"])
            _set(m, f"{path}.bias", p[f"b_{ours_name}"])
        _set(m, "out.kernel", p["w_o"])
        _set(m, "out.bias", p["b_o"])
        keys = mask[:, None, None, :]
        if is_causal:
            keys = keys & nnx.make_causal_mask(jnp.ones((B, T))).astype(bool)
        return m(x, mask=keys)

    ours = lambda p, x, mask: nn.attention.apply(p, x, mask, is_causal=is_causal)  # noqa: E731
    _compare(ours, theirs, params, x, mask)
