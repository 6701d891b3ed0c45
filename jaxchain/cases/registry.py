"""Every hand-written rule with its autodiff twin and a recipe for arguments.

The registry is what ``jaxchain check`` runs and what the generic property tests iterate: a
rule added here is checked the moment it exists. :data:`RULES` holds the ops; :data:`MODEL_CASES`
holds each model's ``apply`` with ``ops=rules`` against the same with ``ops=reference``.
Each case also carries its forward-mode twin from :mod:`jaxchain.tangents` (``Case.tangent``),
checked by ``jaxchain check --mode forward`` against the same reference, and its counterpart
in the ecosystem from :mod:`jaxchain.cases.peers` (``Case.counterpart``), bound the same way.
"""

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import nn, reference, rules, tangents

Args = tuple[Any, ...]
MODES = ("reverse", "forward")  # the hand-written families: rules (custom_vjp), tangents (jvp)


class _Counterpart:
    """Op ``name`` of :mod:`jaxchain.cases.peers`, imported at its first use: the peers are
    computed by flax and optax (the ``flax`` extra), and ``jaxchain check`` runs without."""

    def __init__(self, name: str):
        self.name = name

    @property
    def func(self) -> Callable:
        """The counterpart itself (what :func:`~jaxchain.cases.peers.computed_by` reads)."""
        from jaxchain.cases import peers

        return getattr(peers, self.name)

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)


class _Peers:
    """The counterparts as a family: ``getattr(family, op)`` as for the others."""

    def __getattr__(self, name: str) -> _Counterpart:
        if name.startswith("_"):  # no op is private: copy, pickle and inspect ask for these
            raise AttributeError(name)
        return _Counterpart(name)


# what each case of an op binds: its rule, reference, tangent and counterpart
FAMILIES = (rules, reference, tangents, _Peers())


