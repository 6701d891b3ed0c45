"""What ``jaxchain train`` trains: a model paired with a data set, as pure functions.

A :class:`Task` gives ``init(key) -> params``, ``loss(params, batch, ops, key=None) ->
scalar``, ``batch(step) -> batch`` (a pure function of the step, so a resumed run sees the
same data in the same order), and ``evaluate(params, split) -> metrics``. A task made with
``dropout`` > 0 drops at that rate in ``loss`` when it is given a ``key`` (the training
step's), and never in ``logits`` without one, so never in ``evaluate``.

* digits with ``mlp`` (64 pixels), ``rnn``/``lstm``/``gru`` (8 rows of 8 pixels, a dense head
  on the last state) or ``transformer`` (64 pixel tokens of 17 levels, mean-pooled);
* shakespeare, next-character prediction, with ``rnn``/``lstm``/``gru`` (embedding, recurrence,
  dense head) or ``transformer`` (causal, pre-norm);
* vader, sentiment of the VADER lexicon's entries, with the pretrained MiniLM-L6 encoder
  (``minilm``), mean-pooled, and a dense head; fine-tuned by one of :data:`STRATEGIES`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import nn, rules
from jaxchain.ops import Ops
from jaxchain.train import data

MODELS = ("mlp", *nn.RECURRENT, "transformer", "decoder")
DATASETS = ("digits", "shakespeare")  # what `jaxchain train` trains on; vader is finetune's


@dataclasses.dataclass(frozen=True)
class Task:
    init: Callable[[jax.Array], dict]
    logits: Callable[..., jax.Array]  # (params, x, ops, key=None): with a key, dropout
    batch: Callable[[int], tuple[np.ndarray, np.ndarray]]
    evaluate: Callable[[dict, str], dict[str, float]]
    kind: str  # "classification" or "language"
    corpus: data.Corpus | None = None
    tokenizer: Any = None  # a tokenizers.Tokenizer, saved with the run (decoder)
    merge: Callable[[dict], dict] | None = None  # adapted params -> plain params (LoRA)
    trainable: Callable[[dict], dict] | None = None  # params -> bools; None: all trainable
    loss_fn: Callable[..., jax.Array] | None = None  # (params, batch, ops, key); else CE

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The keys of what ``evaluate`` returns."""
        return ("accuracy",) if self.kind == "classification" else ("loss",)

    def loss(self, params: dict, batch, ops: Ops, key: jax.Array | None = None):
        """Mean cross-entropy (nats) of the model's logits against the batch's labels;
        ``key``: the step's dropout key (none: no dropout).

        Frozen leaves (see ``trainable``) pass through ``stop_gradient``, so no backward pass
        runs below the lowest trainable layer.
        """
        if self.trainable is not None:
            params = jax.tree.map(
                lambda p, t: p if t else jax.lax.stop_gradient(p), params, self.trainable(params)
            )
        if self.loss_fn is not None:
            return self.loss_fn(params, batch, ops, key)
        x, y = batch
        return jnp.mean(ops.softmax_cross_entropy(self.logits(params, x, ops, key), y))


def _head(key, d_in: int, d_out: int) -> dict:
    return nn.mlp.init(key, [d_in, d_out])["layers"][0]


def _dense(ops, p, x):
    return ops.dense(x, p["w"], p["b"])


def _stack_init(module, key, input_size: int, hidden: int, layers: int) -> list[dict]:
    """Params of ``layers`` stacked recurrent layers (the first reads the inputs)."""
    keys = jax.random.split(key, layers)
    return [module.init(k, input_size if i == 0 else hidden, hidden) for i, k in enumerate(keys)]


def _stack_apply(module, cells: list[dict], xs, ops, key=None, dropout: float = 0.0):
    """Run stacked layers, each over the outputs of the one below; ``(hs, last)`` of the top.
    With a ``key``, each layer drops on its inputs and outputs at rate ``dropout``."""
    for i, cell in enumerate(cells):
        k = None if key is None else jax.random.fold_in(key, i)
        xs, last = module.apply(cell, xs, ops=ops, dropout=dropout, key=k)
    return xs, last


