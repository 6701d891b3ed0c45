"""dot_product_attention as a drop-in for jax.nn.dot_product_attention: values and every
gradient (query, key, value, bias) against ``jax.nn.dot_product_attention(implementation=
"xla")`` over the combinations of grouped queries (1, 2, 4 per key/value head), a bias,
causality, a window, sequence lengths, T != S and the blockwise path; softmax's ``where``.

jax.nn's softmax runs in float32 whatever the input, so in float64 it agrees with the rules to
float32's precision; the rules' float64 values are held to 1e-12 against the autodiff twin.
Rows that see no key differ by design (jax.nn averages every value there, the rules give
zeros), so the comparison weights the output by whether its row sees anything.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import reference, rules
from jaxchain._primal.attention import Layout, Span
from jaxchain.check import tolerance

B, H, K = 2, 4, 2


@pytest.fixture(autouse=True)
def _standard_promotion():
    """jax.nn is written for JAX's standard dtype promotion (its float32 softmax against
    float64 inputs); the rest of the suite runs strict."""
    with jax.numpy_dtype_promotion("standard"):
        yield


GRID = list(itertools.product(
    (1, 2, 4), (False, True), (False, True), (None, (2, 1)), (False, True), ((5, 5), (5, 7)),
    (None, 2),
))  # fmt: skip
# Every pair of values of any two settings appears in at least one of these (a covering
# array of strength 2, found greedily below); `make thorough` runs the whole grid.
_PAIRS = {
    (i, a, j, b) for combo in GRID for (i, a), (j, b) in itertools.combinations(enumerate(combo), 2)
}


def _covering(grid):
    chosen, missing = [], set(_PAIRS)
    while missing:
        best = max(grid, key=lambda c: len(_pairs(c) & missing))
        chosen.append(best)
        missing -= _pairs(best)
    return chosen


def _pairs(combo):
    return {(i, a, j, b) for (i, a), (j, b) in itertools.combinations(enumerate(combo), 2)}


COVERING = _covering(GRID)


def _sees_anything(t, s, n, causal, window, q_len, kv_len):
    """``(B, T, N, 1)``: 1 where a query row sees at least one key."""
    i, j = np.arange(t)[:, None], np.arange(s)[None, :]
    ok = np.ones((B, 1, t, s), bool)
    if causal:
        ok &= j <= i
    if window is not None:
        ok &= (j >= i - window[0]) & (j <= i + window[1])
    if q_len is not None:
        ok &= i[None, None] < np.asarray(q_len)[:, None, None, None]
    if kv_len is not None:
        ok &= j[None, None] < np.asarray(kv_len)[:, None, None, None]
    return np.broadcast_to(ok.any(-1).transpose(0, 2, 1)[..., None], (B, t, n, 1))


def _parity(dtype, groups, use_bias, causal, window, lengths, ts, block):
    (t, s), n = ts, K * groups
    keys = jax.random.split(jax.random.key(groups * 7 + t + s), 5)
    q = jax.random.normal(keys[0], (B, t, n, H), dtype)
    k, v = (jax.random.normal(key, (B, s, K, H), dtype) for key in keys[1:3])
    bias = jax.random.normal(keys[3], (B, 1, t, s), dtype) if use_bias else None
    ct = jax.random.normal(keys[4], (B, t, n, H), dtype)
    q_len = jnp.array([t, t - 2], jnp.int32) if lengths else None
    kv_len = jnp.array([s, 2], jnp.int32) if lengths else None
    weight = jnp.asarray(_sees_anything(t, s, n, causal, window, q_len, kv_len), dtype)
    options = dict(
        is_causal=causal,
        local_window_size=window,
        query_seq_lengths=q_len,
        key_value_seq_lengths=kv_len,
    )
    args = (q, k, v) if bias is None else (q, k, v, bias)

    def loss(f, **extra):
        return lambda *a: jnp.sum(f(*a, **options, **extra) * ct * weight)

    want = jax.jit(
        jax.value_and_grad(
            loss(jax.nn.dot_product_attention, implementation="xla"), tuple(range(len(args)))
        )
    )(*args)
    ours = loss(rules.dot_product_attention, block_size=block)
    got = jax.jit(jax.value_and_grad(ours, tuple(range(len(args)))))(*args)
    return got, want, args, loss


@pytest.mark.parametrize(
    ("groups", "bias", "causal", "window", "lengths", "ts", "block"), COVERING,
)  # fmt: skip
@pytest.mark.parametrize("dtype", [jnp.float64, pytest.param(jnp.float32, marks=pytest.mark.slow)])
def test_matches_jax_nn(dtype, groups, bias, causal, window, lengths, ts, block):
    got, want, args, loss = _parity(dtype, groups, bias, causal, window, lengths, ts, block)
    tol = 2 * tolerance(jnp.float32)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        scale = float(jnp.max(jnp.abs(b))) or 1.0
        assert float(jnp.max(jnp.abs(a - b))) <= tol * scale
    if dtype == jnp.float64:  # and the twin, to float64's precision
        twin = jax.jit(
            jax.value_and_grad(loss(reference.dot_product_attention), tuple(range(len(args))))
        )(*args)
        chex.assert_trees_all_close(got, twin, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("groups", "bias", "causal", "window", "lengths", "ts", "block"),
    [c for c in GRID if c not in COVERING],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_matches_jax_nn_on_the_whole_grid(dtype, groups, bias, causal, window, lengths, ts, block):
    test_matches_jax_nn(dtype, groups, bias, causal, window, lengths, ts, block)


def test_the_covering_set_is_small_and_covers_every_pair():
    assert len(COVERING) <= 16 < len(GRID)
    assert set().union(*(_pairs(c) for c in COVERING)) == _PAIRS


@pytest.mark.parametrize("block", [None, 2])
def test_bfloat16_within_the_dtype_table(block):
    """Grouped queries, a bias, causal, window and lengths in bfloat16: within bfloat16's
    tolerance of jax.nn (which also computes logits and softmax in float32)."""
    got, want, _, _ = _parity(jnp.bfloat16, 2, True, True, (2, 1), True, (5, 7), block)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.max(np.abs(a - b)) <= 2 * tolerance(jnp.bfloat16) * (np.max(np.abs(b)) or 1)


@pytest.mark.parametrize("bias_shape", [(1, 1, 5, 7), (2, 4, 1, 7), (5, 7), (4, 5, 7)])
def test_a_broadcast_bias_gets_the_summed_gradient(bias_shape):
    """A bias broadcast over batch, heads or queries: its gradient is the logits' gradient
    summed over those axes, as jax.nn's (whose bias is an ordinary, broadcast input)."""
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (2, 5, 4, 4))
    k, v = (jax.random.normal(key, (2, 7, 2, 4)) for key in keys[1:3])
    bias = jax.random.normal(keys[3], bias_shape)
    for block in (None, 2):
        got = jax.grad(
            lambda b, blk=block: jnp.sum(
                rules.dot_product_attention(q, k, v, b, block_size=blk) ** 2
            )
        )(bias)
        want = jax.grad(lambda b: jnp.sum(jax.nn.dot_product_attention(q, k, v, b) ** 2))(bias)
        assert got.shape == bias_shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_unbatched_inputs_as_jax_nn():
    """jax.nn also takes ``(T, N, H)`` without a batch axis."""
    keys = jax.random.split(jax.random.key(1), 3)
    q = jax.random.normal(keys[0], (5, 4, 4))
    k, v = (jax.random.normal(key, (6, 2, 4)) for key in keys[1:])
    want = jax.nn.dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    for ops in (rules, reference):
        got = ops.dot_product_attention(q, k, v, is_causal=True, scale=0.3)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_blocks_outside_the_window_or_lengths_are_skipped():
    """The blockwise path's visibility of a (query block, key block) pair: False exactly for
    blocks that causality, the window or the lengths hide entirely (those are skipped)."""
    layout = Layout(8, Span(left=1, right=0, keys=8), 2, 2, None, jnp.array([8, 3]))
    seen = np.array([[bool(layout.visible(i, j)) for j in range(4)] for i in range(4)])
    # query block i (queries 2i, 2i+1) sees keys 2i-1 .. 2i+1: key blocks i-1 and i
    np.testing.assert_array_equal(seen, np.eye(4, dtype=bool) | np.eye(4, k=-1, dtype=bool))
    short = Layout(8, Span(None, None, 8), 2, 2, None, jnp.array([3, 1]))  # keys < 3 only
    assert [bool(short.visible(0, j)) for j in range(4)] == [True, True, False, False]


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_where_matches_jax_nn(op):
    """``where=``: elements left out give 0 (softmax) or -inf (log_softmax) and no gradient;
    a row with nothing kept is zeros (softmax); values and gradients at the kept elements as
    jax.nn's."""
    x = jax.random.normal(jax.random.key(2), (3, 6))
    where = jnp.array([[True, False, True, True, False, True]] * 2 + [[False] * 6])
    ours, theirs = getattr(rules, op), getattr(jax.nn, op)
    kept = where[:2]
    np.testing.assert_allclose(
        ours(x, where=where)[:2][kept], theirs(x, where=where)[:2][kept], rtol=1e-12
    )
    fill = 0.0 if op == "softmax" else -np.inf
    assert np.all(np.asarray(ours(x, where=where))[~np.asarray(where)] == fill)
    ct = jax.random.normal(jax.random.key(3), x.shape)

    def pull(f):
        return jax.grad(lambda x: jnp.sum(jnp.where(where, f(x, where=where), 0) * ct))(x)

    g = pull(ours)
    np.testing.assert_allclose(g[:2], pull(theirs)[:2], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(g[~where], 0.0)
    np.testing.assert_allclose(pull(reference.__dict__[op]), g, rtol=1e-12, atol=1e-15)
