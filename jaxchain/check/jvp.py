"""Forward mode: is the JVP of ``f`` right? :func:`check_jvp` and :func:`assert_jvp`.

The checks mirror :mod:`jaxchain.check.vjp`: eager vs jit, against the reference's JVP
along random tangents (``jvp``), the contract (``dtype``, ``zero tangent``), ``linearity``
in the tangent, ``determinism``, ``vmap`` over primals and tangents and nested, forward
over forward (``second order``: against the reference's, and without one against finite
differences of the JVP, ``second order (fd)``), the VJP that JAX derives by transposing
the JVP (``vjp (transposed)`` and ``<u, Jt> = <J^T u, t>``), and central and one-sided
differences along the tangent (``finite differences``), kinks recognised and non-finite
outputs masked.
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain.check import sweep
from jaxchain.check.compare import (
    _SCALE_FLOOR,
    FD_RTOL,
    accepted,
    choose_tolerance,
    compare,
    compare_sum,
    leaf_error,
    max_abs,
    rounding_noise,
    tolerance,
    working_dtype,
)
from jaxchain.check.differences import (
    _finite_max,
    _one_or_two_sided,
    one_sided_slack,
    step_size,
)
from jaxchain.check.leaves import (
    Spec,
    constants_note,
    inexact_dtype,
    inner,
    name_of,
    normal_like,
    out_names,
    split,
    stack,
)
from jaxchain.check.report import LeafError, Report, failure, skipped, unverified
from jaxchain.check.vjp import (
    MOVE,
    SCALES,
    _attempt,
    _cotangent_contract,
    _finite_only,
    _in_units,
    _up,
    _vjp,
    _why,
    _worst_per_leaf,
    batched,
)


def _jvp_impl(spec: Spec, diff, other, t):
    """The outputs and the tangents of the inexact ones."""
    out, jt = jax.jvp(lambda *d: spec.outputs(d, other), tuple(diff), tuple(t))
    return out, [x for x, o in zip(jt, out, strict=True) if inexact_dtype(o.dtype)]


def _jvp2_impl(spec: Spec, diff, other, t, s):
    """Forward over forward: the derivative of the JVP along ``t`` in the direction ``s``."""
    return jax.jvp(lambda *d: _jvp_impl(spec, d, other, t)[1], tuple(diff), tuple(s))[1]


def _batched_impl(spec: Spec, diffs, other, ts):
    """As :func:`jaxchain.check.vjp._batched_impl`, with tangents for cotangents."""
    tangents = lambda d, t: _jvp_impl(spec, d, other, t)[1]  # noqa: E731
    over_both = jax.vmap(tangents)(diffs, jax.tree.map(lambda x: x[:, 0], ts))
    return over_both, jax.vmap(lambda d, t: jax.vmap(lambda s: tangents(d, s))(t))(diffs, ts)


def _batched_once_impl(spec: Spec, diffs, other, ts):
    """The first half of :func:`_batched_impl` alone."""
    tangents = lambda d, t: _jvp_impl(spec, d, other, t)[1]  # noqa: E731
    return jax.vmap(tangents)(diffs, jax.tree.map(lambda x: x[:, 0], ts))


_jvp = jax.jit(_jvp_impl, static_argnums=0)
_jvp2 = jax.jit(_jvp2_impl, static_argnums=0)
_batched = jax.jit(_batched_impl, static_argnums=0)
_batched_once = jax.jit(_batched_once_impl, static_argnums=0)


def check_jvp(
    f: Callable,
    reference: Callable | None,
    *args: Any,
    tangents: int = 3,
    seed: int = 0,
    rtol: float | None = None,
    atol: float = 0.0,
    finite_differences: bool = True,
    second_order: bool = True,
    transpose: bool = True,
    vmap: bool = True,
    fd_eps: float | None = None,
    argnums: tuple[int, ...] | None = None,
    wrt: Any = None,
    nondet_tol: float = 0.0,
    name: str | None = None,
    project: Callable | None = None,
) -> Report:
    """Check the JVP of ``f`` at ``args``: against the ``reference``'s JVP along random
    tangents, against central differences along them (in float64), eagerly, under ``jit``
    and under ``vmap``; linear in the tangent; forward over forward (``second_order``, the
    JVP's own JVP, what ``jacfwd(jacfwd(f))`` needs); and the VJP that JAX derives by
    transposing the JVP (``transpose``: against the reference's VJP, and by the identity
    :math:`\\langle u, J t\\rangle = \\langle J^\\top u, t\\rangle`, which any linear map and
    its transpose satisfy).

    The arguments, options and :class:`Report` are those of :func:`check_vjp` (``tangents``
    in place of ``cotangents``; ``project`` projects every tangent). A wrong JVP makes
    ``report.ok`` false.
    """
    spec, diff, other, names, integers = split(f, args, argnums, wrt)
    if not diff:
        raise ValueError("check_jvp: no floating-point array among args, nothing to differentiate")
    ref = None if reference is None else Spec(reference, spec.treedef, spec.kinds, spec.static)
    tree = jax.eval_shape(lambda *d: spec.call(d, other), *diff)
    out, allnames = jax.tree.leaves(tree), out_names(tree)
    onames = [n for n, o in zip(allnames, out, strict=True) if inexact_dtype(o.dtype)]
    key_t, key_s, _, key_u = jax.random.split(jax.random.key(seed), 4)
    onto = spec.projector(project, other)  # the inputs' tangent space (project=)
    ts = [onto(normal_like(k, diff)) for k in jax.random.split(key_t, max(tangents, 1))]
    notes = [f"held fixed (integer or boolean): {', '.join(integers)}"] if integers else []
    notes += constants_note(f, args)
    jit, call = True, _jvp
    try:
        eager = _jvp_impl(spec, diff, other, ts[0])
    except Exception as e:  # the rule broke its contract
        return Report(name or name_of(f), (failure("contract", "all", _why(e)),), "check_jvp")
    try:
        results = [_jvp(spec, diff, other, t) for t in ts]
    except Exception as e:
        jit, call = False, _jvp_impl
        notes.append(f"jit skipped: {_why(e)}")
        results = [_jvp_impl(spec, diff, other, t) for t in ts]
    tol, more = _tolerance(spec, ref, diff, other, out, results, ts, call, allnames)
    notes += more
    ref_tol = tol if rtol is None else rtol  # the comparisons with the reference
    rows = compare("eager vs jit", onames, eager[1], results[0][1], tol) if jit else []
    compared, trusted = _against_reference(
        call, ref, diff, other, ts, results, (ref_tol, atol), allnames
    )
    rows += compared
    ref = ref if trusted is not None else None  # a failed reference: differences judge alone
    outs = [o for o in results[0][0] if inexact_dtype(o.dtype)]
    zeros = tuple(jnp.zeros_like(t) for t in ts[0])
    rows += _attempt(
        "zero tangent",
        lambda: _cotangent_contract(
            onames, outs, results[0][1], call(spec, diff, other, zeros)[1], "zero tangent"
        ),
    )
    rows += _attempt(
        "linearity",
        lambda: _linearity(call, spec, diff, other, onames, ts, results, tol, trusted, ref),
    )
    rows += _attempt(
        "determinism",
        lambda: _determinism(call(spec, diff, other, ts[0])[1], results[0][1], onames, nondet_tol),
    )
    if vmap:
        rows += _attempt("vmap", lambda: _vmap(call, spec, diff, other, onames, ts, tol))
    if second_order and ref is not None:
        s = onto(normal_like(key_s, diff))
        rows += _attempt(
            "second order",
            lambda: _second_order(spec, ref, diff, other, onames, ts[0], s, (ref_tol, atol)),
        )
    if transpose:
        rows += _attempt(
            "vjp (transposed)",
            lambda: _transposed(
                spec, ref, names, diff, other, (ts[0], key_u), tol, (ref_tol, atol), onto
            ),
        )
    if finite_differences:
        fd_args = (spec, onames, diff, other, ts[0], onto(normal_like(key_s, diff)), fd_eps)
        second = second_order and ref is None
        tols = (rtol or 0.0, atol)
        more = _attempt("finite differences", lambda: _fd_rows(*fd_args, second, tols))
        rows, notes = (
            rows + [r for r in more if isinstance(r, LeafError)],
            notes + [r for r in more if isinstance(r, str)],
        )
    else:
        notes.append("finite differences off (finite_differences=False)")
    rows += unverified(rows, ("jvp", "finite differences"))
    return Report(name or name_of(f), _worst_per_leaf(rows), "check_jvp", tuple(notes))


def _against_reference(call, ref, diff, other, ts, results, tols, names) -> tuple[list, Any]:
    """The forward values and the JVP along every tangent against the reference's, and the
    reference's results; a reference that fails (to run, or to match ``f``'s outputs) is a
    skipped ``jvp`` row and ``None``. ``tols``: the relative and absolute tolerances."""
    if ref is None:
        return [], None
    tol, atol = tols
    onames = [n for n, o in zip(names, results[0][0], strict=True) if inexact_dtype(o.dtype)]
    try:
        trusted = [call(ref, diff, other, t) for t in ts]
        rows = compare("forward", names, results[0][0], trusted[0][0], tol, atol=atol)
        for (_, got), (_, want) in zip(results, trusted, strict=True):
            rows += compare("jvp", onames, got, want, tol, atol=atol)
    except Exception as e:  # the reference's own failure: said, not raised
        return [skipped("jvp", f"the reference failed: {_why(e)}")], None
    return rows, trusted


def _fd_rows(spec, names, diff, other, t, s, fd_eps, second, tols) -> list:
    """The rows and then the notes of :func:`_finite_differences`, in float64, as one list
    (so that a crash in it is one skipped row)."""
    with jax.enable_x64(True):
        rows, notes = _finite_differences(spec, names, diff, other, t, s, fd_eps, second, tols)
    return [*rows, *notes]


def _tolerance(spec, ref, diff, other, out, results, ts, call, names):
    io = [x.dtype for x in diff] + [o.dtype for o in out]
    inside = working_dtype(lambda *d: spec.call(d, other), *diff)
    err = None
    if ref is not None and tolerance(*io, inside) > tolerance(*io):
        try:
            want = call(ref, diff, other, ts[0])[0]
        except Exception:  # the reference fails here: the jvp row says so
            want = None
        if want is not None:
            rows = compare("f", names, results[0][0], want, tolerance(*io))
            err = max(e.max_rel for e in rows)
    return choose_tolerance(io, inside, err, sum(int(x.size) for x in diff))


def _linearity(call, spec, diff, other, names, ts, results, tol, trusted, ref):
    """``jvp(a t + b s) = a jvp(t) + b jvp(s)``, and ``jvp(-t) = -jvp(t)``: a JVP that is not
    linear in its tangent fails here (and would crash JAX's transposition); with a
    reference, up to its :func:`rounding_noise`."""
    t, s = ts[0], ts[-1]
    jt, js = results[0][1], results[-1][1]
    noise = None
    if trusted is not None:
        linear = lambda t: call(ref, diff, other, t)[1]  # noqa: E731
        at_t = rounding_noise(linear, t, trusted[0][1], jt, accepted(trusted[0][1], tol))
        at_s = rounding_noise(linear, s, trusted[-1][1], js, accepted(trusted[-1][1], tol))
        noise = list(zip(at_t, at_s, strict=True))
    rows = []
    for a, b in SCALES:
        got = call(spec, diff, other, tuple(a * x + b * y for x, y in zip(t, s, strict=True)))[1]
        rows += compare_sum("linearity", names, got, a, jt, b, js, tol, noise)
    return rows


def _second_order(spec, ref, diff, other, names, t, s, tols) -> list[LeafError]:
    """Forward over forward, against the reference's, up to its :func:`rounding_noise`."""
    want = _jvp2(ref, diff, other, t, s)
    noise = rounding_noise(lambda s: _jvp2(ref, diff, other, t, s), s, want)
    got = _jvp2(spec, diff, other, t, s)
    return compare("second order", names, got, want, tols[0], slack=noise, atol=tols[1])


def _determinism(again, first, names, nondet_tol) -> list[LeafError]:
    rows = []
    for n, a, b in zip(names, again, first, strict=True):
        off = float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))
        rows.append(LeafError("determinism", n, off, 0.0 if np.isnan(off) else off, (), nondet_tol))
    return rows


