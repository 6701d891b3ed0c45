"""Each rule's counterpart in the ecosystem (jax.nn, optax, flax), with the rule's signature,
and the low-precision comparison behind ``jaxchain check --dtype bfloat16``: a rule's error
against a float64 truth next to its counterpart's, on the same inputs.

The truth is the autodiff twin (:mod:`jaxchain.reference`) run in float64 on the same values;
the error of an implementation is the larger of its output's and its gradients' (under one
fixed cotangent) norm-wise relative errors, ``max|a - truth| / max|truth|``.
"""

import dataclasses
from collections.abc import Callable

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import optax


def _dense(x, w, b):
    layer = fnn.Dense(w.shape[1], dtype=x.dtype, param_dtype=w.dtype)
    return layer.apply({"params": {"kernel": w, "bias": b}}, x)


def _embedding(ids, table):
    layer = fnn.Embed(*table.shape, dtype=table.dtype, param_dtype=table.dtype)
    return layer.apply({"params": {"embedding": table}}, ids)


def _layer_norm(x, scale, bias, eps=1e-5):
    layer = fnn.LayerNorm(epsilon=eps, dtype=x.dtype, param_dtype=x.dtype)
    return layer.apply({"params": {"scale": scale, "bias": bias}}, x)


def _attention(keywords: tuple[str, ...] = (), **kwargs) -> Callable:
    """jax.nn.dot_product_attention with the registry case's arguments: ``query, key, value``
    and then ``keywords``, by name."""

    def call(q, k, v, *rest):
        return jax.nn.dot_product_attention(
            q, k, v, **dict(zip(keywords, rest, strict=True)), **kwargs
        )

    return call


def _rms_norm(x, scale, eps=1e-6):
    layer = fnn.RMSNorm(epsilon=eps, dtype=x.dtype, param_dtype=x.dtype)
    return layer.apply({"params": {"scale": scale}}, x)


def _rope(x, positions, *, base=10000.0):
    """The rotation as a product of complex numbers, ``(x_j + i x_{j+H/2}) e^{i theta_j}``."""
    f = jnp.promote_types(x.dtype, jnp.float32)
    h = x.shape[-1] // 2
    theta = positions[..., None].astype(f) * base ** (-jnp.arange(h, dtype=f) / h)[None, None]
    z = (x[..., :h].astype(f) + 1j * x[..., h:].astype(f)) * jnp.exp(1j * theta)[:, :, None]
    return jnp.concatenate([z.real, z.imag], axis=-1).astype(x.dtype)


def _lora_dense(x, lora_a, lora_b):
    from jaxchain.registry import frozen_weights

    w, b = frozen_weights(x, lora_b.shape[1])
    frozen = fnn.Dense(w.shape[1], dtype=x.dtype, param_dtype=x.dtype)
    return frozen.apply({"params": {"kernel": w, "bias": b}}, x) + 2.0 * (x @ lora_a) @ lora_b


def _linear_cross_entropy(x, w, labels, *, chunk_size=None):
    return optax.softmax_cross_entropy_with_integer_labels(x @ w, labels)


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


def _rnn(xs, h0, w_x, w_h, b, lengths=None):
    cell = fnn.SimpleCell(w_h.shape[0], dtype=xs.dtype, param_dtype=xs.dtype)
    params = {"i": {"kernel": w_x, "bias": b}, "h": {"kernel": w_h}}
    return _scan_cell(cell, params, h0, xs, lengths)


def _lstm(xs, h0, c0, w_x, w_h, b, lengths=None):
    cell = fnn.LSTMCell(w_h.shape[0], dtype=xs.dtype, param_dtype=xs.dtype)
    params = {}
    for gate, wx, wh, bias in zip(
        "ifgo", *(jnp.split(a, 4, axis=-1) for a in (w_x, w_h, b)), strict=True
    ):
        params[f"i{gate}"] = {"kernel": wx}
        params[f"h{gate}"] = {"kernel": wh, "bias": bias}
    hs, (c, h) = _scan_cell(cell, params, (c0, h0), xs, lengths)
    return hs, (h, c)


def _gru(xs, h0, w_x, w_h, b_x, b_h, lengths=None):
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


