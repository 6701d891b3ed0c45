"""Reverse mode: is the VJP of ``f`` right? :func:`check_vjp` and :func:`assert_vjp`.

The checks (each a row of the :class:`Report`; those that cannot run are reported skipped,
with why — a crash is never the answer):

============================  ==============================================================
check                         what it compares
============================  ==============================================================
eager vs jit                  the backward run eagerly and under ``jit``
forward, vjp                  the outputs and the VJP under random cotangents, vs reference
contract                      the backward's structure, shapes and dtypes; an integer or
                              boolean input's cotangent is ``None`` or float0
dtype, zero cotangent         cotangents in the primals' dtypes; nothing from nothing
linearity                     ``vjp(a u + w) = a vjp(u) + vjp(w)``, ``a`` = 1e3 and 1e-3
determinism                   the backward twice on the same inputs, bit for bit
symbolic zeros                an unused output's cotangent left symbolic = materialized zeros
vmap                          over primals and cotangents, over cotangents at fixed primals
                              (``check_batched_grad``), and both nested
second order                  the gradient of ``<grad <u, f>, v>`` in the primals (a Hessian-
second order (cotangent)      vector product) and in the cotangent ``u`` (``gradgradcheck``)
finite differences            sampled coordinates and ``v^T J u`` over the whole input
second order (fd)             without a reference: the Hessian-vector product and ``J v``
============================  ==============================================================
"""

import dataclasses
import functools
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain.check import differences as fd
from jaxchain.check.compare import (
    accepted,
    choose_tolerance,
    compare,
    compare_sum,
    leaf_error,
    rounding_noise,
    tolerance,
    working_dtype,
)
from jaxchain.check.leaves import (
    Spec,
    constants_note,
    element_scales,
    full_cotangent,
    inexact_dtype,
    is_inexact,
    leaf_scale,
    name_of,
    normal_like,
    out_names,
    parameter_names,
    split,
    stack,
    unravel,
)
from jaxchain.check.report import COLUMN, LeafError, Report, failure, skipped, unverified

SCALES = ((1e3, 1.0), (1e-3, 1.0), (-1.0, 0.0))  # linearity: vjp(a u + b w)
MOVE = 0.9  # the vmap check's second primal: this multiple of the first (inside any cone)


def _vjp_impl(spec: Spec, diff, other, ct):
    """The outputs and the VJP of ``f`` under the inexact outputs' cotangents ``ct``. Outputs
    that are not finite (a ``-inf`` by design: log-sum-exp over an all-masked row) take a zero
    cotangent, and inputs that are not finite (a ``-inf`` logit) a zero gradient: there the
    derivative is not defined, and is not compared."""
    out, pull = jax.vjp(lambda *d: spec.outputs(d, other), *diff)
    inexact = [o for o in out if inexact_dtype(o.dtype)]
    ct = [jnp.where(jnp.isfinite(o), c, 0) for o, c in zip(inexact, ct, strict=True)]
    grads = pull(full_cotangent(out, ct))
    return out, tuple(jnp.where(jnp.isfinite(x), g, 0) for x, g in zip(diff, grads, strict=True))


def _grads(spec, diff, other, ct):
    return _vjp_impl(spec, diff, other, ct)[1]


def _batched_impl(spec: Spec, diffs, other, cts):
    """``vmap`` over two primals each with its cotangent, and ``vmap`` over primals of
    ``vmap`` over two cotangents at each (``cts`` leaves are ``(2, 2, ...)``)."""
    over_both = jax.vmap(lambda d, c: _grads(spec, d, other, c))(diffs, _first(cts))
    over_cts = lambda d, c: jax.vmap(lambda cc: _grads(spec, d, other, cc))(c)  # noqa: E731
    return over_both, jax.vmap(over_cts)(diffs, cts)


def _batched_once_impl(spec: Spec, diffs, other, cts):
    """The first half of :func:`_batched_impl` alone."""
    return jax.vmap(lambda d, c: _grads(spec, d, other, c))(diffs, _first(cts))


def _first(tree):
    return jax.tree.map(lambda x: x[:, 0], tree)


_vjp = jax.jit(_vjp_impl, static_argnums=0)
_batched = jax.jit(_batched_impl, static_argnums=0)
_batched_once = jax.jit(_batched_once_impl, static_argnums=0)


