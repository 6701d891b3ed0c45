"""Finite differences a user can trust without a reference.

Everything here runs in float64. The step is chosen per leaf from the leaf's own scale (its
spread, so that ``1e4 + N(0, 1)`` steps by ``~1e-5``, not ``1e-1``) and the function's working
precision (``eps ** (1/3)``, the step that balances truncation ``h**2`` against rounding
``eps / h``). Probes, all in one compiled batch:

* sampled coordinates, each stepped both ways, with the unperturbed value: central and
  one-sided differences. Where the rule's derivative lies between the one-sided ones it
  passes; where they differ widely the point is a ``kink`` (``relu`` at 0), marked so. Where
  one side is not finite (the edge of a domain: ``xlogy`` at 0) the other side is used;
* a random direction over the whole input, ``v^T J u``, so that a bug anywhere is seen, and
  the same number read as ``<u, J v>``, the derivative of the backward with respect to its
  cotangent;
* twelve tiny steps along that direction, whose sixth differences measure the noise of the
  function itself (Moré and Wild's ECnoise): a function that rounds to float32 inside gets
  the slack that its noise needs, and nothing more.

Outputs that are not finite at the input (``-inf`` by design) are masked out of ``<u, f>``.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxchain.check import sweep
from jaxchain.check.compare import _SCALE_FLOOR, FD_FLOAT32, FD_RTOL, leaf_error, max_abs
from jaxchain.check.leaves import Layout, element_scales, inexact_dtype, inner
from jaxchain.check.report import LeafError, skipped
from jaxchain.check.sweep import failing, unresolved

NOISE_PROBES = 12  # tiny steps along the direction, for the noise estimate
# their spacings, in units of each leaf's scale, by the working precision: the least estimate
# counts (at the wider ones, a function curving fast, beside a singularity, looks noisy); in
# float32 inside, the narrower ones would round to the same inputs and show no noise at all
NOISE_STEPS = {64: (1e-3, 1e-6, 1e-9), 32: (1e-3,)}
PROBE_ELEMENTS = 2**20  # probes evaluated at once: as many inputs' elements as fit a cache
KINK = 1e-2  # one-sided differences further apart than this (relative) mark a kink


def _phi1(spec, other, mask, u, diff):
    """``<u, f(x)>`` over the inexact outputs, finite at the input (``mask``)."""
    outs = [o for o in spec.outputs(diff, other) if inexact_dtype(o.dtype)]
    return sum(
        (jnp.sum(jnp.where(m, w * o, 0)).real for m, w, o in zip(mask, u, outs, strict=True)),
        jnp.zeros((), jnp.result_type(float)),
    )


def _phi2(spec, other, mask, u, v, diff):
    """``<grad <u, f>, v>``."""
    return inner(v, jax.grad(partial(_phi1, spec, other, mask, u))(diff))


def _hvp_impl(spec, other, mask, u, v, diff):
    """The gradient of ``<grad <u, f>, v>`` with respect to the primals (a Hessian-vector
    product) and to the cotangent ``u`` (which is ``J v``: what ``gradgradcheck`` checks);
    zero where the inputs, or the outputs (``mask``), are not finite."""
    hx, hu = jax.grad(lambda d, w: _phi2(spec, other, mask, w, v, d), argnums=(0, 1))(diff, u)
    hx = tuple(jnp.where(jnp.isfinite(x), h, 0) for x, h in zip(diff, hx, strict=True))
    return hx, tuple(jnp.where(m, h, 0) for m, h in zip(mask, hu, strict=True))


hvp = jax.jit(_hvp_impl, static_argnums=0)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _probe(spec, layout: Layout, order: int, diff, other, mask, u, v, coords, steps, along):
    """``phi`` at ``x + steps[k] * e_coords[k]`` (or ``x + steps[k] * v`` where ``along``),
    for every probe ``k``, with ``phi`` = ``<u, f>`` (order 1) or ``<grad <u, f>, v>``."""
    flat, w = layout.flatten(diff), layout.flatten(v)
    phi = (
        partial(_phi1, spec, other, mask, u)
        if order == 1
        else partial(_phi2, spec, other, mask, u, v)
    )

    def at(probe):
        j, h, d = probe
        return phi(layout.unflatten(jnp.where(d, flat + h * w, flat.at[j].add(h))))

    batch = max(1, min(len(coords), PROBE_ELEMENTS // max(int(flat.size), 1)))
    return lax.map(at, (coords, steps, along), batch_size=batch)


def step_size(bits: int, fd_eps: float | None) -> float:
    """The relative step: ``eps ** (1/3)`` of the working precision (float32's at most)."""
    if fd_eps is not None:
        return fd_eps
    return float(np.finfo(np.float64).eps) ** (1 / 3) if bits == 64 else FD_FLOAT32["step"]


def _sample(key, finite: np.ndarray, points: int) -> np.ndarray:
    """``points`` distinct coordinates among a leaf's finite ones (``finite``, flat: an
    infinite input is not perturbed), sorted, drawn by NumPy seeded from ``key``
    (``jax.random.choice`` without replacement permutes them all: a third of a second at
    512 x 512)."""
    candidates = np.flatnonzero(finite)
    if candidates.size <= points:
        return candidates
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    return np.sort(rng.choice(candidates, points, replace=False))


def noise_of(values: np.ndarray) -> float:
    """The noise of equally spaced values of a smooth function: the RMS of their sixth
    differences over ``sqrt(C(12, 6))``."""
    with np.errstate(all="ignore"):
        d6 = np.diff(values, 6)
    return float(np.sqrt(np.mean(d6**2) / 924.0)) if d6.size else 0.0


def _exact(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Steps that are exactly representable at ``x`` (so that ``x + h - x == h``)."""
    return (x + h) - x


def vjp_differences(
    spec,
    order,
    diff,
    other,
    names,
    grads,
    u,
    v,
    mask,
    *,
    key,
    bits,
    fd_eps,
    points,
    natural,
    phi_abs,
    rtol=0.0,
    atol=0.0,
) -> tuple[list, list[str], dict]:
    """Analytic ``grads`` of ``<u, f>`` (order 1) or of ``<grad <u, f>, v>`` (order 2)
    against finite differences at ``points`` sampled coordinates per leaf and along ``v``
    (the inputs already in float64). Returns the rows, notes on what was weakened, and the
    directional difference (for the cotangent check)."""
    layout = Layout.of(diff)
    h_rel = step_size(bits, fd_eps)
    flat = np.asarray(layout.flatten(diff), np.float64)
    coords, where = _coordinates(key, layout, diff, flat, points)
    h = _steps(layout, diff, coords, flat, where, h_rel)
    probe = _Probes(spec, layout, order, diff, other, mask, u, v)
    phis = probe(*_first_probes(where, h, h_rel))
    m = len(where)
    phi0, up, down = phis[0], phis[1 : 1 + m], phis[1 + m : 1 + 2 * m]
    dir_up, dir_down = phis[1 + 2 * m], phis[2 + 2 * m]
    flat_grads = np.asarray(layout.flatten(grads, gradient=True), np.float64)
    analytic = flat_grads[where]
    numeric, kinks = _one_or_two_sided(analytic, phi0, up, down, h)
    rtol = max(FD_RTOL, 10 * h_rel**2, rtol)  # the caller's, if looser
    bounds = np.cumsum([len(c) for c in coords])[:-1]
    swept = _Sweep(probe if bits == 64 else None, phi0, (rtol, atol), bounds, natural)
    eps = float(np.finfo(np.float64 if bits == 64 else np.float32).eps)
    w = np.asarray(layout.flatten(v), np.float64)
    first = (analytic, numeric, float(flat_grads @ w), (dir_up - dir_down) / (2 * h_rel))
    sides = (h, up, down, h_rel)
    noise, heard = _noise_if_needed(probe, swept, first, eps * phi_abs, sides, bits)
    slack = 10 * noise / np.abs(np.where(h == 0, 1, h)) + one_sided_slack(up, down, numeric)
    slack = slack + atol  # the caller's absolute tolerance
    numeric, slack, kinks = swept.coordinates(
        analytic, numeric, slack, kinks, flat[where], where, h
    )
    check = "finite differences" if order == 1 else "second order (fd)"
    parts = [np.split(a, bounds) for a in (analytic, numeric, slack, kinks)]
    floor = swept.floor(numeric)
    rows = _coordinate_rows(check, names, layout, coords, rtol, floor, parts)
    spread = _kink_spread(w[where], phi0, up, down, h, kinks)
    more, direction = swept.direction(
        check, flat_grads, w, dir_up, dir_down, h_rel, noise, floor, spread
    )
    size = max(abs(phi0), phi_abs, _finite_max(heard))  # what the noise is of
    notes = _notes(order, bits, h_rel, noise, size, kinks, up, down)
    return rows + more, notes + swept.notes(check), direction


def _kink_spread(w, phi0, up, down, h, kinks) -> float:
    """How far the derivative along ``w`` may stray from the interval of the direction's
    one-sided differences through the sampled coordinates that are kinks: the sum of each
    one's ``|w_i|`` times the gap between its two sides."""
    with np.errstate(all="ignore"):
        gap = np.abs((up - phi0) / h - (phi0 - down) / h)
    return float(np.sum(np.where(kinks & np.isfinite(gap), np.abs(w) * gap, 0.0)))


def _coordinates(key, layout: Layout, diff, flat, points) -> tuple[list, np.ndarray]:
    """The sampled coordinates of each leaf, and where they lie in the flat vector."""
    offsets = layout.offsets()
    keys = jax.random.split(key, max(len(diff), 1))
    finite = np.split(np.isfinite(flat), offsets[1:-1])
    coords = [_sample(k, f, points) for k, f in zip(keys, finite, strict=False)]
    where = np.concatenate([c + o for c, o in zip(coords, offsets, strict=False)] + [[0]])
    return coords, where.astype(np.int64)[:-1]


def _steps(layout: Layout, diff, coords, flat, where, h_rel) -> np.ndarray:
    """Each sampled coordinate's step: ``h_rel`` times its element's scale, exactly
    representable there."""
    scales = [
        np.tile(element_scales(x).ravel(), 2 if c else 1)[k]
        for x, c, k in zip(diff, layout.complex_, coords, strict=True)
    ]
    h = h_rel * np.concatenate([*scales, np.zeros(0)])
    return _exact(flat[where], h) if len(where) else h


def _first_probes(where, h, h_rel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first batch: the input, each coordinate stepped both ways, and the direction
    stepped both ways."""
    steps = np.concatenate([[0.0], h, -h, [h_rel, -h_rel]])
    probe_at = np.concatenate([[0], where, where, [0, 0]])
    along = np.concatenate([np.zeros(1 + 2 * len(where), bool), np.ones(2, bool)])
    return probe_at, steps, along


def _noise_if_needed(probe, swept, first, least, sides, bits) -> tuple[float, np.ndarray]:
    """The noise of ``phi`` (at least ``least``, the rounding of its value), measured by
    probes along the direction at each of the precision's spacings only where a comparison
    at the first step (``first``: analytic and numeric values at the coordinates and along
    the direction) fails without it, or where the rule gives exactly 0 (a noise allowance
    may send that point to the sweep). Noise only adds slack, so a check that passes
    without it passes with it: most checks skip the probes. Also the values heard."""
    (analytic, numeric, a_dir, n_dir), (h, up, down, h_rel) = first, sides
    slack = 10 * least / np.abs(np.where(h == 0, 1, h)) + one_sided_slack(up, down, numeric)
    scale = swept.scale(numeric, analytic)
    fails = failing(analytic, numeric, slack + swept.atol, swept.rtol, scale)
    off = failing(a_dir, n_dir, 10 * least / h_rel + swept.atol, swept.rtol, abs(n_dir))
    if not (fails.any() or (analytic == 0).any() or off.any()):
        return least, np.zeros(0)
    spacings = NOISE_STEPS[64 if bits == 64 else 32]
    steps = np.concatenate([s * (np.arange(NOISE_PROBES) - NOISE_PROBES // 2) for s in spacings])
    heard = probe(np.zeros(len(steps), np.int64), steps, np.ones(len(steps), bool))
    return max(_noise(heard, len(spacings)), least), heard


def _noise(values: np.ndarray, spacings: int) -> float:
    """The least finite noise estimate among the noise probes' ``spacings`` (0 if none is
    finite: probes that left the domain say nothing of the noise)."""
    found = [noise_of(p) for p in np.split(values, spacings)]
    return min((n for n in found if np.isfinite(n)), default=0.0)


class _Probes:
    """``phi`` at probes of the input (:func:`_probe`), as a NumPy array."""

    def __init__(self, spec, layout, order, diff, other, mask, u, v):
        self.args = (spec, layout, order, diff, other, mask, u, v)

    def __call__(self, probe_at, steps, along) -> np.ndarray:
        return np.asarray(_probe(*self.args, probe_at, steps, along))


def _coordinate_rows(check, names, layout, coords, rtol, floor, parts) -> list[LeafError]:
    """One row per leaf, of its sampled coordinates (``parts``: per leaf, the analytic and
    numeric values, the slack and the kinks). A leaf whose derivative the rule gives as
    exactly 0 is compared with its own differences, not with the floor of the others: a
    backward that drops a leaf a billionth the size of another is caught, while a derivative
    that is truly 0 differs from 0 by the noise alone, which the slack allows."""
    rows = []
    for i, (n, a, d, sl, k) in enumerate(zip(names, *parts, strict=True)):
        note = f"kink at {int(k.sum())} of {len(k)} points" if k.any() else ""
        least = floor if np.any(a != 0) else 0.0
        row = leaf_error(check, n, a, d, rtol, least, shape=(layout.sizes()[i],),
                         coords=coords[i], slack=sl, note=note)  # fmt: skip
        rows.append(_leaf_index(row, layout, i))
    return rows


class _Sweep:
    """The sweep of steps (:mod:`~jaxchain.check.sweep`) at the coordinates, and along the
    direction, where the first step disagrees with the rule; none without ``probe`` (a
    function that computes in float32 inside: smaller steps only round more)."""

    def __init__(self, probe, phi0, tols, bounds, natural):
        (self.probe, self.phi0), (self.rtol, self.atol) = (probe, phi0), tols
        self.bounds, self.natural = bounds, natural
        self.swept = self.settled = 0

    def floor(self, numeric) -> float:
        """What a leaf's error is relative to, at least (see :func:`leaf_error`)."""
        leaves = np.split(numeric, self.bounds)
        return max(_SCALE_FLOOR * max_abs(leaves), math.sqrt(self.rtol) * self.natural)

    def scale(self, numeric, analytic) -> np.ndarray:
        """Per coordinate, its leaf's largest finite difference, at least :meth:`floor`
        (none for a leaf the rule gives as exactly 0: see :func:`_coordinate_rows`)."""
        floor = self.floor(np.where(np.isfinite(numeric), numeric, 0))
        leaves = zip(np.split(numeric, self.bounds), np.split(analytic, self.bounds), strict=True)
        return np.concatenate(
            [np.full(len(n), max(_finite_max(n), floor * np.any(a != 0))) for n, a in leaves]
        )

    def coordinates(self, analytic, numeric, slack, kinks, xs, where, h):
        """``numeric``, ``slack`` and ``kinks`` with the coordinates the first step leaves
        fails, or where a leaf the rule gives as exactly 0 is
        :func:`~jaxchain.check.sweep.unresolved` (kinks apart), swept; twice at most, where
        what the first settled moves a leaf's scale."""
        numeric, slack, kinks = numeric.copy(), slack.copy(), kinks.copy()
        done = (h == 0) | (self.probe is None)
        for _ in range(2):
            scale = self.scale(numeric, analytic)
            fails = failing(analytic, numeric, slack, self.rtol, scale)
            zero = unresolved(analytic, slack, self.rtol, scale) & ~kinks & ~fails
            bad = (fails | zero) & ~done
            if not bad.any():
                break
            hs = _exact(xs[bad, None], sweep.ladder(h[bad]))
            ups, downs = self._both_ways(where[bad], hs)
            phi0 = np.full(len(hs), self.phi0)
            est, err = sweep.richardson(phi0, ups, downs, hs, zero[bad])
            jumped = sweep.jumps(phi0, ups, downs, hs)
            est = np.where(jumped, np.nan, est)  # a kink: never settled by extrapolation
            kinks[bad] |= jumped
            tentative = numeric.copy()
            tentative[bad] = np.where(np.isfinite(est), est, numeric[bad])
            scale = self.scale(tentative, analytic)[bad]
            numeric[bad], slack[bad], good = sweep.settle(
                numeric[bad], slack[bad], est, err, self.rtol, scale, self.atol, zero[bad]
            )
            kinks[bad] &= ~good
            done |= bad
            self.swept, self.settled = self.swept + int(bad.sum()), self.settled + int(good.sum())
        return numeric, slack, kinks

    def _both_ways(self, at, hs, along=False) -> tuple[np.ndarray, np.ndarray]:
        """``phi`` at ``+hs`` and ``-hs`` (a row of steps per coordinate ``at``, or along the
        direction)."""
        steps = np.concatenate([hs.ravel(), -hs.ravel()])
        where = np.tile(np.repeat(at, hs.shape[1]), 2)
        phis = self.probe(where, steps, np.full(len(steps), along))
        return phis[: hs.size].reshape(hs.shape), phis[hs.size :].reshape(hs.shape)

    def direction(self, check, grads, w, up, down, h_rel, noise, floor, spread=0.0) -> tuple:
        """The row of the direction, swept where it fails, and what the cotangent check
        needs of it. ``spread``: how far the rule's derivative may lie outside the interval
        of the direction's one-sided differences because of the sampled coordinates that are
        kinks (each may take any value between its own two sides). A direction along which
        the derivative still jumps (:func:`~jaxchain.check.sweep.jumps`), by more than the
        sampled kinks explain, is not compared: where several coordinates sit on kinks, the
        rule's derivative along it need not lie between its one-sided differences."""
        a_dir = np.array([float(grads @ w)])
        numeric, kink = _one_or_two_sided(a_dir, self.phi0, *np.array([[up], [down], [h_rel]]))
        floor = max(_SCALE_FLOOR * float(np.abs(grads) @ np.abs(w)), floor)
        slack = np.array([10 * noise / h_rel + self.atol + spread])
        scale = max(_finite_max(numeric), floor)
        if self.probe is not None and failing(a_dir, numeric, slack, self.rtol, scale).any():
            hs = sweep.ladder(np.array([h_rel]))
            ups, downs = self._both_ways(np.zeros(1, np.int64), hs, along=True)
            phi0 = np.array([self.phi0])
            if sweep.jumps(phi0, ups, downs, hs)[0]:
                self.swept += 1
                return self._kinked(check)
            est, err = sweep.richardson(phi0, ups, downs, hs)
            scale = max(_finite_max(est), floor)
            numeric, slack, good = sweep.settle(
                numeric, slack, est, err, self.rtol, scale, self.atol
            )
            kink &= ~good
            self.swept, self.settled = self.swept + 1, self.settled + int(good.sum())
        note = "kink" if kink.any() else ""
        row = leaf_error(check + " (direction)", "all", a_dir, numeric, self.rtol, floor,
                         slack=slack[0], note=note)  # fmt: skip
        info = {"directional": float(numeric[0]), "rtol": self.rtol, "slack": float(slack[0])}
        return [row], {**info, "floor": floor}

    def _kinked(self, check) -> tuple:
        why = (
            "the derivative jumps along the direction (kinks at several coordinates): "
            "compared at the sampled coordinates only"
        )
        return [skipped(check + " (direction)", why)], {"kinked": why}

    def notes(self, check: str) -> list[str]:
        if not self.swept:
            return []
        return [
            f"{check}: the first step disagreed or could not tell at {self.swept} point(s); "
            f"a sweep of steps (Richardson) settled {self.settled} of them"
        ]


def _finite_max(a) -> float:
    a = np.abs(np.asarray(a, np.float64))
    return float(np.max(a[np.isfinite(a)], initial=0.0))


def _leaf_index(row: LeafError, layout: Layout, leaf: int) -> LeafError:
    """The row's index as an index of the leaf (``re``/``im`` for complex leaves)."""
    import dataclasses

    if not row.index:
        return row
    index, part = layout.element(leaf, row.index[0])
    note = row.note + (f" ({part} part)" if part else "")
    return dataclasses.replace(row, index=index, note=note.strip())


def _one_or_two_sided(analytic, phi0, up, down, h) -> tuple[np.ndarray, np.ndarray]:
    """The numeric derivative each analytic value is compared with: the nearest point of
    the interval between the one-sided differences (so a rule passes at a non-differentiable
    point if its derivative lies between them, and at a smooth point if it lies within the
    step's curvature of the central difference); a one-sided difference where the other
    side is not finite (the edge of a domain). Also which points are kinks: one-sided
    differences further apart than ``KINK`` of the leaf's largest difference."""
    with np.errstate(all="ignore"):  # non-finite sides are handled below
        return _sided(analytic, phi0, up, down, np.where(h == 0, 1.0, h))


def _sided(analytic, phi0, up, down, hs) -> tuple[np.ndarray, np.ndarray]:
    fwd, bwd, central = (up - phi0) / hs, (phi0 - down) / hs, (up - down) / (2 * hs)
    finite = central[np.isfinite(central)]
    scale = max(float(np.max(np.abs(finite), initial=0.0)), 1e-300)
    gap = np.abs(fwd - bwd)
    kinks = np.isfinite(gap) & (gap > KINK * scale)
    numeric = np.clip(analytic, np.minimum(fwd, bwd), np.maximum(fwd, bwd))
    numeric = np.where(np.isnan(analytic), central, numeric)
    numeric = np.where(np.isfinite(up) & ~np.isfinite(down), fwd, numeric)
    numeric = np.where(np.isfinite(down) & ~np.isfinite(up), bwd, numeric)
    numeric = np.where(~np.isfinite(up) & ~np.isfinite(down), analytic, numeric)  # not compared
    return numeric, kinks


def one_sided_slack(up, down, numeric) -> np.ndarray:
    """What a one-sided difference may be off by (its truncation, ``O(h)``): 1e-3 of it."""
    edge = np.isfinite(up) ^ np.isfinite(down)
    with np.errstate(all="ignore"):
        return np.where(edge, 1e-3 * np.abs(np.nan_to_num(numeric)), 0.0)


def _notes(order, bits, h_rel, noise, size, kinks, up, down) -> list[str]:
    """What was weakened; ``size`` is the largest of ``|<u, f>|``, the sum of ``|u| |f|``
    (where ``<u, f>`` cancels) and the values the noise was measured on (where f is 0 at the
    input): the noise relative to a value that cancels means nothing."""
    notes = []
    what = "finite differences" if order == 1 else "second-order finite differences"
    if bits < 64:
        notes.append(
            f"f computes in float{bits} inside: {what} step by {h_rel:.1e} of each "
            f"leaf's scale, tolerance {max(FD_RTOL, 10 * h_rel**2):.1e}"
        )
    rel = noise / max(size, 1e-300)
    if rel > 1e-12:
        notes.append(f"{what}: f's outputs are noisy to {rel:.1e} (relative): slack added")
    if kinks.any():
        notes.append(
            f"{what}: {int(kinks.sum())} sampled point(s) are kinks (one-sided "
            "differences disagree); passed where the rule lies between them"
        )
    edge = int((np.isfinite(up) ^ np.isfinite(down)).sum())
    if edge:
        notes.append(f"{what}: {edge} point(s) at the edge of the domain: one-sided")
    nowhere = int((~np.isfinite(up) & ~np.isfinite(down)).sum())
    if nowhere:
        notes.append(f"{what}: {nowhere} point(s) not finite on either side: not compared")
    return notes