def _vmap(call, spec, diff, other, names, ts, tol) -> list[LeafError]:
    """``vmap`` over two primals (the second ``MOVE`` times the first) and tangents, and over
    tangents at fixed primals, and both nested."""
    moved = tuple(MOVE * x for x in diff)
    c = [[ts[0], ts[1 % len(ts)]], [ts[-1], ts[0]]]
    both, nested, why = batched(
        (_batched, _batched_once),
        spec,
        stack(diff, moved),
        other,
        stack(stack(*c[0]), stack(*c[1])),
    )
    trusted = spec  # the same JVP one example at a time: a wrong JVP is the jvp row's alone
    want = [
        [call(trusted, p, other, c[i][j])[1] for j in range(2)] for i, p in enumerate((diff, moved))
    ]
    rows = compare("vmap", names, both, stack(want[0][0], want[1][0]), tol)
    if why is not None:
        return [*rows, skipped("vmap (tangents, nested)", why)]
    return rows + compare("vmap", names, nested, stack(stack(*want[0]), stack(*want[1])), tol)


def _transposed(spec, ref, names, diff, other, at, tol, ref_tols, onto) -> list[LeafError]:
    """The VJP that JAX derives from ``f``'s JVP (by linearizing and transposing it): against
    the reference's VJP (at ``ref_tol``, after the projection ``onto``), and ``<u, J t> =
    <J^T u, t>`` against the JVP itself (an identity: at ``tol``), at ``at = (t, key)``."""
    t, key = at
    out, jt = _jvp(spec, diff, other, t)
    outs = [o for o in out if inexact_dtype(o.dtype)]
    u = normal_like(key, outs)
    grads = _vjp(spec, diff, other, u)[1]
    errors = []
    if ref is not None:
        want = onto(_vjp(ref, diff, other, u)[1])
        ref_tol, atol = ref_tols
        errors += compare("vjp (transposed)", names, onto(grads), want, ref_tol, atol=atol)
    lhs, rhs = float(inner(u, jt)), float(inner(grads, t))
    absu = [jnp.abs(x) for x in u]
    scale = max(float(inner(absu, [jnp.abs(x) for x in jt])), math.sqrt(tol))
    off = abs(lhs - rhs)
    errors.append(LeafError("<u, Jt> = <J^T u, t>", "all", off, off / scale, (), tol, lhs, rhs))
    return errors


