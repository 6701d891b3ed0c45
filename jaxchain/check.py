"""Derivative checking for any function: is its vector-Jacobian product right (reverse mode,
:func:`check_vjp`)? Is its Jacobian-vector product right (forward mode, :func:`check_jvp`)?

:func:`check_vjp` compares the VJP of ``f`` with

* the VJP of a ``reference`` (usually its autodiff twin), under several random cotangents;
* central finite differences, in float64;
* the reference's second order: the gradient of ``<grad <u, f>, v>`` for random ``u, v``;

and runs ``f`` eagerly, under ``jit`` and under ``vmap``. The :class:`Report` names each input
leaf with its largest absolute and relative error and the index of the worst element.
Inputs that are not floating point (integer labels, boolean masks) are passed through and
not differentiated; Python scalars are held static. :func:`check_jvp` is the same for the
forward mode: JVPs along random tangents against the reference's and against central
differences, under ``jit`` and ``vmap``, forward over forward, and the VJP that JAX derives by
transposing the JVP.

>>> import jaxchain
>>> x = jnp.linspace(-2.0, 2.0, 5)
>>> check_vjp(jaxchain.rules.tanh, jaxchain.reference.tanh, x).ok
True
"""

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

__all__ = [
    "FD_FLOAT32",
    "FD_RTOL",
    "TOLERANCES",
    "LeafError",
    "Report",
    "assert_jvp",
    "assert_vjp",
    "check_jvp",
    "check_vjp",
    "tolerance",
    "working_dtype",
]

# Largest relative error accepted against autodiff, by the least precise dtype involved.
# The relative error of a leaf is max|a - b| / max|b| (norm-wise, so that entries that are
# zero in one formula and 1e-17 in the other do not count as large; see _SCALE_FLOOR).
TOLERANCES: dict[jnp.dtype, float] = {
    jnp.dtype(jnp.float64): 1e-10,
    jnp.dtype(jnp.float32): 1e-4,
    jnp.dtype(jnp.float16): 1e-2,
    jnp.dtype(jnp.bfloat16): 5e-2,
}
# Against central differences in float64 (truncation ~eps**2, rounding ~1e-16 / eps).
FD_RTOL = 1e-6
# A function that computes in float32 inside (seen in its jaxpr at float64 inputs) is trusted
# only as far as float32 goes: a larger step, and this tolerance. Below float32 (bfloat16,
# float16 inside), finite differences are not compared at all; the reference is.
FD_FLOAT32 = {"step": 1e-3, "rtol": 5e-3}


def tolerance(*dtypes: Any) -> float:
    """The tolerance of the least precise of ``dtypes`` (from :data:`TOLERANCES`)."""
    floats = [jnp.dtype(d) for d in dtypes if jnp.issubdtype(d, jnp.floating)]
    return max((TOLERANCES[d] for d in floats), default=TOLERANCES[jnp.dtype(jnp.float64)])


