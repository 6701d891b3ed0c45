"""Each op's counterpart in the ecosystem (jax.nn, optax, flax) as a family of its own: the
functions of :class:`jaxchain.ops.Ops`, each with the op's signature, computed by the
library that a user of the op would otherwise call. A registry case binds its counterpart as
it binds its rule (``Case.counterpart``), so the two take the same arguments.

Also the low-precision comparison behind ``jaxchain check --dtype bfloat16``: a rule's error
against a float64 truth next to its counterpart's, on the same inputs. The truth is the
autodiff twin (:mod:`jaxchain.reference`) run in float64 on the same values; the error of an
implementation is the larger of its output's and its gradients' (under one fixed cotangent)
norm-wise relative errors, ``max|a - truth| / max|truth|``.
"""

from jaxchain._extras import require

require("flax", __name__)  # before the imports that need it

import dataclasses
from collections.abc import Callable

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxchain.ops import NAMES


def _computed_by(library: str) -> Callable[[Callable], Callable]:
    """Marks a counterpart with what computes it (shown next to the rule's error)."""

    def mark(f: Callable) -> Callable:
        f.computed_by = library
        return f

    return mark


def computed_by(f: Callable) -> str:
    """What computes the counterpart ``f`` (under any bindings with ``.func``, as a registry
    case has it): "flax.linen.Dense", "jax.nn.softmax", ..."""
    while not hasattr(f, "computed_by"):
        f = f.func
    return f.computed_by


@_computed_by("flax.linen.Dense")
def dense(x, w, b):
    layer = fnn.Dense(w.shape[1], dtype=x.dtype, param_dtype=w.dtype)
    return layer.apply({"params": {"kernel": w, "bias": b}}, x)


@_computed_by("flax.linen.Embed")
def embedding(ids, table):
    layer = fnn.Embed(*table.shape, dtype=table.dtype, param_dtype=table.dtype)
    return layer.apply({"params": {"embedding": table}}, ids)


@_computed_by("jax.nn.relu")
def relu(x):
    return jax.nn.relu(x)


@_computed_by("jax.nn.sigmoid")
def sigmoid(x):
    return jax.nn.sigmoid(x)


@_computed_by("jax.numpy.tanh")
def tanh(x):
    return jnp.tanh(x)


@_computed_by("jax.nn.gelu")
def gelu(x, approximate=False):
    return jax.nn.gelu(x, approximate=approximate)


@_computed_by("jax.nn.silu")
def silu(x):
    return jax.nn.silu(x)


@_computed_by("flax.linen.Dropout")
def dropout(x, key, rate):
    return fnn.Dropout(rate).apply({}, x, deterministic=False, rng=key)


@_computed_by("jax.nn.softmax")
def softmax(x, axis=-1, where=None):
    return jax.nn.softmax(x, axis=axis, where=where)


@_computed_by("jax.nn.log_softmax")
def log_softmax(x, axis=-1, where=None):
    return jax.nn.log_softmax(x, axis=axis, where=where)


@_computed_by("optax.softmax_cross_entropy_with_integer_labels")
def softmax_cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


@_computed_by("optax (of x @ w)")
def linear_softmax_cross_entropy(x, w, labels, *, chunk_size=None):
    return optax.softmax_cross_entropy_with_integer_labels(x @ w, labels)  # no chunks


@_computed_by("optax.sigmoid_binary_cross_entropy")
def sigmoid_binary_cross_entropy(logits, labels):
    return optax.sigmoid_binary_cross_entropy(logits, labels)


@_computed_by("optax.squared_error")
def mse(pred, target):
    return jnp.mean(optax.squared_error(pred, target))


@_computed_by("flax.linen.LayerNorm")
def layer_norm(x, scale, bias, eps=1e-5):
    layer = fnn.LayerNorm(epsilon=eps, dtype=x.dtype, param_dtype=x.dtype)
    return layer.apply({"params": {"scale": scale, "bias": bias}}, x)


@_computed_by("flax.linen.RMSNorm")
def rms_norm(x, scale, eps=1e-6):
    layer = fnn.RMSNorm(epsilon=eps, dtype=x.dtype, param_dtype=x.dtype)
    return layer.apply({"params": {"scale": scale}}, x)


