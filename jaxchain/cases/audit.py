"""``jaxchain audit``: the checker over the custom rules and tricky numerics of the installed
jax.numpy, jax.scipy.special, optax and flax, and of lineax, optimistix, diffrax and equinox
where they are installed (:mod:`~jaxchain.cases.audit_libraries`), one recipe per function in
:data:`RECIPES` (like :data:`jaxchain.cases.registry.RULES`).

Each recipe names a function, a point, and the derivative there known exactly (from the
math, in float64); the audit computes the library's derivative (a derivative that raises is
a finding too), runs :func:`jaxchain.check.check_vjp` at that point where the recipe says
(without a reference, or against an independent one), and writes what it found to
``bench/AUDIT.md``.
"""

from jaxchain._extras import require

require("flax", __name__)  # before the imports that need it

import dataclasses
import importlib.metadata
import importlib.util
import math
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain._arguments import ArgumentError, literal
from jaxchain.cases import audit_libraries as libs


@dataclasses.dataclass(frozen=True)
class Recipe:
    """``derivative(x)`` (JAX's, at the point) against ``exact`` (the math's)."""

    name: str
    derivative: Callable[[], float]
    exact: float
    point: str
    why: str
    check: Callable[[], object] | None = None  # the checker's run at the point
    requires: str = ""  # the library the recipe needs, beyond jax, optax and flax


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


def _safe_norm_at_0():
    import optax

    return float(jax.grad(lambda x: optax.safe_norm(x, 0.0))(jnp.zeros(2))[0])


def _sigmoid_bce_tail():
    import optax

    return float(jax.grad(lambda x: optax.sigmoid_binary_cross_entropy(x, 1.0))(40.0))


def _softmax_ce_at_offset(z):
    import optax

    return optax.softmax_cross_entropy(z, jnp.array([0.0, 1.0]))


def _softmax_ce_offset():
    return float(jax.grad(_softmax_ce_at_offset)(jnp.array([1e4, 1e4 + 1]))[0])


def _flax_layer_norm(offset: float):
    def derivative():
        import flax.linen as fnn

        norm = fnn.LayerNorm(use_bias=False, use_scale=False)  # epsilon 1e-6
        return float(jax.grad(lambda x: norm.apply({}, x)[0])(offset + jnp.array([-1.0, 0, 1]))[0])

    return derivative


def _layer_norm_exact() -> float:
    """d y0 / d x0 of a layer norm of ``(-1, 0, 1)`` (any offset), epsilon 1e-6: ``(1 - 1/n) / s
    - (x0 - m)**2 / (n s**3)`` with ``s**2 = 2/3 + 1e-6``."""
    s = math.sqrt(2 / 3 + 1e-6)
    return (2 / 3) / s - 1 / (3 * s**3)


def _expn0_prime():
    return float(jax.grad(lambda x: jax.scipy.special.expn(0, x))(1.0))


def _expn2_second():
    return float(jax.hessian(lambda x: jax.scipy.special.expn(2, x))(1.0))


def _poch_value():
    return float(jax.scipy.special.poch(-3.0, 2.0))


def _poch_prime():
    return float(jax.grad(jax.scipy.special.poch)(-2.0, 5.0))


def _xlog1py_dy():
    return float(jax.grad(jax.scipy.special.xlog1py, argnums=1)(0.0, -1.0))


