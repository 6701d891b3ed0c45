"""The oracle and the rules: one interface (jaxchain.ops), no shared computing code, and one
meaning for integers out of range — refused on the host; inside ``jit``, where no Python
check can see them, NaN in both where the value is undefined (never a silently clipped or
wrapped index), with checks that ``checkify`` turns into errors."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from jaxchain import reference, rules

OPS = (rules, reference)


def _nan_rows(x):
    return np.isnan(np.asarray(x)).reshape(x.shape[0], -1).all(axis=1)


@pytest.mark.parametrize("bad", [5, -1])
def test_cross_entropy_label_out_of_range_is_nan_in_both(bad):
    logits = jax.random.normal(jax.random.key(0), (3, 5))
    labels = jnp.array([0, bad, 4])
    results = []
    for ops in OPS:
        loss = lambda z, y, ops=ops: jnp.sum(ops.softmax_cross_entropy(z, y))  # noqa: E731
        _value, grad = jax.jit(jax.value_and_grad(loss))(logits, labels)  # labels traced
        rows = jax.jit(ops.softmax_cross_entropy)(logits, labels)
        np.testing.assert_array_equal(np.isnan(rows), [False, True, False])
        np.testing.assert_array_equal(_nan_rows(grad), [False, True, False])
        results.append((rows, grad))
    (r1, g1), (r2, g2) = results
    np.testing.assert_allclose(r1[::2], r2[::2], rtol=1e-12)
    np.testing.assert_allclose(g1[::2], g2[::2], rtol=1e-12)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        rules.softmax_cross_entropy(logits, labels)  # concrete: refused


@pytest.mark.parametrize("bad", [7, -1])
def test_embedding_id_out_of_range_is_a_nan_row_in_both(bad):
    table = jax.random.normal(jax.random.key(1), (7, 4))
    ids = jnp.array([1, bad, 1])
    grads = []
    for ops in OPS:
        rows = jax.jit(ops.embedding)(ids, table)
        np.testing.assert_array_equal(_nan_rows(rows), [False, True, False])
        pull = jax.jit(lambda i, t, ops=ops: jax.vjp(lambda t: ops.embedding(i, t), t)[1](
            jnp.ones((3, 4))
        ))  # fmt: skip
        grads.append(pull(ids, table)[0])
    np.testing.assert_array_equal(grads[0], grads[1])  # the bad id adds nothing
    np.testing.assert_array_equal(grads[0][1], 2.0)
    assert np.all(grads[0][-1] == 0)  # -1 does not wrap to the last row


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru"])
def test_lengths_outside_the_sequence_give_nan_sequences_in_both(op):
    from jaxchain.cases.registry import RULES

    args = list(RULES[f"{op}(lengths)"].args(2))
    t = args[0].shape[1]
    args[-1] = jnp.array([t + 1, 2, -1])  # longer than T, fine, negative
    outputs = [jax.jit(getattr(ops, op))(*args)[0] for ops in OPS]
    for hs in outputs:
        np.testing.assert_array_equal(_nan_rows(hs), [True, False, True])
    np.testing.assert_allclose(outputs[0][1], outputs[1][1], rtol=1e-10)


@pytest.mark.parametrize("ops", OPS, ids=lambda m: m.__name__)
def test_checkify_turns_the_range_checks_into_errors(ops):
    logits, table = jnp.zeros((2, 5)), jnp.zeros((7, 3))
    cases = [
        (ops.softmax_cross_entropy, (logits, jnp.array([0, 5])), r"labels must lie in \[0, 5\)"),
        (ops.embedding, (jnp.array([7]), table), r"ids must lie in \[0, 7\)"),
        (
            ops.rnn,
            (
                jnp.zeros((1, 3, 2)),
                None,
                jnp.zeros((2, 4)),
                jnp.zeros((4, 4)),
                jnp.zeros(4),
                jnp.array([4]),
            ),
            r"lengths must lie in \[0, 3\]",
        ),
    ]
    for f, args, message in cases:
        error, _ = jax.jit(checkify.checkify(f))(*args)
        with pytest.raises(checkify.JaxRuntimeError, match=message):
            error.throw()
    error, _ = jax.jit(checkify.checkify(ops.embedding))(jnp.array([6]), table)
    error.throw()  # in range: no error


def test_the_oracle_imports_nothing_of_the_rules():
    """Not the rules, their twins, nor the primal computations the two share."""
    code = (
        "import sys, jaxchain.reference; print(sorted(m for m in sys.modules if"
        " m.split('.')[:2] in (['jaxchain', 'rules'], ['jaxchain', 'tangents'],"
        " ['jaxchain', '_primal'])))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_family_implements_one_interface():
    """The rules, their forward-mode twins and the reference expose exactly the names of
    jaxchain.ops.Ops, with its signatures: every public function in each family's namespace
    (not only its ``__all__``, which is ``ops.NAMES`` itself) is one of them, and each of
    them is there."""
    import inspect

    from jaxchain import ops, tangents
    from jaxchain.cases import peers

    for module in (rules, tangents, reference):
        public = {
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and callable(v) and not inspect.ismodule(v)
        }
        assert public == set(ops.NAMES), (module.__name__, sorted(public ^ set(ops.NAMES)))
    for name in ops.NAMES:
        want = inspect.signature(getattr(ops.Ops, name))
        want = want.replace(parameters=list(want.parameters.values())[1:])  # without self
        for module in (rules, tangents, reference, peers):  # peers: the ecosystem's, by op
            got = inspect.signature(getattr(module, name))
            shape = [(p.name, p.kind, p.default) for p in got.parameters.values()]
            assert shape == [(p.name, p.kind, p.default) for p in want.parameters.values()], (
                f"{module.__name__}.{name}{got} differs from Ops.{name}{want}"
            )
