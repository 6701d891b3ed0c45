"""Transformer encoder: blocks of self-attention and a GELU feed-forward network, each with a
residual connection and layer norm, over token and position embeddings.

Post-norm (BERT's, the default): ``x = LN(x + f(x))``. Pre-norm (``pre_norm=True``):
``x = x + f(LN(x))``, with a final layer norm after the last block. The sizes, ``pre_norm`` and
the layer norms' ``eps`` are the model's :class:`Settings`, which :func:`init` stores in the
params (``params["settings"]``) and :func:`apply` reads.
"""

from typing import Any

import jax
import jax.numpy as jnp

from jaxchain import _validate, rules
from jaxchain.nn import _dropout, _init, _settings, attention
from jaxchain.nn.lora import per_block
from jaxchain.ops import Ops

#: ``{"settings", "embed", "position", "blocks"}``, and ``"final_norm"`` when pre-norm.
Params = dict[str, Any]

#: The layer norms' epsilon by default.
EPS = 1e-5


@_settings.static
class Settings:
    """An encoder's sizes and constants, as :func:`init` takes them; stored in its params.

    Attributes:
      vocab_size, max_len, d_model, num_heads, num_layers, d_ff: the sizes (``d_ff``: ``None``
        is ``4 d_model``, resolved on construction).
      pre_norm: pre-norm blocks and a final layer norm (else post-norm, BERT's).
      eps: the layer norms' epsilon.
    """

    vocab_size: int
    max_len: int
    d_model: int
    num_heads: int
    num_layers: int
    d_ff: int | None = None
    pre_norm: bool = False
    eps: float = EPS

    def __post_init__(self):
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        _settings.positive(
            "transformer",
            **{f: getattr(self, f) for f in ("vocab_size", "max_len", "d_model", "num_heads")},
            **{f: getattr(self, f) for f in ("num_layers", "d_ff")},
        )
        if self.d_model % self.num_heads:
            raise ValueError(
                f"transformer: d_model {self.d_model} is not divisible by num_heads "
                f"{self.num_heads}"
            )
        if not self.eps >= 0:
            raise ValueError(f"transformer: eps must be >= 0, got {self.eps!r}")
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "pre_norm", bool(self.pre_norm))


def _norm(d: int, dtype) -> dict[str, jax.Array]:
    return {"scale": jnp.ones((d,), dtype), "bias": jnp.zeros((d,), dtype)}


def init_block(
    key: jax.Array, d_model: int, num_heads: int, d_ff: int, *, dtype=jnp.float32
) -> Params:
    """One encoder block: ``attention``, ``norm1``, ``ffn`` (``w1 (D, F)``, ``w2 (F, D)``; He
    for the GELU layer, Glorot for the output), ``norm2``."""
    ka, k1, k2 = jax.random.split(key, 3)
    ffn = {
        "w1": _init.he(k1, (d_model, d_ff), dtype),
        "b1": jnp.zeros((d_ff,), dtype),
        "w2": _init.glorot(k2, (d_ff, d_model), dtype),
        "b2": jnp.zeros((d_model,), dtype),
    }
    return {
        "attention": attention.init(ka, d_model, num_heads, dtype=dtype),
        "norm1": _norm(d_model, dtype),
        "ffn": ffn,
        "norm2": _norm(d_model, dtype),
    }


def _feed_forward(p, x, ops, lora, lora_scale):
    h = ops.gelu(attention.project(ops, x, p["w1"], p["b1"], lora.get("ffn1"), lora_scale))
    return attention.project(ops, h, p["w2"], p["b2"], lora.get("ffn2"), lora_scale)


def apply_block(
    params: Params,
    x: jax.Array,
    mask: jax.Array | None = None,
    *,
    is_causal: bool = False,
    pre_norm: bool = False,
    eps: float = EPS,
    lora: dict | None = None,
    lora_scale: float = 1.0,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    ops: Ops = rules,
) -> jax.Array:
    """One block (``params["blocks"][i]``) on ``x (B, T, D)``; ``mask (B, T)`` True = a real
    token; ``pre_norm`` and ``eps``: the model's settings. ``lora``: this block's adapters
    (``adapters["blocks"][i]``, :mod:`jaxchain.nn.lora`), scaled by ``lora_scale``;
    ``dropout`` (with a ``key``) on the output of each residual branch, as BERT trains."""
    lora = lora or {}

    def norm(name, y):
        return ops.layer_norm(y, params[name]["scale"], params[name]["bias"], eps)

    def attend(y):
        y = attention.apply(
            params["attention"],
            y,
            mask,
            is_causal=is_causal,
            lora=lora,
            lora_scale=lora_scale,
            ops=ops,
        )
        return _dropout.maybe(ops, y, dropout, key, 0)

    def ffn(y):
        y = _feed_forward(params["ffn"], y, ops, lora, lora_scale)
        return _dropout.maybe(ops, y, dropout, key, 1)

    if pre_norm:
        x = x + attend(norm("norm1", x))
        return x + ffn(norm("norm2", x))
    x = norm("norm1", x + attend(x))
    return norm("norm2", x + ffn(x))