@_computed_by("jax.nn.dot_product_attention")
def dot_product_attention(
    query,
    key,
    value,
    bias=None,
    mask=None,
    *,
    scale=None,
    is_causal=False,
    query_seq_lengths=None,
    key_value_seq_lengths=None,
    local_window_size=None,
    block_size=None,
):
    """jax.nn's, which has no blocks: ``block_size`` is the rule's alone."""
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        bias,
        mask,
        scale=scale,
        is_causal=is_causal,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        local_window_size=local_window_size,
    )


@_computed_by("jax.nn.silu(x @ w_gate) * (x @ w_up)")
def swiglu(x, w_gate, w_up):
    return jax.nn.silu(x @ w_gate) * (x @ w_up)


@_computed_by("complex rotation (jax.numpy)")
def rope(x, positions, *, base=10000.0):
    """The rotation as a product of complex numbers, ``(x_j + i x_{j+H/2}) e^{i theta_j}``."""
    f = jnp.promote_types(x.dtype, jnp.float32)
    h = x.shape[-1] // 2
    theta = positions[..., None].astype(f) * base ** (-jnp.arange(h, dtype=f) / h)[None, None]
    z = (x[..., :h].astype(f) + 1j * x[..., h:].astype(f)) * jnp.exp(1j * theta)[:, :, None]
    return jnp.concatenate([z.real, z.imag], axis=-1).astype(x.dtype)


@_computed_by("flax.linen.Dense + s (x A) B")
def lora_dense(x, w, b, lora_a, lora_b, *, scale):
    return dense(x, w, b) + scale * (x @ lora_a) @ lora_b


@_computed_by("flax.linen.Dense + s (x A) B, jax.nn.silu")
def lora_swiglu(x, w_gate, w_up, gate_a, gate_b, up_a, up_b, *, scale):
    zero = jnp.zeros((w_gate.shape[1],), x.dtype)
    gate = lora_dense(x, w_gate, zero, gate_a, gate_b, scale=scale)
    return jax.nn.silu(gate) * lora_dense(x, w_up, zero, up_a, up_b, scale=scale)


def _scan_cell(cell, params, carry, xs, lengths):
    """A flax cell over ``xs (B, T, I)`` from ``carry``; steps past ``lengths`` keep the
    carry and output zeros (as ``flax.linen.RNN`` with ``seq_lengths``)."""
    t = xs.shape[1]
    real = None if lengths is None else jnp.arange(t)[:, None] < lengths[None, :]  # (T, B)

    def step(carry, inputs):
        x, m = inputs
        new, y = cell.apply({"params": params}, carry, x)
        if m is None:
            return new, y
        new = jax.tree.map(lambda a, b: jnp.where(m[:, None], a, b), new, carry)
        return new, jnp.where(m[:, None], y, 0)

    last, ys = jax.lax.scan(step, carry, (jnp.swapaxes(xs, 0, 1), real))
    return jnp.swapaxes(ys, 0, 1), last


@_computed_by("flax.linen.SimpleCell (scanned)")
def rnn(xs, h0, w_x, w_h, b, lengths=None):
    cell = fnn.SimpleCell(w_h.shape[0], dtype=xs.dtype, param_dtype=xs.dtype)
    params = {"i": {"kernel": w_x, "bias": b}, "h": {"kernel": w_h}}
    return _scan_cell(cell, params, h0, xs, lengths)


@_computed_by("flax.linen.LSTMCell (scanned)")
def lstm(xs, h0, c0, w_x, w_h, b, lengths=None):
    cell = fnn.LSTMCell(w_h.shape[0], dtype=xs.dtype, param_dtype=xs.dtype)
    params = {}
    for gate, wx, wh, bias in zip(
        "ifgo", *(jnp.split(a, 4, axis=-1) for a in (w_x, w_h, b)), strict=True
    ):
        params[f"i{gate}"] = {"kernel": wx}
        params[f"h{gate}"] = {"kernel": wh, "bias": bias}
    hs, (c, h) = _scan_cell(cell, params, (c0, h0), xs, lengths)
    return hs, (h, c)


