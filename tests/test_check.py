"""The checker can fail: wrong backward passes are reported, with the leaf and the index."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxchain import check, reference, rules
from jaxchain.cases.registry import RULES
from jaxchain.check import TOLERANCES, assert_vjp, check_vjp, tolerance


def _with_bwd(forward, bwd):
    """A custom_vjp with ``forward`` and a (planted) backward ``bwd(args, g)``."""
    f = jax.custom_vjp(forward)
    f.defvjp(lambda *a: (forward(*a), a), bwd)
    return f


def _tanh_off_by(factor):
    return _with_bwd(jnp.tanh, lambda a, g: (g * (1 - jnp.tanh(a[0]) ** 2) * factor,))


def _dense_transposed(a, g):
    x, w, _ = a
    return g @ w.T, (x.T @ g).T, g.sum(0)  # dW transposed: right shape only when I == O


def _softmax_without_correction(a, g):
    y = jax.nn.softmax(a[0])
    return (y * g,)  # the -<g, y> term dropped


def _tanh_first_order_only(a, g):
    y = jax.lax.stop_gradient(jnp.tanh(a[0]))  # right value, but invisible to second order
    return (g * (1 - y**2),)


PLANTED = {
    "factor 1.0001 off": (_tanh_off_by(1.0001), reference.tanh, "tanh"),
    "transposed dW": (
        _with_bwd(lambda x, w, b: x @ w + b[None], _dense_transposed),
        reference.dense,
        "dense",
    ),
    "dropped softmax term": (
        _with_bwd(lambda x: jax.nn.softmax(x), _softmax_without_correction),
        reference.softmax,
        "softmax",
    ),
}


def _args(name, dtype=jnp.float64):
    dims = {"I": 5, "O": 5} if name == "dense" else {}
    return RULES[name].args(0, dtype, **dims)


@pytest.mark.parametrize("planted", sorted(PLANTED))
@pytest.mark.parametrize("against", ["reference", "finite differences"])
def test_planted_bugs_fail(planted, against):
    f, ref, name = PLANTED[planted]
    report = check_vjp(f, ref if against == "reference" else None, *_args(name))
    assert not report.ok
    check = "vjp" if against == "reference" else "finite differences"
    assert any(not e.ok for e in report.errors if e.check == check)
    assert "vmap" not in report.failed  # one disagreement, reported once
    with pytest.raises(AssertionError, match="FAIL"):
        assert_vjp(f, ref if against == "reference" else None, *_args(name))


def test_float32_tolerance_still_catches_a_small_factor():
    f = _tanh_off_by(1.001)
    assert not check_vjp(f, reference.tanh, *_args("tanh", jnp.float32)).ok


def test_second_order_catches_a_backward_that_is_not_differentiable():
    f = _with_bwd(jnp.tanh, _tanh_first_order_only)
    x = _args("tanh")
    for ref in (reference.tanh, None):
        report = check_vjp(f, ref, *x)
        assert not report.ok
        failing = {e.check for e in report.errors if not e.ok}
        assert ("second order" if ref else "second order (fd)") in failing
        assert failing <= {"second order", "second order (fd)", "second order (fd) (direction)"}


def test_report_names_the_leaf_and_the_index_of_the_worst_element():
    def bwd(a, g):
        x, w, _ = a
        dw = (x.T @ g).at[1, 2].add(1e-3)  # one wrong element
        return g @ w.T, dw, g.sum(0)

    f = _with_bwd(lambda x, w, b: x @ w + b[None], bwd)
    report = check_vjp(f, reference.dense, *_args("dense"))
    bad = [e for e in report.errors if not e.ok]
    assert {e.leaf for e in bad} - {"all"} == {"w"}  # "all": the random direction's row
    assert all(e.index == (1, 2) for e in bad if e.check in ("vjp", "finite differences"))
    text = str(report)
    assert "FAILED" in text and "<-- FAIL" in text and "(1, 2)" in text


def test_a_small_failing_leaf_shows_the_jacobian_column_that_differs():
    """A backward that forgets a transpose (``w @ g`` for ``w.T @ g``): the column of the
    worst element of ``x`` is, in the rule, a row of ``w``; the report lists both."""

    @jax.custom_vjp
    def matvec(w, x):
        return w @ x

    matvec.defvjp(lambda w, x: (w @ x, (w, x)), lambda r, g: (jnp.outer(g, r[1]), r[0] @ g))
    w, x = jax.random.normal(jax.random.key(0), (3, 3)), jnp.arange(3.0)
    report = check_vjp(matvec, lambda w, x: w @ x, w, x)
    row = next(e for e in report.errors if e.check == "vjp" and e.leaf == "x")
    (j,) = row.index
    lines = str(report).split("Jacobian column d out / d x[" + str(j) + "]")[1].splitlines()[1:]
    listed = {line.split(":")[0].strip(): line.split(": ")[1] for line in lines if "out[" in line}
    for i in range(3):
        if w[j, i] != w[i, j]:
            assert listed[f"out[{i}]"] == f"{float(w[j, i]):.10g} vs {float(w[i, j]):.10g}"
    matvec.defvjp(lambda w, x: (w @ x, (w, x)), lambda r, g: (jnp.outer(g, r[1]), 2 * g @ r[0]))
    big = jax.random.normal(jax.random.key(1), (1100, 40))  # 1,100 outputs: no column
    assert check.vjp.JACOBIAN_MAX < big.shape[0]
    wide = check_vjp(matvec, lambda a, b: a @ b, big, jnp.ones(40))
    assert wide.failed[:1] == ("vjp",) and "Jacobian column" not in str(wide)


def test_what_cannot_be_checked_is_said_not_raised():
    """A backward through ``pure_callback`` cannot be differentiated again: second order is
    reported skipped, with JAX's reason, and the rest runs; an empty input is a note; a long
    leaf name widens its column instead of shifting the others."""

    @jax.custom_vjp
    def sin(x):
        return jnp.sin(x)

    def bwd(x, g):
        shape = jax.ShapeDtypeStruct(g.shape, g.dtype)
        return (jax.pure_callback(np.asarray, shape, g * jnp.cos(x), vmap_method="expand_dims"),)

    sin.defvjp(lambda x: (jnp.sin(x), x), bwd)
    report = check_vjp(sin, jnp.sin, jnp.linspace(-1.0, 1.0, 5))
    assert report.ok and "Pure callbacks do not support JVP" in report.skipped["second order"]
    assert report.max_rel("vjp") <= 1e-12 and report.max_rel("vmap") <= 1e-12
    empty = check_vjp(jnp.sin, jnp.sin, jnp.zeros((0, 3)))
    assert empty.ok and "no elements, not checked: x" in empty.notes
    name = "a_rather_long_parameter_name"
    table = str(check_vjp(lambda d: d[name] * 2, None, {name: jnp.ones(3)})).splitlines()[1:]
    assert len({line.index(" 0.00e+00") for line in table if "0.00e+00" in line}) == 1


def _callback_sin(factor):
    """sin whose backward goes through ``pure_callback`` (it cannot be differentiated
    again), off by ``factor``."""

    @jax.custom_vjp
    def sin(x):
        return jnp.sin(x)

    def bwd(x, g):
        shape = jax.ShapeDtypeStruct(g.shape, g.dtype)
        out = jax.pure_callback(np.asarray, shape, g * jnp.cos(x), vmap_method="expand_dims")
        return (factor * out,)

    sin.defvjp(lambda x: (jnp.sin(x), x), bwd)
    return sin


def _callback_jvp_sin(factor):
    """sin whose JVP goes through ``pure_callback``, off by ``factor``."""

    @jax.custom_jvp
    def sin(x):
        return jnp.sin(x)

    @sin.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
        dy = jax.pure_callback(np.asarray, shape, jnp.cos(x) * t, vmap_method="expand_dims")
        return jnp.sin(x), factor * dy

    return sin


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_first_order_differences_stand_when_second_order_cannot_run(factor):
    """without a reference, a function that cannot be differentiated twice
    lost its whole finite-difference group, first order included, and a derivative off by 2x
    came back ok. Second order is now skipped alone; the first order still judges."""
    x = jnp.linspace(-1.0, 1.0, 5)
    for report in (
        check_vjp(_callback_sin(factor), None, x),
        check.check_jvp(_callback_jvp_sin(factor), None, x),
    ):
        assert report.ok == (factor == 1.0), report
        assert "second order (fd)" in report.skipped, report
        assert not np.isnan(report.max_rel("finite differences")), report


def test_a_derivative_compared_with_nothing_is_not_ok():
    """No reference, and finite differences that cannot run (a function that raises once its
    input moves): the report must not say ok, and says why."""

    def fragile(x):
        return jax.pure_callback(_same_or_raise, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    @jax.custom_vjp
    def f(x):
        return fragile(x)

    f.defvjp(lambda x: (fragile(x), None), lambda _, g: (2 * g,))
    _same_or_raise.seen = None
    report = check_vjp(f, None, jnp.ones(3), vmap=False)
    assert not report.ok and "compared with nothing" in str(report), report
    assert "unchecked" in report.failed


def _same_or_raise(x):
    x = np.asarray(x)
    if _same_or_raise.seen is None:
        _same_or_raise.seen = x.copy()
    if not np.array_equal(x, _same_or_raise.seen):
        raise RuntimeError("moved")
    return x


def _softmax_bwd_times(factor):
    def bwd(a, g):
        y = jax.nn.softmax(a[0])
        return (factor * y * (g - jnp.sum(g * y, -1, keepdims=True)),)

    return bwd


def test_infinite_inputs_are_not_perturbed_and_a_bug_beside_them_is_caught():
    """``-inf`` logits (a masked softmax) made every finite difference
    through them NaN, a false alarm on correct code. Infinite inputs are now neither stepped
    nor sampled, and said so; a backward off by 2x is still caught, without a reference."""
    x = jnp.array([[0.3, -jnp.inf, 1.2, -0.5], [-jnp.inf, 0.1, 0.2, 2.0]])
    said = "2 input element(s) not finite: not perturbed, not compared"
    for report in (check_vjp(jax.nn.softmax, None, x), check.check_jvp(jax.nn.softmax, None, x)):
        assert report.ok and said in report.notes, report
    softmax = lambda z: jax.nn.softmax(z)  # noqa: E731  (custom_vjp: positional only)
    wrong = _with_bwd(softmax, _softmax_bwd_times(2.0))
    assert check_vjp(_with_bwd(softmax, _softmax_bwd_times(1.0)), None, x).ok
    assert "finite differences" in check_vjp(wrong, None, x).failed


def test_a_reference_that_raises_is_said_and_differences_still_judge():
    """check_vjp and check_jvp never raise for what the functions do: a reference that
    cannot run is a skipped row with its reason, and finite differences still judge."""

    def broken(x):
        raise RuntimeError("no reference here")

    x = jnp.linspace(0.1, 1.0, 4)
    for run in (check_vjp, check.check_jvp):
        report = run(jnp.sin, broken, x)
        assert report.ok and "no reference here" in str(report), report
        assert not np.isnan(report.max_rel("finite differences")), report


def _fails_when_run(x):
    """Its forward traces (a ``pure_callback``), but it cannot be differentiated, and it
    raises when run."""

    def boom(x):
        raise RuntimeError("this reference cannot run")

    return jax.pure_callback(boom, jax.ShapeDtypeStruct(x.shape, x.dtype), x)


def test_a_reference_that_fails_past_tracing_is_said_and_differences_judge():
    """A reference whose forward traces but which cannot be differentiated or run — also
    where ``f`` computes in float32 on float64 inputs, so that the tolerance itself asks the
    reference — is a skipped row with its reason; finite differences judge alone, second
    order included."""

    def narrow_sin(x):
        return jnp.sin(x.astype(jnp.float32)).astype(x.dtype)

    x = jnp.linspace(0.1, 1.0, 4)
    for f in (jnp.sin, narrow_sin):
        for run in (check_vjp, check.check_jvp):
            report = run(f, _fails_when_run, x, vmap=False)
            assert report.ok and "the reference failed" in str(report), report
            assert "second order (fd)" in {e.check for e in report.errors}, report


def test_python_numbers_among_the_arguments_are_named_as_constants():
    """a Python float among the arguments was held constant silently."""

    def scaled(x, alpha):
        return alpha * jnp.sin(x)

    said = "held fixed (Python numbers, not differentiated): alpha"
    for run in (check_vjp, check.check_jvp):
        report = run(scaled, None, jnp.linspace(0.1, 1.0, 4), 2.0)
        assert report.ok and said in report.notes, report


def test_an_approximate_derivative_is_judged_at_its_tolerance_and_linearity_stays_exact():
    """one tolerance for everything meant that a derivative approximate by
    design (an adjoint solved to 1e-5) could only pass with linearity loosened too. ``rtol``
    now sets the comparisons with the reference and finite differences; linearity keeps
    float64's, so a backward nonlinear in its cotangent by 1e-9 (relative) fails even at
    ``rtol=1e-4``, where it passed when ``rtol`` loosened linearity."""
    x = jnp.linspace(-1.0, 1.0, 6)
    approx = _with_bwd(jnp.sin, lambda a, g: (g * jnp.cos(a[0]) * (1 + 1e-5),))
    assert "vjp" in check_vjp(approx, jnp.sin, x).failed  # at float64's own tolerance
    assert "finite differences" in check_vjp(approx, None, x).failed  # at 1e-6
    assert check_vjp(approx, jnp.sin, x, rtol=1e-4).ok
    assert check_vjp(approx, None, x, rtol=1e-4).ok
    bent = _with_bwd(jnp.sin, lambda a, g: (g * jnp.cos(a[0]) + 1e-12 * g * jnp.abs(g),))
    report = check_vjp(bent, jnp.sin, x, rtol=1e-4)
    assert report.failed == ("linearity",), report


def _on_symmetric(factor):
    """``sum(sin(A) W)`` for symmetric ``A``, whose backward returns the symmetric part of
    the gradient (the derivative on symmetric matrices, as lineax's symmetric solves do),
    times ``factor``."""
    w = jnp.arange(9.0).reshape(3, 3) / 9.0

    def f(a):
        return jnp.sum(jnp.sin(a) * w)

    def bwd(a, g):
        full = g * jnp.cos(a[0]) * w
        return (factor * (full + full.T) / 2,)

    return _with_bwd(f, bwd), f


def _jvp_on_symmetric():
    """``sum(sin(A) W)`` whose JVP reads only the symmetric part of its tangent: right on
    symmetric matrices' tangent space, wrong off it."""
    w = jnp.arange(9.0).reshape(3, 3) / 9.0

    @jax.custom_jvp
    def f(a):
        return jnp.sum(jnp.sin(a) * w)

    @f.defjvp
    def _(primals, tangents):
        (a,), (t,) = primals, tangents
        return f(a), jnp.sum(jnp.cos(a) * w * (t + t.T) / 2)

    return f


def test_a_function_on_symmetric_matrices_is_checked_in_their_tangent_space():
    """a function defined on symmetric matrices failed finite differences
    along unsymmetric perturbations, with no way to give the tangent space. ``project=``
    gives it: the correct derivative passes, against the reference and finite differences;
    one off by 2x still fails."""
    a = jnp.array([[1.0, 0.2, -0.3], [0.2, 0.5, 0.1], [-0.3, 0.1, -0.7]])
    sym = lambda d: (d + d.T) / 2  # noqa: E731
    right, plain = _on_symmetric(1.0)
    assert not check_vjp(right, None, a, second_order=False).ok  # a false alarm without it
    for ref in (plain, None):
        report = check_vjp(right, ref, a, project=sym, second_order=False)
        assert report.ok and any("inputs projected" in n for n in report.notes), report
        wrong = check_vjp(_on_symmetric(2.0)[0], ref, a, project=sym, second_order=False)
        assert not wrong.ok, wrong
    jvp_sym = _jvp_on_symmetric()
    assert not check.check_jvp(jvp_sym, plain, a, second_order=False).ok  # unsymmetric t
    assert check.check_jvp(jvp_sym, plain, a, project=sym, second_order=False).ok
    assert check.check_jvp(jvp_sym, None, a, project=sym).ok


def test_correct_rule_passes_and_report_reads_well():
    report = check_vjp(
        rules.softmax_cross_entropy,
        reference.softmax_cross_entropy,
        *_args("softmax_cross_entropy"),
    )
    assert report.ok and report.max_rel("vjp") < TOLERANCES[jnp.dtype(jnp.float64)]
    leaves = {e.leaf for e in report.errors}
    assert leaves - {"all"} == {"logits", "out"}  # integer labels not differentiated
    checks = {e.check for e in report.errors}
    assert checks == {
        "eager vs jit",
        "forward",
        "vjp",
        "dtype",
        "zero cotangent",
        "linearity",
        "determinism",
        "vmap",
        "second order",
        "second order (cotangent)",
        "finite differences",
        "finite differences (direction)",
    }
    assert str(report).startswith("check_vjp(softmax_cross_entropy): ok")
    assert repr(report) == str(report)  # the table, not a dataclass dump


def test_pytree_arguments_and_outputs():
    def f(params, x):
        h = rules.tanh(rules.dense(x, params["w"], params["b"]))
        return {"h": h, "total": jnp.sum(h)}

    def ref(params, x):
        h = reference.tanh(reference.dense(x, params["w"], params["b"]))
        return {"h": h, "total": jnp.sum(h)}

    x, w, b = _args("dense")
    report = assert_vjp(f, ref, {"w": w, "b": b}, x)
    assert {e.leaf for e in report.errors} >= {"params['w']", "params['b']", "x"}
    assert {"out['h']", "out['total']"} <= {e.leaf for e in report.errors}


def test_mismatched_reference_and_no_floats_are_usage_errors():
    x = _args("tanh")[0]
    with pytest.raises(ValueError, match="reference returns"):
        check_vjp(rules.tanh, lambda x: jnp.sum(x), x)
    with pytest.raises(ValueError, match="nothing to differentiate"):
        check_vjp(lambda n: n * 1.0, None, jnp.arange(3))


def test_tolerance_is_that_of_the_least_precise_dtype():
    assert tolerance(jnp.float64, jnp.float32) == TOLERANCES[jnp.dtype(jnp.float32)]
    assert tolerance(jnp.int32) == TOLERANCES[jnp.dtype(jnp.float64)]


def test_nan_gradient_fails():
    f = _with_bwd(jnp.tanh, lambda a, g: (g * jnp.nan,))
    report = check_vjp(f, reference.tanh, *_args("tanh"))
    assert not report.ok and np.isnan(report.max_rel("vjp"))


# --- a sharper checker: planted bugs fail, correct third-party functions pass -----------------


def _with_backward(f, bwd):
    """``f`` with a hand-written backward ``bwd(x, g)`` (to plant bugs in)."""
    g = jax.custom_vjp(f)
    g.defvjp(lambda x: (f(x), x), lambda x, ct: (bwd(x, ct),))
    return g


def test_no_false_alarm_on_flax_layer_norm_computing_in_float32():
    import flax.linen as fnn

    layer = fnn.LayerNorm(dtype=jnp.float32, param_dtype=jnp.float64)

    def flax_layer_norm(x, scale, bias):
        return layer.apply({"params": {"scale": scale, "bias": bias}}, x).astype(jnp.float64)

    x = jax.random.normal(jax.random.key(0), (4, 6))
    with jax.numpy_dtype_promotion("standard"):  # flax mixes float32 and float64
        assert check.working_dtype(flax_layer_norm, x, jnp.ones(6), jnp.zeros(6)) == jnp.float32
        check.assert_vjp(flax_layer_norm, None, x, jnp.ones(6), jnp.zeros(6), second_order=False)


def test_no_false_alarm_on_jax_nn_attention_computing_in_float32():
    q, k, v = (
        jax.random.normal(key, (1, 5, 2, 4)) for key in jax.random.split(jax.random.key(1), 3)
    )
    attention = lambda q, k, v: jax.nn.dot_product_attention(q, k, v)  # noqa: E731
    with jax.numpy_dtype_promotion("standard"):  # jax.nn takes float32 logits
        check.assert_vjp(attention, reference.dot_product_attention, q, k, v)


def test_no_false_alarm_on_a_gradient_that_is_exactly_zero():
    """optax.safe_norm below its minimum is the constant 10: its gradient is exactly zero, and
    the finite differences are rounding noise."""
    check.assert_vjp(lambda x: optax.safe_norm(x, 10.0), None, jnp.array([1.0, 2.0, -0.5]))


def test_planted_bug_in_a_float32_function_is_still_caught_by_finite_differences():
    def f(x):
        return jnp.sin(x.astype(jnp.float32)).astype(x.dtype)

    wrong = _with_backward(f, lambda x, g: g * 1.05 * jnp.cos(x))  # 5% off
    report = check.check_vjp(wrong, None, jnp.linspace(-1.0, 1.0, 5), second_order=False)
    assert not report.ok and report.max_rel("finite differences") > 1e-2


def test_planted_bug_backward_in_the_wrong_dtype():
    wrong = _with_backward(jnp.tanh, lambda x, g: (g * (1 - jnp.tanh(x) ** 2)).astype(jnp.float64))
    with jax.numpy_dtype_promotion("standard"):
        report = check.check_vjp(wrong, reference.tanh, jnp.linspace(-1, 1, 4, dtype=jnp.float32))
    assert not report.ok and report.max_rel("dtype") == float("inf")


def test_planted_bug_gradient_from_a_zero_cotangent():
    wrong = _with_backward(jnp.tanh, lambda x, g: g * (1 - jnp.tanh(x) ** 2) + 1e-3 * x)
    report = check.check_vjp(wrong, reference.tanh, jnp.linspace(-1, 1, 4))
    assert not report.ok and report.max_rel("zero cotangent") == float("inf")


def test_planted_bug_that_mixes_up_batch_elements_under_vmap():
    """A backward whose batching rule takes each element's derivative at the *other*
    element's primal: right under vmap over two equal copies (the old check), wrong over two
    different primals."""

    @jax.custom_batching.custom_vmap
    def derivative(x, g):
        return g * jnp.cos(x)

    @derivative.def_vmap
    def _batched(axis_size, in_batched, x, g):
        return g * jnp.cos(x[::-1]), True  # the batch's primals reversed

    mixing = _with_backward(jnp.sin, derivative)
    x = jnp.linspace(-1.0, 1.0, 3)
    assert check.check_vjp(mixing, jnp.sin, x, vmap=False, second_order=False).ok
    report = check.check_vjp(mixing, jnp.sin, x, second_order=False, finite_differences=False)
    assert not report.ok and report.max_rel("vmap") > 1e-2
    assert "vmap (cotangents, nested)" in report.skipped  # the rule needs batched primals


def test_check_dtype_bfloat16_prints_errors_against_counterparts(capsys):
    from jaxchain import cli

    assert cli.main(["check", "--dtype", "bfloat16", "--only", "softmax", "layer_norm"]) == 0
    out = capsys.readouterr().out
    assert "jax.nn.softmax" in out and "flax.linen.LayerNorm" in out
    assert "2 no worse than their counterpart, 0 worse (bfloat16" in out


# --- forward mode: planted wrong JVPs fail ----------------------------------------------------


def _with_jvp(forward, jvp):
    """A custom_jvp with ``forward`` and a (planted) JVP ``jvp(args, tangents) -> tangent``."""
    f = jax.custom_jvp(forward)
    f.defjvp(lambda a, t: (forward(*a), jvp(a, t)))
    return f


PLANTED_JVPS = {
    "factor 1.0001 off": (
        _with_jvp(jnp.tanh, lambda a, t: t[0] * (1 - jnp.tanh(a[0]) ** 2) * 1.0001),
        reference.tanh,
        "tanh",
    ),
    "dropped product-rule term": (  # d(x W) = dx W + x dW, the second term forgotten
        _with_jvp(lambda x, w, b: x @ w + b[None], lambda a, t: t[0] @ a[1] + t[2][None]),
        reference.dense,
        "dense",
    ),
    "dropped softmax term": (  # y (dx - <y, dx>) without the correction
        _with_jvp(lambda x: jax.nn.softmax(x), lambda a, t: jax.nn.softmax(a[0]) * t[0]),
        reference.softmax,
        "softmax",
    ),
}


@pytest.mark.parametrize("planted", sorted(PLANTED_JVPS))
@pytest.mark.parametrize("against", ["reference", "finite differences"])
def test_planted_wrong_jvps_fail(planted, against):
    f, ref, name = PLANTED_JVPS[planted]
    report = check.check_jvp(f, ref if against == "reference" else None, *_args(name))
    failing = {e.check for e in report.errors if not e.ok}
    assert not report.ok and ("jvp" if against == "reference" else "finite differences") in failing
    if against == "reference":
        assert "vjp (transposed)" in failing  # the VJP JAX derives from it is as wrong
    with pytest.raises(AssertionError, match=r"check_jvp\(.*\): FAILED"):
        check.assert_jvp(f, ref if against == "reference" else None, *_args(name))


def test_forward_over_forward_catches_a_jvp_that_is_not_differentiable():
    def jvp(a, t):
        slope = jax.lax.stop_gradient(1 - jnp.tanh(a[0]) ** 2)  # right value, no derivative
        return t[0] * slope

    report = check.check_jvp(_with_jvp(jnp.tanh, jvp), reference.tanh, *_args("tanh"))
    assert {e.check for e in report.errors if not e.ok} == {"second order"}


def test_a_jvp_that_moves_without_a_tangent_fails():
    """A zero tangent in must give exactly zero out (a JVP is linear in its tangents)."""
    f = _with_jvp(jnp.tanh, lambda a, t: t[0] * (1 - jnp.tanh(a[0]) ** 2) + 1e-9)
    report = check.check_jvp(f, reference.tanh, *_args("tanh"), transpose=False)
    assert {e.check for e in report.errors if not e.ok} >= {"zero tangent"}


def test_correct_jvp_passes_and_report_reads_well():
    from jaxchain import tangents

    report = check.check_jvp(
        tangents.softmax_cross_entropy,
        reference.softmax_cross_entropy,
        *_args("softmax_cross_entropy"),
    )
    assert report.ok and report.kind == "check_jvp"
    assert {e.check for e in report.errors} == {
        "eager vs jit", "forward", "jvp", "dtype", "zero tangent", "linearity", "determinism",
        "vmap", "second order", "vjp (transposed)", "<u, Jt> = <J^T u, t>", "finite differences",
    }  # fmt: skip
    assert str(report).startswith("check_jvp(softmax_cross_entropy): ok")
