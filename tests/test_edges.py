"""The edges where users go: extreme logits, low precision, empty axes, non-finite inputs —
each against jax.nn, optax or a float64 truth (the cases of the edges issue)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxchain import check, nn, reference, rules, tangents

OPS = (rules, tangents, reference)
F32, BF16 = jnp.float32, jnp.bfloat16


@pytest.mark.parametrize("ops", OPS, ids=lambda m: m.__name__)
def test_softmax_exact_at_any_finite_scale(ops):
    np.testing.assert_allclose(
        ops.softmax(jnp.full(3, 1e8, F32)), jax.nn.softmax(jnp.full(3, 1e8, F32))
    )
    x = 1e4 + jnp.arange(4.0, dtype=F32)
    assert abs(float(jnp.sum(ops.softmax(x))) - 1) < 2e-7
    truth = jax.nn.log_softmax(x.astype(jnp.float64))
    np.testing.assert_allclose(ops.log_softmax(x), truth, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ops", OPS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("block_size", [None, 3])
def test_bfloat16_attention_of_ones_is_exactly_one(ops, block_size):
    kq, kk = jax.random.split(jax.random.key(0))
    q, k = (4 * jax.random.normal(key, (2, 7, 2, 8), BF16) for key in (kq, kk))
    o = ops.dot_product_attention(q, k, jnp.ones((2, 7, 2, 8), BF16), block_size=block_size)
    assert o.dtype == BF16
    np.testing.assert_array_equal(np.asarray(o, np.float32), 1.0)


@pytest.mark.parametrize("block_size", [None, 2])
def test_attention_of_equal_huge_negative_scores_is_the_mean(block_size):
    q, k = jnp.ones((1, 3, 1, 4)), jnp.full((1, 3, 1, 4), -1e20)  # scores all -2e20, finite
    v = jax.random.normal(jax.random.key(1), (1, 3, 1, 4))
    o = rules.dot_product_attention(q, k, v, block_size=block_size)
    np.testing.assert_allclose(o, jnp.broadcast_to(v.mean(1, keepdims=True), o.shape), rtol=1e-12)


def test_bfloat16_attention_error_against_float64_is_no_worse_than_jax_nn():
    keys = jax.random.split(jax.random.key(2), 3)
    q, k, v = (jax.random.normal(key, (2, 16, 2, 16), BF16) for key in keys)
    truth = reference.dot_product_attention(*(a.astype(jnp.float64) for a in (q, k, v)))

    def error(o):
        return float(jnp.max(jnp.abs(o.astype(jnp.float64) - truth)) / jnp.max(jnp.abs(truth)))

    ours = max(error(rules.dot_product_attention(q, k, v, block_size=b)) for b in (None, 4))
    with jax.numpy_dtype_promotion("standard"):  # jax.nn promotes bfloat16 to float32
        theirs = error(jax.nn.dot_product_attention(q, k, v))
    assert ours <= theirs * 1.25


@pytest.mark.parametrize("ops", OPS, ids=lambda m: m.__name__)
def test_empty_axes(ops):
    for f in (ops.softmax, ops.log_softmax):
        assert f(jnp.zeros((0,))).shape == (0,) and f(jnp.zeros((5, 0, 0))).shape == (5, 0, 0)
    g = jax.grad(lambda x: jnp.sum(ops.softmax(x)))(jnp.zeros((0, 3)))
    assert g.shape == (0, 3)
    for module in (nn.rnn, nn.lstm, nn.gru):
        params = module.init(jax.random.key(0), 3, 4)
        for b, t in ((2, 0), (0, 3)):
            hs, _ = module.apply(params, jnp.ones((b, t, 3), F32), ops=ops)
            assert hs.shape == (b, t, 4)
            xs = jnp.ones((b, t, 3), F32)
            grads = jax.grad(lambda p, m=module, xs=xs: jnp.sum(m.apply(p, xs, ops=ops)[0]))(params)
            assert all(float(jnp.abs(a).max()) == 0 for a in jax.tree.leaves(grads))
    q = jnp.ones((1, 0, 2, 4))  # T = 0
    assert (
        ops.dot_product_attention(q, jnp.ones((1, 3, 2, 4)), jnp.ones((1, 3, 2, 4))).shape
        == q.shape
    )
    o = ops.dot_product_attention(
        jnp.ones((1, 2, 1, 4)), jnp.ones((1, 0, 1, 4)), jnp.ones((1, 0, 1, 4))
    )
    np.testing.assert_array_equal(o, 0.0)  # S = 0: nothing to attend to
    assert ops.softmax_cross_entropy(jnp.zeros((0, 5)), jnp.zeros((0,), jnp.int32)).shape == (0,)
    with pytest.raises(ValueError, match="mse: pred is empty"):
        ops.mse(jnp.zeros((0,)), jnp.zeros((0,)))


@pytest.mark.parametrize("ops", OPS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("x_shape, out", [((4, 0), 3), ((2, 3, 0), 3), ((4, 8), 0), ((0, 8), 3)])
def test_dense_gradients_with_an_empty_axis(ops, x_shape, out):
    """Zero rows, a zero input width or a zero output width: the gradients autodiff gives
    (the weight gradient's row count is explicit: a reshape to -1 fails on a zero width, as
    the rule's did once)."""
    args = (jnp.ones(x_shape, F32), jnp.ones((x_shape[-1], out), F32), jnp.ones((out,), F32))
    grads = [jax.grad(lambda *a, o=o: jnp.sum(o.dense(*a) ** 2), (0, 1, 2))(*args)
             for o in (ops, reference)]  # fmt: skip
    for ours, theirs in zip(*grads, strict=True):
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("ops", OPS, ids=lambda m: m.__name__)
def test_gelu_value_and_gradient_at_minus_six(ops):
    x = jnp.array([-6.0, -3.0, 0.5], F32)
    truth = jax.grad(lambda x: jnp.sum(jax.nn.gelu(x, approximate=False)))(x.astype(jnp.float64))
    np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(ops.gelu(x)))(x), truth, rtol=1e-5)
    np.testing.assert_allclose(
        ops.gelu(x), jax.nn.gelu(x.astype(jnp.float64), approximate=False), rtol=1e-5
    )


