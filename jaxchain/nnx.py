"""flax nnx modules whose derivatives are jaxchain's hand-written rules.

Each module holds the parameters of its nnx counterpart — same names, shapes and
initialisation — so ``nnx.update(ours, nnx.state(theirs, nnx.Param))`` moves weights either
way, and ``nnx.grad``, ``nnx.Optimizer`` and ``nnx.jit`` work as with nnx's own. Only the
computation differs: it goes through :mod:`jaxchain.rules`, whose backward passes are written
out.

===========================  ==============================  ====================================
module                       parameters of                   computed by (``rules.``)
===========================  ==============================  ====================================
:class:`Linear`              ``nnx.Linear``                  ``dense``
:class:`LayerNorm`           ``nnx.LayerNorm``               ``layer_norm``
:class:`RMSNorm`             ``nnx.RMSNorm``                 ``rms_norm``
:class:`LSTM`                ``nnx.RNN(OptimizedLSTMCell)``  ``lstm`` (one sweep)
:class:`MultiHeadAttention`  ``nnx.MultiHeadAttention``      ``dense``, ``dot_product_attention``
:class:`DecoderBlock`        ``nn.decoder``'s block          ``nn.decoder.apply_block``
===========================  ==============================  ====================================

:func:`attention_fn` is ``rules.dot_product_attention`` with the signature
``nnx.MultiHeadAttention(attention_fn=...)`` calls.

What the rules do not compute is refused with a ``ValueError`` when the module is made
(attention dropout, ``decode``, ``normalize_qk``; norms over other than the last axis), never
computed differently.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> layer = Linear(3, 4, rngs=nnx.Rngs(0))
>>> layer(jnp.ones((2, 3))).shape
(2, 4)
"""

from jaxchain._extras import require

require("flax", __name__)  # before the imports that need it

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxchain import rules
from jaxchain.nn import decoder

__all__ = [
    "LSTM",
    "DecoderBlock",
    "LayerNorm",
    "Linear",
    "MultiHeadAttention",
    "RMSNorm",
    "attention_fn",
]


def _same_dtype(dtype, *arrays):
    """``arrays`` in ``dtype``, or in their common dtype as numpy promotes (nnx's
    ``promote_dtype``, whatever ``jax_numpy_dtype_promotion`` says)."""
    if dtype is None:
        with jax.numpy_dtype_promotion("standard"):
            dtype = jnp.result_type(*(a for a in arrays if a is not None))
    return [None if a is None else jnp.asarray(a, dtype) for a in arrays]


def _param(variable):
    """A parameter's value, or None where the module has none (``use_bias=False``)."""
    return None if variable is None else variable[...]


