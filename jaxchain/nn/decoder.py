"""A Llama-style decoder-only language model: token embedding, pre-norm blocks (RMSNorm,
rotary position embedding, grouped-query causal attention, a SwiGLU feed-forward unit), a
final RMSNorm and a language-model head; and sampling from it with a KV cache.

Shape letters: B batch, T length, D model width, N query heads, K key/value heads, H head
size (``D / N`` unless ``head_dim`` says otherwise), F feed-forward width, V vocabulary.
Params are plain dicts; the head counts and sizes live in the shapes::

    embed (V, D)     head (D, V)  (absent with tie_embeddings: the head is embed^T)
    blocks[i]: norm1 (D,)  w_q (D, N, H)  w_k, w_v (D, K, H)  w_o (N, H, D)
               norm2 (D,)  w_gate, w_up (D, F)  w_down (F, D)
    final_norm (D,)

    settings: Settings (no leaves: the sizes, rope_base, eps)

Like Llama, no projection has a bias. The two constants that are not shapes, ``rope_base``
(Llama's ``rope_theta``) and ``eps`` (its ``rms_norm_eps``), live with the sizes in
:class:`Settings`, which :func:`init` and :func:`from_torch` store in the params, so that
:func:`apply`, :func:`loss` and :func:`generate` always run a model with its own. ``lora``:
adapters of every block's projections (:func:`jaxchain.nn.lora.init`, which carry their scale)
applied through ``rules.lora_dense`` (``rules.lora_swiglu`` for ``gate`` and ``up``
together). Hugging Face's ``LlamaForCausalLM`` state dicts and configs are mapped by
:func:`from_torch`, :func:`to_torch`, :func:`settings_from_config` and :func:`to_config`.
"""

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxchain import _validate, rules
from jaxchain.nn import _decoder_settings, _dropout, _settings
from jaxchain.nn._decoder_settings import Settings
from jaxchain.nn._llama import from_torch as from_torch
from jaxchain.nn._llama import settings_from_config as settings_from_config
from jaxchain.nn._llama import to_config as to_config
from jaxchain.nn._llama import to_torch as to_torch
from jaxchain.nn.lora import per_block
from jaxchain.ops import Ops

#: ``{"settings", "embed", "blocks", "final_norm"}`` and ``"head"`` unless tied (above).
Params = dict

#: RoPE's base by default, Llama's ``rope_theta`` default.
ROPE_BASE: float = _decoder_settings.ROPE_BASE
#: RMSNorm's epsilon by default, Llama's ``rms_norm_eps`` default.
EPS: float = _decoder_settings.EPS

__all__ = [
    "EPS",
    "ROPE_BASE",
    "Settings",
    "apply",
    "apply_block",
    "from_torch",
    "generate",
    "head_weights",
    "hidden",
    "init",
    "loss",
    "sample",
    "settings_from_config",
    "settings_of",
    "to_config",
    "to_torch",
]


def init(
    key: jax.Array,
    vocab_size: int,
    *,
    d_model: int,
    num_heads: int,
    num_kv_heads: int,
    num_layers: int,
    d_ff: int,
    head_dim: int | None = None,
    tie_embeddings: bool = False,
    rope_base: float = ROPE_BASE,
    eps: float = EPS,
    dtype=jnp.float32,
) -> Params:
    """Params of a decoder whose :class:`Settings` are these arguments (but ``key`` and
    ``dtype``), stored as ``params["settings"]``.

    Normal weights of standard deviation 0.02 (Llama's ``initializer_range``), the output
    projections of each block (``w_o``, ``w_down``) scaled down by ``sqrt(2 num_layers)`` so
    that the residual stream's variance does not grow with depth (GPT-2's); norms at one.
    ``head_dim`` defaults to ``d_model / num_heads``."""
    s = Settings(
        vocab_size=vocab_size,
        d_model=d_model,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        num_layers=num_layers,
        d_ff=d_ff,
        head_dim=head_dim,
        tie_embeddings=tie_embeddings,
        rope_base=rope_base,
        eps=eps,
    )
    ke, kh, *kb = jax.random.split(key, 2 + num_layers)
    params = {
        "settings": s,
        "embed": _normal(ke, (vocab_size, d_model), dtype),
        "blocks": [_init_block(k, s, dtype) for k in kb],
        "final_norm": jnp.ones((d_model,), dtype),
    }
    if not tie_embeddings:
        params["head"] = _normal(kh, (d_model, vocab_size), dtype)
    return params