COUNTERPARTS: dict[str, tuple[str, Callable]] = {
    "dense": ("flax.linen.Dense", _dense),
    "embedding": ("flax.linen.Embed", _embedding),
    "relu": ("jax.nn.relu", jax.nn.relu),
    "sigmoid": ("jax.nn.sigmoid", jax.nn.sigmoid),
    "tanh": ("jax.numpy.tanh", jnp.tanh),
    "gelu": ("jax.nn.gelu", lambda x: jax.nn.gelu(x, approximate=False)),
    "gelu(approximate)": ("jax.nn.gelu", lambda x: jax.nn.gelu(x, approximate=True)),
    "softmax": ("jax.nn.softmax", jax.nn.softmax),
    "softmax(axis=0)": ("jax.nn.softmax", lambda x: jax.nn.softmax(x, axis=0)),
    "log_softmax": ("jax.nn.log_softmax", jax.nn.log_softmax),
    "softmax_cross_entropy": (
        "optax.softmax_cross_entropy_with_integer_labels",
        optax.softmax_cross_entropy_with_integer_labels,
    ),
    "linear_softmax_cross_entropy": ("optax (of x @ w)", _linear_cross_entropy),
    "sigmoid_binary_cross_entropy": (
        "optax.sigmoid_binary_cross_entropy",
        optax.sigmoid_binary_cross_entropy,
    ),
    "mse": ("optax.squared_error", lambda p, t: jnp.mean(optax.squared_error(p, t))),
    "softmax(where)": ("jax.nn.softmax", lambda x, where: jax.nn.softmax(x, where=where)),
    "layer_norm": ("flax.linen.LayerNorm", _layer_norm),
    "rms_norm": ("flax.linen.RMSNorm", _rms_norm),
    "silu": ("jax.nn.silu", jax.nn.silu),
    "swiglu": (
        "jax.nn.silu(x @ w_gate) * (x @ w_up)",
        lambda x, wg, wu: jax.nn.silu(x @ wg) * (x @ wu),
    ),
    "rope": ("complex rotation (jax.numpy)", _rope),
    "dropout": (
        "flax.linen.Dropout",
        lambda x, key: fnn.Dropout(0.3).apply({}, x, deterministic=False, rng=key),
    ),
    "lora_dense": ("flax.linen.Dense + s (x A) B", _lora_dense),
    **{
        name: ("jax.nn.dot_product_attention", f)
        for names, f in (
            (("", "(blocks)"), _attention()),
            (("(causal)", "(blocks, causal)"), _attention(is_causal=True)),
            (("(mask)", "(blocks, mask)"), _attention(("mask",))),
            (
                ("(gqa, bias, lengths, window)",),
                _attention(
                    ("bias", "query_seq_lengths", "key_value_seq_lengths"), local_window_size=(2, 1)
                ),
            ),
            (
                ("(blocks, gqa, bias, lengths, window, causal)",),
                _attention(
                    ("bias", "query_seq_lengths", "key_value_seq_lengths"),
                    local_window_size=(1, 2),
                    is_causal=True,
                ),
            ),
        )
        for name in (f"dot_product_attention{n}" for n in names)
    },
    **{
        name: (f"flax.linen.{cell} (scanned)", f)
        for op, cell, f in (
            ("rnn", "SimpleCell", _rnn),
            ("lstm", "LSTMCell", _lstm),
            ("gru", "GRUCell", _gru),
        )
        for name in (op, f"{op}(lengths)")
    },
}


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


def compare(case, dtype, key: jax.Array) -> Precision:
    """The rule of registry ``case`` and its counterpart at ``dtype`` against float64 (the
    twin, on the same values)."""
    args = case.args(key, dtype)
    wide = [a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a for a in args]
    with jax.enable_x64(True):
        truth, cotangent = _vjp(case.reference, wide)

    def error(f, jit=True) -> float:
        got, _ = _vjp(f, args, cotangent, jit=jit)
        return max(_relative(a, b) for a, b in zip(got, truth, strict=True))

    peer = COUNTERPARTS.get(case.name)
    peer_error = None if peer is None else error(peer[1], jit=False)
    return Precision(
        case.name, jnp.dtype(dtype).name, error(case.rule), peer and peer[0], peer_error
    )


__all__ = ["COUNTERPARTS", "Precision", "compare"]
