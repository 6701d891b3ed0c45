"""BERT encoder: word, position and token-type embeddings with a layer norm, then post-norm
transformer blocks (exact GELU) with a padding mask, and mean pooling.

The blocks are :func:`jaxchain.nn.transformer.apply_block`'s; only the embeddings are BERT's
own. Params::

    {"settings": Settings (no leaves: the sizes and eps),
     "embeddings": {"word": (V, D), "position": (P, D), "token_type": (K, D),
                    "norm": {"scale": (D,), "bias": (D,)}},
     "blocks": [transformer block, ...]}

The settings (:class:`Settings`) are stored by :func:`init` and :func:`from_torch` and read by
:func:`apply`. :func:`from_torch` reads a Hugging Face ``BertModel`` state dict (the names of its
``model.safetensors``), which is how :mod:`jaxchain.pretrained` loads MiniLM-L6; :func:`to_torch`
writes one, which is how a fine-tuned encoder leaves (:func:`jaxchain.pretrained.save_bert`).
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import _validate, rules
from jaxchain.nn import _dropout, _settings, transformer
from jaxchain.nn._torch import require
from jaxchain.nn.lora import per_block
from jaxchain.ops import Ops

#: ``{"settings", "embeddings", "blocks"}`` (see above).
Params = dict[str, Any]

#: The layer norms' epsilon by default, BERT's ``layer_norm_eps``.
EPS = 1e-12


@_settings.static
class Settings:
    """An encoder's sizes and its layer norms' epsilon, as :func:`init` takes them (Hugging
    Face's ``BertConfig``: :func:`settings_from_config`); stored in its params.

    Attributes:
      vocab_size, max_len, d_model, num_heads, num_layers, d_ff, type_vocab_size: the sizes
        (``d_ff``: ``None`` is ``4 d_model``, resolved on construction).
      eps: the layer norms' epsilon (``layer_norm_eps``).
    """

    vocab_size: int
    max_len: int
    d_model: int
    num_heads: int
    num_layers: int
    d_ff: int | None = None
    type_vocab_size: int = 2
    eps: float = EPS

    def __post_init__(self):
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        names = ("vocab_size", "max_len", "d_model", "num_heads", "num_layers", "d_ff")
        _settings.positive("bert", **{f: getattr(self, f) for f in (*names, "type_vocab_size")})
        if self.d_model % self.num_heads:
            raise ValueError(
                f"bert: d_model {self.d_model} is not divisible by num_heads {self.num_heads}"
            )
        if not self.eps >= 0:
            raise ValueError(f"bert: eps must be >= 0, got {self.eps!r}")
        object.__setattr__(self, "eps", float(self.eps))


def settings_from_config(config: Mapping) -> Settings:
    """The :class:`Settings` of a Hugging Face ``BertConfig`` (``config.json`` as a dict); a
    field the encoder does not implement raises a ``ValueError`` naming it."""
    for field, supported in (("hidden_act", "gelu"), ("position_embedding_type", "absolute")):
        if config.get(field, supported) != supported:
            raise ValueError(
                f"bert config: {field} = {config[field]!r} is not supported (only {supported!r})"
            )
    return Settings(
        vocab_size=config["vocab_size"],
        max_len=config["max_position_embeddings"],
        d_model=config["hidden_size"],
        num_heads=config["num_attention_heads"],
        num_layers=config["num_hidden_layers"],
        d_ff=config["intermediate_size"],
        type_vocab_size=config.get("type_vocab_size", 2),
        eps=config.get("layer_norm_eps", EPS),
    )


def settings_of(params: Params) -> Settings:
    """``params["settings"]``, checked against the shapes it describes (a ``ValueError``
    naming ``params`` when it has none or they disagree)."""
    s, e = _settings.of(params, Settings, "bert"), params["embeddings"]
    _settings.agree(
        "bert",
        word=(tuple(e["word"].shape), (s.vocab_size, s.d_model)),
        max_len=(e["position"].shape[0], s.max_len),
        type_vocab_size=(e["token_type"].shape[0], s.type_vocab_size),
        num_layers=(len(params["blocks"]), s.num_layers),
    )
    return s


def init(
    key: jax.Array,
    vocab_size: int,
    *,
    max_len: int,
    d_model: int,
    num_heads: int,
    num_layers: int,
    d_ff: int | None = None,
    type_vocab_size: int = 2,
    eps: float = EPS,
    dtype=jnp.float32,
) -> Params:
    """A randomly initialised encoder whose :class:`Settings` are these arguments (but ``key``
    and ``dtype``); BERT's embeddings, normal with std 0.02. ``d_ff`` defaults to ``4 D``."""
    s = Settings(
        vocab_size=vocab_size,
        max_len=max_len,
        d_model=d_model,
        num_heads=num_heads,
        num_layers=num_layers,
        d_ff=d_ff,
        type_vocab_size=type_vocab_size,
        eps=eps,
    )
    kw, kp, kt, *kb = jax.random.split(key, 3 + num_layers)
    normal = lambda k, shape: 0.02 * jax.random.normal(k, shape, dtype)  # noqa: E731
    embeddings = {
        "word": normal(kw, (vocab_size, d_model)),
        "position": normal(kp, (max_len, d_model)),
        "token_type": normal(kt, (type_vocab_size, d_model)),
        "norm": {"scale": jnp.ones((d_model,), dtype), "bias": jnp.zeros((d_model,), dtype)},
    }
    blocks = [transformer.init_block(k, d_model, num_heads, s.d_ff, dtype=dtype) for k in kb]
    return {"settings": s, "embeddings": embeddings, "blocks": blocks}


def apply(
    params: Params,
    tokens: jax.Array,
    mask: jax.Array | None = None,
    token_types: jax.Array | None = None,
    *,
    num_blocks: int | None = None,
    lora: dict | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    ops: Ops = rules,
) -> jax.Array:
    """Hidden states ``(B, T, D)`` of integer ``tokens (B, T)``, with the settings the params
    carry.

    Args:
      params: from :func:`init` or :func:`from_torch`.
      tokens: ``(B, T)`` token ids, ``T <= max_len``.
      mask: optional boolean ``(B, T)``, True = a real token (Hugging Face's
        ``attention_mask``); no position attends to padding.
      token_types: optional ``(B, T)`` segment ids (default all 0).
      num_blocks: run only the first this many blocks (default all).
      lora: optional LoRA adapters from :func:`jaxchain.nn.lora.init` (they carry their
        scale).
      dropout: with a ``key``, dropout at this rate after the embeddings and on each residual
        branch, as BERT was trained (``hidden_dropout_prob``); none by default.
      ops: :mod:`jaxchain.rules`, :mod:`jaxchain.tangents` or :mod:`jaxchain.reference`.
    """
    s, emb = settings_of(params), params["embeddings"]
    _validate.rank("bert", "tokens", tokens, 2, "(B, T)")
    _validate.integer("bert", "tokens", tokens)
    t = tokens.shape[1]
    if t > s.max_len:
        raise ValueError(f"bert: tokens has length {t}, more than max_len {s.max_len}")
    if token_types is None:
        token_types = jnp.zeros_like(tokens)
    _validate.shape("bert", "token_types", token_types, tokens.shape, "(B, T)")
    x = (
        ops.embedding(tokens, emb["word"])
        + ops.embedding(token_types, emb["token_type"])
        + emb["position"][None, :t]
    )
    x = ops.layer_norm(x, emb["norm"]["scale"], emb["norm"]["bias"], s.eps)
    x = _dropout.maybe(ops, x, dropout, key, 0)
    adapters, scale = per_block(lora, s.num_layers)
    for i, (block, adapter) in enumerate(zip(params["blocks"], adapters, strict=True)):
        if num_blocks is not None and i >= num_blocks:
            break
        k = None if key is None else jax.random.fold_in(key, i + 1)
        x = transformer.apply_block(
            block, x, mask, eps=s.eps, lora=adapter, lora_scale=scale, dropout=dropout, key=k,
            ops=ops,
        )  # fmt: skip
    return x


def mean_pool(hidden: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The mean of ``hidden (B, T, D)`` over the real tokens of ``mask (B, T)`` (all when
    None): sentence-transformers' pooling, ``(B, D)``."""
    if mask is None:
        return jnp.mean(hidden, axis=1)
    _validate.shape("mean_pool", "mask", mask, hidden.shape[:2], "(B, T)")
    weights = mask.astype(hidden.dtype)[..., None]
    count = jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    return jnp.sum(hidden * weights, axis=1) / count


def from_torch(state_dict: Mapping[str, np.ndarray], config: Mapping | Settings) -> Params:
    """Params, carrying their settings, from a Hugging Face ``BertModel`` state dict of NumPy
    arrays (names as in its ``model.safetensors``, with or without the ``bert.`` prefix of
    task models) and its config (a ``config.json`` dict, or :class:`Settings`).

    Every ``nn.Linear`` weight ``(out, in)`` is transposed for ``x W``; the query, key and value
    weights are split into heads, ``(D, N, H)``, and the attention output's into ``(N, H, D)``.
    """
    sd = {k.removeprefix("bert."): np.asarray(v) for k, v in state_dict.items()}
    e = "embeddings."
    names = ("word_embeddings", "position_embeddings", "token_type_embeddings")
    require(sd, [f"{e}{n}.weight" for n in names] + [f"{e}LayerNorm.weight"], "bert")
    word, position, token_type = (jnp.asarray(sd[f"{e}{n}.weight"]) for n in names)
    embeddings = {
        "word": word,
        "position": position,
        "token_type": token_type,
        "norm": _norm(sd, f"{e}LayerNorm"),
    }
    settings = config if isinstance(config, Settings) else settings_from_config(config)
    d, n = settings.d_model, settings.num_heads
    h = d // n
    blocks = []
    for i in range(settings.num_layers):
        p = f"encoder.layer.{i}."
        require(sd, [f"{p}attention.self.query.weight", f"{p}output.dense.weight"], "bert")
        attention = {}
        for c, name in zip("qkv", ("query", "key", "value"), strict=True):
            attention[f"w_{c}"] = jnp.asarray(
                sd[f"{p}attention.self.{name}.weight"].T.reshape(d, n, h)
            )
            attention[f"b_{c}"] = jnp.asarray(sd[f"{p}attention.self.{name}.bias"].reshape(n, h))
        attention["w_o"] = jnp.asarray(sd[f"{p}attention.output.dense.weight"].T.reshape(n, h, d))
        attention["b_o"] = jnp.asarray(sd[f"{p}attention.output.dense.bias"])
        ffn = {
            "w1": jnp.asarray(sd[f"{p}intermediate.dense.weight"].T),
            "b1": jnp.asarray(sd[f"{p}intermediate.dense.bias"]),
            "w2": jnp.asarray(sd[f"{p}output.dense.weight"].T),
            "b2": jnp.asarray(sd[f"{p}output.dense.bias"]),
        }
        blocks.append(
            {
                "attention": attention,
                "norm1": _norm(sd, f"{p}attention.output.LayerNorm"),
                "ffn": ffn,
                "norm2": _norm(sd, f"{p}output.LayerNorm"),
            }
        )
    return {"settings": settings, "embeddings": embeddings, "blocks": blocks}


def to_torch(params: Params) -> dict[str, np.ndarray]:
    """The Hugging Face ``BertModel`` state dict of ``params`` (NumPy arrays under the names
    of its ``model.safetensors``): :func:`from_torch` reversed, so that
    ``from_torch(to_torch(p), n)`` is ``p`` bit for bit. Plain params only: fold LoRA adapters
    in first (:func:`jaxchain.nn.lora.merge`)."""
    e = params["embeddings"]
    sd = {
        f"embeddings.{name}_embeddings.weight": e[key]
        for key, name in (("word", "word"), ("position", "position"), ("token_type", "token_type"))
    }
    sd |= _norm_to_torch(e["norm"], "embeddings.LayerNorm")
    d = e["word"].shape[1]
    for i, block in enumerate(params["blocks"]):
        p, a, f = f"encoder.layer.{i}.", block["attention"], block["ffn"]
        for c, name in zip("qkv", ("query", "key", "value"), strict=True):
            sd[f"{p}attention.self.{name}.weight"] = np.asarray(a[f"w_{c}"]).reshape(d, d).T
            sd[f"{p}attention.self.{name}.bias"] = np.asarray(a[f"b_{c}"]).reshape(d)
        sd[f"{p}attention.output.dense.weight"] = np.asarray(a["w_o"]).reshape(d, d).T
        sd[f"{p}attention.output.dense.bias"] = a["b_o"]
        sd |= _norm_to_torch(block["norm1"], f"{p}attention.output.LayerNorm")
        sd[f"{p}intermediate.dense.weight"] = np.asarray(f["w1"]).T
        sd[f"{p}intermediate.dense.bias"] = f["b1"]
        sd[f"{p}output.dense.weight"] = np.asarray(f["w2"]).T
        sd[f"{p}output.dense.bias"] = f["b2"]
        sd |= _norm_to_torch(block["norm2"], f"{p}output.LayerNorm")
    return {k: np.ascontiguousarray(v) for k, v in sd.items()}


def _norm_to_torch(norm: dict, prefix: str) -> dict:
    return {f"{prefix}.weight": norm["scale"], f"{prefix}.bias": norm["bias"]}


def _norm(sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, jax.Array]:
    return {"scale": jnp.asarray(sd[f"{prefix}.weight"]), "bias": jnp.asarray(sd[f"{prefix}.bias"])}