def batched(helpers, spec, diffs, other, cts):
    """Both batchings of :func:`_batched_impl` (``helpers``: its jitted pair and single
    versions), or, where the rule cannot be batched over cotangents alone (a
    ``custom_vmap`` rule written for batched primals only), the first and why not the
    second."""
    pair, once = helpers
    try:
        return (*pair(spec, diffs, other, cts), None)
    except Exception as e:  # a rule that cannot take the nested batching
        return once(spec, diffs, other, cts), None, _why(e)


def check_vjp(
    f: Callable,
    reference: Callable | None,
    *args: Any,
    cotangents: int = 3,
    seed: int = 0,
    rtol: float | None = None,
    atol: float = 0.0,
    finite_differences: bool = True,
    second_order: bool = True,
    vmap: bool = True,
    fd_eps: float | None = None,
    fd_points: int = 16,
    argnums: tuple[int, ...] | None = None,
    wrt: Any = None,
    nondet_tol: float = 0.0,
    name: str | None = None,
    project: Callable | None = None,
) -> Report:
    """Check the VJP of ``f`` at ``args`` against ``reference`` and finite differences.

    Args:
      f: the function under test, ``f(*args)`` returning an array or a pytree of arrays
        (integer and boolean outputs are passed through, not differentiated).
      reference: a function with the same signature and outputs whose VJP is trusted
        (typically the autodiff twin), or ``None`` to check against finite differences alone
        (then second order is checked by finite differences of the first-order gradient).
      *args: the arguments. Floating-point and complex array leaves are differentiated;
        other array leaves (integer labels, boolean masks) are held fixed, and their
        cotangents must be ``None`` or float0; other leaves are static.
      cotangents: how many random output cotangents to pull back.
      seed: seeds the cotangents, directions and sampled coordinates.
      rtol: tolerance of the comparisons with the reference (first and second order), and
        the least one finite differences use: loosen it to check a derivative that is
        approximate by design (an adjoint solved to a tolerance). By default, and always
        for the properties exact in arithmetic (eager vs jit, linearity, zero cotangent,
        symbolic zeros, vmap against the same function unbatched), from
        :data:`~jaxchain.check.compare.TOLERANCES` by the least precise dtype among the
        inputs, the outputs and what ``f`` computes inside, scaled by the input's size
        (:func:`scaled_tolerance`).
      atol: an absolute tolerance added to ``rtol``'s in the same comparisons (with the
        reference and with finite differences): for derivatives approximate to an absolute
        error (a solver's ``atol``).
      finite_differences: compare with finite differences, in float64.
      second_order: compare the gradient of ``<grad <u, f>, v>`` in the primals and in ``u``.
      vmap: check ``f`` under ``jax.vmap`` over primals and cotangents, and nested.
      project: for inputs confined to a subspace (symmetric matrices, as lineax's
        positive-semidefinite tag assumes): ``project(*perturbations) -> perturbations``,
        shaped as ``args`` (leaves not differentiated are passed through and ignored), the
        orthogonal projection onto the inputs' tangent space. Finite differences then step
        only along projected directions, for every leaf (no single coordinates: one
        direction over the whole input), and gradients are compared with the reference
        after projection. Example: ``lambda a: (a + a.T) / 2``.
      fd_eps: relative finite-difference step (default: from the working precision).
      fd_points: coordinates per leaf checked by finite differences (all if fewer), on top
        of a random direction over the whole input.
      argnums: the positional arguments to differentiate (default: every inexact one); the
        others are held fixed (float labels, say, across whose values f is not smooth).
      wrt: which leaves to differentiate, finer than ``argnums``: a pytree of booleans shaped
        as ``args`` or a prefix of it, as optax's masks are (``(True, {"w": True, "b":
        False})`` checks ``x`` and ``params["w"]``, holding ``params["b"]`` fixed). Leaves
        that are not arrays (Python ints, strings, None) are static in any case.
      nondet_tol: how far two runs of the backward may differ (default: not at all).
      name: what to call ``f`` in the report.

    Returns:
      A :class:`Report`; ``report.ok`` is False if any check exceeds its tolerance.
    """
    spec, diff, other, names, integers = split(f, args, argnums, wrt)
    if not diff:
        raise ValueError("check_vjp: no floating-point array among args, nothing to differentiate")
    ref = None if reference is None else Spec(reference, spec.treedef, spec.kinds, spec.static)
    ref, unusable = _usable(ref, diff, other)
    out, onames = _out_leaves(spec, ref, diff, other)
    key_ct, key_u, key_v, key_fd = jax.random.split(jax.random.key(seed), 4)
    outs = [o for o in out if inexact_dtype(o.dtype)]
    cts = [normal_like(k, outs) for k in jax.random.split(key_ct, max(cotangents, 1))]
    run = _Run(spec, ref, diff, other, names, out, cts)
    run.onames, run.project = onames, spec.projector(project, other)
    if project is not None:
        run.notes.append("inputs projected (project=): finite differences along directions only")
        fd_points = 0
    run.notes += constants_note(f, args)
    rows = unusable + run.first_order(integers, args, f)
    if run.results is None:
        return Report(name or name_of(f), tuple(rows), "check_vjp", tuple(run.notes))
    run.tol = run.tolerance()
    run.ref_tol = rtol if rtol is not None else run.tol
    run.fd_rtol, run.atol = rtol or 0.0, atol
    rows += _attempt("eager vs jit", run.eager_vs_jit) + _attempt("vjp", run.against_reference)
    ref = run.ref  # None if it failed: finite differences judge alone
    zeros = lambda: run.call(spec, run.zeros())[1]  # noqa: E731
    rows += _attempt("zero cotangent", lambda: _cotangent_contract(names, diff, run.grads, zeros()))
    rows += _attempt("linearity", run.linearity)
    rows += _attempt("determinism", lambda: run.determinism(nondet_tol))
    rows += _attempt("symbolic zeros", run.symbolic_zeros)
    if vmap:
        rows += _attempt("vmap", run.batching)
    u, v = normal_like(key_u, outs), run.project(_scaled_normal(key_v, diff))
    if second_order and ref is not None:
        rows += _attempt("second order", lambda: run.second_order(u, v))
    if finite_differences:
        rows += _attempt(
            "finite differences",
            lambda: run.differences(u, v, key_fd, fd_eps, fd_points, second_order),
        )
    else:
        run.notes.append("finite differences off (finite_differences=False)")
    rows = _worst_per_leaf(
        [*rows, *unverified(rows, ("vjp", "finite differences", "finite differences (direction)"))]
    )
    if ref is not None:
        rows = _with_column(rows, run)
    return Report(name or name_of(f), rows, "check_vjp", tuple(run.notes))


