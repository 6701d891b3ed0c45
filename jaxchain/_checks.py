"""The argument checks of every op, shared by :mod:`jaxchain.rules` and
:mod:`jaxchain.reference`.

They only convert to arrays and raise: nothing here computes a value that an op returns, so
the oracle and the rules share no computing code. A check raises ``ValueError`` naming the op,
the argument, the expected and the actual shape or dtype. Integer inputs whose values are
traced (inside ``jit``) cannot be checked in Python: :func:`in_range` then adds a
:func:`jax.experimental.checkify.check`, which ``checkify`` turns into an error (a no-op
otherwise), and the ops give NaN for the affected outputs and gradients.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from jaxchain import _validate


def in_range(op: str, name: str, values, low: int, high: int, closed: bool = False) -> None:
    """Integer ``values`` lie in ``[low, high)`` (``[low, high]`` if ``closed``): a
    ``ValueError`` for concrete values, a checkify check for traced ones."""
    bound = f"[{low}, {high}{']' if closed else ')'}"
    if isinstance(values, jax.core.Tracer):
        inside = (values >= low) & ((values <= high) if closed else (values < high))
        checkify.check(jnp.all(inside), f"{op}: {name} must lie in {bound}", debug=True)
        return
    v = np.asarray(values)
    if v.size and (v.min() < low or (v.max() > high if closed else v.max() >= high)):
        raise ValueError(f"{op}: {name} must lie in {bound}, got values in [{v.min()}, {v.max()}]")


def check_unary(op: str, x) -> jax.Array:
    """``x`` as a floating-point array."""
    x = _validate.as_array(op, "x", x)
    _validate.floating(op, x=x)
    return x


def check_axis(op: str, x, axis: int, where=None) -> tuple[jax.Array, int, jax.Array | None]:
    """A floating ``x``, ``axis`` in range (returned non-negative), ``where`` None or boolean
    broadcastable to ``x`` (returned at x's shape)."""
    x = check_unary(op, x)
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for x of shape {x.shape}")
    if where is not None:
        where = _validate.as_array(op, "where", where)
        _validate.boolean(op, "where", where)
        _validate.broadcastable(op, "where", where, x.shape, "the shape of x")
        where = jnp.broadcast_to(where, x.shape)
    return x, axis % x.ndim, where


def check_dense(op: str, x, w, b) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x ``(..., I)``, w ``(I, O)``, b ``(O,)``."""
    x, w, b = (_validate.as_array(op, n, a) for n, a in (("x", x), ("w", w), ("b", b)))
    _validate.floating(op, x=x, w=w, b=b)
    _validate.min_rank(op, "x", x, 1)
    _validate.rank(op, "w", w, 2, "(I, O)")
    _validate.shape(op, "w", w, (x.shape[-1], w.shape[1]), f"I = x.shape[-1] = {x.shape[-1]}")
    _validate.shape(op, "b", b, (w.shape[1],), f"O = w.shape[1] = {w.shape[1]}")
    return x, w, b


def check_embedding(op: str, ids, table) -> tuple[jax.Array, jax.Array]:
    """ids: integers in ``[0, V)``; table: floating ``(V, D)``."""
    ids, table = _validate.as_array(op, "ids", ids), _validate.as_array(op, "table", table)
    _validate.integer(op, "ids", ids)
    _validate.rank(op, "table", table, 2, "(V, D)")
    _validate.floating(op, table=table)
    in_range(op, "ids", ids, 0, table.shape[0])
    return ids, table


def check_labels(op: str, logits, labels) -> tuple[jax.Array, jax.Array]:
    """logits ``(..., V)`` floating, labels ``(...,)`` integer in ``[0, V)``."""
    logits = _validate.as_array(op, "logits", logits)
    labels = _validate.as_array(op, "labels", labels)
    _validate.floating(op, logits=logits)
    _validate.min_rank(op, "logits", logits, 1)
    _validate.integer(op, "labels", labels)
    _validate.shape(op, "labels", labels, logits.shape[:-1], "logits.shape[:-1]")
    in_range(op, "labels", labels, 0, logits.shape[-1])
    return logits, labels


def check_linear_labels(op: str, x, w, labels) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x ``(..., D)``, w ``(D, V)`` of x's dtype, labels ``(...,)`` integers in ``[0, V)``."""
    x, w, labels = (
        _validate.as_array(op, n, a) for n, a in (("x", x), ("w", w), ("labels", labels))
    )
    _validate.floating(op, x=x, w=w)
    _validate.min_rank(op, "x", x, 1)
    _validate.rank(op, "w", w, 2, "(D, V)")
    _validate.shape(op, "w", w, (x.shape[-1], w.shape[1]), f"D = x.shape[-1] = {x.shape[-1]}")
    _validate.integer(op, "labels", labels)
    _validate.shape(op, "labels", labels, x.shape[:-1], "x.shape[:-1]")
    in_range(op, "labels", labels, 0, w.shape[1])
    return x, w, labels


def check_pair(
    op: str, names: tuple[str, str], a, b, nonempty: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Two floating arrays of one shape and dtype (no broadcasting); with ``nonempty``, not
    of size 0."""
    a, b = (_validate.as_array(op, n, v) for n, v in zip(names, (a, b), strict=True))
    _validate.floating(op, **{names[0]: a, names[1]: b})
    _validate.shape(op, names[1], b, a.shape, f"the shape of {names[0]}")
    if nonempty and a.size == 0:
        raise ValueError(f"{op}: {names[0]} is empty (shape {a.shape}); its mean is undefined")
    return a, b


def check_rms_norm(op: str, x, scale, **more) -> tuple[jax.Array, ...]:
    """x ``(..., D)``, scale (and any ``more`` named vectors, layer norm's bias) ``(D,)``, one
    floating dtype."""
    named = {"x": x, "scale": scale, **more}
    arrays = {n: _validate.as_array(op, n, a) for n, a in named.items()}
    _validate.floating(op, **arrays)
    x = arrays.pop("x")
    _validate.min_rank(op, "x", x, 1)
    for name, a in arrays.items():
        _validate.shape(op, name, a, x.shape[-1:], f"D = x.shape[-1] = {x.shape[-1]}")
    return x, *arrays.values()


def check_layer_norm(op: str, x, scale, bias) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x ``(..., D)``, scale and bias ``(D,)``, one floating dtype."""
    return check_rms_norm(op, x, scale, bias=bias)


def check_swiglu(op: str, x, w_gate, w_up) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x ``(..., D)``, w_gate and w_up ``(D, F)``, one floating dtype."""
    named = {"x": x, "w_gate": w_gate, "w_up": w_up}
    x, w_gate, w_up = (_validate.as_array(op, n, a) for n, a in named.items())
    _validate.floating(op, x=x, w_gate=w_gate, w_up=w_up)
    _validate.min_rank(op, "x", x, 1)
    _validate.rank(op, "w_gate", w_gate, 2, "(D, F)")
    d = x.shape[-1]
    _validate.shape(op, "w_gate", w_gate, (d, w_gate.shape[1]), f"D = x.shape[-1] = {d}")
    _validate.shape(op, "w_up", w_up, w_gate.shape, "the shape of w_gate")
    return x, w_gate, w_up


def check_lora(op: str, x, w, b, lora_a, lora_b, scale) -> tuple:
    """dense's x ``(..., I)``, w ``(I, O)``, b ``(O,)``; lora_a ``(I, R)``, lora_b ``(R, O)``;
    scale a finite Python number."""
    x, w, b = check_dense(op, x, w, b)
    lora_a, lora_b = _check_adapter(op, ("lora_a", "lora_b"), x, lora_a, lora_b, w, "w", "IO")
    return x, w, b, lora_a, lora_b, _check_scale(op, scale)


def _check_adapter(op: str, names, x, lora_a, lora_b, w, w_name: str, letters: str) -> tuple:
    """The adapter ``names`` ``(A, B)`` of the frozen ``w`` (named ``w_name``, whose axes are
    called ``letters``): A ``(I, R)``, B ``(R, O)``, floating as x."""
    a_name, b_name = names
    lora_a, lora_b = (
        _validate.as_array(op, n, a) for n, a in zip(names, (lora_a, lora_b), strict=True)
    )
    _validate.floating(op, x=x, **{a_name: lora_a, b_name: lora_b})
    i_, o_ = letters
    _validate.rank(op, a_name, lora_a, 2, f"({i_}, R)")
    i, o, r = w.shape[0], w.shape[1], lora_a.shape[1]
    _validate.shape(op, a_name, lora_a, (i, r), f"({i_}, R) with {i_} = {i}")
    why = f"(R, {o_}) with R = {r} of {a_name}, {o_} = {o} of {w_name}"
    _validate.shape(op, b_name, lora_b, (r, o), why)
    return lora_a, lora_b


def _check_scale(op: str, scale) -> float:
    if isinstance(scale, jax.core.Tracer) or not np.isfinite(scale):
        raise ValueError(f"{op}: scale must be a finite Python number, got {scale!r}")
    return float(scale)


def check_lora_swiglu(op: str, x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale) -> tuple:
    """swiglu's x ``(..., D)``, w_gate and w_up ``(D, F)``; gate_a ``(D, R)``, gate_b ``(R,
    F)``, up_a ``(D, R')``, up_b ``(R', F)``; scale a finite Python number."""
    x, w_gate, w_up = check_swiglu(op, x, w_gate, w_up)
    gate = _check_adapter(op, ("gate_a", "gate_b"), x, gate_a, gate_b, w_gate, "w_gate", "DF")
    up = _check_adapter(op, ("up_a", "up_b"), x, up_a, up_b, w_up, "w_up", "DF")
    return x, w_gate, w_up, *gate, *up, _check_scale(op, scale)


def check_rope(op: str, x, positions, base) -> tuple[jax.Array, jax.Array]:
    """x floating ``(B, T, N, H)`` with H even; positions integers ``(B, T)`` or ``(T,)``
    (returned as ``(B|1, T)``); base a positive number."""
    x = check_unary(op, x)
    _validate.rank(op, "x", x, 4, "(B, T, N, H)")
    if x.shape[-1] % 2:
        raise ValueError(f"{op}: x's head size H must be even (halves rotate), got shape {x.shape}")
    positions = _validate.as_array(op, "positions", positions)
    _validate.integer(op, "positions", positions)
    if positions.ndim == 1:
        positions = positions[None]
    _validate.broadcastable(op, "positions", positions, x.shape[:2], "(B, T)")
    if positions.shape[1] != x.shape[1]:
        raise ValueError(
            f"{op}: positions must have T = {x.shape[1]} entries per row, got {positions.shape}"
        )
    if isinstance(base, jax.core.Tracer) or not base > 0:
        raise ValueError(f"{op}: base must be a positive Python number, got {base!r}")
    return x, positions


def check_dropout(op: str, x, key, rate) -> tuple[jax.Array, jax.Array, float]:
    """x floating, key a PRNG key (typed, or raw uint32 ``(2,)``), rate a Python number in
    ``[0, 1]``."""
    x = check_unary(op, x)
    key = _validate.as_array(op, "key", key)
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not (typed and key.ndim == 0) and not (key.dtype == jnp.uint32 and key.shape == (2,)):
        raise ValueError(
            f"{op}: key must be one PRNG key (jax.random.key(seed)), got dtype {key.dtype} "
            f"and shape {key.shape}"
        )
    if isinstance(rate, jax.core.Tracer) or not 0 <= rate <= 1:
        raise ValueError(f"{op}: rate must be a Python number in [0, 1], got {rate!r}")
    return x, key, float(rate)


_ATTENTION = "dot_product_attention"


class Attention(NamedTuple):
    """The checked arguments of attention, batched (``B`` added for an unbatched call)."""

    query: jax.Array  # (B, T, N, H)
    key: jax.Array  # (B, S, K, H)
    value: jax.Array  # (B, S, K, H)
    bias: jax.Array | None  # (B|1, N|1, T|1, S|1)
    mask: jax.Array | None  # boolean, (B|1, N|1, T|1, S|1)
    scale: float
    query_seq_lengths: jax.Array | None  # (B,)
    key_value_seq_lengths: jax.Array | None  # (B,)
    window: tuple[int, int] | None  # (left, right)
    batched: bool


def check_attention(
    query,
    key,
    value,
    bias,
    mask,
    scale,
    query_seq_lengths,
    key_value_seq_lengths,
    local_window_size,
) -> Attention:
    """jax.nn.dot_product_attention's arguments: query ``(B, T, N, H)`` (or ``(T, N, H)``),
    key and value ``(B, S, K, H)`` with N a multiple of K, bias and boolean mask broadcastable
    to ``(B, N, T, S)``, lengths integers ``(B,)`` in ``[0, T]`` and ``[0, S]``, a window an
    int or ``(left, right)`` of non-negative ints."""
    op = _ATTENTION
    named = {"query": query, "key": key, "value": value}
    query, key, value = (_validate.as_array(op, n, a) for n, a in named.items())
    _validate.floating(op, query=query, key=key, value=value)
    batched = query.ndim == 4
    if not batched:
        _validate.rank(op, "query", query, 3, "(B, T, N, H) or (T, N, H)")
        for name, a in (("key", key), ("value", value)):
            _validate.rank(op, name, a, 3, "(S, K, H), as query is (T, N, H)")
        query, key, value = query[None], key[None], value[None]
    _validate.rank(op, "key", key, 4, "(B, S, K, H)")
    b, t, n, h = query.shape
    s, kv = key.shape[1], key.shape[2]
    _validate.shape(op, "key", key, (b, s, kv, h), f"(B, S, K, H) with B, H = {b}, {h} of query")
    _validate.shape(op, "value", value, key.shape, "the shape of key")
    if kv == 0 or n % kv:
        raise ValueError(
            f"{op}: query's {n} heads must be a multiple of key's {kv} heads (grouped-query "
            f"attention), got query {query.shape} and key {key.shape}"
        )
    target, layout = (b, n, t, s), "(B, N, T, S)"
    if bias is not None:
        bias = _validate.as_array(op, "bias", bias)
        _validate.floating(op, bias=bias)
        _validate.broadcastable(op, "bias", bias, target if batched else target[1:], layout)
        bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
    if mask is not None:
        mask = _validate.as_array(op, "mask", mask)
        _validate.boolean(op, "mask", mask)
        _validate.broadcastable(op, "mask", mask, target if batched else target[1:], layout)
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    lengths = []
    for name, given, most in (
        ("query_seq_lengths", query_seq_lengths, t),
        ("key_value_seq_lengths", key_value_seq_lengths, s),
    ):
        if given is not None:
            given = _validate.as_array(op, name, given)
            _validate.integer(op, name, given)
            _validate.shape(op, name, given, (b,), "(B,)")
            in_range(op, name, given, 0, most, closed=True)
            given = given.astype(jax.dtypes.canonicalize_dtype(jnp.int_))  # as positions
        lengths.append(given)
    window = local_window_size
    if window is not None:
        window = (window, window) if isinstance(window, int) else tuple(window)
        if len(window) != 2 or not all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in window
        ):
            raise ValueError(
                f"{op}: local_window_size must be a non-negative int or a pair (left, right) "
                f"of them, got {local_window_size!r}"
            )
    if scale is None:
        scale = 1 / math.sqrt(h) if h else 1.0
    elif isinstance(scale, jax.core.Tracer) or not np.isfinite(scale):
        raise ValueError(f"{op}: scale must be a finite Python number, got {scale!r}")
    return Attention(query, key, value, bias, mask, float(scale), *lengths, window, batched)


def check_recurrent(op: str, xs, carry: dict, w_x, w_h, biases: dict, lengths, gates: int):
    """Validate a recurrent op's arguments: ``xs (B, T, I)``, ``carry`` maps names to initial
    states ``(B, H)`` or None, weights ``(I, G)``, ``(H, G)`` and biases ``(G,)`` with
    ``G = gates H``, ``lengths`` None or integers ``(B,)`` in ``[0, T]``. Returns ``xs`` as an
    array."""
    xs = _validate.as_array(op, "xs", xs)
    _validate.rank(op, "xs", xs, 3, "(B, T, I)")
    b, t, i = xs.shape
    _validate.rank(op, "w_h", w_h, 2, f"(H, {gates}H)")
    h = np.shape(w_h)[0]
    _validate.shape(op, "w_x", w_x, (i, gates * h), f"(I, {gates}H) with I = {i}, H = {h}")
    _validate.shape(op, "w_h", w_h, (h, gates * h), f"(H, {gates}H) with H = {h}")
    for name, bias in biases.items():
        _validate.shape(op, name, bias, (gates * h,), f"({gates}H,) with H = {h}")
    given = {k: v for k, v in carry.items() if v is not None}
    for name, state in given.items():
        _validate.shape(op, name, state, (b, h), f"(B, H) = ({b}, {h})")
    _validate.floating(op, xs=xs, w_x=w_x, w_h=w_h, **biases, **given)
    if lengths is not None:
        lengths = _validate.as_array(op, "lengths", lengths)
        _validate.integer(op, "lengths", lengths)
        _validate.shape(op, "lengths", lengths, (b,), "(B,)")
        in_range(op, "lengths", lengths, 0, t, closed=True)
    return xs