def _normal(key, shape, dtype, std=0.02):
    return std * jax.random.normal(key, shape, dtype)


def _init_block(key: jax.Array, s: Settings, dtype) -> Params:
    kq, kk, kv, ko, kg, ku, kd = jax.random.split(key, 7)
    d, n, m, h, f = s.d_model, s.num_heads, s.num_kv_heads, s.head_dim, s.d_ff
    out_std = 0.02 / (2 * s.num_layers) ** 0.5
    return {
        "norm1": jnp.ones((d,), dtype),
        "w_q": _normal(kq, (d, n, h), dtype),
        "w_k": _normal(kk, (d, m, h), dtype),
        "w_v": _normal(kv, (d, m, h), dtype),
        "w_o": _normal(ko, (n, h, d), dtype, out_std),
        "norm2": jnp.ones((d,), dtype),
        "w_gate": _normal(kg, (d, f), dtype),
        "w_up": _normal(ku, (d, f), dtype),
        "w_down": _normal(kd, (f, d), dtype, out_std),
    }


def settings_of(params: Params) -> Settings:
    """``params["settings"]``, checked against the shapes it describes: a ``ValueError``
    naming ``params`` when it has none or when they disagree."""
    s = _settings.of(params, Settings, "decoder")
    _settings.agree(
        "decoder",
        embed=(tuple(params["embed"].shape), (s.vocab_size, s.d_model)),
        num_layers=(len(params["blocks"]), s.num_layers),
        tie_embeddings=("head" not in params, s.tie_embeddings),
    )
    return s


def head_weights(params: Params) -> jax.Array:
    """The ``(D, V)`` language-model head: its own, or the embedding's transpose when tied."""
    return params["head"] if "head" in params else params["embed"].T


def _project(ops, x, w, lora=None, lora_scale=1.0):
    """``x (B, T, D) @ w (D, ...)`` through the dense rule (no bias: a zero one), or with a
    LoRA adapter ``{"a" (D, R), "b" (R, O)}`` through ``lora_dense``."""
    d, *out = w.shape
    flat = w.reshape(d, -1)
    zero = jnp.zeros((flat.shape[1],), x.dtype)
    if lora is None:
        y = ops.dense(x, flat, zero)
    else:
        y = ops.lora_dense(x, flat, zero, lora["a"], lora["b"], scale=lora_scale)
    return y.reshape(*x.shape[:-1], *out)


def _feed_forward(ops, p, y, lora, lora_scale):
    """SwiGLU then ``W_down``: the fused ``swiglu`` without adapters on ``gate`` and ``up``,
    the fused ``lora_swiglu`` with both; with one, silu and two projections, so that the
    unadapted weight keeps the gradient that ``dense`` gives it, as elsewhere."""
    gate, up = lora.get("gate"), lora.get("up")
    if gate is not None and up is not None:
        adapters = (gate["a"], gate["b"], up["a"], up["b"])
        f = ops.lora_swiglu(y, p["w_gate"], p["w_up"], *adapters, scale=lora_scale)
    elif gate is not None or up is not None:
        gate, up = (_project(ops, y, p[f"w_{c}"], lora.get(c), lora_scale) for c in ("gate", "up"))
        f = ops.silu(gate) * up
    else:
        f = ops.swiglu(y, p["w_gate"], p["w_up"])
    return _project(ops, f, p["w_down"], lora.get("down"), lora_scale)


def _causal(start, t: int, s: int):
    """``(1, 1, t, s)``: queries at positions ``start ..< start + t`` see keys ``<=`` theirs."""
    return (jnp.arange(s)[None, :] <= start + jnp.arange(t)[:, None])[None, None]


