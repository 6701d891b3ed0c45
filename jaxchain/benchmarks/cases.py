"""The benchmarks: each a training step (loss and gradients) of a hand-written rule or model
against ``jax.grad`` of its twin, and against the alternatives a user would pick, measured in
one run by :func:`jaxchain.benchmarks.harness.measure`."""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxchain import nn, reference, rules, tangents
from jaxchain.benchmarks.baselines import chunked_attention
from jaxchain.benchmarks.harness import F32, Row, measure
from jaxchain.benchmarks.peer import TorchPeer
from jaxchain.train import backends


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
    backend: str | tuple[str, ...] | None = None,
) -> Row:
    """One attention layer's loss and gradients (float32, ``(B, T, N, H)``); with a ``peer``,
    PyTorch's ``scaled_dot_product_attention`` too. ``backend``: the compiler options
    (:mod:`jaxchain.train.backends`; default: the program's own, ``backend_of("attention")``)."""
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
        backend=backend or backends.backend_of("attention"),
    )


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
    backend: str | tuple[str, ...] | None = None,
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
        backend=backend or backends.backend_of(name),
    )


def bench_lstm(t: int, b: int, h: int, **kwargs) -> Row:
    """:func:`bench_recurrent` of the LSTM."""
    return bench_recurrent("lstm", t, b, h, **kwargs)


def bench_gru(t: int, b: int, h: int, **kwargs) -> Row:
    """:func:`bench_recurrent` of the GRU."""
    return bench_recurrent("gru", t, b, h, **kwargs)


def _update_step(loss: Callable, tx) -> Callable:
    """``(params, opt_state, batch) -> (params, opt_state, loss)``: gradients and ``tx``, and
    nothing else — the step PyTorch's counterpart takes (``loss.backward(); opt.step()``), not
    the training loop's :func:`jaxchain.train.optim.make_step`, whose finite-loss guard and gradient
    norm PyTorch's step has no counterpart of."""

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state, value

    return step


def bench_bert(
    b: int = 16,
    t: int = 32,
    *,
    rounds: int = 10,
    peer: TorchPeer | None = None,
    backend: str | tuple[str, ...] | None = None,
) -> Row:
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
            h = nn.bert.apply(params["encoder"], tokens, mask, ops=ops)
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
            backend=backend or backends.backend_of("minilm"),
        )


#: The hand-written rules and their autodiff twins, by the names a row gives them.
_FAMILIES = (("manual", rules), ("autodiff", reference))


def _decoder_and_tokens(b: int, t: int, hidden: int, layers: int, vocab: int):
    """``jaxchain train --model decoder``'s decoder (``tasks.decoder_dims``) and a batch of
    random ``(tokens, next tokens)``, each ``(B, T)``."""
    from jaxchain.train import tasks

    params = nn.decoder.init(jax.random.key(0), vocab, **tasks.decoder_dims(hidden, layers))
    tokens = jax.random.randint(jax.random.key(1), (b, t + 1), 0, vocab)
    return params, (tokens[:, :-1], tokens[:, 1:])


def bench_decoder(
    b: int = 16,
    t: int = 128,
    *,
    hidden: int = 192,
    layers: int = 4,
    vocab: int = 1024,
    rounds: int = 10,
    peer: TorchPeer | None = None,
    backend: str | tuple[str, ...] | None = None,
) -> Row:
    """A training step (loss, gradients, AdamW) of the Llama-style decoder of
    ``jaxchain train --model decoder`` (``tasks.decoder_dims``: heads of 64, grouped-query
    attention, SwiGLU, RMSNorm, RoPE, the fused cross-entropy head) on random tokens; with a
    ``peer``, the same step through Hugging Face's ``LlamaForCausalLM`` (SDPA attention)."""
    params, batch = _decoder_and_tokens(b, t, hidden, layers, vocab)

    def loss(ops):
        return lambda params, batch: nn.decoder.loss(params, *batch, ops=ops)

    with jax.numpy_dtype_promotion("standard"):
        tx = optax.adamw(1e-3)
        state = tx.init(params)
        steps = {name: _update_step(loss(ops), tx) for name, ops in _FAMILIES}
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
            backend=backend or backends.backend_of("decoder"),
        )


def bench_decoder_lora(
    b: int = 16,
    t: int = 128,
    *,
    rank: int = 8,
    hidden: int = 192,
    layers: int = 4,
    vocab: int = 1024,
    rounds: int = 10,
) -> Row:
    """A LoRA fine-tuning step (loss, the adapters' gradients, AdamW on them) of
    :func:`bench_decoder`'s decoder, adapters of ``rank`` on every projection (the SwiGLU
    unit through ``lora_swiglu``); ``full`` is the full fine-tuning step of the same decoder
    (every weight), for scale."""
    params, batch = _decoder_and_tokens(b, t, hidden, layers, vocab)
    adapters = nn.lora.init(jax.random.key(2), params, rank)

    def adapted(ops):
        return lambda a, batch: nn.decoder.loss(params, *batch, lora=a, ops=ops)

    with jax.numpy_dtype_promotion("standard"):
        tx = optax.adamw(1e-3)
        steps = {name: _update_step(adapted(ops), tx) for name, ops in _FAMILIES}
        full = _update_step(lambda p, batch: nn.decoder.loss(p, *batch), tx)
        others = {"full": (full, (params, tx.init(params), batch))}
        config = {"B": b, "T": t, "D": hidden, "layers": layers, "V": vocab, "R": rank}
        state = tx.init(adapters)
        return measure(
            "decoder lora step", config, steps, adapters, state, batch, rounds=rounds, others=others
        )


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
