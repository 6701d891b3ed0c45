"""The flax nnx bridge: with the same parameters, each module gives nnx's own module's outputs
and gradients (float64), and a small nnx model trained with ``nnx.Optimizer`` through the
bridge follows the same model without it."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxchain.nnx as jn
from jaxchain import reference
from jaxchain.nn import decoder
from jaxchain.train import data

F64 = dict(param_dtype=jnp.float64)


@pytest.fixture(autouse=True)
def _standard_promotion():
    """flax promotes dtypes as numpy does, which the suite's strict promotion refuses."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def _x(*shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float64)


def _params(module):
    return nnx.state(module, nnx.Param)


def _same(ours, theirs, *args, where=None, rtol=1e-10, atol=1e-12, **kwargs):
    """``ours`` holds ``theirs``'s params; then their outputs and parameter gradients agree
    (the gradient of the outputs' sum against fixed weights, zero where ``where`` is False);
    returns both outputs."""
    nnx.update(ours, _params(theirs))
    chex.assert_trees_all_equal(_params(ours), _params(theirs))

    def loss(module):
        out = module(*args, **kwargs)
        weight = jax.random.normal(jax.random.key(7), out.shape, out.dtype)
        return jnp.sum(out * (weight if where is None else weight * where)), out

    run = nnx.jit(nnx.value_and_grad(loss, has_aux=True))
    ((a, out_a), ga), ((b, out_b), gb) = run(ours), run(theirs)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    chex.assert_trees_all_close(ga, gb, rtol=rtol, atol=atol)
    return out_a, out_b


def test_linear_is_nnx_linear():
    x = _x(2, 5, 3)
    for use_bias in (True, False):
        ours = jn.Linear(3, 4, use_bias=use_bias, rngs=nnx.Rngs(0), **F64)
        theirs = nnx.Linear(3, 4, use_bias=use_bias, rngs=nnx.Rngs(0), **F64)
        chex.assert_trees_all_equal(_params(ours), _params(theirs))  # the same initialisation
        a, b = _same(ours, theirs, x)
        np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.mark.parametrize("kind", ["LayerNorm", "RMSNorm"])
