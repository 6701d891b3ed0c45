"""The argument checks of every op, shared by :mod:`jaxchain.rules` and
:mod:`jaxchain.reference`.

They only convert to arrays and raise: nothing here computes a value that an op returns, so
the oracle and the rules share no computing code. A check raises ``ValueError`` naming the op,
the argument, the expected and the actual shape or dtype. Integer inputs whose values are
traced (inside ``jit``) cannot be checked in Python: :func:`in_range` then adds a
:func:`jax.experimental.checkify.check`, which ``checkify`` turns into an error (a no-op
otherwise), and the ops give NaN for the affected outputs and gradients.
"""

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


def check_axis(op: str, x, axis: int) -> tuple[jax.Array, int]:
    """A floating ``x`` and ``axis`` in range (returned non-negative)."""
    x = check_unary(op, x)
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for x of shape {x.shape}")
    return x, axis % x.ndim


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


def check_layer_norm(op: str, x, scale, bias) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x ``(..., D)``, scale and bias ``(D,)``, one floating dtype."""
    arrays = {"x": x, "scale": scale, "bias": bias}
    x, scale, bias = (_validate.as_array(op, n, a) for n, a in arrays.items())
    _validate.floating(op, x=x, scale=scale, bias=bias)
    _validate.min_rank(op, "x", x, 1)
    d = x.shape[-1]
    _validate.shape(op, "scale", scale, (d,), f"D = x.shape[-1] = {d}")
    _validate.shape(op, "bias", bias, (d,), f"D = x.shape[-1] = {d}")
    return x, scale, bias


_ATTENTION = "dot_product_attention"


def check_attention(q, k, v, mask) -> tuple:
    """q ``(B, T, N, H)``, k and v ``(B, S, N, H)``, ``mask`` None or boolean broadcastable
    to ``(B, N, T, S)``; returns them as arrays."""
    op = _ATTENTION
    q, k, v = (_validate.as_array(op, n, a) for n, a in (("q", q), ("k", k), ("v", v)))
    _validate.floating(op, q=q, k=k, v=v)
    _validate.rank(op, "q", q, 4, "(B, T, N, H)")
    _validate.rank(op, "k", k, 4, "(B, S, N, H)")
    b, t, n, h = q.shape
    s = k.shape[1]
    _validate.shape(op, "k", k, (b, s, n, h), f"(B, S, N, H) with B, N, H = {b}, {n}, {h} of q")
    _validate.shape(op, "v", v, k.shape, "the shape of k")
    if mask is not None:
        mask = _validate.as_array(op, "mask", mask)
        _validate.boolean(op, "mask", mask)
        _validate.broadcastable(op, "mask", mask, (b, n, t, s), "(B, N, T, S)")
    return q, k, v, mask


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