def _shuffled_batches(n: int, batch_size: int, seed: int) -> Callable[[int], np.ndarray]:
    """Indices of the batch at each step: epochs of a permutation seeded by (seed, epoch)."""
    per_epoch = max(1, n // batch_size)

    def take(step: int) -> np.ndarray:
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        return order[position * batch_size : (position + 1) * batch_size]

    return take


# --- digits ----------------------------------------------------------------------------------


def _digits_model(model: str, hidden: int, layers: int, dropout: float = 0.0):
    """``(init, logits)`` for a digits classifier."""
    if model == "mlp":
        sizes = [64, *[hidden] * layers, 10]

        def logits_mlp(p, x, ops, key=None):
            return nn.mlp.apply(p, x, dropout=dropout, key=key, ops=ops)

        return (lambda k: nn.mlp.init(k, sizes)), logits_mlp
    if model in nn.RECURRENT:
        module = nn.RECURRENT[model]

        def init(key):
            k1, k2 = jax.random.split(key)
            cells = _stack_init(module, k1, 8, hidden, layers)
            return {"cells": cells, "head": _head(k2, hidden, 10)}

        def logits(p, x, ops, key=None):
            _, last = _stack_apply(module, p["cells"], x, ops, key, dropout)
            return _dense(ops, p["head"], jax.tree.leaves(last)[0])  # h_last of the top layer

        return init, logits
    heads = max(1, hidden // 32)

    def init_t(key):
        k1, k2 = jax.random.split(key)
        enc = nn.transformer.init(k1, 17, 64, hidden, heads, layers, pre_norm=True)
        return {"encoder": enc, "head": _head(k2, hidden, 10)}

    def logits_t(p, x, ops, key=None):
        tokens = jnp.round(x * 16).astype(jnp.int32)  # 17 grey levels
        h = nn.transformer.apply(
            p["encoder"], tokens, pre_norm=True, dropout=dropout, key=key, ops=ops
        )
        return _dense(ops, p["head"], jnp.mean(h, axis=1))

    return init_t, logits_t


def digits_task(
    model: str, *, batch_size: int, seed: int, hidden: int, layers: int, dropout: float = 0.0
) -> Task:
    ds = data.digits(sequence=model in nn.RECURRENT)
    for split in (ds.train, ds.val, ds.test):
        data.check_labels("digits", split.y, ds.num_classes)
    init, logits = _digits_model(model, hidden, layers, dropout)
    take = _shuffled_batches(len(ds.train), batch_size, seed)

    def batch(step: int):
        i = take(step)
        return ds.train.x[i], ds.train.y[i]

    predict = jax.jit(lambda p, x: jnp.argmax(logits(p, x, rules), axis=-1))

    def evaluate(params, split: str) -> dict[str, float]:
        s = getattr(ds, split)
        return {"accuracy": float(np.mean(np.asarray(predict(params, s.x)) == s.y))}

    return Task(init, logits, batch, evaluate, "classification")


# --- shakespeare -----------------------------------------------------------------------------


def _language_model(
    model: str, vocab: int, hidden: int, layers: int, seq_len: int, dropout: float = 0.0
):
    if model in nn.RECURRENT:
        module, embed = nn.RECURRENT[model], min(64, hidden)

        def init(key):
            k1, k2, k3 = jax.random.split(key, 3)
            table = 0.1 * jax.random.normal(k1, (vocab, embed), jnp.float32)
            return {
                "embed": table,
                "cells": _stack_init(module, k2, embed, hidden, layers),
                "head": _head(k3, hidden, vocab),
            }

        def features(p, tokens, ops, key=None):
            xs = ops.embedding(tokens, p["embed"])
            return _stack_apply(module, p["cells"], xs, ops, key, dropout)[0]

        return init, features
    if model != "transformer":
        raise ValueError(
            f"train: --model {model} cannot model language (--data shakespeare); use one of "
            f"{', '.join((*nn.RECURRENT, 'transformer'))}"
        )
    heads = max(1, hidden // 64)

    def init_t(key):
        k1, k2 = jax.random.split(key)
        enc = nn.transformer.init(k1, vocab, seq_len, hidden, heads, layers, pre_norm=True)
        return {"encoder": enc, "head": _head(k2, hidden, vocab)}

    def features_t(p, tokens, ops, key=None):
        return nn.transformer.apply(
            p["encoder"], tokens, is_causal=True, pre_norm=True, dropout=dropout, key=key, ops=ops
        )

    return init_t, features_t


def _head_loss(ops, head, h, labels):
    """Mean cross-entropy of the dense head on features ``h (..., D)``, fused:
    ``linear_softmax_cross_entropy`` on ``[h, 1]`` and ``[[W], [b]]`` (the bias as one more
    input row), so the ``(..., V)`` logits are never stored for the backward pass."""
    ones = jnp.ones((*h.shape[:-1], 1), h.dtype)
    w = jnp.concatenate([head["w"], head["b"][None]], axis=0)
    return jnp.mean(ops.linear_softmax_cross_entropy(jnp.concatenate([h, ones], -1), w, labels))


def decoder_dims(hidden: int, layers: int) -> dict:
    """The decoder's shape for ``--hidden`` and ``--layers``: heads of 64, half as many
    key/value heads (grouped-query attention), SwiGLU width ``8/3 D`` rounded up to 64."""
    heads = max(1, hidden // 64)
    return dict(
        d_model=hidden,
        num_heads=heads,
        num_kv_heads=max(1, heads // 2),
        num_layers=layers,
        d_ff=-(-8 * hidden // 3 // 64) * 64,
    )


def decoder_task(
    *,
    batch_size: int,
    seed: int,
    hidden: int,
    layers: int,
    seq_len: int,
    vocab: int,
    dropout: float = 0.0,
) -> Task:
    """Shakespeare as byte-level BPE tokens (:func:`jaxchain.train.data.bpe`, trained on the
    training split) for the Llama-style decoder; ``seq_len`` counts tokens. Validation loss is
    in nats per character (the nats of the predicted tokens over their characters), comparable with
    the character models'."""
    corpus = data.shakespeare()
    tokenizer = data.bpe(corpus, vocab)
    train, val = (data.encode(tokenizer, corpus.text(part)) for part in (corpus.train, corpus.val))
    for part in (train, val):
        data.check_labels("shakespeare tokens", part, tokenizer.get_vocab_size())
    dims = decoder_dims(hidden, layers)

    def init(key):
        return nn.decoder.init(key, tokenizer.get_vocab_size(), **dims)

    def logits(p, tokens, ops, key=None):
        return nn.decoder.apply(p, tokens, ops=ops)  # no dropout: logits only evaluate

    def loss(p, batch, ops, key=None):
        tokens, targets = batch
        return nn.decoder.loss(p, tokens, targets, key=key, dropout=dropout, ops=ops)

    windows = np.arange(seq_len + 1)

    def batch(step: int):
        starts = np.random.default_rng([seed, step]).integers(
            0, len(train) - seq_len - 1, batch_size
        )
        chunk = train[starts[:, None] + windows]
        return chunk[:, :-1], chunk[:, 1:]

    starts = np.linspace(0, len(val) - seq_len - 1, 128).astype(np.int64)
    windows_val = val[starts[:, None] + windows]
    characters = sum(len(tokenizer.decode(w[1:].tolist())) for w in windows_val)
    nats = jax.jit(lambda p, x, y: jnp.sum(rules.softmax_cross_entropy(logits(p, x, rules), y)))

    def evaluate(params, split: str) -> dict[str, float]:
        total = sum(
            float(nats(params, windows_val[i : i + 32, :-1], windows_val[i : i + 32, 1:]))
            for i in range(0, len(windows_val), 32)
        )
        return {"loss": total / characters}

    return Task(init, logits, batch, evaluate, "language", loss_fn=loss, tokenizer=tokenizer)


def shakespeare_task(
    model: str,
    *,
    batch_size: int,
    seed: int,
    hidden: int,
    layers: int,
    seq_len: int,
    vocab: int = 1024,
    dropout: float = 0.0,
) -> Task:
    if model == "decoder":
        return decoder_task(
            batch_size=batch_size,
            seed=seed,
            hidden=hidden,
            layers=layers,
            seq_len=seq_len,
            vocab=vocab,
            dropout=dropout,
        )
    corpus = data.shakespeare()
    for part in (corpus.train, corpus.val):
        data.check_labels("shakespeare", part, len(corpus.vocab))  # character ids
    init, features = _language_model(model, len(corpus.vocab), hidden, layers, seq_len, dropout)

    def logits(p, tokens, ops, key=None):
        return _dense(ops, p["head"], features(p, tokens, ops, key))  # (B, T, V)

    def loss(p, batch, ops, key=None):
        tokens, labels = batch
        return _head_loss(ops, p["head"], features(p, tokens, ops, key), labels)

    windows = np.arange(seq_len + 1)

    def batch(step: int):
        starts = np.random.default_rng([seed, step]).integers(
            0, len(corpus.train) - seq_len - 1, batch_size
        )
        chunk = corpus.train[starts[:, None] + windows]  # (B, T + 1)
        return chunk[:, :-1], chunk[:, 1:]

    # a fixed validation set: evenly spaced windows of the held-out text
    starts = np.linspace(0, len(corpus.val) - seq_len - 1, 256).astype(np.int64)
    val = corpus.val[starts[:, None] + windows]
    val_loss = jax.jit(
        lambda p, x, y: jnp.mean(rules.softmax_cross_entropy(logits(p, x, rules), y))
    )

    def evaluate(params, split: str) -> dict[str, float]:
        losses = [
            val_loss(params, val[i : i + 64, :-1], val[i : i + 64, 1:])
            for i in range(0, len(val), 64)
        ]
        return {"loss": float(np.mean(losses))}

    return Task(init, logits, batch, evaluate, "language", corpus, loss_fn=loss)


# --- vader: fine-tuning MiniLM-L6 ------------------------------------------------------------

STRATEGIES = ("probe", "top-k", "full", "scratch", "lora")


def trainable_blocks(strategy: str, num_layers: int, top_k: int = 2) -> Callable[[dict], dict]:
    """``params -> bools`` for a strategy: ``probe`` trains the head alone; ``top-k`` the head
    and the top ``top_k`` blocks; ``full`` and ``scratch`` everything; ``lora`` the head and
    the LoRA adapters (``params["lora"]``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"finetune: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "top-k" and not 1 <= top_k <= num_layers:
        raise ValueError(f"finetune: --top-k must be in [1, {num_layers}], got {top_k}")
    lowest = {"probe": num_layers, "top-k": num_layers - top_k}.get(strategy, 0)

    def trainable(params: dict) -> dict:
        encoder = params["encoder"]
        if strategy == "lora":
            return {
                "encoder": jax.tree.map(lambda _: False, encoder),
                "lora": jax.tree.map(lambda _: True, params["lora"]),
                "head": jax.tree.map(lambda _: True, params["head"]),
            }
        frozen = strategy in ("probe", "top-k")
        return {
            "encoder": {
                "embeddings": jax.tree.map(lambda _: not frozen, encoder["embeddings"]),
                "blocks": [jax.tree.map(lambda _, i=i: i >= lowest, b)
                           for i, b in enumerate(encoder["blocks"])],
            },
            "head": jax.tree.map(lambda _: True, params["head"]),
        }  # fmt: skip

    return trainable


def sentiment_task(
    strategy: str,
    *,
    batch_size: int,
    seed: int,
    top_k: int = 2,
    seq_len: int = 16,
    rank: int = 8,
    dropout: float = 0.0,
) -> Task:
    """Positive/negative entries of the VADER lexicon with MiniLM-L6, mean-pooled, and a dense
    head; ``scratch`` is the same architecture randomly initialised; ``lora`` adds adapters
    of rank ``rank`` to every projection of every block (:mod:`jaxchain.nn.lora`), and the
    task's ``merge`` folds them into the weights."""
    from jaxchain import pretrained

    lexicon, encoder = data.vader(), pretrained.load_minilm()
    config, eps = encoder.config, encoder.eps
    trainable = trainable_blocks(strategy, config["num_hidden_layers"], top_k)
    splits = {}
    for name in ("train", "val", "test"):
        text, y, _ = getattr(lexicon, name)
        tokens, mask = encoder.tokenize(text, seq_len)
        data.check_labels("vader", y, 2)
        data.check_labels("vader tokens", tokens, config["vocab_size"])
        splits[name] = (tokens, mask, y)

    def init(key):
        k1, k2 = jax.random.split(key)
        if strategy == "scratch":
            dims = (
                config["vocab_size"],
                config["max_position_embeddings"],
                config["hidden_size"],
                config["num_attention_heads"],
                config["num_hidden_layers"],
                config["intermediate_size"],
            )
            params = nn.bert.init(k1, *dims, type_vocab_size=config["type_vocab_size"])
        else:  # a copy: a training step donates the params it is given
            params = jax.tree.map(jnp.copy, encoder.params)
        params = {"encoder": params, "head": _head(k2, config["hidden_size"], 2)}
        if strategy == "lora":
            adapters = nn.lora.init(jax.random.fold_in(key, 2), params["encoder"]["blocks"], rank)
            params["lora"] = adapters
        return params

    lora_scale = nn.lora.scale(rank)

    def logits(p, x, ops, key=None):
        tokens, mask = x
        h = nn.bert.apply(
            p["encoder"],
            tokens,
            mask,
            eps=eps,
            lora=p.get("lora"),
            lora_scale=lora_scale,
            dropout=dropout,
            key=key,
            ops=ops,
        )
        return _dense(ops, p["head"], nn.bert.mean_pool(h, mask))

    def merge(p):
        """The adapted model as plain params: the adapters folded into the weights."""
        blocks = nn.lora.merge(p["encoder"]["blocks"], p["lora"], lora_scale)
        return {"encoder": {**p["encoder"], "blocks": blocks}, "head": p["head"]}

    take = _shuffled_batches(len(splits["train"][2]), batch_size, seed)

    def batch(step: int):
        tokens, mask, y = splits["train"]
        i = take(step)
        return (tokens[i], mask[i]), y[i]

    predict = jax.jit(lambda p, x: jnp.argmax(logits(p, x, rules), axis=-1))

    def evaluate(params, split: str) -> dict[str, float]:
        tokens, mask, y = splits[split]
        chunks = [
            np.asarray(predict(params, (tokens[i : i + 256], mask[i : i + 256])))
            for i in range(0, len(y), 256)
        ]
        return {"accuracy": float(np.mean(np.concatenate(chunks) == y))}

    return Task(
        init,
        logits,
        batch,
        evaluate,
        "classification",
        trainable=trainable,
        merge=merge if strategy == "lora" else None,
    )


def make_task(model: str, dataset: str, **options) -> Task:
    """The task for ``--model`` and ``--data``; options: batch_size, seed, hidden, layers,
    seq_len (language only)."""
    if dataset == "vader" or model == "minilm":
        if (model, dataset) != ("minilm", "vader"):
            raise ValueError(
                f"train: vader goes with the minilm model, got {model!r} on {dataset!r}"
            )
        return sentiment_task(**options)
    if model not in MODELS:
        raise ValueError(f"train: --model must be one of {', '.join(MODELS)}, got {model!r}")
    if dataset == "digits" and model == "decoder":
        raise ValueError("train: --model decoder is a language model; use --data shakespeare")
    if dataset == "digits":
        options.pop("seq_len", None)
        options.pop("vocab", None)
        return digits_task(model, **options)
    if dataset == "shakespeare":
        return shakespeare_task(model, **options)
    raise ValueError(f"train: --data must be one of {', '.join(DATASETS)}, got {dataset!r}")


MAX_TOKENS = 4096  # prompt and generated tokens together: `jaxchain generate`'s bound


def generate_text(
    params: dict,
    tokenizer,
    prompt: str,
    steps: int,
    *,
    seed: int = 0,
    temperature: float = 0.8,
    top_k: int | None = 40,
    progress=None,
) -> str:
    """``prompt`` and ``steps`` BPE tokens sampled after it by the decoder
    (:func:`jaxchain.nn.decoder.generate`, with its KV cache), as text a terminal shows
    (:func:`jaxchain.train.data.decode_text`). The prompt and the new tokens together may number
    at most :data:`MAX_TOKENS` (the KV cache holds them all). ``progress``: as for
    :func:`~jaxchain.nn.decoder.generate`."""
    ids = tokenizer.encode(prompt).ids
    if not ids:
        raise ValueError("generate: --prompt must not be empty")
    if len(ids) + steps > MAX_TOKENS:
        raise ValueError(
            f"generate: --steps {steps} after a prompt of {len(ids)} tokens passes the "
            f"{MAX_TOKENS} tokens a generation may hold; ask for at most "
            f"{max(0, MAX_TOKENS - len(ids))}"
        )
    prompt_ids, key = jnp.array([ids], jnp.int32), jax.random.key(seed)
    out = nn.decoder.generate(
        params, prompt_ids, steps, key=key, temperature=temperature, top_k=top_k, progress=progress
    )
    return data.decode_text(tokenizer, np.asarray(out[0]).tolist())
