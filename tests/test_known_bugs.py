"""The ecosystem's derivative bugs, re-created small, each caught by the check named beside it;
and correct functions from jax.nn, jax.numpy, jax.scipy.special, optax and flax, at ordinary
inputs and at their kinks and edges, with no false alarm. Both with a reference (the function
done right) and without one (``reference=None``: finite differences and the contract alone).

Each bug cites the thread it comes from; the functions are written here, small, to show the
same mistake (a backward written by hand, or autodiff through an expression that needs one).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxchain import check

KEY = jax.random.key(0)


def _normal(shape, i=0):
    return jax.random.normal(jax.random.fold_in(KEY, i), shape)


def vjp_rule(forward, bwd):
    """A ``custom_vjp`` with ``forward`` and a hand-written ``bwd(args, g)``."""
    f = jax.custom_vjp(forward)
    f.defvjp(lambda *a: (forward(*a), a), bwd)
    return f


def jvp_rule(forward, jvp):
    """A ``custom_jvp`` with ``forward`` and a hand-written ``jvp(args, tangents)``."""
    f = jax.custom_jvp(forward)
    f.defjvp(lambda a, t: (forward(*a), jvp(a, t)))
    return f


@dataclasses.dataclass(frozen=True)
class Bug:
    """A re-created bug: ``f`` at ``args``, the ``reference`` done right, the ``thread`` it
    comes from, and the check that must fail with a reference and without one."""

    thread: str
    f: Callable
    reference: Callable
    args: tuple
    with_reference: str
    without_reference: str
    mode: str = "vjp"
    options: dict = dataclasses.field(default_factory=dict)


# --- the bugs --------------------------------------------------------------------------------


def _sinc_taylor(x):
    """sinc from its series, exact in float64 (and in its derivatives) for |x| <= 1/2:
    the reference that jnp.sinc, whose derivative is inaccurate near 0, cannot be."""
    px2 = (jnp.pi * x) ** 2
    terms = [(-px2) ** k / float(np.prod(np.arange(1, 2 * k + 2))) for k in range(10)]
    return sum(terms[1:], terms[0])


def _sinc_where(x):
    """sinc as ``where(x == 0, 1, sin(pi x) / (pi x))``: right value, wrong even derivatives at
    0 (the derivatives of the constant branch)."""
    safe = jnp.where(x == 0, 1.0, x)
    return jnp.where(x == 0, 1.0, jnp.sin(jnp.pi * safe) / (jnp.pi * safe))


def _sinc_bwd_near_zero(a, g):
    (x,) = a
    px = jnp.pi * x  # d sinc = (cos(pi x) pi x - sin(pi x)) / (pi x**2): cancels near 0
    return (g * (jnp.cos(px) * px - jnp.sin(px)) / (jnp.pi * x**2),)


def _sinc_bwd_where(a, g):
    (x,) = a
    safe = jnp.where(x == 0, 1.0, x)
    px = jnp.pi * safe  # right at first order, its own derivative at 0 is that of a constant
    return (g * jnp.where(x == 0, 0.0, (jnp.cos(px) * px - jnp.sin(px)) / (jnp.pi * safe**2)),)


@jax.custom_vjp
def _cube_bwd(x, g):
    return 3 * x**2 * g  # the backward of x**3, itself a custom_vjp (jax#21220)


_cube_bwd.defvjp(
    lambda x, g: (_cube_bwd(x, g), (x, g)),
    lambda r, gg: (6 * r[0] * r[1] * gg, jnp.zeros_like(r[1])),  # d/dg dropped: should be 3x**2
)
_cube = vjp_rule(lambda x: x**3, lambda a, g: (_cube_bwd(a[0], g),))


def _abs_jvp(a, t):
    (x,), (tx,) = a, t
    return jnp.where(x > 0, tx, jnp.where(x < 0, -tx, jnp.abs(tx)))  # |t| at 0: not linear


def _weighted_log_softmax(x, w):
    return jnp.where(w == 0, 0.0, w * jax.nn.log_softmax(x))


def _weighted_log_softmax_jvp(a, t, safe=False):
    (x, w), (tx, tw) = a, t
    logp = jax.nn.log_softmax(x)
    dlogp = tx - jnp.sum(jax.nn.softmax(x) * tx)
    term = tw * (jnp.where(jnp.isfinite(logp), logp, 0.0) if safe else logp)  # 0 * -inf = NaN
    return jnp.where(w == 0, 0.0, w * dlogp) + term


def _lse_b(a, b):
    return jnp.log(jnp.sum(b * jnp.exp(a)))


def _lse_b_bwd(args, g):
    a, b = args
    p = b * jnp.exp(a - _lse_b(a, b))
    db = jnp.where(b != 0, jnp.exp(a - _lse_b(a, b)), 0.0)  # zero where b == 0 (jax#22398)
    return g * p, g * db


def _nondeterministic(x, g):
    rng = np.random.default_rng()

    def noisy(y):
        return np.asarray(y + rng.uniform(0, 1e-9, np.shape(y)), np.asarray(y).dtype)

    spec = jax.ShapeDtypeStruct(jnp.shape(g), g.dtype)
    return (jax.pure_callback(noisy, spec, g * jnp.cos(x), vmap_method="expand_dims"),)


@jax.custom_batching.custom_vmap
def _cos_times(x, g):
    return g * jnp.cos(x)


@_cos_times.def_vmap
def _cos_times_batched(axis_size, in_batched, x, g):
    return jnp.zeros(jnp.broadcast_shapes(x.shape, g.shape), g.dtype), True  # batch dropped


def _sin_tiny_cos(x, y):
    return jnp.sin(x) + 1e-9 * jnp.cos(y)


def _normalize(v):
    return v / jnp.sqrt(jnp.sum(v**2, axis=1, keepdims=True) + 1e-6)


def _normalize_bwd(a, g):
    (v,) = a
    n = jnp.linalg.norm(v, axis=1, keepdims=True)  # the eps forgotten: 0 / 0 at a zero row
    u = v / n
    return ((g - u * jnp.sum(g * u, axis=1, keepdims=True)) / n,)


def _tanh3(x):
    return jnp.tanh(jnp.tanh(jnp.tanh(x)))


def _tanh3_bwd(a, g):
    y = _tanh3(a[0])  # the last state's derivative used for every step
    return (g * (1 - y**2) ** 3,)


STEPS, DT = 20, 0.05


def _euler(a, y0):
    return y0 * (1 - a * DT) ** STEPS  # dy/dt = -a y, explicit Euler


def _euler_bwd_wrong_sign(args, g):
    (a, y0), steps, dt = args, STEPS, DT
    growth = (1 + a * dt) ** steps  # the adjoint solved forward in time: grows, not decays
    return jnp.sum(g * y0) * steps * (1 + a * dt) ** (steps - 1) * -dt, g * growth


def _clip_by_norm(g, c=1.0):
    return g * jnp.minimum(1.0, c / jnp.linalg.norm(g))  # NaN gradient at g == 0


def _clip_by_norm_safe(g, c=1.0):
    n2 = jnp.sum(g**2)
    n = jnp.sqrt(jnp.where(n2 > 0, n2, 1.0))
    return g * jnp.where(n2 > 0, jnp.minimum(1.0, c / n), 1.0)


def _where_sqrt(x):
    return jnp.where(x < 1, x, jnp.sqrt(x))  # the untaken sqrt branch's NaN leaks at 0


def _where_sqrt_safe(x):
    return jnp.where(x < 1, x, jnp.sqrt(jnp.where(x < 1, 1.0, x)))


def _times(x, n):
    return x * n.astype(x.dtype)


def _int_tangent(x):
    return x**2, jnp.argmax(x)


X7 = jnp.linspace(-2.0, 2.0, 7)
X_SINC = jnp.array([0.0, 0.3, -0.45])
BUGS = {
    "clipped cotangent": Bug(
        "jax-ml/jax#2930",
        vjp_rule(jnp.sin, lambda a, g: (jnp.clip(g, -1, 1) * jnp.cos(a[0]),)),
        jnp.sin, (X7,), "linearity", "linearity"),
    "nested rule drops d/dg": Bug(
        "jax-ml/jax#21220", _cube, lambda x: x**3, (X7,),
        "second order (cotangent)", "second order (cotangent, fd)"),
    "sinc'' at 0 from a where": Bug(
        "jax-ml/jax#5054", _sinc_where, _sinc_taylor, (X_SINC,),
        "second order", "second order (fd)", mode="jvp"),
    "sinc backward's derivative at 0": Bug(
        "pytorch/pytorch#89459", vjp_rule(_sinc_where, _sinc_bwd_where), _sinc_taylor,
        (X_SINC,), "second order", "second order (fd)"),
    "sinc' cancels near 0": Bug(
        "jax-ml/jax#34139", vjp_rule(_sinc_taylor, _sinc_bwd_near_zero), _sinc_taylor,
        # an error of 1e-8 in a function of scale 1 is below any finite difference, but the
        # cancellation shows as eager and jitted gradients 1e-4 apart
        (jnp.array([1e-8, -3e-8]),), "vjp", "eager vs jit"),
    "xlogy d/dx at x = 0": Bug(
        "pytorch/pytorch#80770",
        vjp_rule(lambda x, y: x * jnp.log(y),
                 lambda a, g: (g * jnp.where(a[0] == 0, 0.0, jnp.log(a[1])), g * a[0] / a[1])),
        lambda x, y: x * jnp.log(y), (jnp.array([0.0, 0.5, 2.0]), jnp.array([0.3, 1.5, 2.0])),
        "vjp", "finite differences"),
    "squared norm NaN at 0": Bug(
        "jax-ml/jax#4177",
        vjp_rule(lambda x: jnp.linalg.norm(x) ** 2,
                 lambda a, g: (g * 2 * jnp.linalg.norm(a[0]) * a[0] / jnp.linalg.norm(a[0]),)),
        lambda x: jnp.sum(x**2), (jnp.zeros(4),), "vjp", "finite differences"),
    "elu NaN for large inputs": Bug(
        "jax-ml/jax#1538", lambda x: jnp.where(x > 0, x, jnp.expm1(x)), jax.nn.elu,
        (jnp.array([800.0, 1.5, -0.5]),), "vjp", "finite differences"),
    "jvp |t| at 0": Bug(
        "jax-ml/jax#12158", jvp_rule(jnp.abs, _abs_jvp), jnp.abs,
        (jnp.array([0.0, 1.0, -2.0]),), "linearity", "linearity", mode="jvp"),
    "0 * -inf tangent": Bug(
        "google-deepmind/optax#1762", jvp_rule(_weighted_log_softmax, _weighted_log_softmax_jvp),
        jvp_rule(_weighted_log_softmax,
                 lambda a, t: _weighted_log_softmax_jvp(a, t, safe=True)),
        (jnp.array([-jnp.inf, 0.3, -0.2]), jnp.array([0.0, 1.0, 0.5])),
        "zero tangent", "zero tangent", mode="jvp", options={"argnums": (0,)}),
    "x ** 0 NaN at 0": Bug(
        "jax-ml/jax#12409",
        vjp_rule(lambda x: x**0.0, lambda a, g: (g * 0.0 * a[0] ** -1.0,)),
        lambda x: jnp.ones_like(x) + 0 * x, (jnp.array([0.0, 0.5, 2.0]),),
        "vjp", "finite differences"),
    "logsumexp d/db at b = 0": Bug(
        "jax-ml/jax#22398", vjp_rule(_lse_b, _lse_b_bwd), _lse_b,
        (jnp.array([0.1, -0.3, 0.5]), jnp.array([1.0, 0.0, 2.0])), "vjp", "finite differences"),
    "matvec drops the vector": Bug(
        "jax-ml/jax#17496",
        vjp_rule(lambda m, v: m @ v, lambda a, g: (jnp.outer(g, a[1]), jnp.zeros_like(a[1]))),
        lambda m, v: m @ v, (_normal((3, 4)), _normal((4,), 1)), "vjp", "finite differences"),
    "gradient without a cotangent": Bug(
        "jax-ml/jax#6523",
        vjp_rule(jnp.sin, lambda a, g: (g * jnp.cos(a[0]) + 1e-3 * a[0],)),
        jnp.sin, (X7,), "zero cotangent", "zero cotangent"),
    "backward of the wrong shape": Bug(
        "jax-ml/jax#28757",
        vjp_rule(jnp.sin, lambda a, g: (jnp.ones(10) * jnp.sum(g),)),
        jnp.sin, (X7,), "contract", "contract"),
    "float cotangent for an integer": Bug(
        "jax-ml/jax#23779",
        vjp_rule(_times, lambda a, g: (g * a[1].astype(g.dtype), g * a[0])),  # float for n
        _times, (X7, jnp.arange(7)), "contract", "contract"),
    "integer tangent for an integer output": Bug(
        "patrick-kidger/diffrax#508",
        jvp_rule(_int_tangent, lambda a, t: (2 * a[0] * t[0], jnp.zeros((), jnp.int32))),
        _int_tangent, (X7,), "contract", "contract", mode="jvp"),
    "complex gradient conjugated": Bug(
        "pytorch/pytorch#60180",
        vjp_rule(lambda z: z * z, lambda a, g: (g * jnp.conj(2 * a[0]),)),
        lambda z: z * z, (jnp.array([0.8 + 0.3j, -0.2 + 1.1j]),), "vjp", "finite differences"),
    "weight norm NaN at a zero row": Bug(
        "google/flax#1671", vjp_rule(_normalize, _normalize_bwd), _normalize,
        (jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, -1.0]]),), "vjp", "finite differences"),
    "loop backward uses the last state": Bug(
        "patrick-kidger/equinox#408", vjp_rule(_tanh3, _tanh3_bwd), _tanh3, (X7,),
        "vjp", "finite differences"),
    "adjoint solved with the wrong sign": Bug(
        "patrick-kidger/diffrax#596", vjp_rule(_euler, _euler_bwd_wrong_sign), _euler,
        (jnp.array(0.7), jnp.array([1.0, -2.0])), "vjp", "finite differences"),
    "norm NaN at 0": Bug(
        "pytorch/pytorch#2421",
        vjp_rule(lambda x: jnp.linalg.norm(x), lambda a, g: (g * a[0] / jnp.linalg.norm(a[0]),)),
        lambda x: optax.safe_norm(x, 0.0), (jnp.zeros(3),), "vjp", "finite differences"),
    "where leaks sqrt's NaN": Bug(
        "jax-ml/jax#5798", _where_sqrt, _where_sqrt_safe, (jnp.array([0.0, 2.0, 0.5]),),
        "vjp", "finite differences"),
    "clip by norm NaN at 0": Bug(
        "jax-ml/jax#2426", _clip_by_norm, _clip_by_norm_safe, (jnp.zeros(3),),
        "vjp", "finite differences"),
    "nondeterministic backward": Bug(
        "pytorch/pytorch#56202", vjp_rule(jnp.sin, lambda a, g: _nondeterministic(a[0], g)),
        jnp.sin, (X7,), "determinism", "determinism"),
    # found by an audit: a leaf a billionth the size of another, dropped by the backward,
    # hid under the floor the other leaf sets
    "backward drops a tiny leaf": Bug(
        "jaxchain#31", vjp_rule(_sin_tiny_cos, lambda a, g: (g * jnp.cos(a[0]), 0 * a[1])),
        _sin_tiny_cos, (X7, X7 + 1), "vjp", "finite differences"),
    "backward loses the batch": Bug(
        "pytorch/functorch#922", vjp_rule(jnp.sin, lambda a, g: (_cos_times(a[0], g),)),
        jnp.sin, (X7,), "vmap", "vmap"),
}  # fmt: skip


def _run(bug: Bug, reference) -> check.Report:
    run = check.check_vjp if bug.mode == "vjp" else check.check_jvp
    return run(bug.f, reference, *bug.args, **bug.options)


@pytest.mark.parametrize("against", ["reference", "none"])
@pytest.mark.parametrize("name", sorted(BUGS))
def test_known_bug_is_caught(name, against, xla_optimizes):
    bug = BUGS[name]
    if bug.without_reference == "eager vs jit" and against == "none" and not xla_optimizes:
        pytest.skip("eager and jitted differ only when XLA optimizes: make thorough")
    expected = bug.with_reference if against == "reference" else bug.without_reference
    report = _run(bug, bug.reference if against == "reference" else None)
    assert not report.ok, f"{bug.thread} not caught:\n{report}"
    assert expected in report.failed, f"{bug.thread}: {expected} did not fail:\n{report}"


def test_there_are_enough_bugs_from_enough_trackers():
    trackers = {b.thread.split("#")[0] for b in BUGS.values()}
    assert len(BUGS) >= 25
    assert {"jax-ml/jax", "pytorch/pytorch", "google-deepmind/optax", "google/flax"} <= trackers
    assert {"patrick-kidger/equinox", "patrick-kidger/diffrax"} <= trackers


def test_the_references_pass():
    """The bugs' references are right (so a bug's failure is the bug's)."""
    for name, bug in BUGS.items():
        if bug.with_reference in ("contract", "determinism", "vmap", "linearity"):
            continue  # the reference is the plain function
        run = check.check_vjp if bug.mode == "vjp" else check.check_jvp
        report = run(bug.reference, None, *bug.args, **bug.options)
        assert report.ok, f"{name}: its reference fails:\n{report}"