def test_norms_are_nnx_norms(kind):
    x = 3.0 + 2.0 * _x(4, 6)  # an offset: the mean matters
    ours = getattr(jn, kind)(6, epsilon=1e-5, rngs=nnx.Rngs(0), **F64)
    theirs = getattr(nnx, kind)(6, epsilon=1e-5, rngs=nnx.Rngs(0), **F64)
    nnx.update(theirs, jax.tree.map(lambda p: p + _x(*p.shape, seed=3), _params(theirs)))
    a, b = _same(ours, theirs, x)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_lstm_is_nnx_rnn_of_an_optimized_lstm_cell():
    x, lengths = _x(3, 7, 4), jnp.array([7, 3, 1])
    ours = jn.LSTM(4, 5, rngs=nnx.Rngs(0), **F64)
    theirs = nnx.RNN(nnx.OptimizedLSTMCell(4, 5, rngs=nnx.Rngs(0), **F64))
    a, b = _same(ours, theirs, x)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # with lengths: the final carry, and the outputs within each sequence (nnx leaves the rest)
    within = (jnp.arange(7)[None, :] < lengths[:, None])[..., None]
    carry = (_x(3, 5, seed=4), _x(3, 5, seed=5))
    kwargs = dict(seq_lengths=lengths, initial_carry=carry, return_carry=True)
    (ca, ha), (cb, hb) = ours(x, **kwargs), theirs(x, **kwargs)
    chex.assert_trees_all_close(ca, cb, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ha * within, hb * within, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(ha * ~within, 0.0)
    _same(ours, theirs, x, seq_lengths=lengths, where=within)
    # an empty sequence keeps its initial carry (nnx.RNN's does not: it is no case of theirs)
    (c, h), _ = ours(x, seq_lengths=jnp.array([7, 3, 0]), initial_carry=carry, return_carry=True)
    np.testing.assert_array_equal(c[2], carry[0][2])
    np.testing.assert_array_equal(h[2], carry[1][2])


@pytest.mark.parametrize(
    ("kv_heads", "memory", "call"),
    [(None, False, {}), (None, False, {"is_causal": True}), (1, True, {"mask": True})],
    ids=["self", "causal", "gqa-cross-mask"],
)
def test_multi_head_attention_is_nnx_multi_head_attention(kv_heads, memory, call):
    """nnx's own float64 attention is off by ~2e-7 (measured against a float64 einsum and
    softmax), so against nnx the tolerance is 1e-6; nnx's module with jaxchain's
    ``attention_fn`` (its projections, our attention) agrees with ours to 1e-12."""
    args = (_x(2, 5, 8), _x(2, 6, 8, seed=2)) if memory else (_x(2, 5, 8),)
    if call.get("mask"):
        call = {
            "mask": jax.random.bernoulli(jax.random.key(3), 0.7, (2, 1, 5, 6)).at[..., 0].set(True)
        }
    kwargs = dict(num_kv_heads=kv_heads, decode=False, **F64)
    ours = jn.MultiHeadAttention(2, 8, rngs=nnx.Rngs(0), **kwargs)
    theirs = nnx.MultiHeadAttention(2, 8, rngs=nnx.Rngs(0), **kwargs)
    chex.assert_trees_all_equal(_params(ours), _params(theirs))  # the same initialisation
    a, b = _same(ours, theirs, *args, rtol=1e-6, atol=1e-6, **call)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    if memory:
        plain = nnx.MultiHeadAttention(
            2, 8, attention_fn=jn.attention_fn, rngs=nnx.Rngs(0), **kwargs
        )
        a, b = _same(ours, plain, *args, **call)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_decoder_block_is_the_functional_block():
    block = jn.DecoderBlock(8, 4, 2, 16, num_layers=3, rngs=nnx.Rngs(0))
    block = jax.tree.map(lambda p: p.astype(jnp.float64), block)
    x = _x(2, 6, 8)
    positions = jnp.broadcast_to(jnp.arange(6), (2, 6)) + 3

    def ours(module):
        out = module(x, positions)
        return jnp.sum(out**2), out

    def theirs(params):
        out = decoder.apply_block(params, x, positions, settings=block.settings, ops=reference)[0]
        return jnp.sum(out**2), out

    (_, got), grads = nnx.jit(nnx.value_and_grad(ours, has_aux=True))(block)
    (_, want), want_grads = jax.jit(jax.value_and_grad(theirs, has_aux=True))(block.params())
    np.testing.assert_allclose(got, want, rtol=1e-12)
    chex.assert_trees_all_close({k: grads[k][...] for k in want_grads}, want_grads, rtol=1e-10)
    assert block.w_q.shape == (8, 4, 2) and block.w_k.shape == (8, 2, 2)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="MultiHeadAttention: the rules do not compute attention"):
        jn.MultiHeadAttention(2, 8, dropout_rate=0.1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="decode"):
        jn.MultiHeadAttention(2, 8, decode=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="reduction_axes other than -1"):
        jn.LayerNorm(6, reduction_axes=(-2, -1), rngs=nnx.Rngs(0))
    q = _x(1, 3, 2, 4)
    with pytest.raises(ValueError, match="attention dropout"):
        jn.attention_fn(q, q, q, dropout_rate=0.5, deterministic=False)


class _Classifier(nnx.Module):
    """64 pixels -> hidden -> norm -> relu -> 10 classes, from the given layer classes."""

    def __init__(self, linear, norm, *, rngs):
        self.hidden = linear(64, 32, rngs=rngs)
        self.norm = norm(32, rngs=rngs)
        self.out = linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.norm(self.hidden(x))))


def test_an_nnx_model_trains_the_same_through_the_bridge():
    digits = data.digits()
    x, y = jnp.asarray(digits.train.x[:128]), jnp.asarray(digits.train.y[:128])
    models = [
        _Classifier(jn.Linear, jn.LayerNorm, rngs=nnx.Rngs(0)),
        _Classifier(nnx.Linear, nnx.LayerNorm, rngs=nnx.Rngs(0)),
    ]
    chex.assert_trees_all_equal(_params(models[0]), _params(models[1]))

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    curves = []
    for model in models:
        optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
        curves.append([float(step(model, optimizer, x[i::4], y[i::4])) for i in list(range(4)) * 5])
    np.testing.assert_allclose(curves[0], curves[1], rtol=2e-5)
    assert curves[0][-1] < 0.6 * curves[0][0]
    chex.assert_trees_all_close(_params(models[0]), _params(models[1]), rtol=1e-4, atol=1e-5)
