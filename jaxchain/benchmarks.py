"""Benchmarks: each hand-written rule against ``jax.grad`` of its twin, and against what a user
would pick instead, in the same run — the median time of a training step (loss and gradients)
after warm-up, its ratio to autodiff, and XLA's compiled temporary memory.

``jaxchain bench`` runs them and writes a markdown table, a JSON file and plots; the results
recorded for this project are in ``bench/RESULTS.md``.
"""

import dataclasses
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from jaxchain import nn, reference, rules, tangents

F32 = jnp.float32  # every benchmark runs in float32


def median_seconds(
    fs: Mapping[str, Callable], *args, warmup: int = 2, rounds: int = 10
) -> dict[str, float]:
    """Median wall time of each (jitted) ``f(*args)`` after ``warmup`` calls. The functions
    take turns, round after round, so that a slow spell of the machine hits them alike."""
    for f in fs.values():
        for _ in range(warmup):
            jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {name: [] for name in fs}
    for _ in range(rounds):
        for name, f in fs.items():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def temp_bytes(f: Callable, *args) -> int:
    """Temporary memory XLA allocates for ``jit(f)(*args)``, from ``memory_analysis()``."""
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


def matmul_flops_per_second(n: int = 2048, rounds: int = 10) -> float:
    """The machine's float32 matrix-multiply rate: ``2 n^3`` flops per ``(n, n) @ (n, n)``,
    over the fastest of ``rounds`` calls (a peak, not a median)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, a))
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(f(a, a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def report(result: dict, dims: list[str], json_path=None) -> None:
    """Print one ``manual`` against ``autodiff`` result (``{dim: value, ..., manual_seconds,
    autodiff_seconds, manual_temp_bytes, autodiff_temp_bytes}``) as a markdown table, with
    the speed-up and temp ratio; write it with the machine to ``json_path`` if given."""
    r = dict(result)
    r["speedup"] = r["autodiff_seconds"] / r["manual_seconds"]
    r["temp_ratio"] = r["manual_temp_bytes"] / r["autodiff_temp_bytes"]
    mib = 2**20
    print(
        f"| {' | '.join(dims)} | manual ms | autodiff ms | speed-up | temp MiB manual / autodiff |"
    )
    print("|" + "---|" * (len(dims) + 4))
    print(
        f"| {' | '.join(str(r[d]) for d in dims)} | {1e3 * r['manual_seconds']:.2f} "
        f"| {1e3 * r['autodiff_seconds']:.2f} | {r['speedup']:.2f}x "
        f"| {r['manual_temp_bytes'] / mib:.2f} / {r['autodiff_temp_bytes'] / mib:.2f} "
        f"({r['temp_ratio']:.2f}x) |"
    )
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({**r, **machine()}, indent=2))


@dataclasses.dataclass
class Row:
    """One benchmark: implementations by name, their median step seconds and temp bytes."""

    bench: str
    config: dict
    seconds: dict[str, float]
    temp: dict[str, int]
    flops: float | None = None  # of one step, where it is a matter of matrix products

    def ratio(self, name: str) -> float:
        """How many times faster ``name`` is than autodiff (> 1: faster)."""
        return self.seconds["autodiff"] / self.seconds[name]

    def memory(self, name: str) -> float:
        return self.temp[name] / max(self.temp["autodiff"], 1)


def measure(bench: str, config: dict, steps: Mapping[str, Callable], *args, flops=None,
            rounds: int = 10) -> Row:  # fmt: skip
    """Time and compile ``value_and_grad``-style ``steps`` (each ``f(*args)``)."""
    jitted = {name: jax.jit(f) for name, f in steps.items()}
    seconds = median_seconds(jitted, *args, rounds=rounds)
    temp = {name: temp_bytes(f, *args) for name, f in steps.items()}
    return Row(bench, config, seconds, temp, flops)


# --- attention -------------------------------------------------------------------------------


def chunked_attention(q, k, v, *, is_causal: bool = False, chunk: int = 512):
    """Rabe and Staats' memory-efficient attention ("Self-attention does not need O(n^2)
    memory", 2021) as plain JAX: queries in chunks, and within each a map over key chunks whose
    summaries (values, weights, maxima) are combined at the end; each key chunk's work is under
    ``jax.checkpoint``, so that autodiff recomputes it in the backward pass instead of saving
    it. Causality is a mask inside each chunk (no chunk is skipped). ``(B, T, N, H)`` layout.
    """
    b, t, n, h = q.shape
    s = k.shape[1]
    qc, kc = min(chunk, t), min(chunk, s)
    scale = 1 / math.sqrt(h)

    @jax.checkpoint
    def summarize(q_c, k_c, v_c, q_start, k_start):
        scores = jnp.einsum("bqnh,bknh->bnqk", q_c, k_c) * scale
        if is_causal:
            q_idx = q_start + jnp.arange(q_c.shape[1])[:, None]
            k_idx = k_start + jnp.arange(k_c.shape[1])[None, :]
            scores = jnp.where(k_idx <= q_idx, scores, -jnp.inf)
        m = lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
        m = jnp.where(jnp.isfinite(m), m, 0)
        e = jnp.exp(scores - m)
        return jnp.einsum("bnqk,bknh->bnqh", e, v_c), jnp.sum(e, axis=-1), m[..., 0]

    def query_chunk(q_start):
        q_c = lax.dynamic_slice_in_dim(q, q_start, qc, axis=1)

        def key_chunk(k_start):
            k_c = lax.dynamic_slice_in_dim(k, k_start, kc, axis=1)
            v_c = lax.dynamic_slice_in_dim(v, k_start, kc, axis=1)
            return summarize(q_c, k_c, v_c, q_start, k_start)

        values, weights, maxes = lax.map(key_chunk, jnp.arange(0, s, kc))
        top = jnp.max(maxes, axis=0, keepdims=True)
        correction = jnp.exp(maxes - top)
        values = jnp.sum(values * correction[..., None], axis=0)
        weights = jnp.sum(weights * correction, axis=0)
        return jnp.moveaxis(values / weights[..., None], 1, 2)  # (B, qc, N, H)

    out = lax.map(query_chunk, jnp.arange(0, t, qc))  # (T / qc, B, qc, N, H)
    return jnp.moveaxis(out, 0, 1).reshape(b, t, n, h)


def _attention_step(attend):
    def step(q, k, v, ct):
        return jax.value_and_grad(lambda q, k, v: jnp.sum(attend(q, k, v) * ct), (0, 1, 2))(q, k, v)

    return step


def bench_attention(t: int, *, is_causal: bool = False, heads: int = 1, head_size: int = 64,
                    batch: int = 1, rounds: int = 5, others: bool = True) -> Row:  # fmt: skip
    """One attention layer's loss and gradients (float32, ``(B, T, N, H)``)."""
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v, ct = (jax.random.normal(kk, (batch, t, heads, head_size), F32) for kk in keys)
    impls = {
        "manual": lambda q, k, v: rules.dot_product_attention(q, k, v, is_causal=is_causal),
        "autodiff": lambda q, k, v: reference.dot_product_attention(q, k, v, is_causal=is_causal),
    }
    if others:
        impls["jax.nn"] = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=is_causal)
        impls["chunked+checkpoint"] = lambda q, k, v: chunked_attention(
            q, k, v, is_causal=is_causal
        )
    steps = {name: _attention_step(f) for name, f in impls.items()}
    # model flops: the forward's two (T, T) products, and twice that backward (causal: half)
    flops = 3 * 2 * 2 * batch * heads * t * t * head_size * (0.5 if is_causal else 1.0)
    config = {"T": t, "causal": is_causal, "B": batch, "N": heads, "H": head_size}
    return measure("attention", config, steps, q, k, v, ct, flops=flops, rounds=rounds)