# --- correct functions: no false alarm -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Correct:
    """A correct function at ``args``; ``where`` says what is special about the point."""

    f: Callable
    args: tuple
    where: str = "ordinary inputs"
    mode: str = "vjp"
    options: dict = dataclasses.field(default_factory=dict)
    slow: bool = False


def _spd(n, i=0):
    a = _normal((n, n), i)
    return a @ a.T + n * jnp.eye(n)


def _flax(module, *inputs, **init):
    """A flax.linen module as a function of its params and inputs."""
    with jax.numpy_dtype_promotion("standard"):  # flax promotes float64 with float32
        params = module.init(jax.random.key(1), *inputs, **init)["params"]

    def apply(params, *xs):
        return module.apply({"params": params}, *xs)

    return apply, (params, *inputs)


def _flax_cases() -> dict[str, Correct]:
    import flax.linen as fnn

    x = _normal((3, 5), 7)
    cases = {
        "flax LayerNorm": _flax(fnn.LayerNorm(param_dtype=jnp.float64), x),
        "flax RMSNorm": _flax(fnn.RMSNorm(param_dtype=jnp.float64), x),
        "flax Dense": _flax(fnn.Dense(4, param_dtype=jnp.float64), x),
        "flax GroupNorm": _flax(fnn.GroupNorm(num_groups=1, param_dtype=jnp.float64), x),
    }
    attention = fnn.MultiHeadDotProductAttention(
        num_heads=2, qkv_features=4, param_dtype=jnp.float64
    )
    cases["flax attention (key bias 0 by symmetry)"] = _flax(attention, _normal((1, 3, 4), 8))
    return {k: Correct(f, a) for k, (f, a) in cases.items()}


