"""An adaptive step for finite differences: a sweep of steps with Richardson extrapolation.

One step cannot suit every point: beside a singularity (a nearly singular matrix) or in an
array whose magnitudes span many orders, the first step is too large and its difference is
dominated by truncation, not by the rule's error. Where the first step disagrees with the
rule, the checker differences again at steps ``h / 4**k`` (``k = 1 .. SWEEP``), extrapolates
each pair of them (Richardson: a central difference's error is ``O(h**2)``, a one-sided
one's ``O(h)``), and takes the extrapolation whose neighbours agree best, as numdifftools
does; the spread of those neighbours is its error. An estimate whose error exceeds the
tolerance is not used: the first step's verdict stands. So the sweep can clear a false alarm
only where it pins the derivative down to better than the tolerance itself.

Everything here is NumPy on values already computed.
"""

import numpy as np

SWEEP = 8  # steps below the first, each a quarter of the one before
RATIO = 4.0


def steps(h: np.ndarray) -> np.ndarray:
    """The sweep's steps below each first step ``h``: shape ``(len(h), SWEEP)``."""
    return np.asarray(h, np.float64)[:, None] * RATIO ** -np.arange(1.0, SWEEP + 1)


def _extrapolate(d: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Richardson on differences ``d`` (``(m, K)``, steps shrinking by ``RATIO``) whose error is
    ``O(h**order)``: per row, the extrapolation whose two neighbours agree best, and the larger
    of those two disagreements (``inf`` where none is finite)."""
    factor = RATIO**order
    r = (factor * d[:, 1:] - d[:, :-1]) / (factor - 1)
    gaps = np.abs(np.diff(r, axis=1))
    err = np.maximum(gaps[:, :-1], gaps[:, 1:])
    err = np.where(np.isfinite(err) & _converging(d), err, np.inf)
    best = np.argmin(err, axis=1)[:, None]
    return np.take_along_axis(r[:, 1:-1], best, 1)[:, 0], np.take_along_axis(err, best, 1)[:, 0]


def _converging(d: np.ndarray) -> np.ndarray:
    """Per window of four differences (``d[:, j : j + 4]``, the window of the extrapolation
    ``j + 1``), whether they converge as a truncation error does: their successive gaps
    nonzero and shrinking at least by half. Rounding does not: differences that cancel to
    exactly the same value (a plateau of zeros where the function cancels inside, jax#5054 at
    -O0) or that grow as the step shrinks say nothing of the derivative."""
    g = np.abs(np.diff(d, axis=1))
    with np.errstate(all="ignore"):
        shrink = (g[:, 1:] <= g[:, :-1] / 2) & (g[:, 1:] > 0)
    return (g[:, :-2] > 0) & shrink[:, :-1] & shrink[:, 1:]


def richardson(phi0, up, down, hs) -> tuple[np.ndarray, np.ndarray]:
    """The derivative at each of ``m`` points from ``phi`` at ``+hs`` (``up``) and ``-hs``
    (``down``), all ``(m, K)``, and ``phi0`` (``(m,)``): the central extrapolation or, where it
    is not finite (the edge of a domain, a kink), the one-sided one that agrees best. Returns
    the estimates and their errors."""
    phi0 = np.asarray(phi0, np.float64).reshape(-1, 1)
    with np.errstate(all="ignore"):  # non-finite probes give an infinite error
        candidates = [
            _extrapolate((up - down) / (2 * hs), 2),
            _extrapolate((up - phi0) / hs, 1),
            _extrapolate((phi0 - down) / hs, 1),
        ]
    estimates = np.stack([c[0] for c in candidates])
    errors = np.stack([c[1] for c in candidates])
    errors[1:] = np.where(np.isfinite(errors[0]), np.inf, errors[1:])  # central where it can
    pick = np.argmin(errors, axis=0)[None]
    return np.take_along_axis(estimates, pick, 0)[0], np.take_along_axis(errors, pick, 0)[0]


def failing(analytic, numeric, slack, tol: float, scale) -> np.ndarray:
    """Which ``analytic`` values a comparison with ``numeric`` fails: further than ``slack``
    plus ``tol * scale`` (per element), NaN included."""
    with np.errstate(all="ignore"):
        off = np.abs(np.asarray(analytic) - np.asarray(numeric)) - slack
        return ~(off <= tol * np.asarray(scale))


def settle(numeric, slack, estimate, error, tol: float, scale, atol=0.0) -> tuple:
    """``numeric`` and ``slack`` with the sweep's ``estimate`` (slack: twice its ``error``,
    plus the caller's ``atol``) where that error is within ``tol * scale``; and which were
    settled so."""
    good = np.isfinite(estimate) & (error <= tol * np.asarray(scale))
    return np.where(good, estimate, numeric), np.where(good, 2 * error + atol, slack), good