def init(
    key: jax.Array,
    vocab_size: int,
    *,
    max_len: int,
    d_model: int,
    num_heads: int,
    num_layers: int,
    d_ff: int | None = None,
    pre_norm: bool = False,
    eps: float = EPS,
    dtype=jnp.float32,
) -> Params:
    """An encoder whose :class:`Settings` are these arguments (but ``key`` and ``dtype``):
    ``settings``, ``embed (V, D)``, ``position (max_len, D)`` (normal, std 0.02), ``blocks``,
    and ``final_norm`` when ``pre_norm``. ``d_ff`` defaults to ``4 D``."""
    s = Settings(
        vocab_size=vocab_size,
        max_len=max_len,
        d_model=d_model,
        num_heads=num_heads,
        num_layers=num_layers,
        d_ff=d_ff,
        pre_norm=pre_norm,
        eps=eps,
    )
    ke, kp, *kb = jax.random.split(key, 2 + num_layers)
    params = {
        "settings": s,
        "embed": 0.02 * jax.random.normal(ke, (vocab_size, d_model), dtype),
        "position": 0.02 * jax.random.normal(kp, (max_len, d_model), dtype),
        "blocks": [init_block(k, d_model, num_heads, s.d_ff, dtype=dtype) for k in kb],
    }
    if pre_norm:
        params["final_norm"] = _norm(d_model, dtype)
    return params


def settings_of(params: Params) -> Settings:
    """``params["settings"]``, checked against the shapes it describes (a ``ValueError``
    naming ``params`` when it has none or they disagree)."""
    s = _settings.of(params, Settings, "transformer")
    _settings.agree(
        "transformer",
        embed=(tuple(params["embed"].shape), (s.vocab_size, s.d_model)),
        max_len=(params["position"].shape[0], s.max_len),
        num_layers=(len(params["blocks"]), s.num_layers),
    )
    return s


def apply(
    params: Params,
    tokens: jax.Array,
    mask: jax.Array | None = None,
    *,
    is_causal: bool = False,
    lora: dict | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    ops: Ops = rules,
) -> jax.Array:
    """Hidden states ``(B, T, D)`` of integer ``tokens (B, T)``, with the settings the params
    carry (``pre_norm``, ``eps``).

    Args:
      params: from :func:`init`.
      tokens: ``(B, T)`` integers in ``[0, V)``, ``T <= max_len``.
      mask: optional boolean ``(B, T)``, True = a real token.
      is_causal: each position attends only to earlier ones (a language model).
      lora: optional adapters from :func:`jaxchain.nn.lora.init`.
      dropout: with a ``key``, dropout at this rate on each block's residual branches.
      ops: :mod:`jaxchain.rules`, :mod:`jaxchain.tangents` or :mod:`jaxchain.reference`.
    """
    s = settings_of(params)
    _validate.rank("transformer", "tokens", tokens, 2, "(B, T)")
    t = tokens.shape[1]
    if t > s.max_len:
        raise ValueError(f"transformer: tokens has length {t}, more than max_len {s.max_len}")
    x = ops.embedding(tokens, params["embed"]) + params["position"][None, :t]
    adapters, scale = per_block(lora, s.num_layers)
    for i, (block, adapter) in enumerate(zip(params["blocks"], adapters, strict=True)):
        k = None if key is None else jax.random.fold_in(key, i)
        x = apply_block(
            block, x, mask, is_causal=is_causal, pre_norm=s.pre_norm, eps=s.eps, lora=adapter,
            lora_scale=scale, dropout=dropout, key=k, ops=ops,
        )  # fmt: skip
    if s.pre_norm:
        x = ops.layer_norm(x, params["final_norm"]["scale"], params["final_norm"]["bias"], s.eps)
    return x