def _near_singular(cond=1e7):
    """A 4 x 4 matrix with singular values 1, 1, 1 and ``1 / cond``."""
    u, _ = jnp.linalg.qr(_normal((4, 4), 12))
    v, _ = jnp.linalg.qr(_normal((4, 4), 13))
    return u @ jnp.diag(jnp.array([1.0, 1.0, 1.0, 1 / cond])) @ v.T


KINKS = jnp.array([0.0, -1.3, 0.7, 0.0, 2.1])
SIGNS = jnp.array([-1.5, -1.0, 0.0, 1.0, 6.0, 6.5])
P = jax.nn.softmax(_normal((5,), 3))
Q = jax.nn.softmax(_normal((5,), 4))
M = _normal((4, 4), 5)
LABELS = jnp.array([0.0, 1.0, 0.0, 0.0, 0.0])
CORRECT: dict[str, Correct] = {
    # jax.nn, at their kinks
    "relu at 0": Correct(jax.nn.relu, (KINKS,), "kink"),
    "relu6 at 0 and 6": Correct(jax.nn.relu6, (SIGNS,), "kinks"),
    "leaky_relu at 0": Correct(jax.nn.leaky_relu, (KINKS,), "kink"),
    "hard_tanh at +-1": Correct(jax.nn.hard_tanh, (SIGNS,), "kinks"),
    "elu": Correct(jax.nn.elu, (X7,)),
    "celu": Correct(jax.nn.celu, (X7,)),
    "selu": Correct(jax.nn.selu, (X7,)),
    "gelu": Correct(jax.nn.gelu, (X7,)),
    "gelu exact": Correct(lambda x: jax.nn.gelu(x, approximate=False), (X7,)),
    "silu": Correct(jax.nn.silu, (X7,)),
    "mish": Correct(jax.nn.mish, (X7,)),
    "softplus": Correct(jax.nn.softplus, (X7 * 10,)),
    "log_sigmoid": Correct(jax.nn.log_sigmoid, (X7 * 10,)),
    "sigmoid": Correct(jax.nn.sigmoid, (X7,)),
    "squareplus": Correct(jax.nn.squareplus, (X7,)),
    "glu": Correct(jax.nn.glu, (_normal((3, 4), 2),)),
    "softmax": Correct(jax.nn.softmax, (_normal((3, 5), 1),)),
    "softmax at 1e4": Correct(jax.nn.softmax, (1e4 + _normal((3, 5), 1),), "large offset"),
    "log_softmax": Correct(jax.nn.log_softmax, (_normal((3, 5), 1),)),
    "log_softmax(where=)": Correct(
        lambda x: jax.nn.log_softmax(x, where=jnp.array([True, False, True, True])),
        (_normal((2, 4), 2),), "-inf outputs by design"),
    "standardize": Correct(jax.nn.standardize, (_normal((3, 5), 2),)),
    # jax.numpy
    "abs at 0": Correct(jnp.abs, (KINKS,), "kink"),
    "maximum at a tie": Correct(jnp.maximum, (jnp.array([1.0, 0.5]), jnp.array([1.0, -2.0])),
                                "tie"),
    "sqrt": Correct(jnp.sqrt, (jnp.array([0.3, 1.0, 4.0]),)),
    "log1p, expm1": Correct(lambda x: (jnp.log1p(x), jnp.expm1(x)), (jnp.abs(X7) + 0.1,)),
    "arctan2": Correct(jnp.arctan2, (_normal((4,), 1), _normal((4,), 2))),
    "hypot": Correct(jnp.hypot, (_normal((4,), 1), _normal((4,), 2))),
    "cumsum, cumprod": Correct(lambda x: (jnp.cumsum(x), jnp.cumprod(x)), (X7 + 3,)),
    "tanh, forward mode": Correct(jnp.tanh, (X7,), mode="jvp"),
    "softmax, forward mode": Correct(jax.nn.softmax, (_normal((3, 5), 1),), mode="jvp"),
    "relu at 0, forward mode": Correct(jax.nn.relu, (KINKS,), "kink", mode="jvp"),
    "complex z * exp(z)": Correct(lambda z: z * jnp.exp(z), (jnp.array([0.3 + 0.2j, -1 + 1j]),),
                                  "holomorphic"),
    "complex |z|**2": Correct(lambda z: jnp.abs(z) ** 2, (jnp.array([0.3 + 0.2j, -1 + 1j]),),
                              "not holomorphic"),
    "top_k values": Correct(lambda x: jax.lax.top_k(x, 2), (jnp.array([0.3, 2.0, -1.0, 1.1]),),
                            "an integer output"),
    # jax.numpy.linalg and jax.scipy.linalg
    "det": Correct(jnp.linalg.det, (M,)),
    "slogdet": Correct(lambda a: jnp.linalg.slogdet(a)[1], (M,)),
    "inv": Correct(jnp.linalg.inv, (M,)),
    "solve": Correct(jnp.linalg.solve, (M, _normal((4,), 6))),
    "cholesky": Correct(lambda a: jnp.linalg.cholesky(a + a.T), (_spd(4) / 2,)),
    "eigh values": Correct(lambda a: jnp.linalg.eigh(a + a.T)[0], (_spd(4),)),
    "svd values": Correct(lambda a: jnp.linalg.svd(a, compute_uv=False), (M,)),
    "qr": Correct(lambda a: jnp.linalg.qr(a)[1], (M,)),
    "norm": Correct(jnp.linalg.norm, (M,)),
    "expm": Correct(jax.scipy.linalg.expm, (M / 4,)),
    # jax.scipy.special, with edges
    "erf, erfc": Correct(lambda x: (jax.scipy.special.erf(x), jax.scipy.special.erfc(x)), (X7,)),
    "gammaln, digamma": Correct(lambda x: (jax.scipy.special.gammaln(x),
                                           jax.scipy.special.digamma(x)), (jnp.abs(X7) + 0.5,)),
    "xlogy at x = 0": Correct(jax.scipy.special.xlogy,
                              (jnp.array([0.0, 0.5, 2.0]), jnp.array([0.3, 1.5, 2.0])), "edge"),
    "xlog1py": Correct(jax.scipy.special.xlog1py,
                       (jnp.array([0.0, 0.5, 2.0]), jnp.array([0.3, 1.5, 2.0]))),
    "logit, expit": Correct(lambda p: (jax.scipy.special.logit(p), jax.scipy.special.expit(p)),
                            (P,)),
    "ndtr, ndtri": Correct(lambda p: (jax.scipy.special.ndtr(p), jax.scipy.special.ndtri(p)),
                           (jnp.array([0.01, 0.3, 0.99]),), "near the domain's ends"),
    "log_ndtr": Correct(jax.scipy.special.log_ndtr, (X7 * 5,)),
    "i0e, i1e": Correct(lambda x: (jax.scipy.special.i0e(x), jax.scipy.special.i1e(x)), (X7,)),
    "entr": Correct(jax.scipy.special.entr, (P,)),
    "logsumexp with b > 0": Correct(lambda a, b: jax.scipy.special.logsumexp(a, b=b),
                                    (_normal((4,), 1), jnp.array([0.5, 1.0, 2.0, 0.1]))),
    # optax losses
    "softmax_cross_entropy": Correct(optax.softmax_cross_entropy, (_normal((3, 5), 1), P[None])),
    "sigmoid_binary_cross_entropy": Correct(optax.sigmoid_binary_cross_entropy,
                                            (X7, jnp.abs(X7) / 2)),
    "huber_loss at delta": Correct(optax.huber_loss, (jnp.array([1.0, -1.0, 0.3, 2.0]),),
                                   "kink of the second derivative"),
    "l2_loss": Correct(optax.l2_loss, (X7,)),
    "log_cosh": Correct(optax.log_cosh, (X7,)),
    "kl_divergence": Correct(lambda p, q: optax.kl_divergence(jnp.log(p), q), (P, Q)),
    "cosine_similarity": Correct(optax.cosine_similarity, (_normal((5,), 1), _normal((5,), 2))),
    "hinge_loss at the margin": Correct(optax.hinge_loss,
                                        (jnp.array([1.0, 0.3, -2.0]), jnp.array([1.0, 1.0, -1.0])),
                                        "kink", options={"argnums": (0,)}),
    "sparsemax_loss": Correct(optax.losses.sparsemax_loss, (_normal((5,), 1), LABELS),
                              "labels held fixed", options={"argnums": (0,)}),
    "sigmoid_focal_loss": Correct(optax.sigmoid_focal_loss, (X7, (X7 > 0).astype(float)),
                                  "labels held fixed", options={"argnums": (0,)}),
    "safe_norm": Correct(lambda x: optax.safe_norm(x, 1e-3), (_normal((5,), 1),)),
    # found by an audit: its false alarms
    "logsumexp, an all-masked row": Correct(lambda a: jax.nn.logsumexp(a, axis=-1),
                                            (jnp.array([[0.3, -1.0, 2.0], [-jnp.inf] * 3]),),
                                            "an output of -inf from inputs of -inf"),
    "standardize at 1e4": Correct(jax.nn.standardize, (1e4 + _normal((3, 6), 9),),
                                  "large offset, eager against jit"),
    "standardize 1e3 to 1e4, forward mode": Correct(
        jax.nn.standardize, (jnp.linspace(1e3, 1e4, 8)[None] + _normal((3, 8), 10),),
        "offsets across a row", mode="jvp"),
    "norm with an epsilon at 0": Correct(lambda x: jnp.sqrt(jnp.sum(x**2) + 1e-12),
                                         (jnp.zeros(3),), "second order at the norm's zero"),
    "gammaln over sixteen orders": Correct(jax.scipy.special.gammaln,
                                           (jnp.logspace(-12, 4, 17),), "mixed magnitudes"),
    "solve, nearly singular": Correct(jnp.linalg.solve, (_near_singular(), _normal((4,), 11)),
                                      "condition number 1e7"),
}  # fmt: skip