def apply_block(
    params: Params,
    x: jax.Array,
    positions: jax.Array,
    *,
    settings: Settings,
    cache: tuple[jax.Array, jax.Array] | None = None,
    key: jax.Array | None = None,
    dropout: float = 0.0,
    lora: dict | None = None,
    lora_scale: float = 1.0,
    ops: Ops = rules,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One pre-norm block (``params["blocks"][i]``) on ``x (B, T, D)`` at integer
    ``positions (B, T)`` (or ``(1, T)``, one row for all): ``x + attend(norm(x))``, then
    ``x + swiglu(norm(x)) W_down``, with the model's ``settings`` (:func:`settings_of`).

    Without ``cache``, causal self-attention over ``x``; returns the block's output and its
    keys and values ``(B, T, K, H)``. With ``cache = (keys, values)`` ``(B, S, K, H)``, the
    new keys and values are written at ``positions`` (one start for the batch, ``positions[0,
    0]``) and the queries attend to every cached position up to theirs; returns the updated
    cache. ``lora``: this block's adapters (``adapters["blocks"][i]``), scaled by
    ``lora_scale``.
    """
    p, lora, eps = params, lora or {}, settings.eps
    y = ops.rms_norm(x, p["norm1"], eps)
    q, k, v = (_project(ops, y, p[f"w_{c}"], lora.get(c), lora_scale) for c in "qkv")
    q, k = (ops.rope(a, positions, base=settings.rope_base) for a in (q, k))  # (B, T, N|K, H)
    if cache is None:
        o = ops.dot_product_attention(q, k, v, is_causal=True)
        cache = (k, v)
    else:
        start = positions[0, 0]
        cache = tuple(
            lax.dynamic_update_slice_in_dim(c, a.astype(c.dtype), start, axis=1)
            for c, a in zip(cache, (k, v), strict=True)
        )
        mask = _causal(start, x.shape[1], cache[0].shape[1])
        o = ops.dot_product_attention(q, *cache, mask=mask)
    n, h, d = p["w_o"].shape
    o = _project(
        ops, o.reshape(*o.shape[:2], n * h), p["w_o"].reshape(n * h, d), lora.get("o"), lora_scale
    )
    x = x + _dropout.maybe(ops, o, dropout, key, 0)
    f = _feed_forward(ops, p, ops.rms_norm(x, p["norm2"], eps), lora, lora_scale)
    return x + _dropout.maybe(ops, f, dropout, key, 1), cache


def hidden(
    params: Params,
    tokens: jax.Array,
    *,
    key: jax.Array | None = None,
    dropout: float = 0.0,
    lora: dict | None = None,
    ops: Ops = rules,
) -> jax.Array:
    """The final hidden states ``(B, T, D)`` (after the final norm) of ``tokens (B, T)``: the
    input of the head, and of the fused ``linear_softmax_cross_entropy`` in training.
    ``dropout`` (with a ``key``) drops on each residual branch and on the embeddings;
    ``lora``: adapters from :func:`jaxchain.nn.lora.init`."""
    s = settings_of(params)
    _validate.rank("decoder", "tokens", tokens, 2, "(B, T)")
    _validate.integer("decoder", "tokens", tokens)
    positions = jnp.arange(tokens.shape[1])[None]  # (1, T): every row's
    x = _dropout.maybe(ops, ops.embedding(tokens, params["embed"]), dropout, key, 0)
    adapters, scale = per_block(lora, s.num_layers)
    for i, (block, adapter) in enumerate(zip(params["blocks"], adapters, strict=True)):
        k = None if key is None else jax.random.fold_in(key, i + 1)
        x, _ = apply_block(
            block, x, positions, settings=s, key=k, dropout=dropout, lora=adapter,
            lora_scale=scale, ops=ops,
        )  # fmt: skip
    return ops.rms_norm(x, params["final_norm"], s.eps)


def apply(
    params: Params, tokens: jax.Array, *, lora: dict | None = None, ops: Ops = rules
) -> jax.Array:
    """Next-token logits ``(B, T, V)`` of ``tokens (B, T)``, with the settings the params
    carry; ``lora``: adapters from :func:`jaxchain.nn.lora.init`."""
    h = hidden(params, tokens, lora=lora, ops=ops)
    w = head_weights(params)
    return ops.dense(h, w, jnp.zeros((w.shape[1],), h.dtype))


def loss(
    params: Params,
    tokens: jax.Array,
    targets: jax.Array,
    *,
    key: jax.Array | None = None,
    dropout: float = 0.0,
    lora: dict | None = None,
    ops: Ops = rules,
) -> jax.Array:
    """Mean next-token cross-entropy (nats per token) of ``targets (B, T)``, through the
    fused ``linear_softmax_cross_entropy``: the ``(B, T, V)`` logits are never stored."""
    h = hidden(params, tokens, key=key, dropout=dropout, lora=lora, ops=ops)
    return jnp.mean(ops.linear_softmax_cross_entropy(h, head_weights(params), targets))


def generate(
    params: Params,
    prompt: jax.Array,
    steps: int,
    *,
    key: jax.Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    ops: Ops = rules,
    progress: Callable[[int], None] | None = None,
) -> jax.Array:
    """``steps`` tokens sampled after ``prompt (B, P)``; returns ``(B, P + steps)``.

    The prompt runs once through every block, filling a KV cache of ``P + steps`` positions
    per layer; each new token then runs alone, its query attending to the cached keys and
    values, so a step costs ``O(P + steps)`` rather than a whole recomputation. The steps are
    a ``lax.scan`` inside one ``jit`` (compiled once per shape and setting). LoRA adapters:
    merge them first (:func:`jaxchain.nn.lora.merge`).

    Args:
      params: from :func:`init` or :func:`from_torch` (their settings are used).
      prompt: ``(B, P)`` token ids, ``P >= 1``.
      steps: how many tokens to add.
      key: a PRNG key for sampling.
      temperature: logits are divided by it before sampling; ``0`` is greedy (argmax).
      top_k: sample among the ``top_k`` most likely tokens only.
      ops: :mod:`jaxchain.rules`, :mod:`jaxchain.tangents` or :mod:`jaxchain.reference`.
      progress: called with ``1, 2, .. steps`` in order as the compiled loop makes each
        token (``jax.debug.callback``, ordered), for a progress display; the tokens do not
        depend on it.
    """
    vocab = settings_of(params).vocab_size
    _validate.rank("generate", "prompt", prompt, 2, "(B, P)")
    _validate.integer("generate", "prompt", prompt)
    if prompt.shape[1] < 1:
        raise ValueError(f"generate: prompt must hold at least one token, got {prompt.shape}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"generate: steps must be a non-negative int, got {steps!r}")
    if not temperature >= 0:
        raise ValueError(f"generate: temperature must be >= 0, got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= vocab:
        raise ValueError(f"generate: top_k must be in [1, {vocab}], got {top_k!r}")
    if steps == 0:
        return prompt
    return _generate(params, prompt, key, float(temperature), steps, top_k, ops, progress)


def sample(logits: jax.Array, key: jax.Array, temperature: float, top_k: int | None) -> jax.Array:
    """A token per row of ``logits (B, V)``: the likeliest at ``temperature`` 0, else drawn
    from the softmax of ``logits / temperature`` over the ``top_k`` likeliest (None: all)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        kth = lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1)


@partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _generate(params, prompt, key, temperature, steps, top_k, ops, progress):
    b, p = prompt.shape
    length = p + steps
    w_head = head_weights(params)
    s = params["settings"]

    def forward(tokens, caches, start):
        """The tokens ``(B, t)`` at positions ``start ..``: the last one's logits, caches."""
        positions = (start + jnp.arange(tokens.shape[1]))[None]  # (1, t): every row's
        x = ops.embedding(tokens, params["embed"])
        new = []
        for block, cache in zip(params["blocks"], caches, strict=True):
            x, cache = apply_block(block, x, positions, settings=s, cache=cache, ops=ops)
            new.append(cache)
        h = ops.rms_norm(x[:, -1], params["final_norm"], s.eps)
        return h @ w_head, new

    dtype = params["embed"].dtype
    caches = [
        tuple(jnp.zeros((b, length, *blk["w_k"].shape[1:]), dtype) for _ in "kv")
        for blk in params["blocks"]
    ]
    logits, caches = forward(prompt, caches, 0)
    keys = jax.random.split(key, steps)
    first = sample(logits, keys[0], temperature, top_k)
    made = (
        (lambda n: None)
        if progress is None
        else (lambda n: jax.debug.callback(progress, n, ordered=True))
    )
    made(1)

    def step(carry, i):
        token, caches = carry
        logits, caches = forward(token[:, None], caches, p + i)
        nxt = sample(logits, keys[i + 1], temperature, top_k)
        made(i + 2)
        return (nxt, caches), nxt

    _, rest = lax.scan(step, (first, caches), jnp.arange(steps - 1))
    new = jnp.concatenate([first[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)
    return jnp.concatenate([prompt, new.astype(prompt.dtype)], axis=1)