@dataclasses.dataclass(frozen=True)
class LeafError:
    """The error of one leaf in one check."""

    check: str
    leaf: str
    max_abs: float
    max_rel: float
    index: tuple[int, ...]
    tol: float

    @property
    def ok(self) -> bool:
        return bool(self.max_rel <= self.tol)  # False for NaN


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`check_vjp` found: one :class:`LeafError` per check and leaf."""

    name: str
    errors: tuple[LeafError, ...]
    kind: str = "check_vjp"  # what made it: check_vjp or assert_close

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.errors)

    @property
    def max_rel_error(self) -> float:
        return max((e.max_rel for e in self.errors), default=0.0)

    def max_rel(self, check: str) -> float:
        """The largest relative error of one check (NaN when it did not run)."""
        rels = [e.max_rel for e in self.errors if e.check == check]
        return max(rels) if rels else math.nan

    def __str__(self) -> str:
        head = f"{self.kind}({self.name}): {'ok' if self.ok else 'FAILED'}"
        cols = f"  {'check':<20} {'leaf':<16} {'max abs':>10} {'max rel':>10} {'tol':>8}  index"
        rows = [
            f"  {e.check:<20} {e.leaf:<16} {e.max_abs:>10.2e} {e.max_rel:>10.2e} {e.tol:>8.0e}"
            f"  {e.index}{'' if e.ok else '  <-- FAIL'}"
            for e in self.errors
        ]
        return "\n".join([head, cols, *rows])


# --- a function of its floating-point leaves -------------------------------------------------


def _is_diff(leaf) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray) and jnp.issubdtype(leaf.dtype, jnp.floating)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """``f`` seen as a function of its floating-point leaves; hashable, so that the jitted
    helpers below compile once per function and shape, however often a check is run."""

    f: Callable
    treedef: Any
    kinds: tuple[str, ...]  # per leaf: "diff", "other" (an array) or "static"
    static: tuple

    def call(self, diff: Sequence, other: Sequence):
        pools = {"diff": iter(diff), "other": iter(other), "static": iter(self.static)}
        return self.f(*self.treedef.unflatten([next(pools[k]) for k in self.kinds]))


def _split(f: Callable, args: tuple) -> tuple[_Spec, tuple, tuple, list[str]]:
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(args)
    kinds, diff, other, static, names = [], [], [], [], []
    params = _parameter_names(f, len(args))
    for path, leaf in paths_leaves:
        if _is_diff(leaf):
            kinds.append("diff")
            diff.append(jnp.asarray(leaf))
            names.append(params[path[0].idx] + jax.tree_util.keystr(path[1:]))
        elif isinstance(leaf, jax.Array | np.ndarray):
            kinds.append("other")
            other.append(jnp.asarray(leaf))
        else:
            kinds.append("static")
            static.append(leaf)
    spec = _Spec(f, treedef, tuple(kinds), tuple(static))
    return spec, tuple(diff), tuple(other), names


def _parameter_names(f: Callable, n: int) -> list[str]:
    try:
        names = [
            p.name
            for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"args[{i}]" for i in range(n)]


def _inner(a, b) -> jax.Array:
    """Sum of elementwise products over all leaves of two matching pytrees."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _vjp_impl(spec: _Spec, diff, other, ct):
    out, pull = jax.vjp(lambda *d: spec.call(d, other), *diff)
    return out, pull(ct)


def _phi1(spec: _Spec, other, u, diff):
    return _inner(u, spec.call(diff, other))  # <u, f(x)>


def _phi2(spec: _Spec, other, u, v, diff):
    return _inner(v, jax.grad(partial(_phi1, spec, other, u))(diff))  # <grad <u, f>, v>


_vjp = jax.jit(_vjp_impl, static_argnums=0)
_vjp_vmapped = jax.jit(lambda spec, *a: jax.vmap(partial(_vjp_impl, spec))(*a), static_argnums=0)
_hvp = jax.jit(
    lambda spec, other, u, v, diff: jax.grad(partial(_phi2, spec, other, u, v))(diff),
    static_argnums=0,
)


@partial(jax.jit, static_argnums=(0, 1))
def _central_differences(spec: _Spec, order: int, diff, other, u, v, coords, eps):
    """``d phi / d x_j`` at the flat coordinates ``coords`` of all leaves raveled together,
    by central differences, where phi is ``<u, f>`` (order 1) or ``<grad <u, f>, v>``
    (order 2); the step at ``x_j`` is ``eps * max(1, |x_j|)``. The probes run in batches
    (``lax.map``), so one compilation serves every leaf and memory stays small."""
    flat, unravel = ravel_pytree(diff)
    phi = partial(_phi1, spec, other, u) if order == 1 else partial(_phi2, spec, other, u, v)

    def central(probe):
        j, h = probe
        return (phi(unravel(flat.at[j].add(h))) - phi(unravel(flat.at[j].add(-h)))) / (2 * h)

    steps = eps * jnp.maximum(1, jnp.abs(flat[coords]))
    return lax.map(central, (coords, steps), batch_size=min(len(coords), 32))


# --- comparing -------------------------------------------------------------------------------


# A leaf's error is relative to its own largest value, but never to less than this fraction of
# the largest value over all leaves: a gradient that is zero by symmetry (the key bias of
# attention, say) is then compared at the scale of the whole gradient, not at the scale of
# its own rounding noise.
_SCALE_FLOOR = 1e-2


# And never to less than the square root of the tolerance (1e-5 for float64, 1e-2 for float32):
# leaves whose values are all below it in magnitude are compared absolutely, with an allowance
# of a few ulps of order-one values — the rounding noise of a value that is small by
# cancellation (a gradient that is exactly zero, computed as noise of order 1e-17; a softmax
# gradient of 1e-7 where one probability is nearly one).
def _abs_floor(tol: float) -> float:
    return math.sqrt(tol)


