"""Finite differences where one step per array cannot serve: magnitudes mixed over many
orders, a matrix beside a singularity, a function that is 0 where it is checked; and the
sweep of smaller steps (Richardson) that settles them, but never a rounding plateau."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain.check import check_jvp, check_vjp, sweep


def _tangents_times(f, factor):
    """``f`` whose JVP (and so its transposed VJP) is ``factor`` times the true one."""
    g = jax.custom_jvp(f)
    g.defjvp(lambda p, t: (f(*p), factor * jax.jvp(f, p, t)[1]))
    return g


def _log_gamma_sqrt(x):
    return jax.scipy.special.gammaln(x) + jnp.sqrt(x) * jnp.log1p(x)


MIXED = jnp.logspace(-12, 4, 17)  # sixteen orders of magnitude in one array


def _singular(cond=1e7):
    """A 4 x 4 matrix whose smallest singular value is 1 / cond, and a right-hand side."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    v, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    return jnp.asarray(u @ np.diag([1, 1, 1, 1 / cond]) @ v.T), jnp.asarray(rng.normal(size=4))


CASES = {"mixed magnitudes": (_log_gamma_sqrt, (MIXED,)), "singular": (jnp.linalg.solve, None)}


def _case(name):
    f, args = CASES[name]
    return f, args if args is not None else _singular()


@pytest.mark.parametrize("mode", [check_vjp, check_jvp])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_correct_derivative_passes_with_and_without_a_reference(name, mode):
    f, args = _case(name)
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(a, jnp.float64) for a in args)
        for reference in (f, None):
            report = mode(f, reference, *args)
            assert report.ok, str(report)


@pytest.mark.parametrize("mode", [check_vjp, check_jvp])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_derivative_off_by_a_tenth_of_a_percent_fails_without_a_reference(name, mode):
    f, args = _case(name)
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(a, jnp.float64) for a in args)
        report = mode(_tangents_times(f, 1.001), None, *args)
    assert not report.ok
    assert "finite differences" in report.failed, str(report)


def test_the_singular_matrix_is_settled_by_the_sweep_and_said_so():
    with jax.enable_x64(True):
        report = check_vjp(jnp.linalg.solve, None, *_singular())
    assert report.ok, str(report)
    assert any("a sweep of steps (Richardson) settled" in n for n in report.notes)


def test_the_sweep_extrapolates_to_the_derivative_beside_a_pole():
    d, h0 = 1e-7, 3e-6  # 1 / (x - d) at 0, a first step thirty times the distance to the pole
    hs = sweep.ladder(np.array([h0]))
    f = lambda x: 1 / (x - d)  # noqa: E731
    estimate, error = sweep.richardson(np.array([f(0.0)]), f(hs), f(-hs), hs)
    assert abs(estimate[0] + 1 / d**2) < 1e-6 / d**2
    assert error[0] < 1e-6 / d**2


def test_a_plateau_of_rounding_settles_nothing():
    """Central differences that cancel to exactly 0 below some step (the JVP of
    ``sin(pi x) / (pi x)`` near 0 at -O0, jax#5054) agree perfectly and mean nothing."""
    hs = sweep.ladder(np.array([6e-6]))[:, sweep.UP :]
    central = np.array([[-0.0095, -0.0098, -0.0197, 0, 0, 0, 0, 0, 0, 0, 0]])
    estimate, error = sweep.richardson(np.zeros(1), central * hs, -central * hs, hs)
    assert not np.isfinite(error[0])
    _, _, settled = sweep.settle(central[:, 0], np.zeros(1), estimate, error, 1e-6, 1.0)
    assert not settled.any()


def test_a_function_that_is_zero_where_it_is_checked_prints_no_absurd_noise():
    with jax.enable_x64(True):
        report = check_vjp(lambda x: jnp.sum(x) * jnp.ones(3), None, jnp.array([1.0, -1, 2, -2]))
    assert report.ok, str(report)
    assert not any("noisy" in n for n in report.notes), report.notes