def _finite_differences(
    spec, names, diff, other, t, s, fd_eps, second, tols=(0.0, 0.0)
) -> tuple[list, list]:
    """The JVP along ``t`` (scaled to each leaf's spread) against central and one-sided
    differences along it, in float64, per output element: where the JVP lies between the
    one-sided differences it passes (a ``kink``), where the output is not finite at the
    input it is not compared, where one side is not finite the other is used. With
    ``second``, the JVP's own derivative along ``s`` against differences of the JVP."""
    diff = tuple(_up(x) for x in diff)
    notes: list[str] = []
    t = _finite_only(tuple(_in_units(_up(d), x) for d, x in zip(t, diff, strict=True)), diff, notes)
    s = _finite_only(tuple(_in_units(_up(d), x) for d, x in zip(s, diff, strict=True)), diff, [])
    bits = jnp.finfo(working_dtype(lambda *d: spec.call(d, other), *diff)).bits
    if bits < 32:
        return [
            skipped(
                "finite differences",
                f"f computes in float{bits} inside: its outputs "
                "are too coarse for finite differences",
            )
        ], []
    h = step_size(bits, fd_eps)
    unit = float(2.0 ** -(53 if bits == 64 else 24))
    out, jt = _jvp(spec, diff, other, t)
    out = [o for o in out if inexact_dtype(o.dtype)]
    at = lambda k: _inexact(_jvp(spec, _step(diff, t, k), other, t)[0])  # noqa: E731
    shifted = [at(k * h) for k in (1, -1)]
    at = at if bits == 64 else None  # in float32 inside, smaller steps only round more
    rows, more = _along("finite differences", names, jt, out, *shifted, h, unit, bits, tols, at)
    notes += more
    if second:  # apart: the first order stands if the JVP cannot be differentiated again
        try:
            j2 = _jvp2(spec, diff, other, t, s)
            at2 = lambda k: _jvp(spec, _step(diff, s, k), other, t)[1]  # noqa: E731
            ups = [at2(k * h) for k in (1, -1)]
        except Exception as e:  # a transform the function cannot take: reported
            return [*rows, skipped("second order (fd)", _why(e))], notes
        at2 = at2 if bits == 64 else None
        more, extra = _along("second order (fd)", names, j2, jt, *ups, h, unit, bits, tols, at2)
        rows, notes = rows + more, notes + extra
    return rows, notes


