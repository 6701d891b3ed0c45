"""The `jaxchain check` command."""

import jax
import jax.numpy as jnp

from jaxchain import cli, reference
from jaxchain.cases import registry


def test_check_prints_a_table_and_exits_zero(capsys):
    assert cli.main(["check", "--only", "tanh", "dense"]) == 0
    out = capsys.readouterr().out
    assert "vs autodiff" in out and "vs fin.diff" in out and "2nd order" in out
    assert out.count(" ok\n") == 2 and "2 passed, 0 failed" in out


def test_check_exits_one_when_a_rule_is_wrong(capsys, monkeypatch):
    wrong = jax.custom_vjp(jnp.tanh)
    wrong.defvjp(lambda x: (jnp.tanh(x), x), lambda x, g: (g,))  # forgot the derivative
    bad = registry.Case("tanh", wrong, reference.tanh, registry._unary, {"shape": ((3,),)})
    monkeypatch.setitem(registry.RULES, "tanh", bad)
    assert cli.main(["check", "--only", "tanh"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "0 passed, 1 failed" in out


def test_check_forward_mode_prints_the_jvp_table(capsys):
    assert cli.main(["check", "--mode", "forward", "--only", "tanh", "lstm(lengths)"]) == 0
    out = capsys.readouterr().out
    assert "transposed" in out and out.count(" ok\n") == 2
    assert "2 passed, 0 failed (float64, forward)" in out


def test_check_forward_mode_exits_one_when_a_jvp_is_wrong(capsys, monkeypatch):
    wrong = jax.custom_jvp(jnp.tanh)
    wrong.defjvp(lambda x, t: (jnp.tanh(x[0]), t[0]))  # forgot the derivative
    bad = registry.Case(
        "tanh", jnp.tanh, reference.tanh, registry._unary, {"shape": ((3,),)}, wrong
    )
    monkeypatch.setitem(registry.RULES, "tanh", bad)
    assert cli.main(["check", "--mode", "forward", "--only", "tanh"]) == 1
    assert "0 passed, 1 failed" in capsys.readouterr().out


def test_check_rejects_unknown_ops(capsys):
    assert cli.main(["check", "--only", "nope"]) == 2
    assert "unknown rule" in capsys.readouterr().err


def test_check_models(capsys):
    assert cli.main(["check", "--models", "--only", "mlp(tanh)"]) == 0
    assert "mlp(tanh)" in capsys.readouterr().out