def _dense(dtype, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """``x (..., I) @ kernel (I, *out) + bias (*out)`` (zero when None) through
    ``rules.dense``, in nnx's promoted dtype."""
    d, *out = kernel.shape
    flat = None if bias is None else bias.reshape(-1)
    x, kernel, flat = _same_dtype(dtype, x, kernel.reshape(d, -1), flat)
    flat = jnp.zeros(kernel.shape[1], kernel.dtype) if flat is None else flat
    return rules.dense(x, kernel, flat).reshape(*x.shape[:-1], *out)


def _refuse(what: str, **unsupported) -> None:
    given = [name for name, bad in unsupported.items() if bad]
    if given:
        raise ValueError(f"jaxchain.nnx.{what}: the rules do not compute {', '.join(given)}")


class Linear(nnx.Linear):
    """``nnx.Linear`` through ``rules.dense``: ``kernel (I, O)``, ``bias (O,)``."""

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return _dense(self.dtype, inputs, self.kernel[...], _param(self.bias))


def _check_norm(what: str, module) -> None:
    _refuse(
        what,
        **{
            "reduction_axes other than -1": module.reduction_axes != -1,
            "feature_axes other than -1": module.feature_axes != -1,
            "axis_name": module.axis_name is not None,
        },
    )


class LayerNorm(nnx.LayerNorm):
    """``nnx.LayerNorm`` over the last axis through ``rules.layer_norm``: ``scale (D,)``,
    ``bias (D,)`` (either may be switched off, as in nnx)."""

    def __init__(self, num_features: int, **kwargs):
        super().__init__(num_features, **kwargs)
        _check_norm("LayerNorm", self)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        _refuse("LayerNorm", mask=mask is not None)
        d = x.shape[-1]
        scale = self.scale[...] if self.scale is not None else jnp.ones(d, self.param_dtype)
        bias = self.bias[...] if self.bias is not None else jnp.zeros(d, self.param_dtype)
        x, scale, bias = _same_dtype(self.dtype, x, scale, bias)
        return rules.layer_norm(x, scale, bias, self.epsilon)


class RMSNorm(nnx.RMSNorm):
    """``nnx.RMSNorm`` over the last axis through ``rules.rms_norm``: ``scale (D,)``."""

    def __init__(self, num_features: int, **kwargs):
        super().__init__(num_features, **kwargs)
        _check_norm("RMSNorm", self)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        _refuse("RMSNorm", mask=mask is not None)
        scale = (
            self.scale[...] if self.scale is not None else jnp.ones(x.shape[-1], self.param_dtype)
        )
        x, scale = _same_dtype(self.dtype, x, scale)
        return rules.rms_norm(x, scale, self.epsilon)


class LSTM(nnx.Module):
    """A whole batch-major sequence ``(B, T, I)`` through ``rules.lstm`` (the backward pass
    through time written out), with the parameters of
    ``nnx.RNN(nnx.OptimizedLSTMCell(in_features, hidden_features))``: ``cell.dense_i.kernel
    (I, 4H)``, ``cell.dense_h.kernel (H, 4H)``, ``cell.dense_h.bias (4H,)``, gates in the
    order i, f, g, o. Like ``nnx.RNN``, the carry is ``(c, h)``; with ``seq_lengths`` it is
    the state at each sequence's end (the outputs after it are zeros)."""

    def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, **cell):
        self.cell = nnx.OptimizedLSTMCell(in_features, hidden_features, rngs=rngs, **cell)
        _refuse(
            "LSTM",
            **{
                "gate_fn other than sigmoid": self.cell.gate_fn is not jax.nn.sigmoid,
                "activation_fn other than tanh": self.cell.activation_fn is not jnp.tanh,
            },
        )

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: tuple[jax.Array, jax.Array] | None = None,
        seq_lengths: jax.Array | None = None,
        return_carry: bool = False,
    ):
        c0, h0 = (None, None) if initial_carry is None else initial_carry
        cell = self.cell
        xs, w_x, w_h, b, h0, c0 = _same_dtype(
            cell.dtype,
            inputs,
            cell.dense_i.kernel[...],
            cell.dense_h.kernel[...],
            cell.dense_h.bias[...],
            h0,
            c0,
        )
        hs, (h, c) = rules.lstm(xs, h0, c0, w_x, w_h, b, seq_lengths)
        return ((c, h), hs) if return_carry else hs


def attention_fn(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype=None,
    precision=None,
    module: nnx.Module | None = None,
    promote_dtype: Callable | None = None,
    is_causal: bool = False,
) -> jax.Array:
    """``rules.dot_product_attention`` as ``nnx.MultiHeadAttention(attention_fn=...)`` calls
    it: ``query (B, T, N, H)``, ``key``/``value (B, S, K, H)`` (grouped-query when K < N),
    ``mask`` broadcastable to ``(B, N, T, S)`` (True: may attend). Attention dropout and
    ``sow_weights`` (the weights are never formed whole) are refused."""
    _refuse(
        "attention_fn",
        **{
            "attention dropout": dropout_rate > 0 and not deterministic,
            "sow_weights": module is not None,
        },
    )
    query, key, value, bias = _same_dtype(dtype, query, key, value, bias)
    return rules.dot_product_attention(query, key, value, bias, mask, is_causal=is_causal)


