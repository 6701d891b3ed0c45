"""Users can property-test their own rules with jaxchain.check.testing."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import pytest

import jaxchain.check.testing as jt
from jaxchain import reference
from jaxchain.check.registry import RULES


@jax.custom_vjp
def my_tanh(x):
    return jnp.tanh(x)


my_tanh.defvjp(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda y, g: (g * (1 - y * y),))


@jax.custom_vjp
def my_wrong_tanh(x):
    return jnp.tanh(x)


my_wrong_tanh.defvjp(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda y, g: (g * (1 - y),))


def test_check_property_passes_a_right_rule():
    jt.check_property(my_tanh, reference.tanh, jt.arrays(jt.shapes()))


def test_check_property_fails_a_wrong_rule():
    with pytest.raises(AssertionError, match="FAIL"):
        jt.check_property(my_wrong_tanh, reference.tanh, jt.arrays((3,)))


@hypothesis.given(st.data())
def test_case_args_draw_from_the_declared_dims(data):
    case = RULES["layer_norm"]
    x, scale, bias = data.draw(jt.case_args(case, jnp.float32))
    assert x.shape[:-1] in case.dims["lead"] and x.dtype == jnp.float32
    assert scale.shape == bias.shape == x.shape[-1:]


def test_arrays_without_x64_draw_float32_without_warnings():
    """Without ``jax_enable_x64`` (a fresh interpreter), the default dtype is float32 and no
    draw warns about float64 being truncated."""
    import subprocess
    import sys

    script = """
import warnings, hypothesis
from jaxchain.check import testing as jt
warnings.simplefilter("error")
@hypothesis.settings(max_examples=3, database=None)
@hypothesis.given(jt.arrays())
def draw(x):
    assert x.dtype == "float32", x.dtype
draw()
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
