"""Compiles for GPU and TPU, proven without either: every rule's gradient (and its forward-mode
JVP) and every model's training step exported with :mod:`jax.export` for ``cuda`` and
``tpu`` as well as ``cpu``. Lowering for a platform needs no device of it; an op with no
lowering there, or a custom call that is not portable (LAPACK on the CPU, say), fails the
export. Each rule gradient's exported module is then run here, on the CPU, and must give
what autodiff of the rule's twin (:mod:`jaxchain.reference`) gives: the module that would go
to a GPU or TPU computes the right gradient, not only the same one. (The models' steps are checked against autodiff in test_models.py; running their
exported modules too would compile each twice more, for no new fact.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from jaxchain.cases.registry import MODEL_CASES, RULES
from jaxchain.train import optim

PLATFORMS = ("cpu", "cuda", "tpu")


def _floats(tree) -> list:
    return [a for a in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(a), jnp.floating)]


def _sum(tree):
    """A scalar depending on every floating output."""
    return sum(jnp.sum(a) for a in _floats(tree))


def _exported(f, *args) -> export.Exported:
    """``f`` exported for every platform: one StableHLO module (``mlir_module_serialized``)
    whose platform-specific parts are chosen by the platform it is called on."""
    exp = export.export(jax.jit(f), platforms=PLATFORMS)(*args)
    assert exp.platforms == PLATFORMS
    return exp


def _assert_same(got, want):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_gradient_and_jvp_export_for_gpu_and_tpu(name):
    case = RULES[name]
    args = case.args(0, jnp.float32)
    floating = tuple(
        i
        for i, a in enumerate(args)
        if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)
    )

    def grad(*args, f=case.rule):
        return jax.grad(lambda *a: _sum(f(*a)), floating)(*args)

    def jvp(*args):
        def f(*moving):
            full = list(args)
            for i, a in zip(floating, moving, strict=True):
                full[i] = a
            return case.tangent(*full)

        moving = [args[i] for i in floating]
        return jax.jvp(f, moving, [jnp.ones_like(a) for a in moving])

    exported = _exported(grad, *args)
    # the exported module, run here, against the autodiff twin's gradient (not the same
    # function jitted, which would prove serialisation only)
    _assert_same(exported.call(*args), grad(*args, f=case.reference))
    assert _exported(jvp, *args).in_avals == exported.in_avals


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_every_model_training_step_exports_for_gpu_and_tpu(name):
    """The training step of ``jaxchain train`` (:func:`jaxchain.train.optim.make_step`: gradients
    through the rules, clipping, AdamW, the finite-loss guard) on the model's loss."""
    case = MODEL_CASES[name]
    params, *batch = case.args(0, jnp.float32)
    with jax.numpy_dtype_promotion("standard"):
        tx = optim.make_optimizer("adamw", 1e-3, clip=1.0)
        state = tx.init(params)
        step = optim.make_step(lambda p, b: _sum(case.rule(p, *b)), tx, donate=False)
        exp = _exported(step, params, state, batch)
    # the step's whole signature is in the module: params, optimizer state and batch in,
    # params, state and metrics out
    n_in = len(jax.tree.leaves((params, state, batch)))
    assert len(exp.in_avals) == n_in
    assert len(exp.out_avals) == len(jax.tree.leaves((params, state))) + 2  # loss, grad_norm
    if name.startswith(("rnn", "lstm", "gru")):
        assert "stablehlo.while" in exp.mlir_module()  # the scan over time, on every platform