@dataclasses.dataclass(frozen=True)
class Case:
    """A rule, its reference, and how to make arguments for it.

    Attributes:
      name: the name shown in reports.
      rule: the hand-written function, called with positional arrays.
      reference: its autodiff twin, same signature.
      make_args: ``(rng, dtype, scale, dims) -> args``, drawn with NumPy's generator ``rng``
        (no JAX computation: a hypothesis strategy draws them); floating arrays in ``dtype``
        with values of roughly ``scale``. :meth:`args` puts them on the device.
      dims: for each named dimension, the sizes to draw from; the first is the default.
      tangent: the same op from the forward-mode family (:mod:`jaxchain.tangents`), if any.
      counterpart: the same op computed by jax.nn, optax or flax (:mod:`jaxchain.cases.peers`),
        same signature; None for the models.
    """

    name: str
    rule: Callable
    reference: Callable
    make_args: Callable[[np.random.Generator, np.dtype, float, Mapping[str, Any]], Args]
    dims: Mapping[str, tuple]
    tangent: Callable | None = None
    counterpart: Callable | None = None

    def of(self, mode: str) -> Callable:
        """The function checked in ``mode``: the rule (``"reverse"``) or its forward-mode
        twin (``"forward"``)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return self.rule if mode == "reverse" else self.tangent

    def args(self, seed: int = 0, dtype: Any = jnp.float64, scale: float = 1.0, **dims) -> Args:
        """Arguments for the rule, drawn from ``seed`` with NumPy and put on the device once
        (no compilation); dims not given take their first (default) size."""
        if not isinstance(seed, int | np.integer):
            raise ValueError(f"Case.args: seed must be an int, got {type(seed).__name__}")
        chosen = {name: dims.get(name, sizes[0]) for name, sizes in self.dims.items()}
        rng = np.random.default_rng(int(seed))
        return jax.tree.map(to_device, self.make_args(rng, jnp.dtype(dtype), scale, chosen))


def to_device(a: Any) -> Any:
    """A NumPy array on the default device in its canonical dtype (int64 is int32 without
    ``jax_enable_x64``): a transfer, never a compilation. Anything else as it is."""
    if not isinstance(a, np.ndarray | np.generic):
        return a
    return jax.device_put(np.asarray(a, jax.dtypes.canonicalize_dtype(a.dtype)))


def key_of(rng: np.random.Generator) -> jax.Array:
    """A typed threefry PRNG key from ``rng``, made without running JAX."""
    data = rng.integers(0, 2**32, 2, dtype=np.uint32)
    return jax.random.wrap_key_data(data, impl="threefry2x32")


def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _ints(rng, shape, high):
    return rng.integers(0, high, shape)


def _unary(rng, dtype, scale, d):
    return (_normal(rng, d["shape"], dtype, scale),)


def _dense(rng, dtype, scale, d):
    i, o = d["I"], d["O"]
    return (
        _normal(rng, (*d["lead"], i), dtype, scale),
        _normal(rng, (i, o), dtype, i**-0.5),
        _normal(rng, (o,), dtype),
    )


def _embedding(rng, dtype, scale, d):
    ids = _ints(rng, d["lead"], d["V"])
    ids[..., :2] = 1  # a repeated id
    return ids, _normal(rng, (d["V"], 4), dtype, scale)


def _cross_entropy(rng, dtype, scale, d):
    logits = _normal(rng, (*d["lead"], d["V"]), dtype, scale)
    return logits, _ints(rng, d["lead"], d["V"])


def _linear_cross_entropy(rng, dtype, scale, d):
    x = _normal(rng, (*d["lead"], 3), dtype, scale)
    return x, _normal(rng, (3, d["V"]), dtype, scale), _ints(rng, d["lead"], d["V"])


def _binary_cross_entropy(rng, dtype, scale, d):
    logits = _normal(rng, d["shape"], dtype, scale)
    return logits, rng.uniform(size=d["shape"]).astype(dtype)


def _pair(rng, dtype, scale, d):
    return _normal(rng, d["shape"], dtype, scale), _normal(rng, d["shape"], dtype, scale)


def _layer_norm(rng, dtype, scale, d):
    dim = d["D"]
    return (
        _normal(rng, (*d["lead"], dim), dtype, scale),
        1 + _normal(rng, (dim,), dtype, 0.2),
        _normal(rng, (dim,), dtype, 0.2),
    )


def _qkv(rng, dtype, scale, d):
    """query ``(B, T, N, H)``, key and value ``(B, S, K, H)``."""
    (t, s), b, (n, k), h = d["TS"], d["B"], d["NK"], d["H"]
    q = _normal(rng, (b, t, n, h), dtype, scale)
    return q, _normal(rng, (b, s, k, h), dtype, scale), _normal(rng, (b, s, k, h), dtype)


def _qkv_mask(rng, dtype, scale, d):
    """A random boolean mask (B, 1, T, S) in which the first query row of the first batch
    element attends to nothing."""
    mask = rng.uniform(size=(d["B"], 1, *d["TS"])) < 0.7
    mask[0, 0, 0, :] = False
    return (*_qkv(rng, dtype, scale, d), mask)


def _qkv_everything(rng, dtype, scale, d):
    """query, key, value; a bias ``(1, N, T, S)`` (broadcast over the batch, so its gradient
    sums over it); lengths of queries ``(T, T - 1)`` and keys ``(S, 2)``."""
    (t, s), n = d["TS"], d["NK"][0]
    bias = _normal(rng, (1, n, t, s), dtype)
    lengths = np.array([t, t - 1], np.int32), np.array([s, 2], np.int32)  # int32, as jax.nn
    return (*_qkv(rng, dtype, scale, d), bias, *lengths)


def _bind(op: str, keywords: tuple[str, ...] = (), **kwargs) -> tuple[Callable, ...]:
    """``op`` of each family (:data:`FAMILIES`), the last ``len(keywords)`` positional
    arguments passed by these names, and ``kwargs`` bound."""

    def bound(fn):
        def call(*args):
            n = len(args) - len(keywords)
            return fn(*args[:n], **dict(zip(keywords, args[n:], strict=True)), **kwargs)

        call.func = fn  # the op under the binding, as functools.partial has it
        return call

    return tuple(bound(getattr(family, op)) for family in FAMILIES)


def _where(rng, dtype, scale, d):
    """x and a boolean ``where``: the first row keeps nothing, the second one element."""
    x = _normal(rng, d["shape"], dtype, scale)
    where = rng.uniform(size=d["shape"]) < 0.6
    where[:2] = False
    where[1, 2] = True
    return x, where


def _rms_norm(rng, dtype, scale, d):
    dim = d["D"]
    return _normal(rng, (*d["lead"], dim), dtype, scale), 1 + _normal(rng, (dim,), dtype, 0.2)


def _swiglu(rng, dtype, scale, d):
    dim, f = d["D"], d["F"]
    x = _normal(rng, (*d["lead"], dim), dtype, scale)
    return x, _normal(rng, (dim, f), dtype, dim**-0.5), _normal(rng, (dim, f), dtype, dim**-0.5)


def _rope(rng, dtype, scale, d):
    """x ``(B, T, N, H)`` and positions ``(B, T)``: counting from 0, and from an offset (a
    prompt in a KV cache)."""
    b, t = d["B"], d["T"]
    positions = np.arange(t)[None] + np.array([[0], [7]])[:b]
    return _normal(rng, (b, t, d["N"], d["H"]), dtype, scale), positions


def _dropout(rng, dtype, scale, d):
    return _normal(rng, d["shape"], dtype, scale), key_of(rng)


def _lora(rng, dtype, scale, d):
    """x ``(..., I)``, lora_a ``(I, R)``, lora_b ``(R, O)``; the frozen weights are not
    arguments (see :func:`frozen_weights`)."""
    i, o, r = d["I"], d["O"], d["R"]
    x = _normal(rng, (*d["lead"], i), dtype, scale)
    return x, _normal(rng, (i, r), dtype, i**-0.5), _normal(rng, (r, o), dtype, 0.5)


def frozen_weights(x: jax.Array, o: int, phase: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Fixed ``w (I, O)`` and ``b (O,)`` for the lora_dense and lora_swiglu cases, in x's
    dtype (``phase`` tells two apart): frozen weights are constants of the function checked
    (their gradient is zero by definition, not the derivative that finite differences would
    measure)."""
    i = x.shape[-1]
    w = jnp.sin(phase + jnp.arange(i * o, dtype=x.dtype)).reshape(i, o) * i**-0.5
    return w, jnp.cos(jnp.arange(o, dtype=x.dtype))