def _step(diff, direction, h) -> tuple:
    return tuple(x + h * d for x, d in zip(diff, direction, strict=True))


def _inexact(outs) -> list:
    return [o for o in outs if inexact_dtype(o.dtype)]


def _along(
    check, names, analytic, base, up, down, h, unit, bits, tols=(0.0, 0.0), at=None
) -> tuple[list, list]:
    """One row per output leaf: ``analytic`` against differences of ``base`` along a
    direction (``up`` and ``down`` are ``base`` one step ``h`` either way; ``at(step)``, the
    outputs any step away, for the sweep where they disagree); ``tols``: the caller's
    relative tolerance (used if looser) and absolute one."""
    rtol, atol = max(FD_RTOL, 10 * h**2, tols[0]), tols[1]
    numeric, slack, kinks, masked = [], [], 0, 0
    for a, o, p, m in zip(analytic, base, up, down, strict=True):
        a, o, p, m = (np.asarray(x).ravel() for x in (a, o, p, m))
        bad = ~np.isfinite(o)
        num, kink = _one_or_two_sided(a, np.where(bad, 0, o), p, m, np.full(a.shape, h))
        num = np.where(bad, a, num)
        masked, kinks = masked + int(bad.sum()), kinks + int(kink.sum())
        numeric.append(num)
        noise = 10 * unit * np.where(bad, 0, np.abs(o)) / h
        slack.append(noise + one_sided_slack(p, m, num) + atol)
    floor = _SCALE_FLOOR * max_abs(numeric)
    swept = (0, 0)
    if at is not None:
        swept = _sweep(at, analytic, base, numeric, slack, h, (rtol, atol), floor)
        floor = _SCALE_FLOOR * max_abs(numeric)
    rows = [
        leaf_error(
            check,
            n,
            a,
            b,
            rtol,
            floor,
            shape=np.shape(a),
            slack=sl,
            note=f"kink at {kinks} element(s)" if kinks else "",
        )
        for n, a, b, sl in zip(names, analytic, numeric, slack, strict=True)
    ]
    notes = [f"{check}: {masked} output element(s) not finite at the input, not compared"] * bool(
        masked
    )
    if kinks:
        notes.append(f"{check}: {kinks} element(s) at kinks; passed between one-sided differences")
    if swept[0]:
        notes.append(
            f"{check}: the first step disagreed at {swept[0]} element(s); a sweep of steps "
            f"(Richardson) settled {swept[1]} of them"
        )
    if bits < 64:
        notes.append(
            f"{check}: f computes in float{bits} inside: step {h:.1e}, tolerance {rtol:.0e}"
        )
    return rows, notes


