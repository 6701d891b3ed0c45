"""`jaxchain audit`: its recipes' exact values checked independently, its findings printed, and
the command's refusals."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import cli, rules
from jaxchain.cases import audit


def test_the_exact_values_are_what_an_independent_computation_gives():
    # jaxchain's two-pass layer norm, at the offset where flax's one-pass variance fails
    x = 1e7 + jnp.array([-1.0, 0.0, 1.0])
    ones, zeros = jnp.ones(3), jnp.zeros(3)
    ours = jax.grad(lambda x: rules.layer_norm(x, ones, zeros, 1e-6)[0])(x)[0]
    assert float(ours) == pytest.approx(audit.RECIPES["flax LayerNorm at 1e7"].exact, rel=1e-9)
    # the sigmoid tail, from its series: e**-40 (1 - e**-40 + ...)
    tail = audit.RECIPES["optax.sigmoid_binary_cross_entropy tail"].exact
    assert tail == pytest.approx(-math.exp(-40) * (1 - math.exp(-40)), rel=1e-15)
    # sinc' near 0: the derivative of sinc's series, 1 - (pi t)**2 / 6 + (pi t)**4 / 120 - ..
    t = 1e-7
    series = -(math.pi**2) * t / 3 + math.pi**4 * t**3 / 30
    assert audit.RECIPES["sinc' at 1e-7"].exact == pytest.approx(series, rel=1e-12)


def test_audit_prints_its_findings_and_writes_nothing_with_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["audit", "--only", "tanh'", "flax LayerNorm at 1e7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert list(rows) == ["flax LayerNorm at 1e7", "tanh'"]  # the table's order
    assert "| BUG: " in rows["flax LayerNorm at 1e7"] and "| ok: " in rows["tanh'"]
    assert not any(tmp_path.iterdir())


def test_the_audit_runs_every_recipe_once_and_says_what_it_found(tmp_path, monkeypatch):
    """Every recipe, run once (the audit is the suite's longest setup, and with pytest 9.2
    and pytest-xdist 3.8 an ``xdist_group`` does not keep tests on one worker): the table
    written whole, jax 0.10.2's findings found, and no false alarm on the other libraries'
    derivatives."""
    findings = audit.run()
    _writes_every_finding(findings, tmp_path, monkeypatch)
    _the_jax_findings_of_issue_31_are_found(findings)
    _other_libraries_derivatives_are_right_and_the_checker_says_so(findings)


def _writes_every_finding(findings, tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "run", lambda only=(): findings)
    out = tmp_path / "deep" / "AUDIT.md"
    assert cli.main(["audit", "--out", str(out)]) == 0
    text = out.read_text()
    assert all(f"| {name} |" in text for name in audit.RECIPES)
    assert all(f"{lib} " in text.splitlines()[2] for lib in ("lineax", "diffrax", "equinox"))
    found = {r.name: err for r, _, err, _ in findings}
    assert found["tanh'"] <= audit.TOLERANCE and np.isinf(found["xlogy d/dy"])


def _the_jax_findings_of_issue_31_are_found(findings):
    """jax 0.10.2's derivative bugs that the outside audit found, each against the math."""
    rows = {r.name: (got, err, verdict) for r, got, err, verdict in findings}
    for name in (
        "expn(0, x)'",
        "poch(-3, 2)",
        "poch d/dz",
        "xlog1py d/dy",
        "det hessian, singular",
    ):
        assert np.isinf(rows[name][1]), (name, rows[name])
    assert rows["expn(2, x)''"][0] == "raises TypeError"
    assert rows["expn(0, x)'"][2].startswith("FAILED"), "the checker misses a NaN gradient"


def _other_libraries_derivatives_are_right_and_the_checker_says_so(findings):
    """No false alarm on lineax's solves (a symmetric one with project=), optimistix's
    implicit root find against unrolling, diffrax's adjoints and an equinox Module."""
    third = [(r, got, err, verdict) for r, got, err, verdict in findings if r.requires]
    assert {r.requires for r, *_ in third} == {"lineax", "optimistix", "diffrax", "equinox"}
    for r, got, err, verdict in third:
        assert err <= audit.TOLERANCE, (r.name, got, r.exact)
        assert verdict == "ok", (r.name, verdict)


def test_the_exact_values_of_other_libraries_recipes():
    """lineax's: the inverse of ((2, 1), (1, 3)) is ((3, -1), (-1, 2)) / 5 and x = (0.2, 0.6);
    optimistix's: the root of x**3 + x = 2 is 1."""
    inverse = np.linalg.inv(np.array(audit.libs.A))
    x = inverse @ np.array(audit.libs.B)
    assert audit.libs.EXACT["lineax"] == pytest.approx(inverse[0, 0], rel=1e-15)
    assert audit.libs.EXACT["lineax psd"] == pytest.approx(-inverse[0, 0] * x[0], rel=1e-15)
    assert 1.0**3 + 1.0 == 2.0 and audit.libs.EXACT["optimistix"] == 1 / (3 * 1.0**2 + 1)


def test_audit_refuses_an_unknown_recipe_in_one_line(capsys):
    assert cli.main(["audit", "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("jaxchain audit: error: --only: ")
        and "'nope'" in err[0]
    )
