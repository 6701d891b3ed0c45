"""An adaptive step for finite differences: a sweep of steps with Richardson extrapolation.

One step cannot suit every point. Beside a singularity (a nearly singular matrix) the first
step is too large, and its difference is dominated by truncation; for a derivative a
billionth the size of the function's others, it is too small, and its difference is rounding
alone. Where the first step disagrees with the rule, or cannot tell whether a derivative the
rule gives as exactly 0 is (its noise allowance exceeds the tolerance), the checker
differences again on a ladder of steps ``h * 4**k``
(``k = UP .. -SWEEP``), extrapolates each pair of them (Richardson: a central difference's
error is ``O(h**2)``, a one-sided one's ``O(h)``), and takes the extrapolation whose
neighbours agree best, as numdifftools does; the spread of those neighbours is its error. An
estimate whose error exceeds the tolerance is not used: the first step's verdict stands. So
the sweep can settle a point only where it pins the derivative down to within a few
tolerances (``SETTLE``), or, against a rule's exact 0, shows a derivative clearly not 0.

Everything here is NumPy on values already computed.
"""

import numpy as np

UP = 4  # steps above the first
SWEEP = 10  # and below it, each a quarter of the one before
RATIO = 4.0
# An estimate settles a point if its error is within this many tolerances (its slack is twice
# its error): beside a singularity, rounding stops the ladder a little short of the tolerance.
SETTLE = 4.0


def ladder(h) -> np.ndarray:
    """The sweep's steps about each first step ``h``, largest first: ``(len(h), UP + 1 +
    SWEEP)``."""
    return np.asarray(h, np.float64)[:, None] * RATIO ** (UP - np.arange(UP + 1.0 + SWEEP))


def _extrapolate(d: np.ndarray, order: int, noisy) -> tuple[np.ndarray, np.ndarray]:
    """Richardson on differences ``d`` (``(m, K)``, steps shrinking by ``RATIO``) whose error is
    ``O(h**order)``: per row, the extrapolation whose two neighbours agree best, and the larger
    of those two disagreements (``inf`` where none is finite, or the window does not
    :func:`_converge`)."""
    factor = RATIO**order
    r = (factor * d[:, 1:] - d[:, :-1]) / (factor - 1)
    gaps = np.abs(np.diff(r, axis=1))
    err = np.maximum(gaps[:, :-1], gaps[:, 1:])
    err = np.where(np.isfinite(err) & _converge(d, noisy), err, np.inf)
    best = np.argmin(err, axis=1)[:, None]
    return np.take_along_axis(r[:, 1:-1], best, 1)[:, 0], np.take_along_axis(err, best, 1)[:, 0]


def _converge(d: np.ndarray, noisy) -> np.ndarray:
    """Per window of four differences (``d[:, j : j + 4]``, the window of the extrapolation
    ``j + 1``), whether they behave as differences do: their successive gaps nonzero and
    shrinking at least by half as the step shrinks (truncation); or, in the rows ``noisy``,
    growing at least twofold (rounding, ``noise / h``: the larger steps are the better
    there). Differences that cancel to exactly the same value (a plateau of zeros where the
    function cancels inside, jax#5054 at -O0) or that jump about say nothing of the
    derivative; nor, outside the rows ``noisy``, do differences that grow as the step shrinks
    towards a singularity (``1 / h**2`` until the step is below its distance)."""
    g = np.abs(np.diff(d, axis=1))
    with np.errstate(all="ignore"):
        shrink = g[:, 1:] <= g[:, :-1] / 2
        grow = (g[:, 1:] >= 2 * g[:, :-1]) & np.reshape(noisy, (-1, 1))
    nonzero = (g[:, :-2] > 0) & (g[:, 1:-1] > 0) & (g[:, 2:] > 0)
    return nonzero & ((shrink[:, :-1] & shrink[:, 1:]) | (grow[:, :-1] & grow[:, 1:]))