def _leaf_error(
    check, name, got, want, tol, floor, shape=None, coords=None, slack=None
) -> LeafError:
    """Error of ``got`` against ``want``, relative to ``max(max|want|, floor)``; with
    ``coords``, they are the values at those flat coordinates of a leaf of ``shape``; with
    ``slack``, differences up to it (per element: the rounding noise of ``want``) count as
    none."""
    a, b = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    diff = np.abs(a - b)
    if slack is not None:
        diff = np.maximum(diff - slack, 0.0)
    nan = np.isnan(diff).any()
    worst = int(np.argmax(np.where(np.isnan(diff), np.inf, diff))) if diff.size else 0
    max_abs = math.nan if nan else float(np.max(diff, initial=0.0))
    scale = max(float(np.max(np.abs(b), initial=0.0)), floor, _abs_floor(tol))
    shape = np.shape(want) if shape is None else shape
    flat = worst if coords is None else int(coords[worst])
    index = tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()
    return LeafError(check, name, max_abs, max_abs / scale, index, tol)


def _floor(leaves) -> float:
    return _SCALE_FLOOR * max((float(np.max(np.abs(x), initial=0.0)) for x in leaves), default=0.0)


def _compare(check: str, names, got, want, tol: float) -> list[LeafError]:
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    floor = _floor(want)
    pairs = zip(names, got, want, strict=True)
    return [_leaf_error(check, n, a, b, tol, floor) for n, a, b in pairs]


def _sample_coords(key, size: int, points: int) -> np.ndarray:
    if size <= points:
        return np.arange(size)
    return np.sort(np.asarray(jax.random.choice(key, size, (points,), replace=False)))


