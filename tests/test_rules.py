"""Every registered rule against its autodiff twin; stability, invariants and bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

import jaxchain.cases.testing as jt
from jaxchain import reference, rules, tangents
from jaxchain.cases.registry import MODES, RULES
from jaxchain.check import tolerance

OPS = (rules, reference)


def _cases():
    """Every rule of both families (``reverse``: jaxchain.rules, ``forward``:
    jaxchain.tangents) in float64 and float32. In `make thorough` only: the float32 draws of
    the blockwise attention cases (their float32 path is compared with jax.nn in
    test_attention.py and test_fast_paths.py) and of the forward family (whose float64
    draws check it exactly in `make test`), the forward family's float64 draws of two of
    the three blockwise cases (`make test` keeps the one with grouped queries, a bias, both
    lengths, a window and causality; test_tangents.py compares the blockwise JVP with
    autodiff's at T = 2048), and the reverse family's float64 draw of "(blocks, causal)"
    (causality is in the all-options case too)."""
    blocks_thorough = {
        "dot_product_attention(blocks, causal)",
        "dot_product_attention(blocks, mask)",
    }
    for mode in MODES:
        for name in sorted(RULES):
            thorough = name in blocks_thorough and (mode == "forward" or "causal" in name)
            marks = [pytest.mark.slow] if thorough else []
            yield pytest.param(name, mode, jnp.float64, id=f"{name}-{mode}-float64", marks=marks)
            slow = mode == "forward" or "blocks" in name
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(name, mode, jnp.float32, id=f"{name}-{mode}-float32", marks=marks)


@pytest.mark.parametrize(("name", "mode", "dtype"), list(_cases()))
def test_rule_matches_reference(name, mode, dtype):
    """The generic property, in both modes: the VJP (rules) or the JVP and its transpose
    (tangents), second order, jit and vmap equal the twin's; finite differences (always
    float64) run once, with the float64 draw. The forward family, and the float32 draws of
    the reverse one, are drawn at each case's default sizes (one compilation; the reverse
    family's float64 draws take the others)."""
    case = RULES[name]
    if mode == "forward" or dtype == jnp.float32:
        case = dataclasses.replace(case, dims={k: sizes[:1] for k, sizes in case.dims.items()})
    fd = dtype == jnp.float64
    jt.check_property(
        case.of(mode),
        case.reference,
        jt.case_args(case, dtype),
        finite_differences=fd,
        name=name,
        mode=mode,
    )


@pytest.mark.parametrize("family", [rules, tangents], ids=["rules", "tangents"])
def test_registry_covers_every_rule(family):
    cases = {c.of("reverse" if family is rules else "forward") for c in RULES.values()}
    assert {c.func if hasattr(c, "func") else c for c in cases} >= {
        getattr(family, n) for n in family.__all__
    }


