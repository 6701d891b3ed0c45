"""The kernel listing of `jaxchain bench`: which library runs each product of a compiled step,
how often, and the per-program compiler options (`jaxchain.train.backends`)."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from jaxchain import benchmarks, nn, reference, rules
from jaxchain._primal.linear import rows_t_times
from jaxchain.benchmarks import kernels
from jaxchain.train import backends

F32 = jnp.float32  # the suite enables float64; oneDNN takes float32 products


def _dense_gradient(ops=rules, options=None, width=4):
    x, w, b = jnp.ones((16, 8), F32), jnp.ones((8, width), F32), jnp.zeros(width, F32)
    grad = jax.grad(lambda x, w, b: jnp.sum(ops.dense(x, w, b) ** 2), (0, 1, 2))
    return jax.jit(grad).lower(x, w, b).compile(compiler_options=options)


# XLA cannot serialise a oneDNN fusion into the persistent compilation cache (this suite's):
# JAX warns and keeps the program it compiled
@pytest.mark.filterwarnings("ignore:Error writing persistent compilation cache entry")
def test_a_dense_step_lists_its_three_products_with_their_libraries():
    """Autodiff's weight gradient ``x^T g`` has a transposed left operand, which YNNPACK
    refuses: Eigen runs it. The rule forms it from the narrower of ``x`` and ``g`` materialised
    transposed (here ``g^T x``), so YNNPACK runs all three. With ``backends.ONEDNN``, oneDNN runs all three."""
    autodiff = {p.orientation: p for p in kernels.products(_dense_gradient(reference))}
    assert sorted(autodiff) == ["NN", "NT", "TN"]
    assert autodiff["NN"].lhs == (16, 8) and autodiff["NN"].rhs == (8, 4)
    assert autodiff["NN"].library == autodiff["NT"].library == "YNNPACK"
    assert autodiff["TN"].library == "Eigen"
    found = kernels.products(_dense_gradient())
    assert all(p.count == 1 and p.flops == 2 * 16 * 8 * 4 for p in found)
    assert kernels.by_library(found) == {"YNNPACK": 3}
    assert [(p.lhs, p.rhs) for p in found if p.orientation == "NN" and p.lhs == (4, 16)]
    onednn = kernels.products(_dense_gradient(options=backends.compiler_options("onednn")))
    assert kernels.by_library(onednn) == {"oneDNN": 3}


@pytest.mark.parametrize(("width", "transposed"), [(4, (4, 16)), (12, (8, 16))])
def test_the_weight_gradient_transposes_the_narrower_operand(width, transposed):
    """``x (16, 8)``, ``g (16, width)``: ``g^T x`` transposed back when ``g`` is narrower,
    ``x^T g`` otherwise; YNNPACK runs the product either way, and it is ``x^T g``."""
    found = kernels.products(_dense_gradient(width=width))
    assert kernels.by_library(found) == {"YNNPACK": 3}
    assert [p.lhs for p in found if p.orientation == "NN" and p.rhs[0] == 16] == [transposed]
    x = jax.random.normal(jax.random.key(0), (2, 8, 8), F32)
    g = jax.random.normal(jax.random.key(1), (2, 8, width), F32)
    expected = jnp.einsum("bti,bto->io", x, g)
    assert jnp.allclose(jax.jit(rows_t_times)(x, g), expected, rtol=1e-5, atol=1e-5)


def test_products_inside_a_scan_count_once_per_step():
    """An LSTM over T steps runs each recurrent product T times per call (the loops' trip
    counts), and the listing names each."""
    t = 5
    params = nn.lstm.init(jax.random.key(0), 3, 4)
    xs = jnp.ones((2, t, 3), F32)
    loss = lambda p: jnp.sum(nn.lstm.apply(p, xs, ops=rules)[0] ** 2)  # noqa: E731
    found = kernels.products(jax.jit(jax.grad(loss)).lower(params).compile())
    in_loops = [p for p in found if p.count > 1]
    assert in_loops and all(p.count == t for p in in_loops)
    assert "| per call |" in kernels.listing(found)
    assert sum(kernels.by_library(found).values()) == sum(p.count for p in found)


def test_batched_products_and_their_orientation():
    q, k = jnp.ones((2, 3, 128, 64), F32), jnp.ones((2, 3, 96, 64), F32)
    scores = lambda q, k: jnp.einsum("bnqh,bnkh->bnqk", q, k)  # noqa: E731
    (p,) = kernels.products(jax.jit(scores).lower(q, k).compile())
    assert p.orientation == "NT" and p.flops == 2 * 2 * 3 * 128 * 96 * 64
    once = kernels.seconds_in_products([p])
    assert once > 0  # 9.4 MFLOP: microseconds, never nothing
    # timed once per shape (cached), then counted as often as the step runs it
    assert kernels.seconds_in_products([dataclasses.replace(p, count=3)]) == 3 * once


def test_a_bench_row_records_its_backend_products_and_their_share():
    row = benchmarks.bench_mlp(16, 2, 8, rounds=1)
    assert row.backends == {"manual": "default", "autodiff": "default"}
    assert row.kernels("manual") == {"YNNPACK": 5}  # 2 layers' 4 products, 1 weight gradient
    assert "Eigen" in row.kernels("autodiff")  # autodiff's weight gradients
    assert row.product_share("manual") is not None and row.product_share("torch") is None
    line = benchmarks.table([row], peak=1e9).splitlines()[2]
    assert "| default | Eigen" in line or "| default | YNNPACK" in line


@pytest.mark.filterwarnings("ignore:Error writing persistent compilation cache entry")
def test_a_row_under_two_backends_times_each_step_under_each():
    row = benchmarks.bench_attention(
        64, head_size=8, rounds=1, others=False, backend=("default", "onednn")
    )
    assert set(row.seconds) == {"manual", "autodiff", "manual (onednn)", "autodiff (onednn)"}
    assert row.backends["manual (onednn)"] == "onednn"
    assert set(row.kernels("manual (onednn)")) == {"oneDNN"}
    assert "oneDNN" not in row.kernels("manual")


def test_the_header_names_the_cores_the_cpu_and_the_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_onednn=true")
    machine = benchmarks.machine()
    assert machine["nproc"] >= 1 and machine["cpu"]
    line = benchmarks.header(1e9)
    assert f"nproc {machine['nproc']}" in line and "--xla_cpu_use_onednn=true" in line


def test_an_unknown_backend_is_named():
    with pytest.raises(
        ValueError, match=r"backend must be one of \['default', 'onednn'\], got 'mkl'"
    ):
        backends.compiler_options("mkl")
    assert backends.compiler_options("default") is None
    assert backends.backend_of("no such model") == "default"


def test_the_torch_worker_does_not_import_its_siblings_for_torchs_packages():
    """Run as a script, the worker's folder would be first on ``sys.path``, and
    ``kernels.py`` there shadowed the ``kernels`` package that transformers imports (its
    ``BertModel`` then failed to load). The worker takes its folder off the path."""
    import subprocess
    import sys

    from jaxchain.benchmarks import peer

    folder = str(peer.WORKER.parent)
    code = (
        f"import runpy, sys; sys.path.insert(0, {folder!r}); "
        f"runpy.run_path({str(peer.WORKER)!r}); "
        f"print({folder!r} in sys.path, 'kernels' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_row_read_back_from_its_json_lists_the_same_products():
    import json

    row = benchmarks.bench_mlp(16, 2, 8, rounds=1)
    data = json.loads(json.dumps(benchmarks.to_json([row], 1e9)))
    back = benchmarks.Row.from_json(data["rows"][0])
    assert back.products == row.products and back.kernels("manual") == row.kernels("manual")
    assert benchmarks.table([back], 1e9) == benchmarks.table([row], 1e9)


def test_what_is_not_a_compiled_program_is_named():
    f = jax.jit(jnp.matmul)
    a = jnp.ones((4, 3), F32)
    with pytest.raises(
        TypeError, match=r"compiled must be a jax\.stages\.Compiled.*got PjitFunction"
    ):
        kernels.products(f)
    with pytest.raises(ValueError, match="optimised HLO module's text"):
        kernels.products(f.lower(a, a.T).as_text())  # StableHLO, before XLA's passes
    text = f.lower(a, a.T).compile().as_text()
    broken = text.replace("dot(%", "dot(%missing_", 1)
    with pytest.raises(ValueError, match="cannot read this dot"):
        kernels.products(broken)


def test_an_int8_product_is_timed_with_its_own_operand_types():
    a = jnp.ones((64, 256), jnp.int8)
    dot = lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.int32)  # noqa: E731
    (p,) = kernels.products(jax.jit(dot).lower(a, a.T).compile())
    assert (p.dtype, p.lhs_dtype, p.rhs_dtype) == ("s32", "s8", "s8")
    assert kernels.seconds_in_products([p]) > 0  # built and run as int8 operands
    assert kernels.seconds_in_products([dataclasses.replace(p, lhs_dtype="u4")]) == 0.0
