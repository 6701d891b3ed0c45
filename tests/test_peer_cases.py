"""The cases other projects test their own implementations with, run against jaxchain's rules
(and twins). Each group names the file it comes from; the cases (shapes, values, expected
numbers) are theirs, the test code is ours, and the expected values come from the
counterpart library run here or from the case itself."""

import math

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.special import ndtr

from jaxchain import check, reference, rules

OPS = (rules, reference)
F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16


def _ops_id(m):
    return m.__name__


@pytest.fixture(autouse=True)
def _standard_promotion():
    """jax.nn, optax and flax are written for JAX's standard dtype promotion (int32 lengths
    against int64 indices, float32 logits against float64 inputs); the rest of the suite
    runs strict."""
    with jax.numpy_dtype_promotion("standard"):
        yield


# --- JAX, tests/nn_test.py ---------------------------------------------------------------------


@pytest.mark.parametrize("ops", OPS, ids=_ops_id)
@pytest.mark.parametrize("approximate", [False, True])
def test_jax_gelu_against_the_normal_cdf(ops, approximate):
    """testGelu: 10,000 points in [-12, 5], float32, against x Phi(x); rtol 2e-5 (and atol
    1e-3 for the tanh approximation)."""
    x = jnp.linspace(-12, 5, 10000, dtype=F32)
    want = np.asarray(x, np.float64) * np.asarray(ndtr(x.astype(jnp.float64)))
    atol = 1e-3 if approximate else 0
    np.testing.assert_allclose(ops.gelu(x, approximate), want, rtol=2e-5, atol=atol)


@pytest.mark.parametrize("ops", OPS, ids=_ops_id)
@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_jax_dtype_matches_input(ops, dtype):
    """testDtypeMatchesInput: gelu (both), relu and sigmoid keep a scalar's dtype."""
    x = jnp.zeros((), dtype)
    for f in (ops.gelu, lambda x: ops.gelu(x, True), ops.relu, ops.sigmoid, ops.tanh):
        assert f(x).dtype == dtype


@pytest.mark.parametrize("ops", OPS, ids=_ops_id)
def test_jax_softmax_empty_array(ops):
    """testSoftmaxEmptyArray."""
    x = jnp.array([], dtype=float)
    for f in (ops.softmax, ops.log_softmax):
        np.testing.assert_array_equal(f(x), x)


def test_jax_softmax_grad():
    """testSoftmaxGrad: first and second order at [5.5, 1.3, -4.2, 0.9] against finite
    differences (check_grads order=2)."""
    check.assert_vjp(rules.softmax, None, jnp.array([5.5, 1.3, -4.2, 0.9]))


@pytest.mark.parametrize("ops", OPS, ids=_ops_id)
def test_jax_relu_grad(ops):
    """testReluGrad and testReluGradAtZero: derivative 1 at 1, 0 at -1 and at 0."""
    grads = [float(jax.grad(ops.relu)(jnp.float64(x))) for x in (1.0, -1.0, 0.0)]
    assert grads == [1.0, 0.0, 0.0]


def _vjp(f, *args, cotangent):
    out, pull = jax.vjp(f, *args)
    return out, pull(cotangent)