def _lora_call(ops):
    def call(x, lora_a, lora_b):
        return ops.lora_dense(x, *frozen_weights(x, lora_b.shape[1]), lora_a, lora_b, scale=2.0)

    call.func = ops.lora_dense
    return call


def _lora_swiglu(rng, dtype, scale, d):
    """x ``(..., D)``, then gate_a, gate_b, up_a, up_b (``(D, R)``, ``(R, F)``); the frozen
    weights are not arguments (see :func:`frozen_weights`)."""
    dim, f, r = d["D"], d["F"], d["R"]
    x = _normal(rng, (*d["lead"], dim), dtype, scale)
    ab = [
        (_normal(rng, (dim, r), dtype, dim**-0.5), _normal(rng, (r, f), dtype, 0.5)) for _ in "gu"
    ]
    return x, *ab[0], *ab[1]


def _lora_swiglu_call(ops):
    def call(x, gate_a, gate_b, up_a, up_b):
        f = gate_b.shape[1]
        w_gate, w_up = frozen_weights(x, f)[0], frozen_weights(x, f, phase=0.5)[0]
        return ops.lora_swiglu(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale=2.0)

    call.func = ops.lora_swiglu
    return call


def _recurrent(gates: int, states: int, biases: int, padded: bool):
    """Arguments ``(xs, *initial states, w_x, w_h, *biases[, lengths])``; with ``padded``,
    lengths include a full, a partial and an empty sequence."""

    def make(rng, dtype, scale, d):
        b, t, i, h = d["B"], d["T"], d["I"], d["H"]
        xs = _normal(rng, (b, t, i), dtype, scale)
        carry = [_normal(rng, (b, h), dtype, 0.5) for _ in range(states)]
        w_x = _normal(rng, (i, gates * h), dtype, i**-0.5)
        w_h = _normal(rng, (h, gates * h), dtype, h**-0.5)
        bs = [_normal(rng, (gates * h,), dtype, 0.5) for _ in range(biases)]
        lengths = [_lengths(b, t)] if padded else []
        return (xs, *carry, w_x, w_h, *bs, *lengths)

    return make