def _normal_like(key, tree):
    """Standard normal arrays shaped like the leaves of ``tree``."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))[: len(leaves)]
    normals = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    return treedef.unflatten(normals)


def _out_names(out) -> list[str]:
    paths = jax.tree_util.tree_flatten_with_path(out)[0]
    return ["out" + jax.tree_util.keystr(p) for p, _ in paths]


def _stack(*trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


# --- the check -------------------------------------------------------------------------------


def check_vjp(
    f: Callable,
    reference: Callable | None,
    *args: Any,
    cotangents: int = 3,
    seed: int = 0,
    rtol: float | None = None,
    finite_differences: bool = True,
    second_order: bool = True,
    vmap: bool = True,
    fd_eps: float = 1e-6,
    fd_points: int = 16,
    name: str | None = None,
) -> Report:
    """Check the VJP of ``f`` at ``args`` against ``reference`` and finite differences.

    Args:
      f: the function under test, ``f(*args)`` returning an array or a pytree of arrays.
      reference: a function with the same signature and outputs whose VJP is trusted
        (typically the autodiff twin), or ``None`` to check against finite differences alone
        (then second order is checked by finite differences of the first-order gradient).
      *args: the arguments. Floating-point array leaves are differentiated; other array
        leaves (integer labels, boolean masks) are passed through; other leaves are static.
      cotangents: how many random output cotangents to pull back.
      seed: seeds the cotangents, directions and sampled coordinates.
      rtol: tolerance against the reference; default from :data:`TOLERANCES` by the least
        precise dtype among the inputs, the outputs and what ``f`` computes inside.
      finite_differences: compare with central differences, in float64.
      second_order: compare the gradient of ``<grad <u, f>, v>`` (a Hessian-vector product).
      vmap: check ``f`` under ``jax.vmap`` over a batch of two.
      fd_eps: relative finite-difference step.
      fd_points: coordinates per leaf checked by finite differences (all if fewer).
      name: what to call ``f`` in the report.

    Returns:
      A :class:`Report`; ``report.ok`` is False if any check exceeds its tolerance.
    """
    spec, ref_spec, diff, other, names, out_shape, tol = _prepare("check_vjp", f, reference,
                                                                  args, rtol)  # fmt: skip
    key_ct, key_u, key_v, key_fd = jax.random.split(jax.random.key(seed), 4)
    cts = [_normal_like(k, out_shape) for k in jax.random.split(key_ct, max(cotangents, 1))]
    zeros = jax.tree.map(jnp.zeros_like, cts[0])

    results = [_vjp(spec, diff, other, ct) for ct in cts]  # under jit
    eager = _vjp_impl(spec, diff, other, cts[0])[1]  # not under jit
    errors = _compare("eager vs jit", names, eager, results[0][1], tol)
    trusted = results
    if ref_spec is not None:
        trusted = [_vjp(ref_spec, diff, other, ct) for ct in cts]
        errors += _compare("forward", _out_names(out_shape), results[0][0], trusted[0][0], tol)
        for (_, grads), (_, want) in zip(results, trusted, strict=True):
            errors += _compare("vjp", names, grads, want, tol)
    errors += _cotangent_contract(names, diff, results[0][1], _vjp(spec, diff, other, zeros)[1])
    if vmap:
        batched, single = partial(_vjp_vmapped, spec), partial(_vjp, ref_spec or spec)
        errors += _vmap_check(batched, single, names, diff, other, cts, key_v, tol)
    if second_order and ref_spec is not None:
        u, v = _normal_like(key_u, out_shape), _normal_like(key_v, diff)
        want = _hvp(ref_spec, other, u, v, diff)
        errors += _compare("second order", names, _hvp(spec, other, u, v, diff), want, tol)
    if finite_differences:
        orders = (1,) if ref_spec is not None or not second_order else (1, 2)
        for order in orders:
            fd = _finite_differences(spec, order, diff, other, names, key_fd, fd_eps, fd_points)
            errors += fd
    return Report(name or _name_of(f), _worst_per_leaf(errors))


def _cotangent_contract(names, diff, grads, zero_grads, zero="zero cotangent") -> list[LeafError]:
    """What every backward owes: cotangents in the primals' dtypes (``dtype``), and nothing
    from nothing — a zero output cotangent gives exactly zero gradients (``zero
    cotangent``). The same holds for a JVP: tangents in the outputs' dtypes, and a zero
    input tangent gives exactly zero output tangents (``zero tangent``)."""
    errors = []
    for name, x, g, z in zip(names, diff, jax.tree.leaves(grads), jax.tree.leaves(zero_grads),
                             strict=True):  # fmt: skip
        wrong_dtype = jnp.dtype(g.dtype) != jnp.dtype(x.dtype)
        errors.append(LeafError("dtype", name, math.inf if wrong_dtype else 0.0,
                                math.inf if wrong_dtype else 0.0, (), 0.0))  # fmt: skip
        size = float(np.max(np.abs(np.asarray(z, np.float64)), initial=0.0))
        off = math.inf if size != 0 or np.isnan(np.asarray(z, np.float64)).any() else 0.0
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(np.abs(z))), z.shape))
        errors.append(LeafError(zero, name, size, off, index if z.ndim else (), 0.0))
    return errors


def _prepare(kind: str, f, reference, args, rtol):
    """What both checks start from: ``f`` and the reference as :class:`_Spec` s, the
    differentiated and passed-through leaves, the leaves' names, the output's shape (the
    reference's must match) and the tolerance (``rtol``, or the table's entry for the least
    precise dtype among the inputs, the outputs and what ``f`` computes inside)."""
    spec, diff, other, names = _split(f, args)
    if not diff:
        raise ValueError(f"{kind}: no floating-point array among args, nothing to differentiate")
    ref_spec = None if reference is None else dataclasses.replace(spec, f=reference)
    out_shape = jax.eval_shape(lambda *d: spec.call(d, other), *diff)
    if ref_spec is not None:
        _same_structure(out_shape, jax.eval_shape(lambda *d: ref_spec.call(d, other), *diff))
    dtypes = [x.dtype for x in diff] + [o.dtype for o in jax.tree.leaves(out_shape)]
    dtypes.append(working_dtype(lambda *d: spec.call(d, other), *diff))  # its own precision
    tol = rtol if rtol is not None else tolerance(*dtypes)
    return spec, ref_spec, diff, other, names, out_shape, tol


def _vmap_check(batched, single, names, diff, other, seeds, key, tol) -> list[LeafError]:
    """``f`` under ``vmap`` over two *different* primals (the second moved by noise), each
    with its own cotangent or tangent (``seeds[0]``, ``seeds[-1]``), against the trusted
    ``single(primals, other, seed)`` at its own primal: a rule that mixes up batch elements,
    or that ignores the batch, fails. ``batched`` and ``single`` are the jitted VJP (or JVP)
    helpers bound to their specs."""
    moved = tuple(0.5 * x + 0.3 * n for x, n in zip(diff, _normal_like(key, diff), strict=True))
    pairs = _stack(diff, moved), _stack(other, other), _stack(seeds[0], seeds[-1])
    got = batched(*pairs)[1]
    want = [single(p, other, s)[1] for p, s in ((diff, seeds[0]), (moved, seeds[-1]))]
    return _compare("vmap", names, got, _stack(*want), tol)


def _worst_per_leaf(errors: list[LeafError]) -> tuple[LeafError, ...]:
    """One row per (check, leaf): the worst over cotangents."""
    worst: dict[tuple[str, str], LeafError] = {}
    for e in errors:
        kept = worst.get((e.check, e.leaf))
        if kept is None or not e.max_rel <= kept.max_rel:  # NaN wins
            worst[(e.check, e.leaf)] = e
    return tuple(worst.values())


def working_dtype(f: Callable, *args) -> jnp.dtype:
    """The least precise floating-point dtype among the values ``f(*args)`` computes, read off
    its jaxpr (sub-jaxprs of loops, conditionals and custom rules included)."""
    jaxpr = jax.make_jaxpr(f)(*args)
    dtypes = {jnp.dtype(a.dtype) for a in _avals(jaxpr.jaxpr)
              if jnp.issubdtype(a.dtype, jnp.floating)}  # fmt: skip
    return max(dtypes, key=lambda d: jnp.finfo(d).eps, default=jnp.dtype(jnp.float64))


def _avals(jaxpr):
    for eqn in jaxpr.eqns:
        yield from (v.aval for v in eqn.outvars if hasattr(v.aval, "dtype"))
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds a Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


def _finite_differences(spec, order, diff, other, names, key, eps, points) -> list[LeafError]:
    """Analytic gradients of ``<u, f>`` (order 1) or ``<grad <u, f>, v>`` (order 2) against
    central differences, in float64, at up to ``points`` coordinates per leaf.

    Trusted only as far as the function's own precision (:func:`working_dtype`): a function
    that computes in float32 inside is compared with a float32 step and tolerance
    (:data:`FD_FLOAT32`), one that computes in less is not compared. Each difference may be
    off by its rounding noise, ``10 eps <|u|, |f|> / h``, before it counts: a gradient that is
    exactly zero is not failed on noise."""
    check = "finite differences" if order == 1 else "second order (fd)"
    with jax.enable_x64(True):
        diff = tuple(x.astype(jnp.float64) for x in diff)
        bits = jnp.finfo(working_dtype(lambda *d: spec.call(d, other), *diff)).bits
        if bits < 32:
            return []
        eps, rtol = (eps, FD_RTOL) if bits == 64 else (FD_FLOAT32["step"], FD_FLOAT32["rtol"])
        key_u, key_v, key_c = jax.random.split(key, 3)
        out = spec.call(diff, other)
        u, v = _normal_like(key_u, out), _normal_like(key_v, diff)
        grads = _vjp(spec, diff, other, u)[1] if order == 1 else _hvp(spec, other, u, v, diff)
        phi_scale = float(_inner(jax.tree.map(jnp.abs, u), jax.tree.map(jnp.abs, out)))
        if order == 2:
            phi_scale = float(_inner(jax.tree.map(jnp.abs, v), jax.tree.map(jnp.abs, grads)))
        keys = jax.random.split(key_c, len(diff))
        coords = [_sample_coords(k, x.size, points) for k, x in zip(keys, diff, strict=True)]
        offsets = np.cumsum([0] + [x.size for x in diff])
        flat = np.concatenate([c + o for c, o in zip(coords, offsets, strict=False)])
        fd = np.asarray(_central_differences(spec, order, diff, other, u, v, flat, eps))
        steps = eps * np.maximum(1, np.abs(np.asarray(ravel_pytree(diff)[0])[flat]))
        noise = 10 * float(2.0 ** -(53 if bits == 64 else 24)) * phi_scale / steps
        fds, slacks = (np.split(a, np.cumsum([len(c) for c in coords])[:-1]) for a in (fd, noise))
        floor = _floor(fds)
        return [
            _leaf_error(check, n, np.asarray(g).ravel()[c], d, rtol, floor, x.shape, c, sl)
            for n, x, g, c, d, sl in zip(names, diff, grads, coords, fds, slacks, strict=True)
        ]


def _same_structure(out_shape, ref_out) -> None:
    got = [(tuple(o.shape), o.dtype) for o in jax.tree.leaves(out_shape)]
    want = [(tuple(o.shape), o.dtype) for o in jax.tree.leaves(ref_out)]
    if jax.tree.structure(out_shape) != jax.tree.structure(ref_out) or got != want:
        raise ValueError(f"check_vjp: f returns {got} but reference returns {want}")


def _name_of(f: Callable) -> str:
    while isinstance(f, partial):
        f = f.func
    return getattr(f, "__name__", repr(f))


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
    report = Report(name, tuple(_compare("values", names, got, want, tol)), "assert_close")
    if not report.ok:
        raise AssertionError(str(report))
    return report


def assert_vjp(f: Callable, reference: Callable | None, *args: Any, **options: Any) -> Report:
    """:func:`check_vjp`, raising ``AssertionError`` with the report if any check fails."""
    report = check_vjp(f, reference, *args, **options)
    if not report.ok:
        raise AssertionError(str(report))
    return report


# --- forward mode ----------------------------------------------------------------------------


def _jvp_impl(spec: _Spec, diff, other, t):
    return jax.jvp(lambda *d: spec.call(d, other), diff, t)


def _jvp2_impl(spec: _Spec, diff, other, t, s):
    """Forward over forward: the derivative of the JVP along ``t`` in the direction ``s``."""
    return jax.jvp(lambda *d: _jvp_impl(spec, d, other, t)[1], diff, s)[1]


_jvp = jax.jit(_jvp_impl, static_argnums=0)
_jvp_vmapped = jax.jit(lambda spec, *a: jax.vmap(partial(_jvp_impl, spec))(*a), static_argnums=0)
_jvp2 = jax.jit(_jvp2_impl, static_argnums=0)


@partial(jax.jit, static_argnums=0)
def _along(spec: _Spec, diff, other, t, h):
    """Central differences of ``f`` along the direction ``t`` with step ``h``."""
    up = spec.call(tuple(x + h * d for x, d in zip(diff, t, strict=True)), other)
    down = spec.call(tuple(x - h * d for x, d in zip(diff, t, strict=True)), other)
    return jax.tree.map(lambda a, b: (a - b) / (2 * h), up, down), up


def check_jvp(
    f: Callable,
    reference: Callable | None,
    *args: Any,
    tangents: int = 3,
    seed: int = 0,
    rtol: float | None = None,
    finite_differences: bool = True,
    second_order: bool = True,
    transpose: bool = True,
    vmap: bool = True,
    fd_eps: float = 1e-6,
    name: str | None = None,
) -> Report:
    """Check the JVP of ``f`` at ``args``: against the ``reference``'s JVP along random
    tangents, against central differences along them (in float64), eagerly, under ``jit``
    and under ``vmap``; forward over forward (``second_order``, the JVP's own JVP, what
    ``jacfwd(jacfwd(f))`` needs); and the VJP that JAX derives by transposing the JVP
    (``transpose``: against the reference's VJP, and by the identity
    :math:`\\langle u, J t\\rangle = \\langle J^\\top u, t\\rangle`, which any linear map and
    its transpose satisfy).

    The arguments, options and :class:`Report` are those of :func:`check_vjp` (``tangents``
    in place of ``cotangents``). A wrong JVP makes ``report.ok`` false.
    """
    spec, ref_spec, diff, other, names, out_shape, tol = _prepare("check_jvp", f, reference,
                                                                  args, rtol)  # fmt: skip
    out_names = _out_names(out_shape)
    key_t, key_s, key_v, key_u = jax.random.split(jax.random.key(seed), 4)
    ts = [_normal_like(k, diff) for k in jax.random.split(key_t, max(tangents, 1))]

    results = [_jvp(spec, diff, other, t) for t in ts]
    errors = _compare("eager vs jit", out_names, _jvp_impl(spec, diff, other, ts[0])[1],
                      results[0][1], tol)  # fmt: skip
    trusted = results
    if ref_spec is not None:
        trusted = [_jvp(ref_spec, diff, other, t) for t in ts]
        errors += _compare("forward", out_names, results[0][0], trusted[0][0], tol)
        for (_, got), (_, want) in zip(results, trusted, strict=True):
            errors += _compare("jvp", out_names, got, want, tol)
    zeros = jax.tree.map(jnp.zeros_like, ts[0])
    errors += _cotangent_contract(out_names, jax.tree.leaves(results[0][0]), results[0][1],
                                  _jvp(spec, diff, other, zeros)[1], "zero tangent")  # fmt: skip
    if vmap:
        batched, single = partial(_jvp_vmapped, spec), partial(_jvp, ref_spec or spec)
        errors += _vmap_check(batched, single, out_names, diff, other, ts, key_v, tol)
    if second_order and ref_spec is not None:
        s = _normal_like(key_s, diff)
        want = _jvp2(ref_spec, diff, other, ts[0], s)
        errors += _compare("second order", out_names, _jvp2(spec, diff, other, ts[0], s), want, tol)
    if transpose:
        errors += _transposed(spec, ref_spec, names, diff, other, ts[0], key_u, tol)
    if finite_differences:
        errors += _jvp_finite_differences(spec, out_names, diff, other, ts[0], fd_eps)
    return Report(name or _name_of(f), _worst_per_leaf(errors), "check_jvp")


def _transposed(spec, ref_spec, names, diff, other, t, key, tol) -> list[LeafError]:
    """The VJP that JAX derives from ``f``'s JVP (by linearizing and transposing it): against
    the reference's VJP, and ``<u, J t> = <J^T u, t>`` against the JVP itself."""
    out, jt = _jvp(spec, diff, other, t)
    u = _normal_like(key, out)
    _, grads = _vjp(spec, diff, other, u)
    errors = []
    if ref_spec is not None:
        errors += _compare("vjp (transposed)", names, grads, _vjp(ref_spec, diff, other, u)[1], tol)
    lhs, rhs = float(_inner(u, jt)), float(_inner(grads, t))
    scale = max(float(_inner(jax.tree.map(jnp.abs, u), jax.tree.map(jnp.abs, jt))),
                _abs_floor(tol))  # fmt: skip
    off = abs(lhs - rhs)
    errors.append(LeafError("<u, Jt> = <J^T u, t>", "all", off, off / scale, (), tol))
    return errors


