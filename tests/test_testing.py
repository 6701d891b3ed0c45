"""Users can property-test their own rules with jaxchain.cases.testing."""

import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import pytest

import jaxchain.cases.testing as jt
from jaxchain import reference
from jaxchain.cases.registry import RULES


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
    once = hypothesis.settings(phases=[hypothesis.Phase.generate])  # no shrinking: it fails
    with pytest.raises(AssertionError, match="FAIL"):
        jt.check_property(my_wrong_tanh, reference.tanh, jt.arrays((3,)), settings=once)


@hypothesis.given(st.data())
def test_case_args_draw_from_the_declared_dims(data):
    case = RULES["layer_norm"]
    x, scale, bias = data.draw(jt.case_args(case, jnp.float32))
    assert x.shape[:-1] in case.dims["lead"] and x.dtype == jnp.float32
    assert scale.shape == bias.shape == x.shape[-1:]


_NO_COMPILATION = """
import hypothesis, hypothesis.strategies as st, jax, jax.numpy as jnp
import jaxchain.cases.testing as jt
from jaxchain.cases.registry import MODEL_CASES, RULES

jax.config.update("jax_enable_x64", True)
seen, active = [], [False]

def listen(event, *args, **kwargs):
    if active[0] and event.startswith(
        ("/jax/core/compile/backend_compile", "/jax/compilation_cache/")
    ):
        seen.append(event)

jax.monitoring.register_event_listener(listen)
jax.monitoring.register_event_duration_secs_listener(listen)
strategies = {
    "arrays": jt.arrays(),
    "arrays(float32)": jt.arrays((2, 3), jnp.float32),
    "arrays(bfloat16)": jt.arrays((4,), jnp.bfloat16),
    "keys": jt.keys(),
    **{f"case_args({n})": jt.case_args(c) for n, c in {**RULES, **MODEL_CASES}.items()},
}

@hypothesis.settings(max_examples=2, database=None, derandomize=True, deadline=None)
@hypothesis.given(st.data())
def draw(data):
    active[0] = True
    drawn = {name: data.draw(s, label=name) for name, s in strategies.items()}
    active[0] = False
    assert drawn["arrays(bfloat16)"].dtype == jnp.bfloat16
    assert jax.random.normal(drawn["keys"], (2,)).shape == (2,)  # a usable key

draw()
assert seen == [], seen
active[0] = True
jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones(7))  # the listener sees a compilation
assert seen, "no compilation seen"
"""


def test_strategies_draw_without_compiling():
    """No strategy runs a JAX computation while hypothesis draws (the cause of a slow first
    draw, and of hypothesis' health check failing on a busy machine): every array is drawn
    with NumPy and put on the device, which compiles nothing. In a fresh interpreter, so
    that no program compiled earlier hides one (a reused program announces nothing); its
    last line checks that the listener does see a compilation."""
    done = subprocess.run(
        [sys.executable, "-c", _NO_COMPILATION], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_arrays_without_x64_draw_float32_without_warnings_on_a_busy_machine():
    """Without ``jax_enable_x64`` (a fresh interpreter), the default dtype is float32 and no
    draw warns about float64 being truncated; hypothesis' default settings (its health
    checks on) pass while two other processes keep both cores busy."""
    script = """
import warnings, hypothesis
from jaxchain.cases import testing as jt
warnings.simplefilter("error")
@hypothesis.given(jt.arrays(), jt.keys())
def draw(x, key):
    assert x.dtype == "float32", x.dtype
draw()
"""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        done = subprocess.run(  # a guard against a hang; the draws take milliseconds
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
        )
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert done.returncode == 0 and done.stderr == "", done.stderr