class MultiHeadAttention(nnx.MultiHeadAttention):
    """``nnx.MultiHeadAttention`` whose projections go through ``rules.dense`` and whose
    attention is ``rules.dot_product_attention``: the same ``query``, ``key``, ``value``
    (``kernel (D, N, H)``, ``bias (N, H)``) and ``out`` (``kernel (N, H, D)``) params; self-
    and cross-attention, ``mask``, ``is_causal``, grouped-query heads."""

    def __init__(self, num_heads: int, in_features: int, *args, **kwargs):
        kwargs.setdefault("attention_fn", attention_fn)
        kwargs.setdefault("decode", False)
        super().__init__(num_heads, in_features, *args, **kwargs)
        _refuse(
            "MultiHeadAttention",
            **{
                "attention dropout": self.dropout_rate > 0,
                "decode": bool(self.decode),
                "normalize_qk": self.normalize_qk,
            },
        )

    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_k: jax.Array | None = None,
        inputs_v: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        is_causal: bool = False,
        **unused,
    ) -> jax.Array:
        inputs_k = inputs_q if inputs_k is None else inputs_k
        inputs_v = inputs_k if inputs_v is None else inputs_v
        pairs = ((self.query, inputs_q), (self.key, inputs_k), (self.value, inputs_v))
        q, k, v = (
            _dense(self.dtype, x, layer.kernel[...], _param(layer.bias)) for layer, x in pairs
        )
        o = self.attention_fn(q, k, v, mask=mask, dtype=self.dtype, is_causal=is_causal)
        n, h, d = self.out.kernel.shape
        kernel = self.out.kernel[...].reshape(n * h, d)
        return _dense(self.dtype, o.reshape(*o.shape[:-2], n * h), kernel, _param(self.out.bias))


class DecoderBlock(nnx.Module):
    """One block of :mod:`jaxchain.nn.decoder` (Llama's: RMSNorm, rotary grouped-query causal
    self-attention, RMSNorm, SwiGLU; no biases) as an nnx module: its params are the
    functional block's (``norm1``, ``w_q (D, N, H)``, ``w_k``/``w_v (D, K, H)``, ``w_o``,
    ``norm2``, ``w_gate``/``w_up (D, F)``, ``w_down``), initialised as
    :func:`jaxchain.nn.decoder.init` does for a stack of ``num_layers``, and its call is
    :func:`jaxchain.nn.decoder.apply_block` through the rules."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_kv_heads: int,
        d_ff: int,
        *,
        num_layers: int = 1,
        rope_base: float = decoder.ROPE_BASE,
        eps: float = decoder.EPS,
        rngs: nnx.Rngs,
    ):
        dims = dict(
            d_model=d_model,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            num_layers=num_layers,
            d_ff=d_ff,
            rope_base=rope_base,
            eps=eps,
        )
        params = decoder.init(rngs.params(), 1, **dims)
        for name, value in params["blocks"][0].items():
            setattr(self, name, nnx.Param(value))
        self.settings = params["settings"]  # static: RoPE's base, RMSNorm's epsilon

    def params(self) -> dict:
        """The block's params as :func:`jaxchain.nn.decoder.apply_block` takes them."""
        names = ("norm1", "w_q", "w_k", "w_v", "w_o", "norm2", "w_gate", "w_up", "w_down")
        return {name: getattr(self, name)[...] for name in names}

    def __call__(self, x: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        """``x (B, T, D)`` at ``positions (B, T)`` (default ``0 ..< T`` for every row)."""
        if positions is None:
            positions = jnp.arange(x.shape[1])[None]  # (1, T)
        y, _ = decoder.apply_block(self.params(), x, positions, settings=self.settings)
        return y
