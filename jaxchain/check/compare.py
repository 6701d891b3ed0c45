"""Comparing two values: the tolerance table, the working precision of a function, and the
error of one leaf against another (relative to its own scale, with floors for values that
are zero by symmetry)."""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain.check.leaves import unravel
from jaxchain.check.report import LeafError, Report

#: Largest relative error accepted against autodiff, by the least precise dtype involved.
#: The relative error of a leaf is ``max|a - b| / max|b|`` (norm-wise, so that entries that
#: are zero in one formula and 1e-17 in the other do not count as large; see ``_SCALE_FLOOR``).
#: Scaled up, never down, by the input's size (see :func:`~jaxchain.check.scaled_tolerance`).
TOLERANCES: dict[jnp.dtype, float] = {
    jnp.dtype(jnp.float64): 1e-10,
    jnp.dtype(jnp.float32): 1e-4,
    jnp.dtype(jnp.float16): 1e-2,
    jnp.dtype(jnp.bfloat16): 5e-2,
}
#: Against central differences in float64 (truncation ``~h**2``, rounding ``~noise / h``), at
#: least.
FD_RTOL = 1e-6
#: A function that computes in float32 (or less) inside takes a step of this size relative to
#: each leaf's scale; its tolerance follows from the noise measured in its outputs.
FD_FLOAT32 = {"step": float(np.finfo(np.float32).eps) ** (1 / 3), "rtol": 5e-3}
#: The size term of :func:`~jaxchain.check.scaled_tolerance` is
#: ``SIZE_FACTOR * sqrt(n) * eps``.
SIZE_FACTOR = 100.0


def tolerance(*dtypes: Any) -> float:
    """The tolerance of the least precise of ``dtypes`` (from
    :data:`~jaxchain.check.compare.TOLERANCES`); complex dtypes count as their real parts."""
    floats = [_real(d) for d in dtypes if jnp.issubdtype(d, jnp.inexact)]
    return max((TOLERANCES[d] for d in floats), default=TOLERANCES[jnp.dtype(jnp.float64)])


def _real(dtype) -> jnp.dtype:
    return jnp.dtype(jnp.finfo(dtype).dtype)


def scaled_tolerance(base: float, dtype, size: int) -> float:
    """``base`` (the table's entry), raised to ``SIZE_FACTOR * sqrt(size) * eps`` where that
    is larger: rounding errors grow with the number of inputs summed over; never with the
    output's size (jax#3130: a long output is not less accurate per element). Not with the
    condition number ``sum|x| |grad| / sum|u| |f|`` either: that bounds the effect of
    rounding the *inputs*, which the rule and its reference share exactly, and at a 1e4
    offset in float32 it raised the tolerance to 0.19, hiding a softmax that loses its
    normaliser (``tests/test_edges.py``)."""
    eps = float(jnp.finfo(dtype).eps)
    return max(base, SIZE_FACTOR * math.sqrt(max(size, 1)) * eps)


def working_dtype(f: Callable, *args) -> jnp.dtype:
    """The least precise floating-point dtype among the values ``f(*args)`` computes, read off
    its jaxpr (sub-jaxprs of loops, conditionals and custom rules included)."""
    jaxpr = jax.make_jaxpr(f)(*args)
    dtypes = {_real(a.dtype) for a in _avals(jaxpr.jaxpr) if jnp.issubdtype(a.dtype, jnp.inexact)}
    return max(dtypes, key=lambda d: jnp.finfo(d).eps, default=jnp.dtype(jnp.float64))


def _avals(jaxpr):
    for eqn in jaxpr.eqns:
        yield from (v.aval for v in eqn.outvars if hasattr(v.aval, "dtype"))
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds a Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


# A leaf's error is relative to its own largest value, but never to less than this fraction of
# the largest value over all leaves: a gradient that is zero by symmetry (the key bias of
# attention, say) is then compared at the scale of the whole gradient, not at the scale of
# its own rounding noise.
_SCALE_FLOOR = 1e-2


def natural_floor(tol: float, natural: float) -> float:
    """Leaves whose values are all below ``sqrt(tol) * natural`` are compared absolutely
    (``natural`` is the size a derivative of this function has: ``mean|u| max|f| / min(1,
    max scale(x))`` for a VJP), with an allowance of a few ulps of values of that size: the
    rounding noise of a value that is small by cancellation. Relative to the function, not
    to 1, so that a function of scale 1e-10 is not compared at 1e-5."""
    return math.sqrt(tol) * natural


