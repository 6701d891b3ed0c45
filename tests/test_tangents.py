"""The forward-mode family: jax.jvp, jacfwd, linearize and Hessians through every model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxchain import reference, rules, tangents
from jaxchain.cases.registry import MODEL_CASES
from jaxchain.check import assert_close

COORDINATES = 12  # the parameters a Hessian and a Jacobian are taken over, spread over all


def test_forward_mode_fails_through_the_reverse_rules_and_works_through_tangents():
    """The reason the family exists: JAX cannot push a tangent through a custom_vjp."""
    x = jnp.linspace(-1.0, 1.0, 5)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(rules.tanh, (x,), (jnp.ones(5),))
    y, dy = jax.jvp(tangents.tanh, (x,), (jnp.ones(5),))
    np.testing.assert_allclose(y, jnp.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(dy, 1 - jnp.tanh(x) ** 2, rtol=1e-15)


def _model_function(name):
    """The model's output as a function of a few of its floating-point coordinates (spread
    over every floating argument), for each family; and those coordinates' values."""
    case = MODEL_CASES[name]
    args = case.args(3)
    floating = [i for i, a in enumerate(args) if _is_float_tree(a)]
    flat, unravel = ravel_pytree([args[i] for i in floating])
    chosen = jnp.linspace(0, flat.size - 1, COORDINATES).astype(int)

    def of(fn):
        def f(z):
            full = list(args)
            for i, a in zip(floating, unravel(flat.at[chosen].set(z)), strict=True):
                full[i] = a
            return fn(*full)

        return f

    return of(case.tangent), of(case.reference), flat[chosen]


def _is_float_tree(a):
    leaves = jax.tree.leaves(a)
    return bool(leaves) and all(
        hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) for x in leaves
    )


def _scalar(f):
    """A scalar loss of the model's outputs: a fixed weighted sum of each output's squares."""

    def loss(z):
        return sum(
            jnp.sum(jnp.cos(jnp.arange(o.size).reshape(o.shape)) * o**2)
            for o in jax.tree.leaves(f(z))
        )

    return loss


def _derivatives(f, z, t):
    """jvp, linearize, jacfwd and hessian (forward over reverse) of ``f`` at ``z``, one
    compiled program."""
    jvp = jax.jvp(f, (z,), (t,))
    out, f_jvp = jax.linearize(f, z)
    return jvp, (out, f_jvp(t)), jax.jacfwd(f)(z), jax.hessian(_scalar(f))(z)


# `make test` takes one case of each kind of model (the padded recurrent ones, causal
# attention, the decoder); the others run in `make thorough` (each compiles long)
FAST = {
    "mlp(relu)",
    "rnn(lengths)",
    "lstm(lengths)",
    "gru(lengths)",
    "attention(causal)",
    "decoder(dropout)",
}


@pytest.mark.parametrize(
    "name",
    [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(MODEL_CASES)],
)
def test_whole_program_derivatives_equal_the_reference(name):
    """jax.jvp, jax.linearize, jax.jacfwd and jax.hessian (forward over reverse) of every
    model with ops=tangents equal the same with ops=reference, in float64."""
    f, ref, z = _model_function(name)
    t = jax.random.normal(jax.random.key(4), z.shape, z.dtype)
    got = jax.jit(_derivatives, static_argnums=0)(f, z, t)
    want = jax.jit(_derivatives, static_argnums=0)(ref, z, t)
    for what, a, b in zip(("jvp", "linearize", "jacfwd", "hessian"), got, want, strict=True):
        assert_close(a, b, name=f"{name}: {what}")
    np.testing.assert_allclose(got[-1], got[-1].T, rtol=1e-9, atol=1e-12)  # symmetric


def test_blockwise_attention_jvp_is_blockwise():
    """At T = S = 2048 in blocks of 128 the forward family's attention JVP equals autodiff's
    (float32) and compiles to a tenth of one (T, S) float32 array of temporary memory (its
    blocks, and accumulators of T rows); autodiff's JVP holds four such arrays."""
    t = 2048
    keys = jax.random.split(jax.random.key(6), 6)
    primals = tuple(jax.random.normal(k, (1, t, 1, 64), jnp.float32) for k in keys[:3])
    directions = tuple(jax.random.normal(k, (1, t, 1, 64), jnp.float32) for k in keys[3:])

    def jvp(ops, **kwargs):
        attend = lambda q, k, v: ops.dot_product_attention(q, k, v, **kwargs)  # noqa: E731
        return jax.jit(lambda p, d: jax.jvp(attend, p, d))

    ours, theirs = jvp(tangents, block_size=128), jvp(reference)
    assert_close(ours(primals, directions), theirs(primals, directions), tol=1e-4)
    one_matrix = t * t * 4
    temp = {
        name: f.lower(primals, directions).compile().memory_analysis().temp_size_in_bytes
        for name, f in (("ours", ours), ("theirs", theirs))
    }
    assert temp["ours"] < 0.15 * one_matrix < 2 * one_matrix < temp["theirs"]
