"""The audit's recipes for derivatives nobody here wrote, in libraries beyond JAX: lineax's
linear solves, optimistix's root finds (implicit differentiation), diffrax's adjoints and an
equinox Module through ``filter_checkpoint``. Each runs only where its library is installed.

Each holds the checker to no false alarm on a correct derivative: the library's derivative
against the math, and :func:`jaxchain.check.check_vjp` against an independent reference (the
dense solve, the unrolled Newton iteration, the discretise-then-differentiate adjoint) at the
tolerance the method is approximate to, or against finite differences alone.
"""

import math

import jax
import jax.numpy as jnp

A = ((2.0, 1.0), (1.0, 3.0))  # symmetric positive definite: A^-1 = ((3, -1), (-1, 2)) / 5
B = (1.0, 2.0)  # x = A^-1 b = (0.2, 0.6)


def _check(*args, **options):
    from jaxchain.check import check_vjp

    return check_vjp(*args, **options)


def _solve(A, b):
    import lineax as lx

    return lx.linear_solve(lx.MatrixLinearOperator(A), b).value


def _solve_psd(A, b):
    """Cholesky, which reads one triangle of ``A``: right on symmetric matrices only."""
    import lineax as lx

    operator = lx.MatrixLinearOperator(A, lx.positive_semidefinite_tag)
    return lx.linear_solve(operator, b, lx.Cholesky()).value


def _symmetric(A, b):
    return (A + A.T) / 2, b


def lineax_db() -> float:
    return float(jax.grad(lambda b: _solve(jnp.array(A), b)[0])(jnp.array(B))[0])


def lineax_check():
    return _check(_solve, jnp.linalg.solve, jnp.array(A), jnp.array(B))


def lineax_psd_dA() -> float:
    return float(jax.grad(lambda a: _solve_psd(a, jnp.array(B))[0])(jnp.array(A))[0, 0])


def lineax_psd_check():
    a, b = jnp.array(A), jnp.array(B)
    return _check(_solve_psd, jnp.linalg.solve, a, b, project=_symmetric)


def _cubic(x, a):
    return x**3 + x - a


def _root(a):
    import optimistix as optx

    solver = optx.Newton(rtol=1e-12, atol=1e-12)
    return optx.root_find(_cubic, solver, jnp.ones_like(a), args=a).value


def _unrolled(a):
    """Forty Newton steps, differentiated through: the reference implicit differentiation
    agrees with once both have converged."""
    step = lambda _, x: x - _cubic(x, a) / (3 * x**2 + 1)  # noqa: E731
    return jax.lax.fori_loop(0, 40, step, jnp.ones_like(a))


def optimistix_da() -> float:
    return float(jax.grad(lambda a: _root(a)[0])(jnp.array([2.0]))[0])


def optimistix_check():
    return _check(_root, _unrolled, jnp.array([2.0, 0.5]), rtol=1e-8)


def _decay(k, adjoint):
    """``y(1)`` of ``y' = -k y``, ``y(0) = 1``: ``exp(-k)``, by Tsit5 at twenty fixed steps."""
    import diffrax as dfx

    term = dfx.ODETerm(lambda t, y, k: -k * y)
    y0 = jnp.ones_like(k)
    solution = dfx.diffeqsolve(term, dfx.Tsit5(), 0.0, 1.0, 0.05, y0, args=k, adjoint=adjoint)
    return solution.ys[-1]


def _backsolve(k):
    import diffrax as dfx

    return _decay(k, dfx.BacksolveAdjoint())


def _checkpointed(k):
    import diffrax as dfx

    return _decay(k, dfx.RecursiveCheckpointAdjoint())


def diffrax_backsolve_dk() -> float:
    return float(jax.grad(lambda k: _backsolve(k)[0])(jnp.array([0.5]))[0])


def diffrax_backsolve_check():
    """The continuous adjoint against the discrete one: they differ by the solver's error,
    so ``rtol=1e-6``; linearity stays exact (fixed steps: the adjoint is linear)."""
    return _check(_backsolve, _checkpointed, jnp.array([0.5]), rtol=1e-6, vmap=False)


def diffrax_checkpoint_dk() -> float:
    return float(jax.grad(lambda k: _checkpointed(k)[0])(jnp.array([0.5]))[0])


def diffrax_checkpoint_check():
    """Finite differences alone, first order and second."""
    return _check(_checkpointed, None, jnp.array([0.5]), vmap=False)


def _linear():
    """``eqx.nn.Linear(2, 1)`` with weights ``(1, 2)`` and bias ``0.5``."""
    import equinox as eqx

    layer = eqx.nn.Linear(2, 1, key=jax.random.key(0))
    weights = (jnp.array([[1.0, 2.0]]), jnp.full_like(layer.bias, 0.5))
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, weights)


def _through_checkpoint(layer, x):
    import equinox as eqx

    return jnp.tanh(eqx.filter_checkpoint(lambda m, x: m(x))(layer, x))


X = (0.3, -0.1)  # W x + b = 0.6


def equinox_db() -> float:
    layer, x = _linear(), jnp.array(X)
    return float(jax.grad(lambda m: _through_checkpoint(m, x)[0])(layer).bias[0])


def equinox_check():
    return _check(_through_checkpoint, None, _linear(), jnp.array(X))


EXACT = {
    "lineax": 0.6,  # d x0 / d b0 = (A^-T e0)_0 = 3/5
    "lineax psd": -0.6 * 0.2,  # d x0 / d A00 = -(A^-1)_00 x0
    "optimistix": 0.25,  # x**3 + x = 2 at x = 1: dx/da = 1 / (3 x**2 + 1)
    "diffrax": -math.exp(-0.5),  # d exp(-k) / dk at 0.5
    "equinox": 1 - math.tanh(0.6) ** 2,
}