# --- fused linear + cross-entropy ------------------------------------------------------------


def bench_linear_cross_entropy(n: int, d: int, v: int, *, rounds: int = 5) -> Row:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (n, d), F32)
    w = jax.random.normal(keys[1], (d, v), F32) / math.sqrt(d)
    labels = jax.random.randint(keys[2], (n,), 0, v)

    def step(ops):
        loss = lambda x, w: jnp.mean(ops.linear_softmax_cross_entropy(x, w, labels))  # noqa: E731
        return jax.value_and_grad(loss, (0, 1))

    steps = {"manual": step(rules), "autodiff": step(reference)}
    config = {"N": n, "D": d, "V": v}
    return measure("linear_cross_entropy", config, steps, x, w, flops=3 * 2 * n * d * v,
                   rounds=rounds)  # fmt: skip


# --- recurrent -------------------------------------------------------------------------------


def _flax_lstm_step(i: int, h: int):
    from flax import nnx

    model = nnx.RNN(nnx.OptimizedLSTMCell(i, h, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, xs):
        zeros = jnp.zeros((xs.shape[0], h), xs.dtype)
        hs = nnx.merge(graphdef, params, rest)(xs, initial_carry=(zeros, zeros))
        return jnp.mean(hs**2)

    return jax.value_and_grad(loss), params


def bench_lstm(t: int, b: int, h: int, *, i: int | None = None, rounds: int = 10,
               others: bool = True) -> Row:  # fmt: skip
    """An LSTM layer's loss and gradients over ``(B, T, I)`` inputs (I = H unless given)."""
    i = h if i is None else i
    params = nn.lstm.init(jax.random.key(0), i, h)
    xs = jax.random.normal(jax.random.key(1), (b, t, i), F32)

    def step(ops):
        def loss(params, xs):
            hs, _ = nn.lstm.apply(params, xs, ops=ops)
            return jnp.mean(hs**2)

        return jax.value_and_grad(loss)

    jitted = {"manual": jax.jit(step(rules)), "autodiff": jax.jit(step(reference))}
    seconds = median_seconds(jitted, params, xs, rounds=rounds)
    temp = {name: temp_bytes(step(ops), params, xs)
            for name, ops in (("manual", rules), ("autodiff", reference))}  # fmt: skip
    if others:
        flax_step, state = _flax_lstm_step(i, h)
        fs = {"flax": jax.jit(flax_step)}
        seconds.update(median_seconds(fs, state, xs, rounds=rounds))
        temp["flax"] = temp_bytes(flax_step, state, xs)
    flops = 3 * 2 * t * b * (i + h) * 4 * h  # forward products, and two per product backward
    return Row("lstm", {"T": t, "B": b, "I": i, "H": h}, seconds, temp, flops)


# --- MLP -------------------------------------------------------------------------------------


def bench_mlp(width: int = 1024, layers: int = 4, batch: int = 1024, *, rounds: int = 10) -> Row:
    sizes = [width] * (layers + 1)
    params = nn.mlp.init(jax.random.key(0), sizes)
    x = jax.random.normal(jax.random.key(1), (batch, width), F32)
    labels = jax.random.randint(jax.random.key(2), (batch,), 0, width)

    def step(ops):
        def loss(params, x):
            return jnp.mean(ops.softmax_cross_entropy(nn.mlp.apply(params, x, ops=ops), labels))

        return jax.value_and_grad(loss)

    steps = {"manual": step(rules), "autodiff": step(reference)}
    flops = 3 * 2 * batch * width * width * layers
    config = {"width": width, "layers": layers, "batch": batch}
    return measure("mlp", config, steps, params, x, flops=flops, rounds=rounds)


# --- forward mode ----------------------------------------------------------------------------


def bench_jacobian(sizes: tuple[int, ...] = (32, 256, 256, 512), *, rounds: int = 10) -> Row:
    """The forward-mode Jacobian (``jax.jacfwd``) of an MLP's output with respect to its input,
    ``(out, in)``: through the hand-written JVPs (``manual``, :mod:`jaxchain.tangents`) and
    through autodiff's (``autodiff``, :mod:`jaxchain.reference`)."""
    params = nn.mlp.init(jax.random.key(0), list(sizes), activation="tanh")
    x = jax.random.normal(jax.random.key(1), (sizes[0],), F32)

    def jacobian(ops):
        return jax.jacfwd(lambda x, params: nn.mlp.apply(params, x, activation="tanh", ops=ops))

    steps = {"manual": jacobian(tangents), "autodiff": jacobian(reference)}
    config = {"sizes": "-".join(map(str, sizes))}
    return measure("jacobian (jacfwd)", config, steps, x, params, rounds=rounds)


def bench_hvp(t: int, b: int, h: int, *, rounds: int = 10) -> Row:
    """A Hessian-vector product of an LSTM layer's loss by forward over reverse,
    ``jvp(grad(loss), (params,), (v,))``: through the forward-mode family (``manual``), the
    reverse-mode rules (``rules``: the outer JVP differentiates their backward passes) and
    autodiff (``autodiff``)."""
    params = nn.lstm.init(jax.random.key(0), h, h)
    xs = jax.random.normal(jax.random.key(1), (b, t, h), F32)
    v = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape, a.dtype), params)

    def hvp(ops):
        def loss(params):
            hs, _ = nn.lstm.apply(params, xs, ops=ops)
            return jnp.mean(hs**2)

        return lambda params, v: jax.jvp(jax.grad(loss), (params,), (v,))

    steps = {"manual": hvp(tangents), "autodiff": hvp(reference), "rules": hvp(rules)}
    return measure("lstm hvp", {"T": t, "B": b, "H": h}, steps, params, v, rounds=rounds)


