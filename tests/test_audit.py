"""`jaxchain audit`: its recipes' exact values checked independently, its findings printed, and
the command's refusals."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import cli, rules
from jaxchain.check import audit


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


def test_audit_writes_every_finding(tmp_path, capsys):
    out = tmp_path / "deep" / "AUDIT.md"
    assert cli.main(["audit", "--out", str(out)]) == 0
    text = out.read_text()
    assert all(f"| {name} |" in text for name in audit.RECIPES)
    found = {r.name: err for r, _, err, _ in audit.run()}
    assert found["tanh'"] <= audit.TOLERANCE and np.isinf(found["xlogy d/dy"])


def test_audit_refuses_an_unknown_recipe_in_one_line(capsys):
    assert cli.main(["audit", "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("jaxchain audit: error: --only: ")
        and "'nope'" in err[0]
    )
