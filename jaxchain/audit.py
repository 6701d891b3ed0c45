"""``jaxchain audit``: the checker over the custom rules and tricky numerics of the installed
jax.numpy and jax.scipy.special, one recipe per function (like :data:`jaxchain.registry.RULES`).

Each recipe names a function, a point, and the derivative there known exactly (from the
math, in float64); the audit computes JAX's derivative, runs :func:`jaxchain.check.check_vjp`
without a reference at that point, and writes what it found to ``bench/AUDIT.md``.
"""

import dataclasses
import math
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Recipe:
    """``derivative(x)`` (JAX's, at the point) against ``exact`` (the math's)."""

    name: str
    derivative: Callable[[], float]
    exact: float
    point: str
    why: str
    check: Callable[[], object] | None = None  # the checker's run at the point


def _xlogy_dy():
    return float(jax.grad(jax.scipy.special.xlogy, argnums=1)(0.0, 0.0))


def _lse_db():
    f = lambda b: jax.scipy.special.logsumexp(jnp.zeros(2), b=b)  # noqa: E731
    return float(jax.grad(f)(jnp.array([1.0, 0.0]))[1])


def _i0_second():
    return float(jax.grad(jax.grad(jnp.i0))(0.0))


def _sinc_prime(x):
    return lambda: float(jax.grad(jnp.sinc)(x))


def _pow0():
    return float(jax.grad(lambda x: x**0.0)(0.0))


def _check(f, *args):
    from jaxchain import check

    return lambda: check.check_vjp(f, None, *args)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("xlogy d/dy", _xlogy_dy, 0.0, "(x, y) = (0, 0)",
               "x log y is identically 0 along x = 0, so d/dy = 0"),
        Recipe("logsumexp d/db", _lse_db, 0.5, "a = (0, 0), b = (1, 0)",
               "log(b1 + b2): d/db2 = 1 / (b1 + b2) = 1/2 (jax#22398)"),
        Recipe("i0''", _i0_second, 0.5, "x = 0", "I0(x) = 1 + x**2 / 4 + ...: I0''(0) = 1/2"),
        Recipe("sinc' at 1e-7", _sinc_prime(1e-7), -(math.pi**2) * 1e-7 / 3, "x = 1e-7",
               "sinc'(x) = -pi**2 x / 3 + O(x**3) (jax#34139)",
               _check(jnp.sinc, jnp.array([1e-7, 0.3]))),
        Recipe("sinc' at 1e-8", _sinc_prime(1e-8), -(math.pi**2) * 1e-8 / 3, "x = 1e-8",
               "sinc'(x) = -pi**2 x / 3 + O(x**3)"),
        Recipe("d/dx x**0.0", _pow0, 0.0, "x = 0", "x**0 = 1 for all x: derivative 0 (jax#12409)",
               _check(lambda x: x**0.0, jnp.array([0.0, 1.0]))),
        Recipe("tanh'", lambda: float(jax.grad(jnp.tanh)(0.5)), 1 - math.tanh(0.5) ** 2,
               "x = 0.5", "a control: 1 - tanh(x)**2"),
    ]
}  # fmt: skip


def run(only: list[str] | None = None) -> list[tuple[Recipe, float, float]]:
    """Each recipe's JAX derivative and relative error (``inf`` for NaN)."""
    jax.config.update("jax_enable_x64", True)
    rows = []
    for name, r in RECIPES.items():
        if only and name not in only:
            continue
        got = r.derivative()
        err = abs(got - r.exact) / max(abs(r.exact), 1e-300) if np.isfinite(got) else math.inf
        if r.exact == 0 and np.isfinite(got):
            err = abs(got)
        rows.append((r, got, err))
    return rows


def table(rows, checks: dict[str, str]) -> str:
    """The findings as a Markdown table."""
    lines = ["| function | point | JAX | exact | relative error | finding | check_vjp(None) |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]  # fmt: skip
    for r, got, err in rows:
        found = "BUG" if not err <= 1e-6 else "ok"
        lines.append(f"| {r.name} | {r.point} | {got:.6g} | {r.exact:.6g} | {err:.1e} | "
                     f"{found}: {r.why} | {checks.get(r.name, '-')} |")  # fmt: skip
    return "\n".join(lines)


def main(only: list[str] | None = None, out: str = "bench/AUDIT.md") -> int:
    rows = run(only)
    checks = {}
    for r, _, _ in rows:
        if r.check is not None:
            report = r.check()
            checks[r.name] = "ok" if report.ok else "FAILED: " + ", ".join(report.failed)
    text = table(rows, checks)
    print(text)
    if not only:
        pathlib.Path(out).write_text(
            f"# jaxchain audit\n\n`.venv/bin/jaxchain audit` (jax {jax.__version__}), each "
            "finding against the float64 math at the point shown.\n\n" + text + "\n"
        )
    return 0