# A failing ``vjp`` row of a leaf, with outputs, of at most this many elements shows its
# Jacobian column: the derivative of every output element with respect to the worst input
# element, the rule's against the reference's, where they differ.
JACOBIAN_MAX = 1024
_COLUMN_ENTRIES = 6  # the entries of that column the report lists, largest difference first


def _with_column(rows: tuple[LeafError, ...], run: "_Run") -> tuple[LeafError, ...]:
    bad = [e for e in rows if e.check == "vjp" and not e.ok and not e.skipped]
    if not bad:
        return rows
    worst = max(bad, key=lambda e: e.max_rel)
    k = run.names.index(worst.leaf)
    x, outs = run.diff[k], [o for o in run.out if inexact_dtype(o.dtype)]
    n_out = sum(math.prod(o.shape) for o in outs)
    if not 0 < x.size <= JACOBIAN_MAX or not 0 < n_out <= JACOBIAN_MAX:
        return rows
    j = int(np.ravel_multi_index(worst.index, x.shape)) if worst.index else 0
    try:
        got, want = (_column(spec, run, k, j, outs) for spec in (run.spec, run.ref))
    except Exception:  # a rule that cannot be batched over one-hot cotangents: no column
        return rows
    names = [n for n, o in zip(run.onames, run.out, strict=True) if inexact_dtype(o.dtype)]
    note = _column_note(worst, names, outs, got, want)
    return tuple(dataclasses.replace(e, note=note) if e is worst else e for e in rows)


def _column(spec: Spec, run: "_Run", k: int, j: int, outs) -> np.ndarray:
    """``d out / d x_k[j]`` over every inexact output element, flat: the VJPs of the one-hot
    cotangents, batched."""
    sizes = [math.prod(o.shape) for o in outs]
    eye = jnp.eye(sum(sizes), dtype=jnp.result_type(*outs))
    parts = jnp.split(eye, np.cumsum(sizes)[:-1], axis=1)
    basis = tuple(p.reshape(-1, *o.shape).astype(o.dtype) for p, o in zip(parts, outs, strict=True))
    pull = lambda ct: _grads(spec, run.diff, run.other, ct)[k].ravel()[j]  # noqa: E731
    return np.asarray(jax.jit(jax.vmap(pull))(basis))


