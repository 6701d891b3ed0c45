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

from jaxchain.check.compare import _SCALE_FLOOR, FD_FLOAT32, FD_RTOL, leaf_error, max_abs
from jaxchain.check.leaves import Layout, inexact_dtype, inner, leaf_scale
from jaxchain.check.report import LeafError

NOISE_PROBES = 12  # tiny steps along the direction, for the noise estimate
NOISE_STEP = 1e-3  # their spacing, in units of each leaf's scale
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
    product) and to the cotangent ``u`` (which is ``J v``: what ``gradgradcheck`` checks)."""
    return jax.grad(lambda d, w: _phi2(spec, other, mask, w, v, d), argnums=(0, 1))(diff, u)


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

    return lax.map(at, (coords, steps, along), batch_size=min(len(coords), 32))


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
) -> tuple[list, list[str], dict]:
    """Analytic ``grads`` of ``<u, f>`` (order 1) or of ``<grad <u, f>, v>`` (order 2)
    against finite differences at ``points`` sampled coordinates per leaf and along ``v``
    (the inputs already in float64). Returns the rows, notes on what was weakened, and the
    directional difference (for the cotangent check)."""
    layout = Layout.of(diff)
    h_rel = step_size(bits, fd_eps)
    flat = np.asarray(layout.flatten(diff), np.float64)
    scales = [leaf_scale(x) for x in diff]
    keys = jax.random.split(key, max(len(diff), 1))
    offsets = layout.offsets()
    finite = np.split(np.isfinite(flat), offsets[1:-1])
    coords = [_sample(k, f, points) for k, f in zip(keys, finite, strict=False)]
    where = np.concatenate([c + o for c, o in zip(coords, offsets, strict=False)] + [[0]])
    where = where.astype(np.int64)[:-1]
    h = np.concatenate(
        [np.full(len(c), h_rel * s) for c, s in zip(coords, scales, strict=True)] + [np.zeros(0)]
    )
    h = _exact(flat[where], h) if len(where) else h
    noise_steps = NOISE_STEP * (np.arange(NOISE_PROBES) - NOISE_PROBES // 2)
    steps = np.concatenate([[0.0], h, -h, [h_rel, -h_rel], noise_steps])
    probe_at = np.concatenate([[0], where, where, [0, 0], np.zeros(NOISE_PROBES, np.int64)])
    along = np.concatenate([np.zeros(1 + 2 * len(where), bool), np.ones(2 + NOISE_PROBES, bool)])
    phis = np.asarray(_probe(spec, layout, order, diff, other, mask, u, v, probe_at, steps, along))
    phi0, up, down = phis[0], phis[1 : 1 + len(where)], phis[1 + len(where) : 1 + 2 * len(where)]
    dir_up, dir_down = phis[1 + 2 * len(where)], phis[2 + 2 * len(where)]
    # never less than the rounding of the sum <u, f> itself (values that round to the same
    # float show no noise at all)
    eps = float(np.finfo(np.float64 if bits == 64 else np.float32).eps)
    noise = max(noise_of(phis[-NOISE_PROBES:]), eps * phi_abs)
    flat_grads = np.asarray(layout.flatten(grads, gradient=True), np.float64)
    analytic = flat_grads[where]
    numeric, kinks = _one_or_two_sided(analytic, phi0, up, down, h)
    slack = 10 * noise / np.abs(np.where(h == 0, 1, h)) + one_sided_slack(up, down, numeric)
    rtol = max(FD_RTOL, 10 * h_rel**2, rtol)  # the caller's, if looser
    check = "finite differences" if order == 1 else "second order (fd)"
    bounds = np.cumsum([len(c) for c in coords])[:-1]
    parts = [np.split(a, bounds) for a in (analytic, numeric, slack, kinks)]
    floor = max(_SCALE_FLOOR * max_abs(parts[1]), math.sqrt(rtol) * natural)
    rows = []
    for i, (n, a, d, sl, k) in enumerate(zip(names, *parts, strict=True)):
        note = f"kink at {int(k.sum())} of {len(k)} points" if k.any() else ""
        rows.append(
            leaf_error(
                check,
                n,
                a,
                d,
                rtol,
                floor,
                shape=(layout.sizes()[i],),
                coords=coords[i],
                slack=sl,
                note=note,
            )
        )
        rows[-1] = _leaf_index(rows[-1], layout, i)
    w_flat = np.asarray(layout.flatten(v), np.float64)
    directional = (dir_up - dir_down) / (2 * h_rel)
    a_dir = float(flat_grads @ w_flat)
    num_dir, kink_dir = _one_or_two_sided(
        np.array([a_dir]), phi0, np.array([dir_up]), np.array([dir_down]), np.array([h_rel])
    )
    dir_floor = max(_SCALE_FLOOR * float(np.abs(flat_grads) @ np.abs(w_flat)), floor)
    rows.append(
        leaf_error(
            check + " (direction)",
            "all",
            [a_dir],
            num_dir,
            rtol,
            dir_floor,
            slack=10 * noise / h_rel,
            note="kink" if kink_dir.any() else "",
        )
    )
    notes = _notes(order, bits, h_rel, noise, max(abs(phi0), phi_abs), kinks, up, down)
    info = {
        "directional": float(num_dir[0]),
        "rtol": rtol,
        "slack": 10 * noise / h_rel,
        "floor": dir_floor,
        "unsmoothed": float(directional),
    }
    return rows, notes, info


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
    """What was weakened; ``size`` is ``|<u, f>|`` or, where that cancels to nearly 0, the
    sum of ``|u| |f|`` (the noise relative to a sum that cancels means nothing)."""
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
