"""Hypothesis strategies and helpers, so that users test their own rules the way jaxchain
tests its own.

Example, in a test file::

    import jaxchain.cases.testing as jt

    def test_my_tanh():
        jt.check_property(my_tanh, jaxchain.reference.tanh, jt.arrays(jt.shapes()))

The strategies draw with NumPy and put each array on the device once: no JAX computation
and no compilation happens while hypothesis draws, so they pass its health checks under its
default settings on a busy machine.

Two hypothesis profiles are registered: ``jaxchain`` (few examples, for every run; each new
shape compiles) and ``jaxchain-thorough`` (many examples). Select one with
``hypothesis.settings.load_profile``.
"""

from jaxchain._extras import require

require("testing", __name__)  # before the imports that need it

from collections.abc import Callable, Sequence
from typing import Any

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from jaxchain.cases.registry import Case, key_of, to_device
from jaxchain.check import assert_jvp, assert_vjp

__all__ = ["arrays", "case_args", "check_property", "keys", "scales", "seeds", "shapes"]

hypothesis.settings.register_profile(
    "jaxchain", max_examples=4, deadline=None, derandomize=True, print_blob=True, database=None
)  # derandomized: the same examples every run, nothing shared between processes
hypothesis.settings.register_profile("jaxchain-thorough", max_examples=60, deadline=None)

DEFAULT_SHAPES: tuple[tuple[int, ...], ...] = ((5,), (2, 3), (2, 3, 4))


def seeds() -> st.SearchStrategy[int]:
    """32-bit seeds, from which every strategy here draws its values with NumPy."""
    return st.integers(0, 2**32 - 1)


def keys() -> st.SearchStrategy[jax.Array]:
    """Typed threefry PRNG keys (as ``jax.random.key`` makes), their key data drawn from a
    seed with NumPy: making one runs no JAX computation."""
    return seeds().map(lambda seed: key_of(np.random.default_rng(seed)))


def shapes(choices: Sequence[tuple[int, ...]] = DEFAULT_SHAPES) -> st.SearchStrategy:
    """Shapes drawn from a small fixed set (every new shape costs a compilation)."""
    return st.sampled_from(tuple(choices))


def scales() -> st.SearchStrategy[float]:
    """The spread of values: small, unit and large."""
    return st.sampled_from((0.1, 1.0, 5.0))


def arrays(
    shape: st.SearchStrategy | tuple[int, ...] | None = None, dtype: Any = None
) -> st.SearchStrategy[jax.Array]:
    """Normal arrays of a drawn shape (by default from :func:`shapes`) and spread; values
    never land on a kink by chance. ``dtype`` by default: float64 with ``jax_enable_x64``,
    else float32 (without a warning). Drawn with NumPy from a drawn seed and put on the
    device once."""
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype))
    if shape is None:
        shape = shapes()
    shape = shape if isinstance(shape, st.SearchStrategy) else st.just(shape)

    def draw(seed, s, scale):
        return to_device((scale * np.random.default_rng(seed).standard_normal(s)).astype(dtype))

    return st.builds(draw, seeds(), shape, scales())


def case_args(case: Case, dtype: Any = jnp.float64) -> st.SearchStrategy[tuple]:
    """Arguments for a registry :class:`~jaxchain.cases.registry.Case`: its dims drawn from their
    choices, its values from a drawn seed (with NumPy) and spread."""
    dims = st.fixed_dictionaries({name: st.sampled_from(c) for name, c in case.dims.items()})
    return st.builds(
        lambda seed, scale, d: case.args(seed, dtype, scale, **d), seeds(), scales(), dims
    )


def check_property(
    rule: Callable,
    reference: Callable | None,
    args: st.SearchStrategy,
    *,
    settings: hypothesis.settings | None = None,
    mode: str = "reverse",
    **options: Any,
) -> None:
    """Property-test a rule: for every ``args`` hypothesis draws (an array or a tuple of
    arguments), :func:`jaxchain.check.assert_vjp` (``mode="reverse"``) or
    :func:`jaxchain.check.assert_jvp` (``mode="forward"``, for a forward-mode rule) must pass.

    Args:
      rule: the function under test.
      reference: its trusted twin, or None for finite differences alone.
      args: a strategy of argument tuples (a single array is taken as one argument).
      settings: hypothesis settings; by default the loaded profile.
      mode: ``"reverse"`` or ``"forward"``.
      **options: passed to :func:`jaxchain.check.check_vjp` (or ``check_jvp``).
    """
    checks = {"reverse": assert_vjp, "forward": assert_jvp}
    if mode not in checks:
        raise ValueError(f"check_property: mode must be 'reverse' or 'forward', got {mode!r}")

    @hypothesis.given(args)
    def run(drawn):
        drawn = drawn if isinstance(drawn, tuple) else (drawn,)
        checks[mode](rule, reference, *drawn, **options)

    (settings(run) if settings is not None else run)()