def _lengths(b: int, t: int) -> np.ndarray:
    """A full, a half and an empty sequence, then full ones."""
    return np.array([t, t // 2, 0] + [t] * (b - 3))


_ELEMENTWISE = {"shape": ((7,), (3, 4))}
_ROWS = {"lead": ((4,), (2, 3))}
_ATTENTION = {"TS": ((5, 5), (3, 4)), "B": (2,), "NK": ((2, 2),), "H": (4,)}
_GQA = {**_ATTENTION, "NK": ((4, 2),)}  # grouped queries: 2 per key/value head
_SEQUENCE = {"B": (3,), "T": (6, 3), "I": (3,), "H": (4,)}


def _recurrent_shape(op: str) -> tuple[int, int, int]:
    """``(gates, states, biases)`` of a recurrent op: its model's gate blocks, and the
    arguments its signature has between ``xs`` and ``w_x`` and between ``w_h`` and
    ``lengths``."""
    names = list(inspect.signature(getattr(rules, op)).parameters)
    states = names.index("w_x") - 1
    return nn.RECURRENT[op].GATES, states, names.index("lengths") - names.index("w_h") - 1


_RECURRENT = {op: _recurrent_shape(op) for op in nn.RECURRENT}


def _case(name, make_args, dims, *bound: Callable) -> Case:
    """A case of op ``name``, or of the functions ``bound`` for each family."""
    rule, ref, tangent, counterpart = bound or (getattr(family, name) for family in FAMILIES)
    return Case(name, rule, ref, make_args, dims, tangent, counterpart)


def _variant(name: str, op: str, make_args, dims, **kwargs) -> Case:
    """A case for ``op`` with keyword arguments bound."""
    return _case(name, make_args, dims, *(partial(getattr(f, op), **kwargs) for f in FAMILIES))


def _everything(variant: str, **kwargs) -> Case:
    """An attention case with grouped queries, a bias and both lengths (by name), and
    ``kwargs``."""
    names = ("bias", "query_seq_lengths", "key_value_seq_lengths")
    op = "dot_product_attention"
    return _case(op + variant, _qkv_everything, _GQA, *_bind(op, names, **kwargs))


RULES: dict[str, Case] = {
    c.name: c
    for c in [
        _case("dense", _dense, {**_ROWS, "I": (3,), "O": (5,)}),
        _case("embedding", _embedding, {"lead": ((2, 3), (5,)), "V": (6,)}),
        _case("relu", _unary, _ELEMENTWISE),
        _case("sigmoid", _unary, _ELEMENTWISE),
        _case("tanh", _unary, _ELEMENTWISE),
        _case("gelu", _unary, _ELEMENTWISE),
        _variant("gelu(approximate)", "gelu", _unary, _ELEMENTWISE, approximate=True),
        _case("softmax", _unary, _ELEMENTWISE),
        _variant("softmax(axis=0)", "softmax", _unary, {"shape": ((3, 4),)}, axis=0),
        _case("log_softmax", _unary, _ELEMENTWISE),
        _case("softmax_cross_entropy", _cross_entropy, {**_ROWS, "V": (5,)}),
        _variant(
            "linear_softmax_cross_entropy",
            "linear_softmax_cross_entropy",
            _linear_cross_entropy,
            {**_ROWS, "V": (7,)},
            chunk_size=3,  # two whole chunks and a remainder of one
        ),
        _case("sigmoid_binary_cross_entropy", _binary_cross_entropy, _ELEMENTWISE),
        _case("mse", _pair, _ELEMENTWISE),
        _case("softmax(where)", _where, {"shape": ((3, 5),)}, *_bind("softmax", ("where",))),
        _case("layer_norm", _layer_norm, {**_ROWS, "D": (6,)}),
        _case("rms_norm", _rms_norm, {**_ROWS, "D": (6,)}),
        _case("silu", _unary, _ELEMENTWISE),
        _case("swiglu", _swiglu, {**_ROWS, "D": (4,), "F": (6,)}),
        _case("rope", _rope, {"B": (2,), "T": (3,), "N": (2,), "H": (6,)}),
        _variant("dropout", "dropout", _dropout, {"shape": ((4, 5),)}, rate=0.3),
        _case(
            "lora_dense",
            _lora,
            {**_ROWS, "I": (4,), "O": (5,), "R": (2,)},
            *(_lora_call(family) for family in FAMILIES),
        ),
        _case(
            "lora_swiglu",
            _lora_swiglu,
            {**_ROWS, "D": (4,), "F": (6,), "R": (2,)},
            *(_lora_swiglu_call(family) for family in FAMILIES),
        ),
        _case("dot_product_attention", _qkv, _ATTENTION),
        _variant(
            "dot_product_attention(causal)",
            "dot_product_attention",
            _qkv,
            _ATTENTION,
            is_causal=True,
        ),
        _case(
            "dot_product_attention(mask)",
            _qkv_mask,
            _ATTENTION,
            *_bind("dot_product_attention", ("mask",)),
        ),
        _everything("(gqa, bias, lengths, window)", local_window_size=(2, 1)),
        _variant(  # blocks of 2 on T, S in {3, 4, 5}: padding, and causal blocks skipped
            "dot_product_attention(blocks, causal)",
            "dot_product_attention",
            _qkv,
            _ATTENTION,
            is_causal=True,
            block_size=2,
        ),
        _case(
            "dot_product_attention(blocks, mask)",
            _qkv_mask,
            _ATTENTION,
            *_bind("dot_product_attention", ("mask",), block_size=2),
        ),
        _everything(  # on blocks: hidden blocks skipped by causality, the window and lengths
            "(blocks, gqa, bias, lengths, window, causal)",
            local_window_size=(1, 2),
            is_causal=True,
            block_size=2,
        ),
        *[_case(op, _recurrent(*n, padded=False), _SEQUENCE) for op, n in _RECURRENT.items()],
        *[
            _variant(f"{op}(lengths)", op, _recurrent(*n, padded=True), _SEQUENCE)
            for op, n in _RECURRENT.items()
        ],
    ]
}


# --- models: apply(..., ops=rules) against apply(..., ops=reference) --------------------------


def _model(name: str, call, make_args, dims) -> Case:
    """A case whose rule is ``call(rules, *args)``, reference ``call(reference, *args)`` and
    tangent ``call(tangents, *args)``."""
    rule, ref, tangent = (partial(call, family) for family in (rules, reference, tangents))
    return Case(name, rule, ref, make_args, dims, tangent)


@functools.cache
def _shapes(init: Callable, *args, **kwargs) -> Any:
    """The params ``init(key, *args, **kwargs)`` makes, as shapes: traced, never run."""
    return jax.eval_shape(lambda: init(jax.random.key(0), *args, **kwargs))


def _params(rng, init: Callable, *args, **kwargs) -> Any:
    """Params of the structure, shapes and dtypes ``init`` gives, drawn with NumPy (``init``
    itself is never run): a norm's scale ``1 + 0.2 N``, a bias (a leaf named ``b…``) ``0.2
    N``, any other leaf ``N / sqrt(fan in)``, its fan in the first axis (``(I, O)`` weights,
    ``(D, N, H)`` projections, embedding tables) but for attention's output projection
    ``w_o (N, H, D)``, whose fan in is ``N H``. Values for a derivative check, not a
    training start (no forget-gate bias, embeddings larger than Llama's 0.02)."""

    def leaf(path, s):
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        last = name.rsplit("/", 1)[-1]
        if last.startswith("b"):
            return _normal(rng, s.shape, s.dtype, 0.2)
        if "norm" in name:
            return 1 + _normal(rng, s.shape, s.dtype, 0.2)
        fan_in = np.prod(s.shape[:-1]) if last == "w_o" else (s.shape or (1,))[0]
        return _normal(rng, s.shape, s.dtype, float(fan_in) ** -0.5)

    return jax.tree_util.tree_map_with_path(leaf, _shapes(init, *args, **kwargs))


def _mask(t: int, lengths: list[int]) -> np.ndarray:
    """``(len(lengths), t)``: True on each row's first ``lengths[i]`` positions."""
    return np.arange(t)[None, :] < np.array(lengths)[:, None]


def _mlp_args(activation):
    def make(rng, dtype, scale, d):
        params = _params(rng, nn.mlp.init, d["sizes"], activation=activation, dtype=dtype)
        return params, _normal(rng, (4, d["sizes"][0]), dtype, scale)

    return make


def _sequence_args(module, padded):
    def make(rng, dtype, scale, d):
        b, t = d["B"], d["T"]
        params = _params(rng, module.init, d["I"], d["H"], dtype=dtype)
        xs = _normal(rng, (b, t, d["I"]), dtype, scale)
        return params, xs, _lengths(b, t) if padded else None

    return make


def _attention_args(rng, dtype, scale, d):
    params = _params(rng, nn.attention.init, d["D"], d["N"], dtype=dtype)
    x = _normal(rng, (2, d["T"], d["D"]), dtype, scale)
    return params, x, _mask(d["T"], [d["T"], 2])


def _transformer_args(pre_norm):
    def make(rng, dtype, scale, d):
        sizes = _encoder_sizes(d)
        params = _params(rng, nn.transformer.init, 11, **sizes, pre_norm=pre_norm, dtype=dtype)
        return params, _ints(rng, (2, d["T"]), 11), _mask(d["T"], [d["T"], 3])

    return make


def _bert_args(rng, dtype, scale, d):
    params = {
        "encoder": _params(rng, nn.bert.init, 11, **_encoder_sizes(d), dtype=dtype),
        "head": _params(rng, nn.mlp.init, (d["D"], 3), dtype=dtype)["layers"][0],
    }
    tokens = _ints(rng, (3, d["T"]), 11)
    mask = _mask(d["T"], [d["T"], 3, 1])
    types = (np.arange(d["T"])[None, :] >= 2).astype(tokens.dtype).repeat(3, axis=0)
    return params, tokens, mask, types, _ints(rng, (3,), 3)


def _encoder_sizes(d) -> dict:
    return dict(max_len=8, d_model=d["D"], num_heads=2, num_layers=2, d_ff=16)


def _bert_finetune(ops, params, tokens, mask, types, labels):
    """The fine-tuning loss per example: BERT, mean pooling, a dense head, cross-entropy."""
    h = nn.bert.apply(params["encoder"], tokens, mask, types, ops=ops)
    head = params["head"]
    logits = ops.dense(nn.bert.mean_pool(h, mask), head["w"], head["b"])
    return ops.softmax_cross_entropy(logits, labels)


def _decoder_args(tie):
    """A decoder with grouped-query attention (4 query heads, 2 key/value heads), tokens,
    targets and a dropout key."""

    def make(rng, dtype, scale, d):
        params = _params(
            rng,
            nn.decoder.init,
            11,
            d_model=d["D"],
            num_heads=4,
            num_kv_heads=2,
            num_layers=2,
            d_ff=12,
            tie_embeddings=tie,
            dtype=dtype,
        )
        params = jax.tree.map(lambda a: a * scale if a.ndim > 1 else a, params)
        tokens = _ints(rng, (2, d["T"] + 1), 11)
        return params, tokens[:, :-1], tokens[:, 1:], key_of(rng)

    return make


def _decoder(dropout):
    """The language-model loss of the decoder (RMSNorm, RoPE, GQA, SwiGLU, fused head)."""
    return lambda ops, p, tokens, targets, key: nn.decoder.loss(
        p, tokens, targets, key=key, dropout=dropout, ops=ops
    )


def _mlp(activation):
    return lambda ops, p, x: nn.mlp.apply(p, x, activation=activation, ops=ops)


def _sequence(module):
    return lambda ops, p, xs, lengths: module.apply(p, xs, lengths=lengths, ops=ops)


def _attention(is_causal):
    return lambda ops, p, x, m: nn.attention.apply(p, x, m, is_causal=is_causal, ops=ops)


def _transformer(is_causal):
    def apply(ops, p, tokens, m):
        return nn.transformer.apply(p, tokens, m, is_causal=is_causal, ops=ops)

    return apply


_SEQ = {"B": (3,), "T": (5,), "I": (3,), "H": (4,)}
_MHA = {"T": (5,), "D": (8,), "N": (2,)}
_ENCODER = {"T": (6,), "D": (8,)}
_DECODER = {"T": (5,), "D": (16,)}

MODEL_CASES: dict[str, Case] = {
    c.name: c
    for c in [
        _model("mlp(relu)", _mlp("relu"), _mlp_args("relu"), {"sizes": ((3, 8, 8, 4),)}),
        _model("mlp(tanh)", _mlp("tanh"), _mlp_args("tanh"), {"sizes": ((3, 8, 4),)}),
        *[_model(n, _sequence(m), _sequence_args(m, False), _SEQ) for n, m in nn.RECURRENT.items()],
        *[
            _model(f"{n}(lengths)", _sequence(m), _sequence_args(m, True), _SEQ)
            for n, m in nn.RECURRENT.items()
        ],
        _model("attention", _attention(False), _attention_args, _MHA),
        _model("attention(causal)", _attention(True), _attention_args, _MHA),
        _model("transformer", _transformer(False), _transformer_args(False), _ENCODER),
        _model(
            "transformer(pre-norm, causal)",
            _transformer(True),
            _transformer_args(True),
            _ENCODER,
        ),
        _model("bert(finetune)", _bert_finetune, _bert_args, _ENCODER),
        _model("decoder(dropout)", _decoder(0.2), _decoder_args(False), _DECODER),
    ]
}
