"""Multi-head self-attention.

Shape letters: B batch, T sequence length, D model width, N heads, H head size (D = N H).
Params carry the head count in their shapes, so :func:`apply` needs no head argument::

    w_q, w_k, w_v (D, N, H)   b_q, b_k, b_v (N, H)   w_o (N, H, D)   b_o (D,)
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import _validate, rules
from jaxchain.nn import _init
from jaxchain.nn._torch import require
from jaxchain.ops import Ops

#: The projections' weights and biases, heads in the shapes (see above).
Params = dict[str, jax.Array]


def init(key: jax.Array, d_model: int, num_heads: int, *, dtype=jnp.float32) -> Params:
    """Glorot uniform projections (as ``(D, D)`` matrices), zero biases."""
    if num_heads < 1 or d_model % num_heads:
        raise ValueError(f"attention: d_model {d_model} is not divisible by num_heads {num_heads}")
    n, h = num_heads, d_model // num_heads
    kq, kk, kv, ko = jax.random.split(key, 4)
    proj = {
        name: _init.glorot(k, (d_model, d_model), dtype).reshape(d_model, n, h)
        for name, k in (("w_q", kq), ("w_k", kk), ("w_v", kv))
    }
    biases = {name: jnp.zeros((n, h), dtype) for name in ("b_q", "b_k", "b_v")}
    w_o = _init.glorot(ko, (d_model, d_model), dtype).reshape(n, h, d_model)
    return {**proj, **biases, "w_o": w_o, "b_o": jnp.zeros((d_model,), dtype)}


def project(ops, x, w, b, lora=None, lora_scale=1.0):
    """``x W + b`` through the dense rule, or with a LoRA adapter ``{"a", "b"}`` through
    ``lora_dense``; ``w`` is ``(I, O)``."""
    if lora is None:
        return ops.dense(x, w, b)
    return ops.lora_dense(x, w, b, lora["a"], lora["b"], scale=lora_scale)


def _heads(ops, x, w, b, lora, lora_scale):
    """``(B, T, D) -> (B, T, N, H)`` through the hand-written dense rule."""
    d, n, h = w.shape
    y = project(ops, x, w.reshape(d, n * h), b.reshape(n * h), lora, lora_scale)
    return y.reshape(*x.shape[:2], n, h)


def apply(
    params: Params,
    x: jax.Array,
    mask: jax.Array | None = None,
    *,
    is_causal: bool = False,
    lora: dict | None = None,
    lora_scale: float = 1.0,
    ops: Ops = rules,
) -> jax.Array:
    """Self-attention over ``x (B, T, D)``.

    Args:
      params: from :func:`init` or :func:`from_torch`.
      x: ``(B, T, D)``.
      mask: optional boolean ``(B, T)``, True = a real token; padding is never attended to.
      is_causal: position t attends only to positions ``<= t``.
      lora: optional LoRA adapters of the projections, ``{"q"|"k"|"v"|"o": {"a", "b"}}``
        (see :mod:`jaxchain.nn.lora`), with the scale ``lora_scale``.
      ops: :mod:`jaxchain.rules`, :mod:`jaxchain.tangents` or :mod:`jaxchain.reference`.

    Returns:
      ``(B, T, D)``.
    """
    p = params
    _validate.rank("attention", "x", x, 3, "(B, T, D)")
    _validate.shape("attention", "x", x, (*x.shape[:2], p["w_q"].shape[0]), "(B, T, D)")
    keys = None
    if mask is not None:
        _validate.boolean("attention", "mask", mask)
        _validate.shape("attention", "mask", mask, x.shape[:2], "(B, T)")
        keys = mask[:, None, None, :]  # (B, 1, 1, T): no query attends to padding
    lora = lora or {}
    q, k, v = (_heads(ops, x, p[f"w_{c}"], p[f"b_{c}"], lora.get(c), lora_scale) for c in "qkv")
    o = ops.dot_product_attention(q, k, v, mask=keys, is_causal=is_causal)  # (B, T, N, H)
    n, h, d = p["w_o"].shape
    o = o.reshape(*o.shape[:2], n * h)
    return project(ops, o, p["w_o"].reshape(n * h, d), p["b_o"], lora.get("o"), lora_scale)


def from_torch(state_dict: Mapping[str, np.ndarray], num_heads: int) -> Params:
    """Params from a ``torch.nn.MultiheadAttention(D, num_heads, batch_first=True)`` state
    dict of NumPy arrays.

    PyTorch stacks ``[W_q; W_k; W_v]`` as ``in_proj_weight (3D, D)`` for ``x W^T``; each block
    is transposed to ``(D, D)`` and split into heads, ``(D, N, H)``; ``out_proj.weight (D, D)``
    becomes ``w_o = W_o^T`` as ``(N, H, D)``. PyTorch's ``key_padding_mask`` is True for
    padding, the opposite of ``mask`` here.
    """
    keys = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    require(state_dict, keys, "attention")
    w_in, b_in, w_out, b_out = (np.asarray(state_dict[k]) for k in keys)
    d = w_out.shape[0]
    if d % num_heads:
        raise ValueError(f"attention.from_torch: width {d} is not divisible by {num_heads} heads")
    n, h = num_heads, d // num_heads
    params = {}
    for i, c in enumerate("qkv"):
        params[f"w_{c}"] = jnp.asarray(w_in[i * d : (i + 1) * d].T.reshape(d, n, h))
        params[f"b_{c}"] = jnp.asarray(b_in[i * d : (i + 1) * d].reshape(n, h))
    return {**params, "w_o": jnp.asarray(w_out.T.reshape(n, h, d)), "b_o": jnp.asarray(b_out)}