# --- the suite -------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, list[Callable[[], Row]]]] = {
    "full": {
        "attention": [lambda t=t, c=c: bench_attention(t, is_causal=c)
                      for t in (256, 1024, 4096) for c in (False, True)],
        "linear_cross_entropy": [lambda: bench_linear_cross_entropy(2048, 256, 32768)],
        "lstm": [lambda t=t, b=b, h=h: bench_lstm(t, b, h, others=(t, b, h) == (100, 32, 128))
                 for t in (50, 100, 500) for b in (8, 32, 64) for h in (32, 128, 256)],
        "mlp": [lambda: bench_mlp()],
        "forward": [lambda: bench_jacobian(), lambda: bench_hvp(100, 32, 128)],
    },
    "quick": {
        "attention": [lambda t=t: bench_attention(t, is_causal=True) for t in (256, 1024)],
        "linear_cross_entropy": [lambda: bench_linear_cross_entropy(1024, 256, 8192)],
        "lstm": [lambda: bench_lstm(100, 32, 128)],
        "mlp": [lambda: bench_mlp(512, 4, 512)],
        "forward": [lambda: bench_jacobian(), lambda: bench_hvp(50, 16, 64)],
    },
}  # fmt: skip


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def run(preset: str = "full", only: tuple[str, ...] = (), log: Callable[[str], None] = print):
    """Run a preset's benchmarks (or ``only`` some of them); returns the rows and the matmul
    rate (flop/s) measured in the same run."""
    peak = matmul_flops_per_second()
    log(f"matmul: {peak / 1e9:.1f} GFLOP/s (float32)")
    rows = []
    for name, cases in PRESETS[preset].items():
        if only and name not in only:
            continue
        for case in cases:
            row = case()
            log(table([row], peak, header=False))
            rows.append(row)
    return rows, peak