@_computed_by("flax.linen.GRUCell (scanned)")
def gru(xs, h0, w_x, w_h, b_x, b_h, lengths=None):
    """flax's GRUCell has one bias for r and z (ours: two, summed) and keeps b_hn apart."""
    cell = fnn.GRUCell(w_h.shape[0], dtype=xs.dtype, param_dtype=xs.dtype)
    (wx_r, wx_z, wx_n), (wh_r, wh_z, wh_n) = (jnp.split(a, 3, axis=-1) for a in (w_x, w_h))
    (bx_r, bx_z, bx_n), (bh_r, bh_z, bh_n) = (jnp.split(a, 3) for a in (b_x, b_h))
    params = {
        "ir": {"kernel": wx_r, "bias": bx_r + bh_r},
        "iz": {"kernel": wx_z, "bias": bx_z + bh_z},
        "in": {"kernel": wx_n, "bias": bx_n},
        "hr": {"kernel": wh_r},
        "hz": {"kernel": wh_z},
        "hn": {"kernel": wh_n, "bias": bh_n},
    }
    return _scan_cell(cell, params, h0, xs, lengths)


@dataclasses.dataclass(frozen=True)
class Precision:
    """One rule at one low-precision dtype: its error against float64, and its counterpart's
    (None where the ecosystem has none)."""

    name: str
    dtype: str
    error: float
    peer: str | None
    peer_error: float | None

    @property
    def ok(self) -> bool:
        """No worse than the counterpart, up to a quarter (rounding draws differ) or half a
        unit in the last place of the dtype, whichever is larger."""
        if self.peer_error is None:
            return bool(np.isfinite(self.error))
        half_ulp = float(jnp.finfo(self.dtype).eps) / 2
        return bool(self.error <= max(1.25 * self.peer_error, half_ulp))


def _of_floats(f, args):
    """``f`` as a function of its floating-point arguments, and those arguments."""
    idx = [i for i, a in enumerate(args) if jnp.issubdtype(jnp.result_type(a), jnp.floating)]

    def call(*floats):
        full = list(args)
        for i, a in zip(idx, floats, strict=True):
            full[i] = a
        return f(*full)

    return call, [args[i] for i in idx]


def _vjp(f, args, cotangent=None, *, jit: bool = True):
    """Output and gradients of ``f`` at ``args``; the cotangent is drawn (fixed seed) when
    not given, and returned. ``jit=False`` runs eagerly (jax.nn's float16 attention does not
    compile under jit on the CPU: no float16 product accumulating in float32 there)."""
    call, floats = _of_floats(f, args)
    with jax.numpy_dtype_promotion("standard"):
        out = jax.eval_shape(call, *floats)
        if cotangent is None:
            leaves, treedef = jax.tree.flatten(out)
            keys = jax.random.split(jax.random.key(7), len(leaves))
            cotangent = treedef.unflatten(
                [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)]
            )

        def pull(floats, cotangent):
            out, vjp = jax.vjp(call, *floats)
            return out, vjp(jax.tree.map(lambda c, o: c.astype(o.dtype), cotangent, out))

        out, grads = (jax.jit(pull) if jit else pull)(floats, cotangent)
    return [*jax.tree.leaves(out), *grads], cotangent


def _relative(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.max(np.abs(want), initial=0.0)) or 1.0
    return float(np.max(np.abs(got - want), initial=0.0)) / scale


def compare(case, dtype, seed: int) -> Precision:
    """The rule of registry ``case`` and its counterpart at ``dtype`` against float64 (the
    twin, on the same values drawn from ``seed``)."""
    args = case.args(seed, dtype)
    wide = [a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a for a in args]
    with jax.enable_x64(True):
        truth, cotangent = _vjp(case.reference, wide)

    def error(f, jit=True) -> float:
        got, _ = _vjp(f, args, cotangent, jit=jit)
        return max(_relative(a, b) for a, b in zip(got, truth, strict=True))

    peer = case.counterpart
    peer_error = None if peer is None else error(peer, jit=False)
    name = None if peer is None else computed_by(peer)
    return Precision(case.name, jnp.dtype(dtype).name, error(case.rule), name, peer_error)


__all__ = [*NAMES, "Precision", "compare", "computed_by"]
