"""The fused SwiGLU under LoRA (``lora_swiglu``): against its autodiff twin at several shapes
and dtypes, no gradient for the frozen weights, the decoder's adapted feed-forward unit as it
was (two ``lora_dense`` and a silu), and bad input."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import nn, reference, rules, tangents
from jaxchain.check import tolerance

F32 = jnp.float32
ADAPTERS = ("gate_a", "gate_b", "up_a", "up_b")


def _args(lead, dtype, d=5, f=7, r=3, seed=0):
    """x ``(*lead, D)``, w_gate, w_up ``(D, F)``, gate_a, gate_b, up_a, up_b (ranks r, r + 1)."""
    k = jax.random.split(jax.random.key(seed), 7)
    shapes = [(*lead, d), (d, f), (d, f), (d, r), (r, f), (d, r + 1), (r + 1, f)]
    scales = [1.0, d**-0.5, d**-0.5, d**-0.5, 0.5, d**-0.5, 0.5]
    return tuple(
        (s * jax.random.normal(key, shape, F32)).astype(dtype)
        for key, shape, s in zip(k, shapes, scales, strict=True)
    )


def _vjp(ops, args, g, scale=2.0):
    """The output and the cotangents of x and the four adapters under ``g``."""

    def f(x, *adapters):
        return ops.lora_swiglu(x, *args[1:3], *adapters, scale=scale)

    y, pull = jax.vjp(f, args[0], *args[3:])
    return y, pull(g)


def _close(got, want, dtype):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == b.dtype == dtype
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        np.testing.assert_allclose(a, b, rtol=tolerance(dtype), atol=tolerance(dtype) * 0.1)


@pytest.mark.parametrize("dtype", [jnp.float64, F32, jnp.bfloat16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("lead", [(), (4,), (2, 3), (2, 1, 3)], ids=str)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_lora_swiglu_matches_the_reference(dtype, lead, jit):
    args = _args(lead, dtype)
    g = jax.random.normal(jax.random.key(1), (*lead, 7), F32).astype(dtype)
    vjp = jax.jit(_vjp, static_argnums=0) if jit else _vjp
    _close(vjp(rules, args, g), vjp(reference, args, g), dtype)


@pytest.mark.parametrize("dtype", [jnp.float64, F32], ids=lambda d: d.__name__)
def test_lora_swiglu_tangents_match_the_reference(dtype):
    args = _args((2, 3), dtype)
    dots = _args((2, 3), dtype, seed=2)

    def jvp(ops):
        return jax.jvp(lambda *a: ops.lora_swiglu(*a, scale=0.5), args, dots)

    _close(jvp(tangents), jvp(reference), dtype)


def test_lora_swiglu_is_two_lora_dense_and_a_silu():
    """The definition, written with the LoRA rule (float64: exact up to rounding)."""
    x, w_gate, w_up, *adapters = _args((3,), jnp.float64)
    zero = jnp.zeros((7,), jnp.float64)
    a = rules.lora_dense(x, w_gate, zero, *adapters[:2], scale=0.5)
    u = rules.lora_dense(x, w_up, zero, *adapters[2:], scale=0.5)
    y = rules.lora_swiglu(x, w_gate, w_up, *adapters, scale=0.5)
    np.testing.assert_allclose(y, rules.silu(a) * u, rtol=1e-12)


def test_lora_swiglu_computes_no_gradient_for_the_frozen_weights():
    args = _args((3, 2), jnp.float64)
    grads = jax.grad(lambda *p: jnp.sum(rules.lora_swiglu(*p, scale=0.5) ** 2), range(7))(*args)
    assert np.all(grads[1] == 0) and np.all(grads[2] == 0)
    assert all(float(jnp.abs(d).max()) > 0 for d in grads[3:])

    def grad_weights(w_gate, w_up):
        return jnp.sum(rules.lora_swiglu(args[0], w_gate, w_up, *args[3:], scale=0.5))

    jaxpr = jax.make_jaxpr(jax.grad(grad_weights, (0, 1)))(*args[1:3]).jaxpr
    products = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert products  # the backward's other products are there (dx, dA, dB) ...
    assert all(e.outvars[0].aval.shape != (5, 7) for e in products)  # ... but no dW = x^T g


# --- the decoder --------------------------------------------------------------------------------


def _old_lora_swiglu(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, *, scale):
    """The decoder's adapted SwiGLU before ``lora_swiglu``: two ``lora_dense``, a silu, a
    product."""
    zero = jnp.zeros((w_gate.shape[1],), x.dtype)
    gate = rules.lora_dense(x, w_gate, zero, gate_a, gate_b, scale=scale)
    return rules.silu(gate) * rules.lora_dense(x, w_up, zero, up_a, up_b, scale=scale)


OLD = types.SimpleNamespace(**{n: getattr(rules, n) for n in rules.__all__})
OLD.lora_swiglu = _old_lora_swiglu


def _adapted_decoder():
    params = nn.decoder.init(
        jax.random.key(0), 23, d_model=16, num_heads=4, num_kv_heads=2, num_layers=2, d_ff=24
    )
    adapters = nn.lora.init(jax.random.key(8), params, 2)
    noise = jax.random.key(9)  # B starts at zero: move it, so that the adapters do something
    adapters = jax.tree.map(
        lambda a: a + 0.3 * jax.random.normal(noise, a.shape, a.dtype), adapters
    )
    return params, adapters, jax.random.randint(jax.random.key(10), (2, 6), 0, 23)


def test_decoder_with_lora_everywhere_gives_the_loss_and_gradients_it_gave():
    """LoRA on every target (so ``gate`` and ``up`` through ``lora_swiglu``): the loss and the
    adapters' gradients of the fused rule, of the old path and of the reference agree, and the
    merged weights give the adapted logits."""
    params, adapters, tokens = _adapted_decoder()
    assert set(adapters["blocks"][0]) == set(nn.lora.DECODER_TARGETS)

    def step(ops):
        loss = jax.value_and_grad(
            lambda a: nn.decoder.loss(params, tokens, tokens, lora=a, ops=ops)
        )
        return jax.jit(loss)(adapters)

    fused = step(rules)
    for ops in (OLD, reference):
        other = step(ops)
        for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(other), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    adapted = nn.decoder.apply(params, tokens, lora=adapters)
    merged = nn.decoder.apply(nn.lora.merge(params, adapters), tokens)
    np.testing.assert_allclose(merged, adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["gate", "up"])
def test_decoder_with_one_of_gate_and_up_adapted_keeps_the_two_projections(target):
    """With one of the two adapted, the unit is silu and two projections (no lora_swiglu), and
    the merged weights still give the adapted logits."""
    params, _, tokens = _adapted_decoder()
    adapters = nn.lora.init(jax.random.key(8), params, 2, targets=(target,))
    adapters = jax.tree.map(lambda a: a + 0.3, adapters)
    used = []
    spy = types.SimpleNamespace(**{n: getattr(rules, n) for n in rules.__all__})
    spy.lora_swiglu = lambda *a, **k: used.append(1) or rules.lora_swiglu(*a, **k)
    adapted = nn.decoder.apply(params, tokens, lora=adapters, ops=spy)
    merged = nn.decoder.apply(nn.lora.merge(params, adapters), tokens)
    np.testing.assert_allclose(merged, adapted, rtol=1e-5, atol=1e-5)
    assert not used


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("ops", [rules, tangents, reference], ids=lambda m: m.__name__)
@pytest.mark.parametrize(
    ("index", "bad", "message"),
    [
        (0, jnp.ones((3, 4)), r"w_gate must have shape \(4, 7\) \(D = x.shape\[-1\] = 4\)"),
        (2, jnp.ones((5, 6)), r"w_up must have shape \(5, 7\) \(the shape of w_gate\), got"),
        (3, jnp.ones((4, 3)), r"gate_a must have shape \(5, 3\) \(\(D, R\) with D = 5\)"),
        (3, jnp.ones(5), r"gate_a must have rank 2 \(D, R\), got shape \(5,\)"),
        (4, jnp.ones((3, 6)), r"gate_b must have shape \(3, 7\) \(\(R, F\) with R = 3 of gate_a"),
        (6, jnp.ones((3, 7)), r"up_b must have shape \(4, 7\) \(\(R, F\) with R = 4 of up_a, F"),
        (5, jnp.ones((5, 4), jnp.float32), "arguments must share one dtype"),
        (5, jnp.ones((5, 4), jnp.int32), "up_a must be floating point"),
    ],
)
def test_lora_swiglu_names_the_bad_argument(ops, index, bad, message):
    args = list(_args((2,), jnp.float64))
    args[index] = bad
    with pytest.raises(ValueError, match="lora_swiglu: " + message):
        ops.lora_swiglu(*args, scale=1.0)


@pytest.mark.parametrize("scale", [float("nan"), float("inf")])
def test_lora_swiglu_wants_a_finite_scale(scale):
    with pytest.raises(ValueError, match="lora_swiglu: scale must be a finite Python number"):
        rules.lora_swiglu(*_args((2,), jnp.float64), scale=scale)
