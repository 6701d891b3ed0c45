"""A function seen as a function of its inexact leaves: which leaves are differentiated,
what they are called, random directions shaped like them, and one flat real vector of them
all (a complex number is two real coordinates) for finite differences."""

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_inexact(leaf) -> bool:
    """A floating-point or complex array: differentiated."""
    return isinstance(leaf, jax.Array | np.ndarray) and jnp.issubdtype(leaf.dtype, jnp.inexact)


def inexact_dtype(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.inexact)


@dataclasses.dataclass(frozen=True)
class Spec:
    """``f`` as a function of its differentiated leaves; hashable, so that the jitted helpers
    compile once per function and shape, however often a check is run."""

    f: Callable
    treedef: Any
    kinds: tuple[str, ...]  # per leaf: "diff", "other" (an array held fixed) or "static"
    static: tuple

    def call(self, diff: Sequence, other: Sequence):
        pools = {"diff": iter(diff), "other": iter(other), "static": iter(self.static)}
        return self.f(*self.treedef.unflatten([next(pools[k]) for k in self.kinds]))

    def projector(self, project: Callable | None, other: Sequence) -> Callable[[tuple], tuple]:
        """``project`` (a function of perturbations shaped as the arguments, returning them
        projected onto the inputs' tangent space) as a map of the differentiated leaves;
        the identity when ``project`` is None."""
        if project is None:
            return lambda d: tuple(d)

        def on_leaves(d):
            pools = {"diff": iter(d), "other": iter(other), "static": iter(self.static)}
            args = self.treedef.unflatten([next(pools[k]) for k in self.kinds])
            out = jax.tree.leaves(project(*args))
            return tuple(x for x, k in zip(out, self.kinds, strict=True) if k == "diff")

        return on_leaves

    def outputs(self, diff: Sequence, other: Sequence) -> list:
        """The output's leaves, as a flat list."""
        return jax.tree.leaves(self.call(diff, other))


def python_numbers(f: Callable, args: tuple) -> list[str]:
    """The names of the Python floats and complex numbers among ``args``: constants of the
    function checked, never differentiated (wrap one in ``jnp.asarray`` to check it)."""
    params = parameter_names(f, len(args))
    paths, _ = jax.tree_util.tree_flatten_with_path(args)
    return [
        params[path[0].idx] + jax.tree_util.keystr(path[1:])
        for path, leaf in paths
        if isinstance(leaf, float | complex)
    ]


def constants_note(f: Callable, args: tuple) -> list[str]:
    """A note naming the Python numbers among ``args``, if any."""
    names = python_numbers(f, args)
    return [f"held fixed (Python numbers, not differentiated): {', '.join(names)}"] * bool(names)


def split(
    f: Callable, args: tuple, argnums=None, wrt=None
) -> tuple[Spec, tuple, tuple, list[str], list]:
    """``f``'s :class:`Spec`, its differentiated leaves (inexact arrays of the positional
    arguments in ``argnums``, all by default, and among them those ``wrt`` marks), the arrays
    held fixed, the differentiated leaves' names, and the names of the integer and boolean
    array leaves."""
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(args)
    kinds, diff, other, static, names, integers = [], [], [], [], [], []
    params = parameter_names(f, len(args))
    marks = _marks(wrt, args)
    for (path, leaf), marked in zip(paths_leaves, marks, strict=True):
        name = params[path[0].idx] + jax.tree_util.keystr(path[1:])
        chosen = (argnums is None or path[0].idx in argnums) and marked
        if is_inexact(leaf) and chosen:
            kinds.append("diff")
            diff.append(jnp.asarray(leaf))
            names.append(name)
        elif isinstance(leaf, jax.Array | np.ndarray):
            kinds.append("other")
            other.append(jnp.asarray(leaf))
            if not is_inexact(leaf):
                integers.append(name)
        else:
            kinds.append("static")
            static.append(leaf)
    spec = Spec(f, treedef, tuple(kinds), tuple(static))
    return spec, tuple(diff), tuple(other), names, integers


def _marks(wrt, args: tuple) -> list[bool]:
    """Per leaf of ``args``, whether ``wrt`` marks it: a pytree of booleans shaped as ``args``
    or a prefix of it (``(True, {"w": True, "b": False})``; a boolean covers its subtree), as
    optax's masks are. ``None`` marks everything."""
    n = len(jax.tree.leaves(args))
    if wrt is None:
        return [True] * n
    try:
        full = jax.tree.map(lambda m, a: jax.tree.map(lambda _: bool(m), a), tuple(wrt), args)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"wrt: expected a pytree of booleans shaped as args or a prefix of it, got {wrt!r} "
            f"for args of structure {jax.tree.structure(args)} ({e})"
        ) from None
    return jax.tree.leaves(full)


def parameter_names(f: Callable, n: int) -> list[str]:
    """The names of ``f``'s first ``n`` positional parameters (``args[i]`` where unknown)."""
    try:
        names = [
            p.name
            for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"args[{i}]" for i in range(n)]


def out_names(out) -> list[str]:
    """``out`` followed by each output leaf's path (``out['h']``, ``out[0]``)."""
    paths = jax.tree_util.tree_flatten_with_path(out)[0]
    return ["out" + jax.tree_util.keystr(p) for p, _ in paths]


