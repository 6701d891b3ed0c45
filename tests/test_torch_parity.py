"""from_torch: PyTorch's outputs and gradients, recorded once by fixtures/make_torch_fixtures.py
(torch is not needed to run this)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import nn
from jaxchain.check import assert_close, tolerance

FIXTURES = np.load(pathlib.Path(__file__).parent / "fixtures" / "torch_modules.npz")
TOL = tolerance(jnp.float32)


def _state(module: str, kind: str) -> dict[str, np.ndarray]:
    prefix = f"{module}/{kind}/"
    return {k.removeprefix(prefix): FIXTURES[k] for k in FIXTURES.files if k.startswith(prefix)}


def _assert_close(got, want):
    """Within the float32 tolerance, each leaf relative to its largest value (floored at 1% of
    the largest of the whole tree: the key bias of attention has a gradient that is zero up to
    rounding)."""
    assert_close(got, want, tol=TOL)


def _check(name, params, run, want_grads):
    x, ct = jnp.asarray(FIXTURES[f"{name}/x"]), jnp.asarray(FIXTURES[f"{name}/ct"])
    out, pullback = jax.vjp(run, params, x)
    _assert_close(out, FIXTURES[f"{name}/out"])
    d_params, dx = pullback(ct)
    _assert_close(dx, FIXTURES[f"{name}/dx"])
    _assert_close(d_params, want_grads)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_recurrent_from_torch_reproduces_outputs_and_gradients(name):
    module = getattr(nn, name)
    want = module.from_torch(_state(name, "grad"))
    if "b" in want:  # b = bias_ih + bias_hh: its gradient is either one's, not their sum
        want["b"] = jnp.asarray(FIXTURES[f"{name}/grad/bias_ih_l0"])
    run = lambda p, x: module.apply(p, x)[0]  # noqa: E731
    _check(name, module.from_torch(_state(name, "state")), run, want)


def test_attention_from_torch_reproduces_outputs_and_gradients():
    mask = ~jnp.asarray(FIXTURES["attention/key_padding_mask"])  # True = a real token

    def run(p, x):
        return jnp.where(mask[..., None], nn.attention.apply(p, x, mask), 0)

    params = nn.attention.from_torch(_state("attention", "state"), num_heads=2)
    assert params["w_q"].shape == (8, 2, 4)
    _check("attention", params, run, nn.attention.from_torch(_state("attention", "grad"), 2))
