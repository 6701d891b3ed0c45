"""Derivative checking for any function: is its vector-Jacobian product right (reverse mode,
:func:`check_vjp`)? Is its Jacobian-vector product right (forward mode, :func:`check_jvp`)?

:func:`check_vjp` compares the VJP of ``f`` with the VJP of a ``reference`` (usually its
autodiff twin) and with finite differences in float64; checks that it is linear in the
cotangent, deterministic, batched right under ``vmap`` (over primals, cotangents, nested),
right at second order in the primals and in the cotangent, and that the backward keeps its
contract (structure, shapes, dtypes, float0 for integer inputs, symbolic zeros). Complex
inputs and outputs follow JAX's convention. The :class:`Report` is a table naming each leaf
with its largest error and the worst element's analytic and expected values, and says what
was skipped or weakened, and why. :func:`check_jvp` is the same for the forward mode.

The modules: ``report`` (the report), :mod:`~jaxchain.check.compare` (tolerances and
comparisons), ``differences`` (finite differences), ``leaves`` (per-leaf errors), ``vjp`` and
``jvp`` (the checks). They import nothing of jaxchain: the checker checks
anyone's rule, ours included.

This project's own cases -- the registry of its rules and models, their counterparts in
jax.nn, optax and flax, hypothesis strategies and the audit of other libraries' derivatives --
live above, in :mod:`jaxchain.cases`; the checker imports nothing of them, nor anything
beyond JAX and NumPy.

>>> import jax.numpy as jnp
>>> import jaxchain
>>> x = jnp.linspace(-2.0, 2.0, 5)
>>> check_vjp(jaxchain.rules.tanh, jaxchain.reference.tanh, x).ok
True
"""

from jaxchain.check.compare import (
    FD_FLOAT32,
    FD_RTOL,
    SIZE_FACTOR,
    TOLERANCES,
    assert_close,
    scaled_tolerance,
    tolerance,
    working_dtype,
)
from jaxchain.check.jvp import assert_jvp, check_jvp
from jaxchain.check.report import LeafError, Report
from jaxchain.check.vjp import assert_vjp, check_vjp

__all__ = [
    "FD_FLOAT32",
    "FD_RTOL",
    "SIZE_FACTOR",
    "TOLERANCES",
    "LeafError",
    "Report",
    "assert_close",
    "assert_jvp",
    "assert_vjp",
    "check_jvp",
    "check_vjp",
    "scaled_tolerance",
    "tolerance",
    "working_dtype",
]