def _column_note(row: LeafError, names, outs, got, want) -> str:
    where = f"{row.leaf}{list(row.index)}" if row.index else row.leaf
    diff = np.abs(got - want)
    order = [int(i) for i in np.argsort(-diff, kind="stable")[:_COLUMN_ENTRIES] if diff[i] > 0]
    starts = np.cumsum([0, *(math.prod(o.shape) for o in outs)])
    lines = [
        f"{COLUMN} d out / d {where} (rule vs reference, {int((diff > 0).sum())} "
        f"of {diff.size} entries differ):"
    ]
    for i in order:
        leaf = int(np.searchsorted(starts, i, side="right")) - 1
        at = unravel(i - int(starts[leaf]), outs[leaf].shape)
        lines.append(f"    {names[leaf]}{list(at)}: {got[i]:.10g} vs {want[i]:.10g}")
    return "\n".join(lines)


def _usable(ref: Spec | None, diff, other) -> tuple[Spec | None, list[LeafError]]:
    """The reference, or None and a skipped ``vjp`` row saying why, if it cannot even be
    traced at the inputs (finite differences then judge alone)."""
    if ref is None:
        return None, []
    try:
        jax.eval_shape(lambda *d: ref.outputs(d, other), *diff)
    except Exception as e:  # the reference's own failure: said, not raised
        return None, [skipped("vjp", f"the reference failed: {_why(e)}")]
    return ref, []


def _out_leaves(spec, ref, diff, other) -> tuple[list, list[str]]:
    """The output's leaves (shapes and dtypes) and names; the reference's must match."""
    tree = jax.eval_shape(lambda *d: spec.call(d, other), *diff)
    out = jax.tree.leaves(tree)
    if ref is not None:
        want = jax.eval_shape(lambda *d: ref.outputs(d, other), *diff)
        got_sd = [(tuple(o.shape), o.dtype) for o in out]
        want_sd = [(tuple(o.shape), o.dtype) for o in want]
        same = jax.tree.structure(
            jax.eval_shape(lambda *d: spec.call(d, other), *diff)
        ) == jax.tree.structure(jax.eval_shape(lambda *d: ref.call(d, other), *diff))
        if not same or got_sd != want_sd:
            raise ValueError(f"check_vjp: f returns {got_sd} but reference returns {want_sd}")
    return out, out_names(tree)


def _scaled_normal(key, diff) -> tuple:
    """A random direction in each leaf's own units (its spread; each element's magnitude in a
    leaf of mixed magnitudes: :func:`element_scales`)."""
    return tuple(_in_units(n, x) for n, x in zip(normal_like(key, diff), diff, strict=True))


def _in_units(d, x):
    """``d`` times the element scales of ``x``, in ``d``'s dtype."""
    return np.asarray(d) * np.asarray(element_scales(x)).astype(d.dtype)


def _attempt(check: str, run: Callable[[], list[LeafError]]) -> list[LeafError]:
    """``run()``'s rows, or one skipped row saying why it could not run (a backward that
    uses ``pure_callback`` cannot be differentiated again, one with ``custom_vmap`` maybe
    not batched the other way)."""
    try:
        return run()
    except Exception as e:  # a transform the rule cannot take: reported
        return [skipped(check, _why(e))]


def _why(e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:240]}"


