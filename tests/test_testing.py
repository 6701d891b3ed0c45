"""Users can property-test their own rules with jaxchain.check.testing."""

import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import pytest

import jaxchain.check.testing as jt
from jaxchain import reference
from jaxchain.check.registry import MODELS, RULES


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


class _Compilations:
    """Records the XLA compilations JAX announces (``jax.monitoring`` events) while active."""

    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, event: str, *args, **kwargs) -> None:
        if event.startswith(("/jax/core/compile/backend_compile", "/jax/compilation_cache/")):
            self.seen.append(event)

    def __enter__(self):
        jax.monitoring.register_event_listener(self)
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_listener(self)
        jax.monitoring.unregister_event_duration_listener(self)


_STRATEGIES = {
    "arrays": jt.arrays(),
    "arrays(float32)": jt.arrays((2, 3), jnp.float32),
    "arrays(bfloat16)": jt.arrays((4,), jnp.bfloat16),
    "keys": jt.keys(),
    **{f"case_args({n})": jt.case_args(c) for n, c in {**RULES, **MODELS}.items()},
}


@hypothesis.settings(max_examples=2)
@hypothesis.given(st.data())
def test_strategies_draw_without_compiling(data):
    """No strategy runs a JAX computation while hypothesis draws (the cause of a slow first
    draw, and of hypothesis' health check failing on a busy machine): every array is drawn
    with NumPy and put on the device, which compiles nothing. Sanity: a JAX computation is
    seen."""
    with _Compilations() as compiled:
        drawn = {name: data.draw(strategy, label=name) for name, strategy in _STRATEGIES.items()}
    assert compiled.seen == [], compiled.seen
    assert drawn["arrays(bfloat16)"].dtype == jnp.bfloat16
    assert jax.random.normal(drawn["keys"], (2,)).shape == (2,)  # a usable key
    with _Compilations() as compiled:
        jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones(7))
    assert compiled.seen, "the listener sees compilations"


def test_arrays_without_x64_draw_float32_without_warnings_on_a_busy_machine():
    """Without ``jax_enable_x64`` (a fresh interpreter), the default dtype is float32 and no
    draw warns about float64 being truncated; hypothesis' default settings (its health
    checks on) pass while two other processes keep both cores busy."""
    script = """
import warnings, hypothesis
from jaxchain.check import testing as jt
warnings.simplefilter("error")
@hypothesis.given(jt.arrays(), jt.keys())
def draw(x, key):
    assert x.dtype == "float32", x.dtype
draw()
"""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert done.returncode == 0 and done.stderr == "", done.stderr
