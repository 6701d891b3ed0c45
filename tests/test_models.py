"""Models: apply(ops=rules) against apply(ops=reference), invariants, bad input."""

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxchain.cases.testing as jt
from jaxchain import nn, reference, rules
from jaxchain.cases.registry import MODEL_CASES

OPS = pytest.mark.parametrize("ops", [rules, reference], ids=["rules", "reference"])
RECURRENT = nn.RECURRENT
B, T, I, H = 3, 6, 3, 4


# in `make thorough` only: the fine-tuning loss of BERT (`make test` checks the whole MiniLM
# training step against autodiff in test_bert.py); both transformers (`make test` checks the
# decoder, pre-norm and causal, and MiniLM's encoder, made of the same attention, norms and
# dense layers); the recurrent models without lengths and the non-causal attention layer
# (each is its rule with dense layers around it, and test_rules.py property-tests the rules;
# `make test` keeps the models with lengths and the causal attention layer)
SLOW = {
    "bert(finetune)",
    "transformer",
    "transformer(pre-norm, causal)",
    "rnn",
    "lstm",
    "gru",
    "attention",
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(MODEL_CASES)],
)
def test_model_matches_reference(name):
    """jax.grad through apply(ops=rules) equals it through apply(ops=reference), with finite
    differences and second order, under jit and vmap, padded lengths and masks included."""
    case = MODEL_CASES[name]
    # a model's shapes are fixed, so its examples differ only in values: half as many suffice
    examples = max(1, hypothesis.settings.default.max_examples // 2)
    settings = hypothesis.settings(max_examples=examples, deadline=None)
    jt.check_property(case.rule, case.reference, jt.case_args(case), settings=settings, name=name)


def _sequence(key=0, dtype=jnp.float64):
    return jax.random.normal(jax.random.key(key), (B, T, I), dtype)


def _params(name, key=1):
    return RECURRENT[name].init(jax.random.key(key), I, H, dtype=jnp.float64)


def _last_state(name, carry):
    return carry[0] if name == "lstm" else carry


# --- recurrent invariants ---------------------------------------------------------------------


@OPS
@pytest.mark.parametrize("name", sorted(RECURRENT))
def test_scan_equals_the_unrolled_loop(name, ops):
    """The whole-sequence op equals a Python loop of one-step calls, padding included (a
    one-step call with length 0 is a step past the end)."""
    module, params, xs = RECURRENT[name], _params(name), _sequence()
    lengths = jnp.array([T, 2, 0])
    hs, last = module.apply(params, xs, lengths=lengths, ops=ops)
    carry, outputs = None, []
    for t in range(T):
        y, carry = module.apply(
            params, xs[:, t : t + 1], carry, lengths=(lengths > t).astype(jnp.int32), ops=ops
        )
        outputs.append(y)
    np.testing.assert_allclose(hs, jnp.concatenate(outputs, axis=1), rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(last, carry, rtol=1e-12, atol=1e-14)


@OPS
@pytest.mark.parametrize("name", sorted(RECURRENT))
def test_padding_neither_changes_the_carry_nor_takes_gradient(name, ops):
    module, params, xs = RECURRENT[name], _params(name), _sequence()
    lengths = jnp.array([T, 2, 0])
    hs, last = module.apply(params, xs, lengths=lengths, ops=ops)
    # the last carry is the one at each length: a truncated run gives the same
    short, short_last = module.apply(params, xs[1:2, :2], ops=ops)
    np.testing.assert_allclose(_last_state(name, last)[1], _last_state(name, short_last)[0])
    np.testing.assert_allclose(hs[1, :2], short[0])
    assert np.all(hs[1, 2:] == 0) and np.all(hs[2] == 0)
    assert np.all(_last_state(name, last)[2] == 0)  # length 0: the initial (zero) state

    def loss(xs):
        hs, last = module.apply(params, xs, lengths=lengths, ops=ops)
        return jnp.sum(hs**2) + sum(jnp.sum(c) for c in jax.tree.leaves(last))

    dxs = jax.grad(loss)(xs)
    assert np.all(dxs[1, 2:] == 0) and np.all(dxs[2] == 0)
    assert np.all(dxs[1, :2] != 0)


# --- attention invariants ---------------------------------------------------------------------


def _attention_inputs():
    params = nn.attention.init(jax.random.key(0), 8, 2, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (2, T, 8), jnp.float64)
    return params, x


@OPS
def test_causal_attention_blocks_the_future(ops):
    params, x = _attention_inputs()
    t = 2
    changed = x.at[:, t + 1 :].add(1.0)
    before = nn.attention.apply(params, x, is_causal=True, ops=ops)
    after = nn.attention.apply(params, changed, is_causal=True, ops=ops)
    np.testing.assert_array_equal(before[:, : t + 1], after[:, : t + 1])
    assert not np.allclose(before[:, t + 1 :], after[:, t + 1 :])


@OPS
def test_causal_transformer_blocks_the_future(ops):
    sizes = dict(max_len=8, d_model=8, num_heads=2, num_layers=2)
    params = nn.transformer.init(jax.random.key(0), 11, **sizes, pre_norm=True)
    tokens = jax.random.randint(jax.random.key(1), (2, T), 0, 11)
    t = 3
    changed = tokens.at[:, t + 1 :].set((tokens[:, t + 1 :] + 1) % 11)
    run = lambda tok: nn.transformer.apply(params, tok, is_causal=True, ops=ops)  # noqa: E731
    np.testing.assert_array_equal(run(tokens)[:, : t + 1], run(changed)[:, : t + 1])
    assert not np.allclose(run(tokens)[:, t + 1 :], run(changed)[:, t + 1 :])


@OPS
def test_padded_positions_get_zero_gradient(ops):
    params, x = _attention_inputs()
    mask = jnp.arange(T)[None, :] < jnp.array([[T], [3]])

    def loss(x):
        out = nn.attention.apply(params, x, mask, ops=ops)
        return jnp.sum(jnp.where(mask[..., None], out, 0) ** 2)  # a loss on real tokens only

    dx = jax.grad(loss)(x)
    assert np.all(dx[1, 3:] == 0) and np.all(dx[1, :3] != 0) and np.all(dx[0] != 0)


# --- bad input --------------------------------------------------------------------------------


def _bad_calls():
    lstm = _params("lstm")
    att, x = _attention_inputs()
    xs = _sequence()
    tr = nn.transformer.init(jax.random.key(0), 11, max_len=4, d_model=8, num_heads=2, num_layers=1)
    return [
        ("xs rank", lambda: nn.rnn.apply(_params("rnn"), xs[0]), r"rnn: xs must have rank 3"),
        ("lengths > T", lambda: nn.lstm.apply(lstm, xs, lengths=jnp.array([7, 1, 1])), r"\[0, 6\].*\[1, 7\]"),
        ("lengths < 0", lambda: nn.gru.apply(_params("gru"), xs, lengths=jnp.array([1, -1, 1])), r"gru: lengths must lie in"),
        ("lengths shape", lambda: nn.rnn.apply(_params("rnn"), xs, lengths=jnp.array([1, 2])), r"lengths must have shape \(3,\)"),
        ("carry size", lambda: nn.lstm.apply(lstm, xs, (jnp.zeros((B, 5)), jnp.zeros((B, H)))), r"lstm: h0 must have shape \(3, 4\).*got \(3, 5\)"),
        ("input size", lambda: nn.rnn.apply(_params("rnn"), xs[..., :2]), r"w_x must have shape \(2, 4\)"),
        ("mask shape", lambda: nn.attention.apply(att, x, jnp.ones((2, T + 1), bool)), r"attention: mask must have shape \(2, 6\)"),
        ("mask dtype", lambda: nn.attention.apply(att, x, jnp.ones((2, T))), r"attention: mask must be boolean"),
        ("x width", lambda: nn.attention.apply(att, x[..., :6]), r"attention: x must have shape \(2, 6, 8\)"),
        ("heads", lambda: nn.attention.init(jax.random.key(0), 8, 3), r"not divisible"),
        ("activation", lambda: nn.mlp.init(jax.random.key(0), [2, 3], activation="swish"), r"activation must be one of"),
        ("too long", lambda: nn.transformer.apply(tr, jnp.zeros((1, 5), int)), r"length 5, more than max_len 4"),
        ("no settings", lambda: nn.transformer.apply(dict(tr, settings=None), jnp.zeros((1, 3), int)), r"params must carry their settings"),
        ("token id", lambda: nn.transformer.apply(tr, jnp.full((1, 3), 11)), r"ids must lie in \[0, 11\)"),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(14))
def test_bad_input_raises_value_error(index):
    _, call, message = _bad_calls()[index]
    with pytest.raises(ValueError, match=message):
        call()


def test_every_bad_input_case_is_run():
    assert len(_bad_calls()) == 14


# --- from_torch layouts -----------------------------------------------------------------------


def test_from_torch_lstm_layout():
    h, i = 3, 2
    w_ih = np.arange(4 * h * i, dtype=np.float32).reshape(4 * h, i)
    w_hh = np.arange(4 * h * h, dtype=np.float32).reshape(4 * h, h)
    sd = {
        "weight_ih_l0": w_ih,
        "weight_hh_l0": w_hh,
        "bias_ih_l0": np.ones(4 * h, np.float32),
        "bias_hh_l0": np.full(4 * h, 2.0, np.float32),
    }
    p = nn.lstm.from_torch(sd)
    np.testing.assert_array_equal(p["w_x"], w_ih.T)
    np.testing.assert_array_equal(p["w_h"], w_hh.T)
    np.testing.assert_array_equal(p["b"], 3.0)
    with pytest.raises(ValueError, match="lacks"):
        nn.lstm.from_torch({"weight_ih_l0": w_ih})
