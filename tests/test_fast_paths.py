"""The fast paths (blockwise attention, fused linear cross-entropy, the tuned LSTM) against
their twins beyond the property tests' small shapes, and the benchmark suite's plumbing.
Speed itself is measured by `jaxchain bench`, not here."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import benchmarks, cli, reference, rules
from jaxchain._primal.attention import Span
from jaxchain.check import assert_close
from jaxchain.rules import attention as attention_rules

F32 = jnp.float32


def _qkv(t, s=None, h=8, n=2, dtype=F32, key=0):
    keys = jax.random.split(jax.random.key(key), 4)
    s = t if s is None else s
    q = jax.random.normal(keys[0], (2, t, n, h), dtype)
    k, v = (jax.random.normal(kk, (2, s, n, h), dtype) for kk in keys[1:3])
    return q, k, v, jax.random.normal(keys[3], q.shape, dtype)


def _grads(ops, q, k, v, ct, **kwargs):
    loss = lambda q, k, v: jnp.sum(ops.dot_product_attention(q, k, v, **kwargs) * ct)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_long_sequences_go_blockwise_and_match_autodiff(is_causal, monkeypatch):
    """At T >= 1024 the rule runs blockwise (blocks of 512, the causal ones above the diagonal
    skipped): loss and gradients equal jax.grad through the whole (T, T) twin, float32."""
    calls = []
    blockwise = attention_rules._blockwise
    monkeypatch.setattr(
        attention_rules, "_blockwise", lambda *a: calls.append(a[8:]) or blockwise(*a)
    )
    q, k, v, ct = _qkv(1100, h=4, n=1)
    got = _grads(rules, q, k, v, ct, is_causal=is_causal)
    span = Span(None, 0 if is_causal else None, 1100)
    assert calls == [(span, 512, 512)]
    assert_close(got, _grads(reference, q, k, v, ct, is_causal=is_causal))


@pytest.mark.parametrize("block_size", [1, 3, (2, 3), 16])
def test_blockwise_with_a_mask_and_padding(block_size):
    """Blocks that do not divide T or S (padding), a mask with empty rows, T != S: float64."""
    q, k, v, ct = _qkv(7, 5, dtype=jnp.float64, key=1)
    mask = jax.random.bernoulli(jax.random.key(2), 0.6, (2, 1, 7, 5)).at[1, 0, 3].set(False)
    got = _grads(rules, q, k, v, ct, mask=mask, block_size=block_size)
    assert_close(got, _grads(reference, q, k, v, ct, mask=mask))
    out = rules.dot_product_attention(q, k, v, mask=mask, block_size=block_size)
    assert np.all(out[1, 3] == 0)  # the row with nothing to attend to


def test_blockwise_fully_masked_gives_zero_gradients():
    q, k, v, _ = _qkv(4, 6)
    mask = jnp.zeros((1, 1, 4, 6), bool)
    loss = lambda q, k, v: jnp.sum(rules.dot_product_attention(q, k, v, mask=mask, block_size=2))  # noqa: E731
    out, grads = jax.value_and_grad(loss, (0, 1, 2))(q, k, v)
    assert out == 0 and all(np.all(g == 0) for g in grads)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, (2,), (2, 0)])
def test_block_size_must_be_positive_ints(bad):
    q, k, v, _ = _qkv(4)
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        rules.dot_product_attention(q, k, v, block_size=bad)


def test_chunked_attention_comparator_is_attention():
    q, k, v, _ = _qkv(64, h=4)
    for causal in (False, True):
        want = reference.dot_product_attention(q, k, v, is_causal=causal)
        got = benchmarks.chunked_attention(q, k, v, is_causal=causal, chunk=16)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fused_cross_entropy_matches_the_plain_layer_at_scale():
    """N=256, D=32, V=5000 in chunks of 2048 (a remainder of 904), float32."""
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (256, 32))
    w = jax.random.normal(keys[1], (32, 5000)) / 4
    labels = jax.random.randint(keys[2], (256,), 0, 5000)

    def value_and_grads(ops):
        loss = lambda x, w: jnp.mean(ops.linear_softmax_cross_entropy(x, w, labels))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss, (0, 1)))(x, w)

    assert_close(value_and_grads(rules), value_and_grads(reference))


def test_fused_cross_entropy_is_exact_for_huge_logits():
    x = jnp.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]])
    loss, grad = jax.value_and_grad(
        lambda x: jnp.sum(
            rules.linear_softmax_cross_entropy(x, jnp.eye(3), jnp.array([0, 1]), chunk_size=2)
        )
    )(x)
    np.testing.assert_allclose(
        rules.linear_softmax_cross_entropy(x, jnp.eye(3), jnp.array([0, 1])),
        [0.0, np.log(3)],
        rtol=1e-6,
    )
    np.testing.assert_allclose(grad, [[0, 0, 0], [1 / 3, -2 / 3, 1 / 3]], atol=1e-6)
    assert np.isfinite(loss)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: rules.linear_softmax_cross_entropy(
                jnp.ones((4, 3)), jnp.ones((2, 5)), jnp.zeros(4, int)
            ),
            r"w must have shape \(3, 5\)",
        ),
        (
            lambda: rules.linear_softmax_cross_entropy(
                jnp.ones((4, 3)), jnp.ones((3, 5)), jnp.full(4, 5)
            ),
            r"labels must lie in \[0, 5\)",
        ),
        (
            lambda: rules.linear_softmax_cross_entropy(
                jnp.ones((4, 3)), jnp.ones((3, 5)), jnp.zeros(3, int)
            ),
            r"labels must have shape \(4,\)",
        ),
        (
            lambda: rules.linear_softmax_cross_entropy(
                jnp.ones((4, 3)), jnp.ones((3, 5), jnp.float32), jnp.zeros(4, int)
            ),
            "share one dtype",
        ),
        (
            lambda: rules.linear_softmax_cross_entropy(
                jnp.ones((4, 3)), jnp.ones((3, 5)), jnp.zeros(4, int), chunk_size=0
            ),
            "chunk_size must be a positive int",
        ),
    ],
)
def test_fused_cross_entropy_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bench_rows_and_table():
    row = benchmarks.bench_attention(32, heads=1, head_size=4, rounds=1)
    assert set(row.seconds) == {"manual", "autodiff", "jax.nn", "chunked+checkpoint"}
    assert all(s > 0 for s in row.seconds.values()) and all(b >= 0 for b in row.temp.values())
    autodiff = row.seconds["autodiff"]
    assert row.ratio("manual") == pytest.approx(autodiff / row.seconds["manual"])  # speed-up
    lines = benchmarks.table([row], peak=1e9).splitlines()
    assert len(lines) == 2 + 4 and lines[2].startswith("| attention | T=32 causal=False")
    lstm = benchmarks.bench_lstm(4, 2, 3, rounds=1, others=True)
    assert set(lstm.seconds) == {"manual", "autodiff", "flax"}


FAKE_WORKER = """
import json, sys
print(json.dumps({"torch": "0.0-fake", "threads": 3}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if "setup" in request:
        case = request["setup"]
        if case != "gru":
            print(json.dumps({"error": f"KeyError: {case!r}"}), flush=True)
            continue
        print(json.dumps({"impl": f"fake {case} {sorted(request['config'].items())}"}), flush=True)
    else:
        print(json.dumps({"seconds": 0.25}), flush=True)
"""


def _interpreter(tmp_path, program: str) -> str:
    """An executable that, run as ``PYTHON -u WORKER``, runs ``program`` instead."""
    (tmp_path / "worker.py").write_text(program)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'worker.py'}\n")
    python.chmod(0o755)
    return str(python)


def test_torch_peer_is_timed_with_the_rules_and_named_in_the_table(tmp_path):
    with benchmarks.TorchPeer(_interpreter(tmp_path, FAKE_WORKER)) as peer:
        assert (peer.version, peer.threads) == ("0.0-fake", 3)
        config = "[('B', 2), ('H', 3), ('I', 3), ('T', 4)]"
        assert peer.setup("gru", T=4, B=2, I=3, H=3) == f"fake gru {config}"
        row = benchmarks.bench_gru(4, 2, 3, rounds=3, peer=peer)
        assert row.seconds["torch"] == 0.25 and "torch" not in row.temp  # the worker's time
        lines = {x.split(" | ")[2]: x for x in benchmarks.table([row], 1e9).splitlines()[2:]}
        manual, autodiff = row.seconds["manual"], row.seconds["autodiff"]
        assert (
            f"| {1e3 * manual:.2f} | {autodiff / manual:.2f}x | {0.25 / manual:.2f}x |"
            in (lines["manual"])
        )
        assert f"| torch | 250.00 | {autodiff / 0.25:.2f}x | 1.00x | - | - |" in lines["torch"]
        with pytest.raises(benchmarks.PeerError, match="KeyError: 'lstm'"):
            benchmarks.bench_lstm(4, 2, 3, rounds=1, peer=peer)  # the worker's error, named


def test_the_torch_worker_reports_what_failed(tmp_path):
    """The real worker, started with a stand-in ``torch`` that has no ``nn``: it says hello,
    and the failure of a setup comes back as an error, not a hang."""
    (tmp_path / "torch.py").write_text(
        "__version__ = '0.0-stand-in'\n"
        "def get_num_threads(): return 1\n"
        "def manual_seed(seed): pass\n"
    )
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    with benchmarks.TorchPeer(str(python)) as peer:
        assert peer.version == "0.0-stand-in"
        with pytest.raises(benchmarks.PeerError, match=r"AttributeError: .*'nn'"):
            peer.setup("lstm", T=2, B=1, I=1, H=1)


def test_bench_without_a_torch_interpreter_is_a_clear_error(tmp_path, capsys):
    missing = str(tmp_path / "no-such-python")
    assert cli.main(["bench", "--only", "gru", "--torch", missing, "--out", str(tmp_path)]) == 2
    assert f"--torch {missing}: cannot run it" in capsys.readouterr().err
    crash = _interpreter(tmp_path, "import sys; sys.exit('no torch here')")
    with pytest.raises(benchmarks.PeerError, match=r"worker stopped \(exit 1\): no torch here"):
        benchmarks.TorchPeer(crash)


def test_bench_command_writes_table_json_and_plot(tmp_path, monkeypatch, capsys):
    tiny = {
        "attention": [
            lambda p, c=c: benchmarks.bench_attention(16, is_causal=c, head_size=4, rounds=1)
            for c in (False, True)
        ],
        "mlp": [lambda p: benchmarks.bench_mlp(8, 2, 4, rounds=1)],
    }
    monkeypatch.setitem(benchmarks.PRESETS, "quick", tiny)
    monkeypatch.setattr(benchmarks, "matmul_flops_per_second", lambda: 1e9)
    assert cli.main(["bench", "--preset", "quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["bench"] for r in data["rows"]] == ["attention", "attention", "mlp"]
    assert "| mlp | width=8 layers=2 batch=4 | manual |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "attention.png").stat().st_size > 0
    printed = capsys.readouterr().out  # each row once, under one header, as it is measured
    assert printed.count("| mlp | width=8 layers=2 batch=4 | manual |") == 1
    assert printed.count("| bench | config | impl |") == 1
    assert printed.index("| bench | config |") < printed.index("| attention | T=16")
    assert cli.main(["bench", "--only", "nothing", "--out", str(tmp_path)]) == 2
    # with PyTorch (a stand-in worker): its row, its ratios, its interpreter in the header
    tiny["gru"] = [lambda p: benchmarks.bench_gru(4, 2, 3, rounds=2, peer=p)]
    python = _interpreter(tmp_path, FAKE_WORKER)
    out = tmp_path / "with-torch"
    assert (
        cli.main(
            ["bench", "--preset", "quick", "--only", "gru", "--torch", python, "--out", str(out)]
        )
        == 0
    )
    table = (out / "bench.md").read_text()
    assert f"PyTorch run by {python}" in table.splitlines()[0]
    assert "| gru | T=4 B=2 I=3 H=3 | torch | 250.00 | " in table


def test_language_model_heads_use_the_fused_loss():
    """The Shakespeare tasks' loss is the fused head: equal to the cross-entropy of the
    logits, and its gradients equal autodiff's."""
    from jaxchain.train.tasks import Architecture, Options, make_task

    options = Options(batch_size=2, seq_len=8, architecture=Architecture(hidden=8, layers=1))
    task = make_task("lstm", "shakespeare", options)
    assert task.model.loss is not None
    params, batch = task.init(jax.random.key(0)), task.batch(0)
    plain = jnp.mean(
        reference.softmax_cross_entropy(task.logits(params, batch[0], reference), batch[1])
    )
    np.testing.assert_allclose(task.loss(params, batch, rules), plain, rtol=1e-5)
    assert_close(
        jax.grad(task.loss)(params, batch, rules), jax.grad(task.loss)(params, batch, reference)
    )