class _Run:
    """The state one :func:`check_vjp` builds up: the specs, the leaves, the cotangents and
    the first-order results every later check compares with."""

    def __init__(self, spec, ref, diff, other, names, out, cts):
        self.spec, self.ref, self.diff, self.other = spec, ref, diff, other
        self.names, self.out, self.cts = names, out, cts
        self.notes: list[str] = []
        self.results = self.trusted = None
        self.jit = True
        self.tol = self.ref_tol = math.nan
        self.fd_rtol = self.atol = 0.0
        self.project = lambda d: tuple(d)  # onto the inputs' tangent space (project=)

    def call(self, spec, ct, diff=None):
        helper = _vjp if self.jit else _vjp_impl
        return helper(spec, self.diff if diff is None else diff, self.other, ct)

    @property
    def grads(self):
        return self.results[0][1]

    def zeros(self):
        return tuple(np.zeros(c.shape, c.dtype) for c in self.cts[0])

    def first_order(self, integers, args, f) -> list[LeafError]:
        """The VJP under every cotangent, jitted (eagerly if ``jit`` fails), with the
        backward's contract; a broken contract is a failing row, not a traceback."""
        rows = _raw_contract(f, args, self.out, self.cts[0])
        try:
            eager = _vjp_impl(self.spec, self.diff, self.other, self.cts[0])
        except Exception as e:  # the backward broke its contract
            return [*rows, failure("contract", _leaf_of(e, f, args), _why(e))]
        try:
            self.results = [self.call(self.spec, ct) for ct in self.cts]
        except Exception as e:
            self.jit = False
            rows.append(skipped("eager vs jit", _why(e)))
            self.results = [self.call(self.spec, ct) for ct in self.cts]
        self._eager = eager
        if integers:
            self.notes.append(f"held fixed (integer or boolean): {', '.join(integers)}")
        return rows

    def eager_vs_jit(self) -> list[LeafError]:
        if not self.jit:
            return []
        return compare("eager vs jit", self.names, self._eager[1], self.grads, self.tol)

    def tolerance(self) -> float:
        """:func:`choose_tolerance` for this function at these inputs."""
        io = [x.dtype for x in self.diff] + [o.dtype for o in self.out]
        inside = working_dtype(lambda *d: self.spec.call(d, self.other), *self.diff)
        err = None
        if self.ref is not None and tolerance(*io, inside) > tolerance(*io):
            try:
                want = self.call(self.ref, self.cts[0])[0]
            except Exception:  # the reference fails here: against_reference says so
                want = None
            if want is not None:
                rows = compare("f", self.onames, self.results[0][0], want, tolerance(*io))
                err = max(e.max_rel for e in rows)
        size = sum(int(x.size) for x in self.diff)
        tol, notes = choose_tolerance(io, inside, err, size)
        self.notes += notes
        return tol

    @functools.cached_property
    def _natural(self) -> float:
        outs = [np.asarray(o) for o in self.results[0][0] if inexact_dtype(o.dtype)]
        top = max((float(np.max(np.abs(o[np.isfinite(o)]), initial=0.0)) for o in outs), default=0)
        sizes = [np.abs(np.asarray(u)) for u in self.cts[0] if np.size(u)]
        mean_u = float(np.mean([np.mean(a) for a in sizes] or [1.0]))
        scale = min(1.0, max(leaf_scale(x) for x in self.diff))
        return min(1.0, mean_u * top / scale) if top > 0 else 1.0

    def natural(self) -> float:
        """The size a derivative of this function has (capped at 1): ``mean|u| max|f| /
        min(1, max scale(x))``, from the first-order results (computed once). A spread above
        1 does not shrink it: a saturating function (softmax, tanh at a spread of 5) has
        slopes near 1 where ``f / spread`` is 0.2, and its derivative rounds as they do."""
        return self._natural

    def against_reference(self) -> list[LeafError]:
        """The forward values and the VJP under every cotangent against the reference's;
        a reference that fails to run is dropped (said in a skipped row), so that finite
        differences judge alone, second order included."""
        if self.ref is None:
            return []
        try:
            self.trusted = [self.call(self.ref, ct) for ct in self.cts]
        except Exception as e:  # the reference's own failure: said, not raised
            self.ref = None
            return [skipped("vjp", f"the reference failed: {_why(e)}")]
        names = self.onames
        rows = compare(
            "forward", names, self.results[0][0], self.trusted[0][0], self.ref_tol, atol=self.atol
        )
        for (_, got), (_, want) in zip(self.results, self.trusted, strict=True):
            got, want = self.project(got), self.project(want)
            rows += compare(
                "vjp", self.names, got, want, self.ref_tol, self.natural(), atol=self.atol
            )
        return rows

    def linearity(self) -> list[LeafError]:
        """``vjp(a u + b w) = a vjp(u) + b vjp(w)`` for cotangents of very different scales
        and ``vjp(-u) = -vjp(u)``: a backward that clips, squares, normalises or takes the
        absolute value of its cotangent fails (jax#2930)."""
        u, w = self.cts[0], self.cts[-1] if len(self.cts) > 1 else self.zeros()
        gu, gw = self.grads, self.results[-1][1] if len(self.cts) > 1 else self.zeros_grads()
        noise = None
        if self.trusted is not None:  # the reference's rounding at u and w
            ref = lambda ct: self.call(self.ref, ct)[1]  # noqa: E731
            cap = lambda want: accepted(want, self.tol, self.natural())  # noqa: E731
            at_u = rounding_noise(ref, u, self.trusted[0][1], gu, cap(self.trusted[0][1]))
            at_w = (
                rounding_noise(ref, w, self.trusted[-1][1], gw, cap(self.trusted[-1][1]))
                if len(self.cts) > 1
                else None
            )
            noise = list(zip(at_u, at_w or [0.0] * len(at_u), strict=True))
        rows = []
        for a, b in SCALES:
            mixed = (a * np.asarray(x) + b * np.asarray(y) for x, y in zip(u, w, strict=True))
            got = self.call(self.spec, tuple(mixed))[1]
            rows += compare_sum("linearity", self.names, got, a, gu, b, gw, self.tol, noise)
        return rows

    def zeros_grads(self):
        return tuple(jnp.zeros_like(x) for x in self.diff)

    def determinism(self, nondet_tol: float) -> list[LeafError]:
        again = self.call(self.spec, self.cts[0])[1]
        rows = []
        for n, a, b in zip(self.names, again, self.grads, strict=True):
            d = np.abs(np.asarray(a) - np.asarray(b))
            off = float(np.max(d, initial=0.0)) if not np.isnan(d).all() else 0.0
            rows.append(LeafError("determinism", n, off, off, (), nondet_tol))
        return rows

    def symbolic_zeros(self) -> list[LeafError]:
        """With an output unused, JAX passes its cotangent as a symbolic zero (to a
        ``custom_vjp(symbolic_zeros=True)`` rule): the result must be what zeros give."""
        kept = [i for i, o in enumerate(self.out) if inexact_dtype(o.dtype)]
        if len(self.out) < 2 or not kept:
            return []
        k = kept[0]

        def only_k(*d):
            return self.spec.outputs(d, self.other)[k]

        try:
            got = jax.vjp(only_k, *self.diff)[1](self.cts[0][0])
        except Exception as e:  # a rule that cannot take a symbolic zero
            return [failure("symbolic zeros", "all", _why(e))]
        ct = (self.cts[0][0], *(jnp.zeros_like(c) for c in self.cts[0][1:]))
        return compare("symbolic zeros", self.names, got, self.call(self.spec, ct)[1], self.tol)

    def batching(self) -> list[LeafError]:
        """``vmap`` over two different primals (the second a multiple of the first, so
        inside the function's domain) and over cotangents, against the same backward run
        one example at a time: a rule that mixes up batch elements, or ignores the batch,
        fails; a wrong derivative is the ``vjp`` row's alone (reported once)."""
        moved = tuple(MOVE * x for x in self.diff)
        c = [[self.cts[0], self.cts[1 % len(self.cts)]], [self.cts[-1], self.cts[0]]]
        ct22 = stack(stack(*c[0]), stack(*c[1]))
        both, nested, why = batched(
            (_batched, _batched_once), self.spec, stack(self.diff, moved), self.other, ct22
        )
        want = [  # the same backward, one example at a time
            [self.call(self.spec, c[i][j], p)[1] for j in range(2)]
            for i, p in enumerate((self.diff, moved))
        ]
        rows = compare("vmap", self.names, both, stack(want[0][0], want[1][0]), self.tol)
        if why is not None:
            return [*rows, skipped("vmap (cotangents, nested)", why)]
        nested_want = stack(stack(*want[0]), stack(*want[1]))
        return rows + compare("vmap", self.names, nested, nested_want, self.tol)

    def second_order(self, u, v) -> list[LeafError]:
        outs = [o for o in self.results[0][0] if inexact_dtype(o.dtype)]
        mask = tuple(jnp.isfinite(o) for o in outs)
        got_x, got_u = fd.hvp(self.spec, self.other, mask, u, v, self.diff)
        want = fd.hvp(self.ref, self.other, mask, u, v, self.diff)
        noise = rounding_noise(
            lambda v: fd.hvp(self.ref, self.other, mask, u, v, self.diff), v, want
        )
        (want_x, want_u), k = want, len(self.names)
        got_x, want_x = self.project(got_x), self.project(want_x)
        tol = dict(atol=self.atol)
        rows = compare("second order", self.names, got_x, want_x, self.ref_tol, 1, noise[:k], **tol)
        names = [n for n, o in zip(self.onames, self.out, strict=True) if inexact_dtype(o.dtype)]
        return rows + compare(
            "second order (cotangent)", names, got_u, want_u, self.ref_tol, 1, noise[k:], **tol
        )

    def differences(self, u, v, key, fd_eps, points, second_order) -> list[LeafError]:
        """Finite differences of ``<u, f>`` (and, without a reference, of ``<grad <u, f>,
        v>`` and of the backward in its cotangent), in float64."""
        with jax.enable_x64(True):
            return self._differences(u, v, key, fd_eps, points, second_order)

    def _differences(self, u, v, key, fd_eps, points, second_order) -> list[LeafError]:
        diff = tuple(_up(x) for x in self.diff)
        u, v = tuple(_up(x) for x in u), tuple(_up(x) for x in v)
        v = _finite_only(v, diff, self.notes)
        outs = [o for o in self.spec.outputs(diff, self.other) if inexact_dtype(o.dtype)]
        mask = tuple(jnp.isfinite(o) for o in outs)
        masked = int(sum(int((~m).sum()) for m in mask))
        if masked:
            self.notes.append(
                f"{masked} output element(s) not finite at the input: their cotangents "
                "are 0, in every check"
            )
        empty = [n for n, x in zip(self.names, diff, strict=True) if x.size == 0]
        if empty:
            self.notes.append(f"no elements, not checked: {', '.join(empty)}")
        inside = working_dtype(lambda *d: self.spec.call(d, self.other), *diff)
        bits = jnp.finfo(inside).bits
        um = tuple(jnp.where(m, w, 0) for m, w in zip(mask, u, strict=True))
        grads = _vjp(self.spec, diff, self.other, um)[1]
        common = dict(
            key=key,
            bits=bits,
            fd_eps=fd_eps,
            points=points,
            natural=self.natural(),
            rtol=self.fd_rtol,
            atol=self.atol,
        )
        rows, notes, info = fd.vjp_differences(
            self.spec,
            1,
            diff,
            self.other,
            self.names,
            grads,
            u,
            v,
            mask,
            **common,
            phi_abs=_abs_inner(um, outs),
        )
        self.notes += notes
        if self.ref is None and second_order:  # apart: first order stands if it cannot run
            second = (diff, u, v, mask, um, grads, info, common)
            rows += _attempt("second order (fd)", lambda: self._second_differences(*second))
        if not points:  # no coordinate sampled (project=): the directions' rows alone
            rows = [r for r in rows if r.skipped or r.leaf == "all"]
        return rows

    def _second_differences(self, diff, u, v, mask, um, grads, info, common) -> list[LeafError]:
        """Without a reference: the Hessian-vector product and the backward in its cotangent
        against finite differences of the gradient."""
        hx, hu = fd.hvp(self.spec, self.other, mask, u, v, diff)
        more, notes, _ = fd.vjp_differences(
            self.spec,
            2,
            diff,
            self.other,
            self.names,
            hx,
            u,
            v,
            mask,
            **common,
            phi_abs=_abs_inner(v, grads),
        )
        self.notes += notes
        return [*more, _cotangent_row(um, hu, info)]