def _jvp_finite_differences(spec, out_names, diff, other, t, eps) -> list[LeafError]:
    """The JVP along ``t`` against central differences along it, in float64, trusted as far
    as the function's own precision goes (as :func:`_finite_differences`); each output
    element may be off by its rounding noise, ``10 eps |f| / h``."""
    with jax.enable_x64(True):
        diff = tuple(x.astype(jnp.float64) for x in diff)
        t = tuple(d.astype(jnp.float64) for d in t)
        bits = jnp.finfo(working_dtype(lambda *d: spec.call(d, other), *diff)).bits
        if bits < 32:
            return []
        eps, rtol = (eps, FD_RTOL) if bits == 64 else (FD_FLOAT32["step"], FD_FLOAT32["rtol"])
        size = max((float(np.max(np.abs(np.asarray(x)), initial=0.0)) for x in diff), default=0)
        h = eps * max(1.0, size)
        jt = _jvp(spec, diff, other, t)[1]
        fd, out = _along(spec, diff, other, t, h)
        unit = float(2.0 ** -(53 if bits == 64 else 24))
        floor = _floor(jax.tree.leaves(fd))
        return [
            _leaf_error("finite differences", n, a, b, rtol, floor,
                        slack=10 * unit * np.abs(np.asarray(o, np.float64)).ravel() / h)
            for n, a, b, o in zip(out_names, jax.tree.leaves(jt), jax.tree.leaves(fd),
                                  jax.tree.leaves(out), strict=True)
        ]  # fmt: skip


def assert_jvp(f: Callable, reference: Callable | None, *args: Any, **options: Any) -> Report:
    """:func:`check_jvp`, raising ``AssertionError`` with the report if any check fails."""
    report = check_jvp(f, reference, *args, **options)
    if not report.ok:
        raise AssertionError(str(report))
    return report