def _sweep(at, analytic, base, numeric, slack, h, tols, floor) -> tuple[int, int]:
    """Where the first step disagrees, the sweep of
    :mod:`~jaxchain.check.sweep` along the direction, per output element (``at(step)``: the
    outputs a step away); ``numeric`` and ``slack`` updated in place. Returns how many
    elements were swept and how many it settled."""
    rtol, atol = tols
    scales = [max(_finite_max(n), floor) for n in numeric]
    bad = [
        sweep.failing(np.ravel(a), n, sl, rtol, sc)
        for a, n, sl, sc in zip(analytic, numeric, slack, scales, strict=True)
    ]
    if not any(b.any() for b in bad):
        return 0, 0
    hs = sweep.ladder(np.array([h]))[0]
    ups, downs = [at(k) for k in hs], [at(-k) for k in hs]
    settled = 0
    for i, b in enumerate(bad):
        column = lambda vs: np.stack([np.ravel(x[i])[b] for x in vs], 1)  # noqa: E731, B023
        est, err = sweep.richardson(np.ravel(base[i])[b], column(ups), column(downs), hs[None])
        scale = max(scales[i], _finite_max(est))
        numeric[i][b], slack[i][b], good = sweep.settle(
            numeric[i][b], slack[i][b], est, err, rtol, scale, atol
        )
        settled += int(good.sum())
    return int(sum(b.sum() for b in bad)), settled


def assert_jvp(f: Callable, reference: Callable | None, *args: Any, **options: Any) -> Report:
    """:func:`check_jvp`, raising ``AssertionError`` with the report if any check fails."""
    report = check_jvp(f, reference, *args, **options)
    if not report.ok:
        raise AssertionError(str(report))
    return report