def _finite_only(direction, diff, notes: list[str]) -> tuple:
    """``direction`` with zeros where the input is not finite (a ``-inf`` logit is not
    perturbed, nor are its coordinates sampled), and a note saying how many."""
    finite = [np.isfinite(np.asarray(x)) for x in diff]  # on the host: no compilation
    off = sum(int(x.size - f.sum()) for x, f in zip(diff, finite, strict=True))
    if off:
        notes.append(f"{off} input element(s) not finite: not perturbed, not compared")
    return tuple(
        np.where(f, np.asarray(d), np.zeros((), np.asarray(d).dtype))
        for f, d in zip(finite, direction, strict=True)
    )


def _abs_inner(a, b) -> float:
    """``sum |a| |b|`` over the finite elements of matching leaves."""
    total = 0.0
    for x, y in zip(a, b, strict=True):
        with np.errstate(invalid="ignore", over="ignore"):  # 0 * inf: a masked output
            prod = np.abs(np.asarray(x)) * np.abs(np.asarray(y))
        total += float(np.sum(prod[np.isfinite(prod)]))
    return total


def _up(x):
    """``x`` in float64 (complex128)."""
    return x.astype(jnp.complex128 if jnp.iscomplexobj(x) else jnp.float64)


def _cotangent_row(u, hu, info) -> LeafError:
    """``<u, d vjp / d u . v>`` (that is ``<u, J v>``, computed by differentiating the
    backward in its cotangent) against the directional difference of ``<u, f>`` along
    ``v``: a backward that ``stop_gradient`` s its cotangent, or a nested rule that drops
    ``d/dg`` (jax#21220), gives 0. Not compared where the direction's own row was not (the
    derivative jumps along it)."""
    if "kinked" in info:
        return skipped("second order (cotangent, fd)", info["kinked"])
    got = float(sum(jnp.sum(a * b).real for a, b in zip(u, hu, strict=True)))
    return leaf_error(
        "second order (cotangent, fd)",
        "all",
        [got],
        [info["directional"]],
        info["rtol"],
        info["floor"],
        slack=info["slack"],
    )