def test_gelu_returns_what_its_forward_pass_computes():
    x = jnp.linspace(-8, 8, 101, dtype=F32)
    value, _ = jax.vjp(rules.gelu, x)
    np.testing.assert_array_equal(rules.gelu(x), value)


@pytest.mark.parametrize("ops", OPS, ids=lambda m: m.__name__)
def test_non_finite_logits_follow_optax(ops):
    inf = jnp.inf
    logits = jnp.array(
        [[inf, 0.0, 1.0], [inf, 0.0, 1.0], [-inf, 0.0, 1.0], [-inf, -inf, -inf], [jnp.nan, 0, 0]]
    )
    labels = jnp.array([0, 1, 0, 0, 1])
    want = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_array_equal(
        ops.softmax_cross_entropy(logits, labels), want
    )  # nan, inf, inf, nan, nan
    x, z = jnp.array([inf, inf, -inf, -inf, inf]), jnp.array([0.0, 1.0, 0.0, 1.0, 0.5])
    np.testing.assert_array_equal(
        ops.sigmoid_binary_cross_entropy(x, z), optax.sigmoid_binary_cross_entropy(x, z)
    )


def test_the_oracle_catches_a_softmax_that_loses_its_normaliser():
    """The old formula, exp(x - (m + log sum)), as a rule: its own twin could not see it; the
    independent twin does, at float32 logits of 1e4."""

    @jax.custom_vjp
    def old_softmax(x):
        m = jnp.max(x, -1, keepdims=True)
        return jnp.exp(x - (m + jnp.log(jnp.sum(jnp.exp(x - m), -1, keepdims=True))))

    old_softmax.defvjp(
        lambda x: (old_softmax(x), old_softmax(x)),
        lambda y, g: (y * (g - jnp.sum(g * y, -1, keepdims=True)),),
    )
    x = 1e4 + jnp.arange(8.0, dtype=F32).reshape(2, 4)
    assert not check.check_vjp(old_softmax, reference.softmax, x, finite_differences=False).ok
    assert check.check_vjp(rules.softmax, reference.softmax, x, finite_differences=False).ok


def _rule_names():
    from jaxchain.cases.registry import RULES

    return sorted(RULES)


def _low_precision_cases():
    for dtype in ("bfloat16", "float16"):  # float16: thorough
        marks = [pytest.mark.slow] if dtype == "float16" else []
        for name in _rule_names():
            yield pytest.param(dtype, name, id=f"{dtype}-{name}", marks=marks)


@pytest.mark.parametrize(("dtype", "name"), list(_low_precision_cases()))
def test_every_rule_in_low_precision_is_no_worse_than_its_counterpart(dtype, name):
    """What `jaxchain check --dtype bfloat16` (and float16) reports: each rule's error against
    a float64 truth, output and gradients, no worse than its jax.nn/optax/flax counterpart's
    on the same inputs (up to a quarter, or half an ulp)."""
    from jaxchain.cases import peers
    from jaxchain.cases.registry import RULES

    result = peers.compare(RULES[name], dtype, 0)
    assert result.peer is not None, f"{name} has no counterpart"
    assert result.ok, result
    assert result.error < 2e-2 if dtype == "bfloat16" else result.error < 2e-3


@pytest.mark.parametrize("name", _rule_names())
def test_every_rule_returns_what_its_forward_pass_computes(name):
    """One formula per op: the value of a rule equals the primal output of its VJP (its
    ``_fwd``) bit for bit, for every registered rule, in float32."""
    from jaxchain.cases.registry import RULES

    case = RULES[name]
    args = case.args(3, F32)
    floats = [i for i, a in enumerate(args) if jnp.issubdtype(a.dtype, jnp.floating)]

    def call(*xs):
        full = list(args)
        for i, x in zip(floats, xs, strict=True):
            full[i] = x
        return case.rule(*full)

    value = case.rule(*args)
    primal, _ = jax.vjp(call, *(args[i] for i in floats))
    chex.assert_trees_all_equal(value, primal, custom_message=name)