def richardson(phi0, up, down, hs, noisy=False) -> tuple[np.ndarray, np.ndarray]:
    """The derivative at each of ``m`` points from ``phi`` at ``+hs`` (``up``) and ``-hs``
    (``down``), all ``(m, K)``, and ``phi0`` (``(m,)``): the central extrapolation or, where it
    is not finite (the edge of a domain, a kink), the one-sided one that agrees best. Returns
    the estimates and their errors. ``noisy`` (per point): differences that grow as the step
    shrinks are rounding there, and the larger steps are taken."""
    phi0 = np.asarray(phi0, np.float64).reshape(-1, 1)
    with np.errstate(all="ignore"):  # non-finite probes give an infinite error
        candidates = [
            _extrapolate((up - down) / (2 * hs), 2, noisy),
            _extrapolate((up - phi0) / hs, 1, noisy),
            _extrapolate((phi0 - down) / hs, 1, noisy),
        ]
    estimates = np.stack([c[0] for c in candidates])
    errors = np.stack([c[1] for c in candidates])
    errors[1:] = np.where(np.isfinite(errors[0]), np.inf, errors[1:])  # central where it can
    pick = np.argmin(errors, axis=0)[None]
    return np.take_along_axis(estimates, pick, 0)[0], np.take_along_axis(errors, pick, 0)[0]


def jumps(phi0, up, down, hs) -> np.ndarray:
    """Which of ``m`` points are kinks by the ladder (``up``, ``down``, ``hs``: ``(m, K)``, as
    :func:`richardson` takes them): the gap between the one-sided differences steady from the
    largest step down to the first (``UP`` steps, each a quarter of the one before), as a jump
    in the derivative keeps it, where truncation shrinks it fourfold a step and rounding grows
    it fourfold. At a kink, central differences converge to the mean of the two sides, which
    is no derivative: such a point is never settled by extrapolation."""
    phi0 = np.asarray(phi0, np.float64).reshape(-1, 1)
    with np.errstate(all="ignore"):
        gap = np.abs((up - phi0) / hs - (phi0 - down) / hs)[:, : UP + 1]
        ratio = gap[:, 1:] / gap[:, :-1]
        steady = (ratio >= 0.5) & (ratio <= 2.0)
    return np.all(steady, axis=1) & (gap[:, -1] > 0)


def failing(analytic, numeric, slack, tol: float, scale) -> np.ndarray:
    """Which ``analytic`` values a comparison with ``numeric`` fails: further than ``slack``
    plus ``tol * scale`` (per element), NaN included."""
    with np.errstate(all="ignore"):
        off = np.abs(np.asarray(analytic) - np.asarray(numeric)) - slack
        return ~(off <= tol * np.asarray(scale))


def unresolved(analytic, slack, tol: float, scale) -> np.ndarray:
    """Where the rule says exactly 0 and the first step cannot tell: its noise allowance
    ``slack`` exceeds the tolerance (a derivative a billionth the size of the others is
    rounding at that step)."""
    return (np.asarray(analytic) == 0) & (np.asarray(slack) > tol * np.asarray(scale))


def settle(numeric, slack, estimate, error, tol: float, scale, atol=0.0, zero=None) -> tuple:
    """``numeric`` and ``slack`` with the sweep's ``estimate`` (slack: twice its ``error``,
    plus the caller's ``atol``) where that error is within ``SETTLE * tol * scale``, or, at the
    points ``zero`` (:func:`unresolved`), where the estimate is tighter than the first step's
    and clearly not 0 (ten times its error); and which were settled so."""
    ours = 2 * error + atol
    good = error <= SETTLE * tol * np.asarray(scale)
    if zero is not None:
        good |= zero & (ours < slack) & (10 * error < np.abs(estimate))
    good &= np.isfinite(estimate)
    return np.where(good, estimate, numeric), np.where(good, ours, slack), good