def _leaf_of(e: Exception, f, args) -> str:
    """The argument a JAX contract error names (``at output[i]``), by its parameter name."""
    found = re.search(r"output\[(\d+)\]", str(e))
    if found is None:
        return "all"
    i = int(found.group(1))
    names = parameter_names(getattr(f, "fun", f), len(args))
    return names[i] if i < len(names) else f"args[{i}]"


def _raw_contract(f, args, out, ct) -> list[LeafError]:
    """For ``f`` a ``jax.custom_vjp``: its own backward's output, before JAX replaces it:
    one cotangent per argument, each of its primal's shape and dtype, and ``None`` or
    float0 for an integer or boolean one (JAX expects that, and drops anything else
    silently)."""
    if not isinstance(f, jax.custom_vjp) or f.nondiff_argnums or f.symbolic_zeros:
        return []
    try:
        res = f.fwd(*args)[1]
        raw = f.bwd(res, jax.tree.unflatten(jax.tree.structure(f(*args)), full_cotangent(out, ct)))
    except Exception:  # the traced path reports it
        return []
    if not isinstance(raw, tuple) or len(raw) != len(args):
        return [
            failure(
                "contract",
                "all",
                f"backward returned {type(raw).__name__} of "
                f"{len(raw) if isinstance(raw, tuple) else 1}, expected {len(args)}",
            )
        ]
    names = parameter_names(getattr(f, "fun", f), len(args))
    rows = []
    for name, arg, g in zip(names, args, raw, strict=True):
        note = _leaf_contract(arg, g)
        rows.append(
            failure("contract", name, note)
            if note
            else LeafError("contract", name, 0.0, 0.0, (), 0.0)
        )
    return rows