def leaf_error(
    check, name, got, want, tol, floor, *, shape=None, coords=None, slack=None, note=""
) -> LeafError:
    """Error of ``got`` against ``want``, relative to ``max(max|want|, floor)``; with
    ``coords``, they are the values at those flat coordinates of a leaf of ``shape``; with
    ``slack``, differences up to it (per element: the rounding noise of ``want``) count as
    none."""
    a, b = _flat(got), _flat(want)
    with np.errstate(all="ignore"):  # inf - inf is NaN: a failure, reported as such
        diff = np.abs(a - b)
        isnan = np.isnan(diff)
        if isnan.any():
            diff = np.where(a == b, 0.0, diff)  # the same infinity is no error
        if slack is not None:
            diff = np.maximum(diff - slack, 0.0)
        if slack is not None or isnan.any():
            isnan = np.isnan(diff)
    nan = bool(isnan.any())
    if not diff.size:
        worst = 0
    else:
        worst = int(np.argmax(np.where(isnan, np.inf, diff) if nan else diff))
    max_abs = math.nan if nan else (float(diff[worst]) if diff.size else 0.0)
    scale = max(float(np.max(np.abs(b), initial=0.0)), floor)
    shape = np.shape(want) if shape is None else shape
    flat = worst if coords is None or not len(coords) else int(coords[worst])
    got_w, want_w = (_value(a, worst), _value(b, worst)) if diff.size else (math.nan,) * 2
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    index = unravel(flat, shape)
    return LeafError(check, name, max_abs, rel, index, tol, got_w, want_w, note)


def _flat(x) -> np.ndarray:
    a = np.asarray(x)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64, copy=False).ravel()


def _value(a: np.ndarray, i: int):
    v = a[i]
    return complex(v) if np.iscomplexobj(a) else float(v)


def max_abs(leaves) -> float:
    return max((float(np.max(np.abs(_flat(x)), initial=0.0)) for x in leaves), default=0.0)


def compare(
    check: str, names, got, want, tol: float, natural: float = 1.0, slack=None, atol=0.0
) -> list[LeafError]:
    """One row per leaf: ``got`` against ``want``, each leaf relative to its own scale but
    never to less than 1% of the largest leaf's nor than :func:`natural_floor`; differences
    up to ``slack`` (one number per leaf, from :func:`rounding_noise`) plus ``atol`` count as
    none."""
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    floor = _floor(want, tol, natural)
    slack = [None] * len(want) if slack is None else slack
    if atol:
        slack = [atol + (0.0 if s is None else s) for s in slack]
    pairs = zip(names, got, want, slack, strict=True)
    return [leaf_error(check, n, a, b, tol, floor, slack=s) for n, a, b, s in pairs]


def _floor(want: list, tol: float, natural: float) -> float:
    return max(_SCALE_FLOOR * max_abs(want), natural_floor(tol, natural))


def accepted(want, tol: float, natural: float = 1.0) -> list[float]:
    """Per leaf of ``want``, the largest absolute error :func:`compare` accepts against it."""
    leaves = jax.tree.leaves(want)
    floor = _floor(leaves, tol, natural)
    return [tol * max(max_abs([w]), floor) for w in leaves]


def compare_sum(check: str, names, got, a: float, xs, b: float, ys, tol: float, noise=None):
    """One row per leaf: ``got`` against ``a x + b y``, relative to the larger of the two terms
    (``|a| max|x|``, ``|b| max|y|``), as the rounding of a sum is: a linear map of
    ``a t + b s`` with ``|a t|`` a thousand times ``|s|`` keeps ``s`` only to that many ulps
    of ``t``, and nothing in a nonlinear one (a square, a clip) stays within it; never
    relative to less than 1% of the largest leaf's terms (a leaf zero by symmetry, the key bias
    of attention, rounds at the scale of the others). ``noise``, the :func:`rounding_noise` of
    the map at ``t`` and at ``s`` (two numbers per leaf), allows ``|a| noise_t + |b| noise_s``."""
    rows = []
    noise = [(0.0, 0.0)] * len(xs) if noise is None else noise
    terms = [max(abs(a) * max_abs([x]), abs(b) * max_abs([y])) for x, y in zip(xs, ys, strict=True)]
    least = _SCALE_FLOOR * max(terms, default=0.0)
    pairs = zip(names, jax.tree.leaves(got), xs, ys, noise, terms, strict=True)
    for n, g, x, y, (nx, ny), t in pairs:
        slack = abs(a) * nx + abs(b) * ny
        want = a * np.asarray(x) + b * np.asarray(y)  # on the host: no compilation
        rows.append(leaf_error(check, n, g, want, tol, max(t, least), slack=slack))
    return rows