def _det_hessian():
    """d2 det / dA00 dA33 at diag(1, 1, 1, 0): the minor of rows and columns 1, 2."""
    return float(jax.hessian(jnp.linalg.det)(jnp.diag(jnp.array([1.0, 1, 1, 0])))[0, 0, 3, 3])


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
        Recipe("optax.safe_norm at 0", _safe_norm_at_0, 0.0, "x = (0, 0), min_norm = 0",
               "the gradient safe_norm promises at 0: 0, not NaN"),
        Recipe("optax.sigmoid_binary_cross_entropy tail", _sigmoid_bce_tail,
               -1 / (1 + math.exp(40)), "logit 40, label 1",
               "d/dz = sigmoid(z) - 1 = -1 / (1 + e**40), kept to its last digits"),
        Recipe("optax.softmax_cross_entropy at 1e4", _softmax_ce_offset, 1 / (1 + math.e),
               "logits (1e4, 1e4 + 1), labels (0, 1)", "softmax(z)[0] = 1 / (1 + e)",
               _check(_softmax_ce_at_offset, jnp.array([1e4, 1e4 + 1]))),
        Recipe("flax LayerNorm", _flax_layer_norm(0.0), _layer_norm_exact(), "x = (-1, 0, 1)",
               "a control: d y0 / d x0 of a layer norm"),
        Recipe("flax LayerNorm at 1e7", _flax_layer_norm(1e7), _layer_norm_exact(),
               "x = 1e7 + (-1, 0, 1)",
               "the same derivative: its variance E[x**2] - E[x]**2 (use_fast_variance, the "
               "default) cancels at an offset"),
        Recipe("tanh'", lambda: float(jax.grad(jnp.tanh)(0.5)), 1 - math.tanh(0.5) ** 2,
               "x = 0.5", "a control: 1 - tanh(x)**2"),
        Recipe("expn(0, x)'", _expn0_prime, -2 * math.exp(-1), "x = 1",
               "E0(x) = exp(-x) / x: E0' = -exp(-x) (1/x + 1/x**2)",
               _check(lambda x: jax.scipy.special.expn(0, x), jnp.array([1.0, 2.0]))),
        Recipe("expn(2, x)''", _expn2_second, math.exp(-1), "x = 1",
               "En' = -E(n-1): E2'' = E0 = exp(-x) / x; its JVP passes n - 1, an array, "
               "through nondiff_argnums"),
        Recipe("poch(-3, 2)", _poch_value, 6.0, "(z, m) = (-3, 2)",
               "a value, not a derivative: (-3)(-2) = 6"),
        Recipe("poch d/dz", _poch_prime, 4.0, "(z, m) = (-2, 5)",
               "z(z+1)(z+2)(z+3)(z+4): at -2 only the zero factor's derivative survives: "
               "(-2)(-1)(1)(2) = 4"),
        Recipe("xlog1py d/dy", _xlog1py_dy, 0.0, "(x, y) = (0, -1)",
               "x log1p(y) is identically 0 along x = 0, so d/dy = 0: the sibling of xlogy"),
        Recipe("det hessian, singular", _det_hessian, 1.0, "A = diag(1, 1, 1, 0), [0, 0, 3, 3]",
               "d2 det / dA00 dA33 is the minor of rows and columns 1, 2: 1 (jax#2821)"),
        Recipe("lineax linear_solve d/db", libs.lineax_db, libs.EXACT["lineax"],
               "A = ((2, 1), (1, 3)), b = (1, 2)", "x0 = (A^-1 b)_0: d/db0 = (A^-T e0)_0 = 3/5; "
               "checked against jnp.linalg.solve", libs.lineax_check, "lineax"),
        Recipe("lineax Cholesky d/dA, symmetric", libs.lineax_psd_dA, libs.EXACT["lineax psd"],
               "A, b as above, positive semidefinite tag",
               "d x0 / d A00 = -(A^-1)_00 x0; checked against jnp.linalg.solve with project= "
               "onto symmetric matrices (Cholesky reads one triangle)",
               libs.lineax_psd_check, "lineax"),
        Recipe("optimistix root_find d/da", libs.optimistix_da, libs.EXACT["optimistix"],
               "x**3 + x = a, a = 2", "implicit differentiation: dx/da = 1 / (3 x**2 + 1) = 1/4; "
               "checked against forty unrolled Newton steps at rtol 1e-8",
               libs.optimistix_check, "optimistix"),
        Recipe("diffrax BacksolveAdjoint d/dk", libs.diffrax_backsolve_dk, libs.EXACT["diffrax"],
               "y' = -k y, y(0) = 1, t = 1, k = 0.5", "d exp(-k) / dk = -exp(-k); the continuous "
               "adjoint checked against the discrete one at rtol 1e-6, linearity exact",
               libs.diffrax_backsolve_check, "diffrax"),
        Recipe("diffrax RecursiveCheckpointAdjoint d/dk", libs.diffrax_checkpoint_dk,
               libs.EXACT["diffrax"], "as above", "the default adjoint, checked by finite "
               "differences alone", libs.diffrax_checkpoint_check, "diffrax"),
        Recipe("equinox filter_checkpoint d/db", libs.equinox_db, libs.EXACT["equinox"],
               "tanh(W x + b), W = (1, 2), b = 0.5, x = (0.3, -0.1)",
               "1 - tanh(0.6)**2, through a Module (a pytree) and a checkpoint",
               libs.equinox_check, "equinox"),
    ]
}  # fmt: skip