def _leaf_contract(arg, g) -> str:
    """What is wrong with one cotangent ``g`` of ``arg`` ('' if nothing)."""
    if g is None or not isinstance(arg, jax.Array | np.ndarray):
        return ""
    shape, dtype = tuple(np.shape(arg)), jnp.dtype(arg.dtype)
    got = f"{jnp.dtype(getattr(g, 'dtype', type(g)))}{list(np.shape(g))}"
    if not is_inexact(arg):
        if jnp.dtype(getattr(g, "dtype", np.float64)) == jax.dtypes.float0 and np.shape(g) == shape:
            return ""
        return f"integer input: expected None or float0{list(shape)}, got {got}"
    if tuple(np.shape(g)) != shape:
        return f"expected {dtype}{list(shape)}, got {got}"
    return ""


def _cotangent_contract(names, diff, grads, zero_grads, zero="zero cotangent") -> list[LeafError]:
    """What every backward owes: cotangents in the primals' dtypes (``dtype``), and nothing
    from nothing — a zero output cotangent gives exactly zero gradients (``zero
    cotangent``). The same holds for a JVP: tangents in the outputs' dtypes, and a zero
    input tangent gives exactly zero output tangents (``zero tangent``)."""
    errors = []
    for name, x, g, z in zip(names, diff, grads, zero_grads, strict=True):
        wrong = jnp.dtype(g.dtype) != jnp.dtype(x.dtype)
        note = f"expected {jnp.dtype(x.dtype)}, got {jnp.dtype(g.dtype)}" if wrong else ""
        off = math.inf if wrong else 0.0
        errors.append(LeafError("dtype", name, off, off, (), 0.0, note=note))
        z = np.asarray(z)
        size = float(np.max(np.abs(z), initial=0.0)) if z.size else 0.0
        off = math.inf if size != 0 or np.isnan(z).any() else 0.0
        index = np.unravel_index(int(np.argmax(np.abs(z))), z.shape) if z.size and z.ndim else ()
        errors.append(LeafError(zero, name, size, off, tuple(int(i) for i in index), 0.0))
    return errors


def _worst_per_leaf(errors: list[LeafError]) -> tuple[LeafError, ...]:
    """One row per (check, leaf): the worst over cotangents and scales."""
    worst: dict[tuple[str, str], LeafError] = {}
    for e in errors:
        kept = worst.get((e.check, e.leaf))
        if kept is None or not e.max_rel <= kept.max_rel:  # NaN wins
            worst[(e.check, e.leaf)] = e
    return tuple(worst.values())


def assert_vjp(f: Callable, reference: Callable | None, *args: Any, **options: Any) -> Report:
    """:func:`check_vjp`, raising ``AssertionError`` with the report if any check fails."""
    report = check_vjp(f, reference, *args, **options)
    if not report.ok:
        raise AssertionError(str(report))
    return report