def _all_correct() -> dict[str, Correct]:
    return {**CORRECT, **_flax_cases()}


@pytest.mark.parametrize("against", ["autodiff", "none"])
@pytest.mark.parametrize("name", sorted(_all_correct()))
def test_correct_function_passes(name, against):
    case = _all_correct()[name]
    run = check.check_vjp if case.mode == "vjp" else check.check_jvp
    with jax.numpy_dtype_promotion("standard"):
        report = run(case.f, case.f if against == "autodiff" else None, *case.args, **case.options)
    assert report.ok, f"false alarm on {name} ({case.where}):\n{report}"


def test_there_are_enough_correct_functions():
    assert len(_all_correct()) >= 40


def _relu6_with(slope_at_kinks: float, slope_inside: float = 1.0):
    """relu6 whose backward gives ``slope_inside`` on (0, 6) and ``slope_at_kinks`` at 0 and 6."""

    @jax.custom_vjp
    def f(x):
        return jax.nn.relu6(x)

    def bwd(x, g):
        inside = jnp.where((x > 0) & (x < 6), slope_inside, 0.0)
        return (g * jnp.where((x == 0) | (x == 6), slope_at_kinks, inside),)

    f.defvjp(lambda x: (f(x), x), bwd)
    return f


@pytest.mark.parametrize("seed", range(6))
def test_several_kinks_under_one_direction_are_no_false_alarm(seed):
    """Found by this suite's own draws: with two inputs on kinks (relu6 at 0 and at 6), the
    direction's derivative need not lie between its one-sided differences, and a coordinate
    whose jump is small beside the leaf's other differences was "settled" by Richardson at the
    mean of its two sides. Any subgradient (0, 1 or between) passes against finite
    differences at every seed, jax.nn's (0) against autodiff too; a slope outside [0, 1] at a
    kink, or a wrong slope inside, fails."""
    for slope, reference in ((0.0, None), (0.5, None), (1.0, None), (0.0, jax.nn.relu6)):
        # 0.5, an isolated value between the sides: the gradient itself jumps at the kink,
        # where its differences grow as 1 / h (second order: not a derivative to compare)
        options = {"second_order": slope in (0.0, 1.0)}
        report = check.check_vjp(_relu6_with(slope), reference, SIGNS, seed=seed, **options)
        assert report.ok, f"slope {slope}, seed {seed}:\n{report}"
    for wrong in (_relu6_with(1.5), _relu6_with(0.0, slope_inside=1.01)):
        assert not check.check_vjp(wrong, None, SIGNS, seed=seed).ok