# A property exact in arithmetic (linearity, second order) is allowed this many times what
# rounding alone changes in the reference's result at the same inputs.
NOISE_FACTOR = 10.0


def rounding_noise(linear: Callable, t, once=None, got=None, cap=None) -> list[float]:
    """Per leaf of ``linear(t)`` (a map linear in ``t``, from a trusted reference; ``once``,
    its value if known): ``NOISE_FACTOR * max|linear(3 t) / 3 - linear(t)|``, what rounding
    alone moves its result at these inputs (``3 t`` rounds, nothing else changes), plus as
    much of the rule's own distance ``max|got - linear(t)|`` from it at ``t``, up to ``cap``
    (what the comparison with the reference accepts: :func:`accepted`). At a saturated
    softmax, say, a gradient small by cancellation (``p (g - <p, g>)``) carries rounding of
    the size of its terms, not of itself; the rule is held to that, not to a tolerance of
    values it never computes. Never the rule's own ``rule(3 t) / 3``, nor more of its
    distance than is accepted: either would excuse a rule that is not linear."""
    once = jax.tree.leaves(linear(t) if once is None else once)
    thrice = jax.tree.leaves(linear(jax.tree.map(lambda x: 3 * np.asarray(x), t)))
    got = [None] * len(once) if got is None else jax.tree.leaves(got)
    cap = [math.inf] * len(once) if cap is None else cap
    noise = []
    for a, b, g, c in zip(once, thrice, got, cap, strict=True):
        own = 0.0 if g is None else min(_finite_max(_flat(g) - _flat(a)), c)
        noise.append(NOISE_FACTOR * (_finite_max(_flat(b) / 3 - _flat(a)) + own))
    return noise


def _finite_max(d: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        d = np.abs(d)
    return float(np.max(d[np.isfinite(d)], initial=0.0))


def assert_close(got, want, *, tol: float | None = None, name: str = "values") -> Report:
    """Two pytrees of arrays are equal within ``tol`` (by default the tolerance table's entry
    for ``want``'s dtypes), each leaf relative to its largest value but never to less than
    1% of the largest value of all leaves — the rule :func:`check_vjp` compares by.
    Raises ``AssertionError`` with the per-leaf report if any leaf is off.

    >>> assert_close({"w": jnp.ones(3)}, {"w": jnp.ones(3) + 1e-12}).ok
    True
    """
    want_leaves = jax.tree.leaves(want)
    if tol is None:
        tol = tolerance(*(jnp.result_type(x) for x in want_leaves))
    if jax.tree.structure(got) != jax.tree.structure(want):
        raise AssertionError(
            f"{name}: structures differ: {jax.tree.structure(got)} != {jax.tree.structure(want)}"
        )
    names = [
        jax.tree_util.keystr(p) or "value" for p, _ in jax.tree_util.tree_leaves_with_path(want)
    ]
    report = Report(name, tuple(compare("values", names, got, want, tol)), "assert_close")
    if not report.ok:
        raise AssertionError(str(report))
    return report


def choose_tolerance(io_dtypes, inside, forward_error, size: int):
    """The tolerance against a reference, and what to say about it: the table's entry for
    the least precise dtype among the inputs and outputs (``io_dtypes``) and what ``f``
    computes in (``inside``) — unless ``f``'s outputs match the reference's to within 1% of
    the inputs' tolerance (``forward_error``), so that one low-precision op that does not
    matter does not loosen the whole check — scaled by :func:`scaled_tolerance`."""
    base_io, base = tolerance(*io_dtypes), tolerance(*io_dtypes, inside)
    notes = []
    if base > base_io and forward_error is not None and forward_error <= 1e-2 * base_io:
        notes.append(
            f"f computes in {inside} inside, but its outputs match the reference's "
            f"to {forward_error:.0e}: compared at {base_io:.0e}"
        )
        base = base_io
    elif base > base_io:
        notes.append(f"f computes in {inside} inside: compared at its tolerance {base:.0e}")
    floats = [_real(d) for d in io_dtypes if jnp.issubdtype(d, jnp.inexact)]
    least = max(floats, key=lambda d: jnp.finfo(d).eps, default=jnp.dtype(jnp.float64))
    tol = scaled_tolerance(base, least, size)
    if tol > base:
        notes.append(f"tolerance {tol:.1e}: {size} inputs")
    return tol, notes