@pytest.mark.parametrize("dtype", [BF16, F16])
@pytest.mark.parametrize(
    ("mode", "groups"), [("plain", 1), ("causal", 2), ("custom", 4), ("padding", 2)]
)
def test_jax_dot_product_attention(dtype, mode, groups):
    """testDotProductAttention (group_num 1, 2, 4) and testDotProductAttentionMask: B, S, T, N,
    H = 2, 128, 128, 4, 32 (key and value with N / group_num heads) in bfloat16 and float16,
    outputs and dQ, dK, dV against jax.nn.dot_product_attention within atol = rtol = 0.01
    (0.02 for masked gradients); the padding case passes key_value_seq_lengths to both."""
    b, s, t, n, h = 2, 128, 128, 4, 32
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (b, t, n, h), dtype)
    k, v = (jax.random.normal(key, (b, s, n // groups, h), dtype) for key in keys[1:3])
    grad = jax.random.normal(keys[3], (b, t, n, h), dtype)
    mask, kv_lengths, causal = None, None, mode == "causal"
    if mode == "custom":
        mask = jnp.tril(jnp.ones((t, s), bool))[None, None]
    if mode == "padding":
        kv_lengths = jnp.array([s // 4, s // 2], jnp.int32)
    options = dict(mask=mask, is_causal=causal, key_value_seq_lengths=kv_lengths)
    want = _vjp(
        lambda q, k, v: jax.nn.dot_product_attention(q, k, v, **options, implementation="xla"),
        q, k, v, cotangent=grad,
    )  # fmt: skip
    for block_size in (None, 64):
        got = _vjp(
            lambda q, k, v, b=block_size: rules.dot_product_attention(
                q, k, v, **options, block_size=b
            ),
            q, k, v, cotangent=grad,
        )  # fmt: skip
        tol = 0.01 if mode == "plain" else 0.02
        for a, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(
                np.asarray(a, np.float32), np.asarray(w, np.float32), atol=tol, rtol=tol
            )


# --- optax, optax/losses/_classification_test.py ----------------------------------------------


@pytest.mark.parametrize("ops", OPS, ids=_ops_id)
def test_optax_softmax_cross_entropy_with_integer_labels(ops):
    """SoftmaxCrossEntropyTest's fixed values, with the integer labels of
    SoftmaxCrossEntropyWithIntegerLabelsTest."""
    logits = jnp.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], F32)
    labels = jnp.array([1, 0], jnp.int32)
    np.testing.assert_allclose(
        ops.softmax_cross_entropy(logits, labels), [9.00013, 3.0696733], atol=1e-4
    )
    np.testing.assert_allclose(
        ops.softmax_cross_entropy(logits, labels),
        optax.softmax_cross_entropy_with_integer_labels(logits, labels),
        rtol=1e-6,
    )


@pytest.mark.parametrize("ops", OPS, ids=_ops_id)
def test_optax_minus_infinite_logits(ops):
    """SafeSoftmaxCrossEntropyTest's -inf rows, with one-hot targets as labels: a label
    among the finite logits costs what the finite logits give (log 2, then 0); a label on a
    -inf logit costs +inf; gradients stay finite where the loss is."""
    inf = np.inf
    logits = jnp.array([[-inf, 0.0, 0.0], [-inf, 0.0, -inf], [-inf, 0.0, 0.0]], F32)
    labels = jnp.array([1, 1, 0], jnp.int32)
    loss = ops.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, [0.693147, 0.0, inf], atol=1e-6)
    grads = jax.grad(lambda z: jnp.sum(ops.softmax_cross_entropy(z, labels)[:2]))(logits)
    assert np.all(np.isfinite(grads))


SIGMOID_CASES = [  # (preds, labels, mean loss) of SigmoidCrossEntropyTest
    ([-1e09, -1e-09], [1.0, 0.0], 5e08),
    ([-1e09, -1e-09], [0.0, 1.0], 0.3465736),
    ([1e09, 1e-09], [1.0, 0.0], 0.3465736),
    ([1e09, 1e-09], [0.0, 1.0], 5e08),
    ([-1e09, 1e-09], [1.0, 0.0], 5e08),
    ([-1e09, 1e-09], [0.0, 1.0], 0.3465736),
    ([1e09, -1e-09], [1.0, 0.0], 0.3465736),
    ([1e09, -1e-09], [0.0, 1.0], 5e08),
    ([0.0, 0.0], [1.0, 0.0], 0.6931472),
    ([0.0, 0.0], [0.0, 1.0], 0.6931472),
]


@pytest.mark.parametrize("ops", OPS, ids=_ops_id)
@pytest.mark.parametrize(("preds", "labels", "expected"), SIGMOID_CASES)
def test_optax_sigmoid_cross_entropy(ops, preds, labels, expected):
    loss = ops.sigmoid_binary_cross_entropy(jnp.array(preds), jnp.array(labels))
    np.testing.assert_allclose(jnp.mean(loss), expected, rtol=1e-6, atol=1e-6)


# --- PyTorch OpInfo sample inputs, torch/testing/_internal/common_methods_invocations.py ------
# (sample_inputs_softmax_variant, sample_inputs_layer_norm, sample_inputs_gelu,
#  sample_inputs_cross_entropy, sample_inputs_scaled_dot_product_attention; S = 5, M = 10)

SOFTMAX_CASES = [
    ((5,), 0),
    ((5, 5), 0),
    ((5, 5), 1),
    ((5, 5), -1),
    ((5, 10, 5), 2),
    ((5, 0, 0), -1),
]


@pytest.mark.parametrize(("shape", "axis"), SOFTMAX_CASES)
def test_torch_softmax_variants(shape, axis):
    x = jax.random.normal(jax.random.key(0), shape)
    for ours, theirs in ((rules.softmax, jax.nn.softmax), (rules.log_softmax, jax.nn.log_softmax)):
        np.testing.assert_allclose(ours(x, axis), theirs(x, axis=axis), rtol=1e-12, atol=1e-15)
        if x.size:
            check.assert_vjp(lambda x, f=ours: f(x, axis), lambda x, f=theirs: f(x, axis=axis), x)


def test_torch_softmax_of_a_scalar_is_refused():
    """The OpInfo's 0-d input with dim 0: PyTorch accepts it; jax.nn, and jaxchain, do not
    (there is no axis to normalise over) — a ValueError naming the axis and shape."""
    with pytest.raises(ValueError, match=r"axis 0 is out of range for x of shape \(\)"):
        rules.softmax(jnp.float64(1.0), 0)


@pytest.mark.parametrize("shape", [(1,), (1, 2), (0, 1), (2, 2, 3)])
def test_torch_layer_norm_shapes(shape):
    """sample_inputs_layer_norm's inputs normalised over their last axis (the 1-D
    normalized_shape cases), against flax.linen.LayerNorm."""
    x = jax.random.normal(jax.random.key(1), shape)
    scale, bias = 1 + 0.1 * jnp.arange(shape[-1]), 0.2 * jnp.arange(shape[-1])
    flax_ln = fnn.LayerNorm(epsilon=1e-5, param_dtype=jnp.float64)
    want = flax_ln.apply({"params": {"scale": scale, "bias": bias}}, x)
    np.testing.assert_allclose(rules.layer_norm(x, scale, bias), want, rtol=1e-10, atol=1e-12)
    if x.size:
        check.assert_vjp(rules.layer_norm, reference.layer_norm, x, scale, bias)


@pytest.mark.parametrize("shape", [(), (5,), (5, 5)])
@pytest.mark.parametrize("approximate", [False, True])
def test_torch_gelu_shapes(shape, approximate):
    x = 3 * jax.random.normal(jax.random.key(2), shape)
    np.testing.assert_allclose(rules.gelu(x, approximate), jax.nn.gelu(x, approximate), rtol=1e-12)
    check.assert_vjp(lambda x: rules.gelu(x, approximate), None, x)


@pytest.mark.parametrize("shape", [(2, 3), (2, 5, 3), (0, 3)])
def test_torch_cross_entropy_shapes(shape):
    """sample_inputs_cross_entropy's (N, C) and (N, C, d) inputs (classes last here), and an
    empty batch, against optax."""
    logits = jax.random.normal(jax.random.key(3), shape)
    labels = jax.random.randint(jax.random.key(4), shape[:-1], 0, shape[-1])
    want = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(rules.softmax_cross_entropy(logits, labels), want, rtol=1e-12)
    if logits.size:
        check.assert_vjp(
            rules.softmax_cross_entropy, reference.softmax_cross_entropy, logits, labels
        )


@pytest.mark.parametrize(
    ("b", "n", "t", "s", "h", "causal"),
    [(4, 2, 3, 5, 8, False), (1, 1, 1, 1, 4, False), (2, 2, 5, 5, 8, True), (0, 2, 3, 3, 4, False)],
)
def test_torch_scaled_dot_product_attention_shapes(b, n, t, s, h, causal):
    """Non-square T != S, length-1, causal and empty-batch inputs, against jax.nn."""
    keys = jax.random.split(jax.random.key(5), 3)
    q = jax.random.normal(keys[0], (b, t, n, h))
    k, v = (jax.random.normal(key, (b, s, n, h)) for key in keys[1:])
    theirs = jax.nn.dot_product_attention(q, k, v, is_causal=causal)  # float32 logits inside
    truth = reference.dot_product_attention(q, k, v, is_causal=causal)
    for block_size in (None, 2):
        got = rules.dot_product_attention(q, k, v, is_causal=causal, block_size=block_size)
        np.testing.assert_allclose(got, truth, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got, theirs, rtol=1e-5, atol=1e-6)
    if b:
        check.assert_vjp(
            lambda q, k, v: rules.dot_product_attention(q, k, v, is_causal=causal),
            lambda q, k, v: reference.dot_product_attention(q, k, v, is_causal=causal),
            q, k, v,
        )  # fmt: skip


# --- flax, tests/linen/linen_recurrent_test.py (RNN with seq_lengths) --------------------------


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru"])
def test_flax_final_carry_is_the_carry_at_each_length(op):
    """With random lengths, the final carry returned is the carry after each sequence's own
    length: the same as running that sequence alone, cut to its length."""
    from jaxchain.cases.registry import RULES

    args = list(RULES[op].args(6, B=3, T=6))
    lengths = jnp.array([6, 2, 0])
    padded = getattr(rules, op)(*args, lengths)[1]
    for i, length in enumerate(lengths.tolist()):
        alone = list(args)
        alone[0] = args[0][i : i + 1, :length]
        states = 2 if op == "lstm" else 1
        for j in range(1, 1 + states):
            alone[j] = args[j][i : i + 1]
        final = getattr(rules, op)(*alone)[1]
        for got, want in zip(jax.tree.leaves(padded), jax.tree.leaves(final), strict=True):
            np.testing.assert_allclose(got[i], want[0], rtol=1e-12, atol=1e-14)


# --- equinox, tests/test_nn.py (test_dot_product_attention[_weights]) --------------------------


@pytest.mark.parametrize("ops", OPS, ids=_ops_id)
def test_equinox_hand_computed_attention(ops):
    """q = [0, sqrt 2], keys e1 and e2: scores 0 and 1, weights (1, e) / (1 + e); with the
    second key masked, all weight on the first."""
    q = jnp.array([0.0, 2**0.5]).reshape(1, 1, 1, 2)
    k = jnp.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    weights = ops.dot_product_attention(q, k, jnp.eye(2).reshape(1, 2, 1, 2))[0, 0, 0]
    np.testing.assert_allclose(weights, jnp.array([1, math.e]) / (1 + math.e), rtol=1e-12)
    v = jnp.array([[1.0, 0.0], [0.0, 0.0]]).reshape(1, 2, 1, 2)  # equinox's v = [1, 0], padded
    np.testing.assert_allclose(ops.dot_product_attention(q, k, v)[0, 0, 0, 0], 1 / (1 + math.e))
    mask = jnp.array([True, False]).reshape(1, 1, 1, 2)
    assert float(ops.dot_product_attention(q, k, v, mask=mask)[0, 0, 0, 0]) == 1.0


@pytest.mark.parametrize("ops", OPS, ids=_ops_id)
def test_equinox_float16_weights_do_not_saturate(ops):
    """q = [1], keys [9] and [1] in float16: the weights keep the dtype and the larger stays
    below 1."""
    q = jnp.array([[1.0]], F16).reshape(1, 1, 1, 1)
    k = jnp.array([[9.0], [1.0]], F16).reshape(1, 2, 1, 1)
    weights = jnp.stack(
        [ops.dot_product_attention(q, k, v.reshape(1, 2, 1, 1)) for v in jnp.eye(2, dtype=F16)]
    )  # each value vector picks one key's weight
    assert weights.dtype == F16 and float(weights.max()) < 1
