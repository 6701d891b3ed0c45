"""Trace-time checks of shapes and dtypes, shared by the rules and their reference twins.

Every check raises ``ValueError`` naming the op, the argument, what was expected and what
was given, so that bad input fails here, in Python, instead of broadcasting silently or
crashing inside XLA.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _fail(op: str, message: str) -> None:
    raise ValueError(f"{op}: {message}")


def as_array(op: str, name: str, x) -> jax.Array:
    """``x`` as an array, with a clear error for things that are not array-like."""
    try:
        return jnp.asarray(x)
    except TypeError as e:
        raise ValueError(f"{op}: {name} must be an array, got {type(x).__name__}") from e


def floating(op: str, **arrays) -> None:
    """Every array given is floating point, and all share one dtype."""
    dtypes = {name: jnp.result_type(x) for name, x in arrays.items()}
    for name, dtype in dtypes.items():
        if not jnp.issubdtype(dtype, jnp.floating):
            _fail(op, f"{name} must be floating point, got dtype {dtype}")
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n} {d}" for n, d in dtypes.items())
        _fail(op, f"arguments must share one dtype, got {listed}")


def integer(op: str, name: str, x) -> None:
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.integer):
        _fail(op, f"{name} must be integer, got dtype {dtype}")


def boolean(op: str, name: str, x) -> None:
    dtype = jnp.result_type(x)
    if dtype != jnp.bool_:
        _fail(op, f"{name} must be boolean (True = keep), got dtype {dtype}")


def rank(op: str, name: str, x, ndim: int, layout: str = "") -> None:
    if np.ndim(x) != ndim:
        hint = f" {layout}" if layout else ""
        _fail(op, f"{name} must have rank {ndim}{hint}, got shape {np.shape(x)}")


def min_rank(op: str, name: str, x, ndim: int) -> None:
    if np.ndim(x) < ndim:
        _fail(op, f"{name} must have rank >= {ndim}, got shape {np.shape(x)}")


def shape(op: str, name: str, x, expected: Sequence[int], why: str = "") -> None:
    """``x`` has exactly the shape ``expected``."""
    if tuple(np.shape(x)) != tuple(expected):
        reason = f" ({why})" if why else ""
        _fail(op, f"{name} must have shape {tuple(expected)}{reason}, got {np.shape(x)}")


def broadcastable(op: str, name: str, x, target: Sequence[int], layout: str) -> None:
    """``x`` broadcasts to ``target`` (rank at most that of target, each axis 1 or equal)."""
    xs, target = tuple(np.shape(x)), tuple(target)
    padded = (1,) * (len(target) - len(xs)) + xs
    if len(xs) > len(target) or any(a not in (1, b) for a, b in zip(padded, target, strict=True)):
        _fail(op, f"{name} of shape {xs} does not broadcast to {layout} = {target}")
