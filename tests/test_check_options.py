"""The checker's options for what to compare and how closely: ``atol`` beside ``rtol``, and
``wrt``, the leaves to differentiate, finer than ``argnums``."""

import jax
import jax.numpy as jnp
import pytest

from jaxchain.check import check_jvp, check_vjp


def _sin_with_derivative_off_by(offset):
    """``sin`` whose derivative is ``cos x + offset``: linear in the tangent (and cotangent),
    absolutely wrong."""
    f = jax.custom_jvp(jnp.sin)
    f.defjvp(lambda p, t: (jnp.sin(p[0]), t[0] * (jnp.cos(p[0]) + offset)))
    return f


@pytest.mark.parametrize("reference", [jnp.sin, None])
def test_atol_accepts_an_absolute_error_below_it_and_no_more(reference):
    """A derivative accurate to an absolute error (a solver's ``atol``) passes at that
    ``atol`` and fails at a tenth of it, with the reference and with finite differences."""
    x = jnp.linspace(0.2, 1.5, 6)  # cos x from 0.07 to 0.98: an error of 1e-5 is 1e-5 of it
    with jax.enable_x64(True):
        x = x.astype(jnp.float64)
        off = _sin_with_derivative_off_by(1e-5)
        check = "vjp" if reference is not None else "finite differences"
        assert check in check_vjp(off, reference, x).failed
        assert check_vjp(off, reference, x, atol=1e-4).ok
        assert check in check_vjp(off, reference, x, atol=1e-6).failed
        jvp_check = "jvp" if reference is not None else "finite differences"
        assert check_jvp(off, reference, x, atol=1e-4).ok
        assert jvp_check in check_jvp(off, reference, x, atol=1e-6).failed


def _dense_bias_dropped(params, x):
    """``tanh(x w + b)`` whose backward returns 0 for ``b``."""
    return _dense(params["w"], params["b"], x)


@jax.custom_vjp
def _dense(w, b, x):
    return jnp.tanh(x @ w + b[None])


def _dense_fwd(w, b, x):
    y = jnp.tanh(x @ w + b[None])
    return y, (w, x, y)


def _dense_bwd(res, g):
    w, x, y = res
    d = g * (1 - y**2)
    return x.T @ d, jnp.zeros(w.shape[1]), d @ w.T


_dense.defvjp(_dense_fwd, _dense_bwd)


def test_wrt_differentiates_the_leaves_it_marks_and_holds_the_others_fixed():
    """A backward wrong only for ``params["b"]``: caught when ``b`` is checked, passed when
    ``wrt`` holds it fixed (its values then static arrays), and the report names only the
    leaves checked."""
    with jax.enable_x64(True):
        params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "b": jnp.array([0.1, -0.2])}
        x = jnp.linspace(-0.5, 0.7, 12).reshape(4, 3)
        assert "finite differences" in check_vjp(_dense_bias_dropped, None, params, x).failed
        report = check_vjp(
            _dense_bias_dropped, None, params, x, wrt=({"w": True, "b": False}, True)
        )
        assert report.ok, str(report)
        assert {e.leaf for e in report.errors} - {"all"} == {"params['w']", "x"}
        only_x = check_vjp(_dense_bias_dropped, None, params, x, wrt=(False, True))
        assert {e.leaf for e in only_x.errors} - {"all"} == {"x"}


def test_wrt_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="wrt: expected a pytree of booleans shaped as args"):
        check_vjp(jnp.sin, None, jnp.ones(3), wrt=({"a": True},))