def inner(a, b) -> jax.Array:
    """``Re sum(a * b)`` over all leaves: the real pairing under which JAX's VJP is the
    transpose of its JVP, for complex leaves too (``Re <u, J t> = Re <J^T u, t>``)."""
    total = jnp.zeros((), jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        total = total + jnp.sum(x * y).real
    return total


def normal_like(key, leaves) -> tuple:
    """Standard normal arrays shaped like ``leaves``, in their dtypes (complex leaves: real and
    imaginary parts of variance 1/2 each, as ``jax.random.normal``), drawn on the host by NumPy
    from ``key``'s bits: a ``jax.random`` draw compiles a program for every new shape."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    return tuple(_normal(rng, x.shape, np.dtype(x.dtype)) for x in leaves)


def _normal(rng: np.random.Generator, shape, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.complexfloating):
        parts = rng.standard_normal((2, *shape)) / np.sqrt(2)
        return (parts[0] + 1j * parts[1]).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def full_cotangent(out_leaves, inexact_cts):
    """A cotangent for every output leaf: ``inexact_cts`` for the inexact ones, float0 zeros
    (what JAX expects) for integer and boolean outputs, which are not differentiated."""
    it = iter(inexact_cts)
    return [
        next(it) if inexact_dtype(o.dtype) else np.zeros(o.shape, jax.dtypes.float0)
        for o in out_leaves
    ]


def stack(*trees):
    """The trees' leaves stacked along a new first axis, on the host (NumPy: an eager
    ``jnp.stack`` compiles a program for every new shape)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def name_of(f: Callable) -> str:
    while isinstance(f, partial):
        f = f.func
    return getattr(f, "__name__", type(f).__name__)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each leaf lies in one flat real vector: a real leaf is its raveled values, a
    complex leaf its real parts then its imaginary parts."""

    shapes: tuple[tuple[int, ...], ...]
    complex_: tuple[bool, ...]

    @classmethod
    def of(cls, leaves) -> "Layout":
        shapes = tuple(tuple(x.shape) for x in leaves)
        return cls(shapes, tuple(bool(jnp.iscomplexobj(x)) for x in leaves))

    def sizes(self) -> list[int]:
        """Real coordinates per leaf."""
        return [
            int(np.prod(s)) * (2 if c else 1)
            for s, c in zip(self.shapes, self.complex_, strict=True)
        ]

    def offsets(self) -> np.ndarray:
        return np.cumsum([0, *self.sizes()])

    def flatten(self, leaves, *, gradient: bool = False):
        """One real vector; with ``gradient``, a JAX gradient ``a - i b`` of a real function
        becomes its partial derivatives ``(a, b)``."""
        traced = any(isinstance(x, jax.core.Tracer) for x in leaves)
        xp = jnp if traced else np  # on the host when the leaves are values: no compilation
        parts = []
        for x, c in zip(leaves, self.complex_, strict=True):
            x = xp.ravel(xp.asarray(x))
            parts += [x.real, -x.imag if gradient else x.imag] if c else [x]
        return xp.concatenate(parts) if parts else xp.zeros((0,))

    def unflatten(self, flat) -> tuple:
        leaves, at = [], 0
        for shape, c in zip(self.shapes, self.complex_, strict=True):
            n = int(np.prod(shape))
            x = flat[at : at + n].reshape(shape)
            if c:
                x = jax.lax.complex(x, flat[at + n : at + 2 * n].reshape(shape))
            leaves.append(x)
            at += 2 * n if c else n
        return tuple(leaves)

    def element(self, leaf: int, coord: int) -> tuple[tuple[int, ...], str]:
        """The index (and ``re``/``im`` part) of a leaf's real coordinate ``coord``."""
        n = int(np.prod(self.shapes[leaf]))
        part = "" if not self.complex_[leaf] else ("re" if coord < n else "im")
        return unravel(coord % max(n, 1), self.shapes[leaf]), part


def unravel(flat: int, shape) -> tuple[int, ...]:
    """``np.unravel_index`` that is safe for scalars and empty shapes."""
    if not shape or int(np.prod(shape)) == 0:
        return ()
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def leaf_scale(x) -> float:
    """The scale over which a leaf varies, from its finite entries: their spread if they
    have one (so that ``1e4 + N(0, 1)`` has scale 1, not 1e4), else their magnitude, else 1."""
    a = np.asarray(x)
    a = a[np.isfinite(a)]  # infinite entries (a masked logit) have no spread
    if a.size == 0:
        return 1.0
    with np.errstate(all="ignore"):
        magnitude = float(np.max(np.abs(a)))
        a = np.abs(a - a.mean()) if a.size > 1 else np.abs(a)
        spread = float(np.sqrt(np.mean(a**2)))
    if spread > 0 and np.isfinite(spread):
        return spread
    return magnitude if magnitude > 0 and np.isfinite(magnitude) else 1.0


# A leaf whose magnitudes span more than this (the ratio of the 90th to the 10th percentile of
# its nonzero finite |x|) is stepped per element: a special function evaluated from 1e-12 to
# 1e4 in one array varies at each element's own scale, not at the array's spread.
MIXED = 1e3


def element_scales(x) -> np.ndarray:
    """Per element, the scale finite differences step by: the leaf's (:func:`leaf_scale`),
    or, in a leaf of mixed magnitudes (:data:`MIXED`), each element's own magnitude, at most
    the leaf's spread (the smallest nonzero one where an element is 0)."""
    a = np.abs(np.asarray(x))
    scale = leaf_scale(x)
    nonzero = a[np.isfinite(a) & (a > 0)]
    if nonzero.size < 2:
        return np.full(a.shape, scale)
    low, high = np.percentile(nonzero, [10, 90])
    if high <= MIXED * low:
        return np.full(a.shape, scale)
    own = np.where(np.isfinite(a) & (a > 0), a, nonzero.min())
    return np.minimum(own, scale)