# --- stability --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_cross_entropy_exact_for_huge_logits(dtype):
    logits = jnp.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype)
    labels = jnp.array([0, 1, 2])
    loss, grad = jax.value_and_grad(lambda z: rules.softmax_cross_entropy(z, labels).sum())(logits)
    # log(1 + e^-1e4 + e^-2e4) = 0;  1e4 - (-1e4) = 2e4;  three equal logits: log 3
    np.testing.assert_allclose(
        rules.softmax_cross_entropy(logits, labels), [0.0, 2e4, np.log(3)], rtol=1e-6
    )
    assert np.isfinite(loss)
    y_hat = np.array([[1, 0, 0], [1, 0, 0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(grad, y_hat - np.eye(3), atol=1e-6)  # y_hat - y


@pytest.mark.parametrize("ops", OPS, ids=["rules", "reference"])
def test_fully_masked_row_gives_zeros_and_finite_gradient(ops):
    q, k, v, mask = RULES["dot_product_attention(mask)"].args(1)
    assert not mask[0, 0, 0].any()  # the first query of the first batch sees nothing
    out = ops.dot_product_attention(q, k, v, mask=mask)
    assert np.all(out[0, 0] == 0)

    def loss(q, k, v):
        return jnp.sum(ops.dot_product_attention(q, k, v, mask=mask) ** 2)

    grads = jax.grad(loss, (0, 1, 2))(q, k, v)
    assert all(np.isfinite(g).all() for g in grads)
    assert np.all(grads[0][0, 0] == 0)


def test_attention_with_no_key_visible_at_all():
    q, k, v = jnp.ones((1, 2, 1, 4)), jnp.ones((1, 3, 1, 4)), jnp.ones((1, 3, 1, 4))
    mask = jnp.zeros((1, 1, 2, 3), bool)
    loss = lambda q, k, v: jnp.sum(rules.dot_product_attention(q, k, v, mask=mask))  # noqa: E731
    out, grads = jax.value_and_grad(loss, (0, 1, 2))(q, k, v)
    assert out == 0 and all(np.all(g == 0) for g in grads)


# --- invariants and independent implementations -----------------------------------------------


@pytest.mark.parametrize("ops", OPS, ids=["rules", "reference"])
@given(x=jt.arrays())
def test_softmax_rows_sum_to_one(ops, x):
    np.testing.assert_allclose(ops.softmax(x).sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(jnp.exp(ops.log_softmax(x)).sum(-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("is_causal", [False, True])
def test_attention_matches_jax_nn(is_causal):
    q, k, v = RULES["dot_product_attention"].args(2, jnp.float32, TS=(5, 5))
    want = jax.nn.dot_product_attention(q, k, v, is_causal=is_causal)
    got = rules.dot_product_attention(q, k, v, is_causal=is_causal)
    np.testing.assert_allclose(got, want, rtol=tolerance(jnp.float32), atol=1e-6)


def test_causal_attention_does_not_see_the_future():
    q, k, v = RULES["dot_product_attention"].args(3, TS=(5, 5))
    t = 2
    later = k.at[:, t + 1 :].add(1.0), v.at[:, t + 1 :].add(1.0)
    for ops in OPS:
        before = ops.dot_product_attention(q, k, v, is_causal=True)
        after = ops.dot_product_attention(q, *later, is_causal=True)
        np.testing.assert_array_equal(before[:, : t + 1], after[:, : t + 1])
        assert not np.allclose(before[:, t + 1 :], after[:, t + 1 :])


def test_masked_keys_get_zero_gradient():
    q, k, v, mask = RULES["dot_product_attention(mask)"].args(4)
    keys_mask = mask[:, :, :1, :]  # (B, 1, 1, S): a padding mask on keys
    dk, dv = jax.grad(
        lambda k, v: jnp.sum(rules.dot_product_attention(q, k, v, mask=keys_mask) ** 2), (0, 1)
    )(k, v)
    hidden = ~keys_mask[:, 0, 0, :]  # (B, S)
    assert hidden.any()
    assert np.all(dk[hidden] == 0) and np.all(dv[hidden] == 0)


def test_gelu_matches_jax_nn():
    x = jnp.linspace(-5, 5, 41)
    for approximate in (False, True):
        np.testing.assert_allclose(
            rules.gelu(x, approximate), jax.nn.gelu(x, approximate=approximate), rtol=1e-12
        )


def test_layer_norm_normalises():
    x = 3 + 2 * jax.random.normal(jax.random.key(5), (4, 32))
    y = rules.layer_norm(x, jnp.ones(32), jnp.zeros(32), eps=0.0)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, rtol=1e-12)


def test_dense_worked_example():
    x, w, b = jnp.array([[1.0, 2.0]]), jnp.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]]), jnp.ones(3)
    np.testing.assert_array_equal(rules.dense(x, w, b), [[6.0, 3.0, 0.0]])
    dx, dw, db = jax.grad(lambda *a: rules.dense(*a).sum(), (0, 1, 2))(x, w, b)
    np.testing.assert_array_equal(dx, [[0.0, 3.0]])  # g W^T, rows of W summed
    np.testing.assert_array_equal(dw, [[1.0] * 3, [2.0] * 3])  # x^T g
    np.testing.assert_array_equal(db, [1.0] * 3)


def test_mse_gradient_sign():
    """The squared-error derivative is +2 (p - t) / n with respect to the prediction."""
    p, t = jnp.array([3.0, 1.0]), jnp.array([1.0, 1.0])
    dp, dt = jax.grad(rules.mse, (0, 1))(p, t)
    np.testing.assert_array_equal(dp, [2.0, 0.0])
    np.testing.assert_array_equal(dt, [-2.0, 0.0])


# --- bad input --------------------------------------------------------------------------------

F = jnp.float64
BAD_INPUT = [
    (
        "dense",
        lambda o: o.dense(jnp.ones((4, 3)), jnp.ones((5, 2)), jnp.ones(2)),
        r"w .*\(3, 2\).*\(5, 2\)",
    ),
    (
        "dense",
        lambda o: o.dense(jnp.ones((4, 3)), jnp.ones((3, 2)), jnp.ones(3)),
        r"b .*\(2,\).*\(3,\)",
    ),
    (
        "dense",
        lambda o: o.dense(jnp.ones(3, jnp.float32), jnp.ones((3, 2)), jnp.ones(2)),
        "one dtype",
    ),
    ("relu", lambda o: o.relu(jnp.ones(3, jnp.int32)), "floating point"),
    ("softmax", lambda o: o.softmax(jnp.ones((2, 3)), axis=2), "axis 2"),
    (
        "softmax_cross_entropy",
        lambda o: o.softmax_cross_entropy(jnp.ones((4, 5)), jnp.zeros(3, int)),
        r"labels .*\(4,\).*\(3,\)",
    ),
    (
        "softmax_cross_entropy",
        lambda o: o.softmax_cross_entropy(jnp.ones((4, 5)), jnp.zeros(4)),
        "integer",
    ),
    (
        "softmax_cross_entropy",
        lambda o: o.softmax_cross_entropy(jnp.ones((2, 5)), jnp.array([0, 5])),
        r"\[0, 5\)",
    ),
    (
        "sigmoid_binary_cross_entropy",
        lambda o: o.sigmoid_binary_cross_entropy(jnp.ones(3), jnp.ones(4)),
        r"labels .*\(3,\).*\(4,\)",
    ),
    ("mse", lambda o: o.mse(jnp.ones((2, 3)), jnp.ones(3)), r"target .*\(2, 3\).*\(3,\)"),
    (
        "layer_norm",
        lambda o: o.layer_norm(jnp.ones((2, 4)), jnp.ones(3), jnp.ones(4)),
        r"scale .*\(4,\).*\(3,\)",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3)), jnp.ones((2, 5, 2, 4)), jnp.ones((2, 5, 2, 4))
        ),
        r"query must have rank 3",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)), jnp.ones((2, 5, 2, 8)), jnp.ones((2, 5, 2, 8))
        ),
        r"key .*\(2, 5, 2, 4\).*\(2, 5, 2, 8\)",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)), jnp.ones((2, 5, 2, 4)), jnp.ones((2, 4, 2, 4))
        ),
        r"value .*\(2, 5, 2, 4\).*\(2, 4, 2, 4\)",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)), jnp.ones((2, 5, 3, 4)), jnp.ones((2, 5, 3, 4))
        ),
        r"query's 2 heads must be a multiple of key's 3",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            mask=jnp.ones((2, 3, 3), bool),
        ),
        r"mask of shape \(2, 3, 3\)",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            mask=jnp.ones((2, 1, 3, 5)),
        ),
        r"boolean",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 2, 3, 4)),
        ),
        r"bias of shape \(2, 2, 3, 4\) does not broadcast to \(B, N, T, S\) = \(2, 2, 3, 5\)",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((1, 2, 3, 5), jnp.int32),
        ),
        r"bias must be floating point",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            query_seq_lengths=jnp.ones((3,), jnp.int32),
        ),
        r"query_seq_lengths must have shape \(2,\)",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            key_value_seq_lengths=jnp.array([1, 6]),
        ),
        r"key_value_seq_lengths must lie in \[0, 5\]",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            key_value_seq_lengths=jnp.ones(2),
        ),
        r"key_value_seq_lengths must be integer",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            local_window_size=(1, -1),
        ),
        r"local_window_size must be a non-negative int or a pair",
    ),
    (
        "dot_product_attention",
        lambda o: o.dot_product_attention(
            jnp.ones((2, 3, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            jnp.ones((2, 5, 2, 4)),
            scale=float("nan"),
        ),
        r"scale must be a finite",
    ),
]


@pytest.mark.parametrize("ops", OPS, ids=["rules", "reference"])
@pytest.mark.parametrize(("op", "call", "message"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_raises_a_clear_error(ops, op, call, message):
    with pytest.raises(ValueError, match=rf"^{op}: .*{message}"):
        call(ops)