def table(rows: list[Row], peak: float, *, header: bool = True) -> str:
    """A markdown table: each implementation's time, its speed-up over autodiff, temp memory."""
    lines = []
    if header:
        lines += ["| bench | config | impl | ms | vs autodiff | temp MiB | temp vs autodiff "
                  "| % of matmul peak |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        config = " ".join(f"{k}={v}" for k, v in row.config.items())
        for name in row.seconds:
            rate = "" if row.flops is None else f"{100 * row.flops / row.seconds[name] / peak:.0f}"
            lines.append(
                f"| {row.bench} | {config} | {name} | {1e3 * row.seconds[name]:.2f} "
                f"| {row.ratio(name):.2f}x | {row.temp[name] / 2**20:.1f} "
                f"| {row.memory(name):.3f} | {rate} |"
            )
    return "\n".join(lines)


def plot(rows: list[Row], path) -> None:
    """Attention time and temp memory against sequence length, one line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attention = [r for r in rows if r.bench == "attention"]
    if not attention:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for causal in sorted({r.config["causal"] for r in attention}):
        chosen = sorted((r for r in attention if r.config["causal"] == causal),
                        key=lambda r: r.config["T"])  # fmt: skip
        lengths = [r.config["T"] for r in chosen]
        for name in chosen[0].seconds:
            label = f"{name}{' (causal)' if causal else ''}"
            style = "--" if causal else "-"
            axes[0].loglog(
                lengths, [1e3 * r.seconds[name] for r in chosen], "o" + style, label=label
            )
            axes[1].loglog(lengths, [max(r.temp[name], 1) / 2**20 for r in chosen], "o" + style,
                           label=label)  # fmt: skip
    axes[0].set_ylabel("loss + gradients (ms)")
    axes[1].set_ylabel("compiled temporary memory (MiB)")
    for ax in axes:
        ax.set_xlabel("sequence length T")
    axes[0].legend(fontsize=8)
    fig.suptitle("Attention, one head of 64, float32")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_json(rows: list[Row], peak: float) -> dict:
    return {"machine": machine(), "matmul_flops_per_second": peak,
            "rows": [dataclasses.asdict(r) for r in rows]}  # fmt: skip


__all__ = [
    "PRESETS",
    "Row",
    "bench_attention",
    "bench_hvp",
    "bench_jacobian",
    "bench_linear_cross_entropy",
    "bench_lstm",
    "bench_mlp",
    "chunked_attention",
    "matmul_flops_per_second",
    "measure",
    "median_seconds",
    "plot",
    "report",
    "run",
    "table",
    "temp_bytes",
    "to_json",
]  # fmt: skip
