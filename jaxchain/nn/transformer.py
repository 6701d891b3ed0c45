"""Transformer encoder: blocks of self-attention and a GELU feed-forward network, each with a
residual connection and layer norm, over token and position embeddings.

Post-norm (BERT's, the default): ``x = LN(x + f(x))``. Pre-norm (``pre_norm=True``):
``x = x + f(LN(x))``, with a final layer norm after the last block.
"""

import jax
import jax.numpy as jnp

from jaxchain import _validate, rules
from jaxchain.nn import _dropout, _init, attention
from jaxchain.ops import Ops

Params = dict


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
    eps: float = 1e-5,
    lora: dict | None = None,
    lora_scale: float = 1.0,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    ops: Ops = rules,
) -> jax.Array:
    """One block on ``x (B, T, D)``; ``mask (B, T)`` True = a real token. ``lora``: adapters
    of this block's projections (:mod:`jaxchain.nn.lora`); ``dropout`` (with a ``key``) on
    the output of each residual branch, as BERT trains."""
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
    max_len: int,
    d_model: int,
    num_heads: int,
    num_layers: int,
    d_ff: int | None = None,
    *,
    pre_norm: bool = False,
    dtype=jnp.float32,
) -> Params:
    """An encoder: ``embed (V, D)``, ``position (max_len, D)`` (normal, std 0.02), ``blocks``,
    and ``final_norm`` when ``pre_norm``. ``d_ff`` defaults to ``4 D``."""
    ke, kp, *kb = jax.random.split(key, 2 + num_layers)
    d_ff = 4 * d_model if d_ff is None else d_ff
    params = {
        "embed": 0.02 * jax.random.normal(ke, (vocab_size, d_model), dtype),
        "position": 0.02 * jax.random.normal(kp, (max_len, d_model), dtype),
        "blocks": [init_block(k, d_model, num_heads, d_ff, dtype=dtype) for k in kb],
    }
    if pre_norm:
        params["final_norm"] = _norm(d_model, dtype)
    return params


def apply(
    params: Params,
    tokens: jax.Array,
    mask: jax.Array | None = None,
    *,
    is_causal: bool = False,
    pre_norm: bool = False,
    eps: float = 1e-5,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    ops: Ops = rules,
) -> jax.Array:
    """Hidden states ``(B, T, D)`` of integer ``tokens (B, T)``.

    Args:
      params: from :func:`init` (with the same ``pre_norm``).
      tokens: ``(B, T)`` integers in ``[0, V)``, ``T <= max_len``.
      mask: optional boolean ``(B, T)``, True = a real token.
      is_causal: each position attends only to earlier ones (a language model).
      pre_norm: pre-norm blocks and a final layer norm.
      dropout: with a ``key``, dropout at this rate on each block's residual branches.
      ops: :mod:`jaxchain.rules`, :mod:`jaxchain.tangents` or :mod:`jaxchain.reference`.
    """
    _validate.rank("transformer", "tokens", tokens, 2, "(B, T)")
    t, max_len = tokens.shape[1], params["position"].shape[0]
    if t > max_len:
        raise ValueError(f"transformer: tokens has length {t}, more than max_len {max_len}")
    if pre_norm != ("final_norm" in params):
        raise ValueError(f"transformer: pre_norm={pre_norm} but params were made with the other")
    x = ops.embedding(tokens, params["embed"]) + params["position"][None, :t]
    for i, block in enumerate(params["blocks"]):
        k = None if key is None else jax.random.fold_in(key, i)
        x = apply_block(
            block,
            x,
            mask,
            is_causal=is_causal,
            pre_norm=pre_norm,
            eps=eps,
            dropout=dropout,
            key=k,
            ops=ops,
        )
    if pre_norm:
        x = ops.layer_norm(x, params["final_norm"]["scale"], params["final_norm"]["bias"], eps)
    return x