TOLERANCE = 1e-6  # a derivative further than this from the math (relatively) is a finding


def installed(recipe: Recipe) -> bool:
    """Whether the library ``recipe`` needs is installed."""
    return not recipe.requires or importlib.util.find_spec(recipe.requires) is not None


def select(only=()) -> list[Recipe]:
    """The recipes named in ``only`` (all if empty) whose library is installed, in
    :data:`RECIPES`' order; an :class:`~jaxchain._arguments.ArgumentError` naming ``only`` for a
    name not there, or not installed."""
    unknown = sorted(set(only) - set(RECIPES))
    if unknown:
        raise ArgumentError(
            f"{{only}}: unknown recipe(s) {literal(', '.join(map(repr, unknown)))}; known: "
            + literal(", ".join(map(repr, RECIPES)))
        )
    missing = [f"{n!r} needs {RECIPES[n].requires}" for n in only if not installed(RECIPES[n])]
    if missing:
        raise ArgumentError(f"{{only}}: not installed: {literal('; '.join(missing))}")
    return [r for name, r in RECIPES.items() if (not only or name in only) and installed(r)]


def run(only=()) -> list[tuple[Recipe, float, float, str]]:
    """Each recipe of :func:`select`: the library's derivative, its relative error against the
    math (absolute where the math is 0; ``inf`` for NaN) and the checker's verdict at the
    point (``-`` where the recipe has no check). In float64 (turned on for the process) and
    JAX's standard dtype promotion, which the libraries are written for."""
    recipes = select(only)
    jax.config.update("jax_enable_x64", True)
    with jax.numpy_dtype_promotion("standard"):
        return [_run(r) for r in recipes]


def _run(r: Recipe) -> tuple[Recipe, float | str, float, str]:
    try:
        got = r.derivative()
    except Exception as e:  # a derivative that raises (expn's Hessian): the finding
        return r, f"raises {type(e).__name__}", math.inf, "-"
    err = abs(got - r.exact) / (abs(r.exact) if r.exact else 1.0) if np.isfinite(got) else math.inf
    verdict = "-"
    if r.check is not None:
        report = r.check()
        verdict = "ok" if report.ok else "FAILED: " + ", ".join(report.failed)
    return r, got, err, verdict


def table(rows) -> str:
    """The findings as a Markdown table."""
    lines = [
        "| function | point | library | exact | relative error | finding | check_vjp |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r, got, err, verdict in rows:
        found = "BUG" if not err <= TOLERANCE else "ok"
        got = got if isinstance(got, str) else f"{got:.10g}"
        lines.append(
            f"| {r.name} | {r.point} | {got} | {r.exact:.10g} | {err:.1e} | "
            f"{found}: {r.why} | {verdict} |"
        )
    return "\n".join(lines)


def write(rows, path) -> None:
    """``bench/AUDIT.md``: the table under the command and the versions it ran with."""
    names = ["jax", "optax", "flax", *dict.fromkeys(r.requires for r, *_ in rows if r.requires)]
    versions = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# jaxchain audit\n\n`jaxchain audit` ({versions}), each finding against the float64 "
        "math at the point shown; `check_vjp` is the checker's verdict there (without a "
        "reference, or against the independent one the finding names).\n\n" + table(rows) + "\n"
    )
