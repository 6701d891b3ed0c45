"""The autodiff twins: the names and signatures of :mod:`jaxchain.rules`, in plain
``jax.numpy``, differentiated by ``jax.grad``.

They are the oracle every hand-written rule is checked against, and they can be passed
wherever a rule set is accepted (``ops=jaxchain.reference``). So that a bug in the rules
cannot hide in the oracle, this module imports nothing from :mod:`jaxchain.rules`: it shares
only the argument checks of ``jaxchain._checks``, which raise and compute nothing, so
both fail alike on bad input. Masks, padding and the NaN given for out-of-range integers
inside ``jit`` are written here again, on purpose.
"""

import math

import jax
import jax.numpy as jnp

from jaxchain import _checks
from jaxchain.ops import NAMES

__all__ = list(NAMES)  # the names of the interface, jaxchain.ops.Ops


def _wide(*arrays):
    """Narrow floats (bfloat16, float16) as float32: the twins compute in float32 and return
    the input dtype, as the rules do."""
    cast = [a.astype(jnp.float32) if jnp.finfo(a.dtype).bits < 32 else a for a in arrays]
    return cast[0] if len(cast) == 1 else cast


def dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """``x @ w + b``; x ``(..., I)``, w ``(I, O)``, b ``(O,)``."""
    x, w, b = _checks.check_dense("dense", x, w, b)
    x_, w_, b_ = _wide(x, w, b)
    return (x_ @ w_ + b_.reshape((1,) * (x.ndim - 1) + b.shape)).astype(x.dtype)


def embedding(ids: jax.Array, table: jax.Array) -> jax.Array:
    """``table[ids]``; ids integers in ``[0, V)``, table ``(V, D)``."""
    ids, table = _checks.check_embedding("embedding", ids, table)
    v = table.shape[0]
    valid = (ids >= 0) & (ids < v)  # an invalid id (traced only): a NaN row
    return jnp.where(valid[..., None], table[jnp.clip(ids, 0, max(v - 1, 0))], jnp.nan)


def relu(x: jax.Array) -> jax.Array:
    """``max(x, 0)``, elementwise; its derivative at 0 is 0, as ``jax.nn.relu``'s."""
    x = _checks.check_unary("relu", x)
    return jnp.where(x > 0, x, 0)  # derivative 0 at 0, as jax.nn.relu (not maximum's 1/2)


def sigmoid(x: jax.Array) -> jax.Array:
    """``1 / (1 + exp(-x))``, elementwise, computed as ``(1 + tanh(x / 2)) / 2``, which
    overflows nowhere."""
    x = _checks.check_unary("sigmoid", x)
    return (0.5 * (1 + jnp.tanh(0.5 * _wide(x)))).astype(x.dtype)  # = 1 / (1 + e^-x), stably


def tanh(x: jax.Array) -> jax.Array:
    """``tanh(x)``, elementwise."""
    x = _checks.check_unary("tanh", x)
    return jnp.tanh(_wide(x)).astype(x.dtype)


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    """``x Phi(x)``, elementwise, with ``Phi`` the standard normal CDF; with ``approximate``,
    ``x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x**3))) / 2``, as ``jax.nn.gelu``."""
    x = _checks.check_unary("gelu", x)
    z = _wide(x)
    if approximate:
        y = 0.5 * z * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
    else:
        y = z * jax.scipy.special.ndtr(z)  # x Phi(x), Phi the standard normal CDF
    return y.astype(x.dtype)


def _shifted(x: jax.Array, axis: int) -> jax.Array:
    """``x - max(x)`` along ``axis``, the maximum held constant (it cancels in the result)."""
    return x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True, initial=-jnp.inf))


def softmax(x: jax.Array, axis: int = -1, where: jax.Array | None = None) -> jax.Array:
    """``exp(x) / sum(exp(x))`` along ``axis`` over the elements ``where`` keeps (0 at the
    others, and in a row with none kept)."""
    x, axis, where = _checks.check_axis("softmax", x, axis, where)
    z = _wide(x)
    if where is not None:
        z = jnp.where(where, z, -jnp.inf)
        m = jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True, initial=-jnp.inf))
        e = jnp.where(where, jnp.exp(z - jnp.where(jnp.isfinite(m), m, 0)), 0)
        total = jnp.sum(e, axis=axis, keepdims=True)
        return (e / jnp.where(total > 0, total, 1)).astype(x.dtype)
    e = jnp.exp(_shifted(z, axis))
    return (e / jnp.sum(e, axis=axis, keepdims=True)).astype(x.dtype)


def log_softmax(x: jax.Array, axis: int = -1, where: jax.Array | None = None) -> jax.Array:
    """``x - logsumexp(x)`` along ``axis`` over the elements ``where`` keeps (``-inf`` at the
    others)."""
    x, axis, where = _checks.check_axis("log_softmax", x, axis, where)
    z = _wide(x)
    if where is not None:
        kept = jnp.where(where, z, 0)
        m = jax.lax.stop_gradient(
            jnp.max(kept, axis=axis, keepdims=True, initial=-jnp.inf, where=where)
        )
        shifted = kept - jnp.where(jnp.isfinite(m), m, 0)
        total = jnp.sum(jnp.where(where, jnp.exp(shifted), 0), axis=axis, keepdims=True)
        return jnp.where(where, shifted - jnp.log(total), -jnp.inf).astype(x.dtype)
    z = _shifted(z, axis)
    return (z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))).astype(x.dtype)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example ``logsumexp(logits) - logits[label]``; logits ``(..., V)``, labels
    ``(...,)``. An infinite maximum is not subtracted (as :func:`jax.nn.logsumexp`), so a
    ``+inf`` logit off the label costs ``+inf``."""
    logits, labels = _checks.check_labels("softmax_cross_entropy", logits, labels)
    z = _nan_rows(_wide(logits), labels, logits.shape[-1])
    m = jnp.max(z, axis=-1, keepdims=True, initial=-jnp.inf)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0))
    picked = jnp.take_along_axis(z, labels[..., None], axis=-1)
    loss = (m - picked) + jnp.log(jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True))
    return loss[..., 0].astype(logits.dtype)


def _nan_rows(x, labels, v):
    """NaN rows (values and gradients) where a label lies outside ``[0, v)``."""
    return x + jnp.where((labels >= 0) & (labels < v), 0, jnp.nan).astype(x.dtype)[..., None]


def linear_softmax_cross_entropy(
    x: jax.Array, w: jax.Array, labels: jax.Array, *, chunk_size: int | None = None
) -> jax.Array:
    """``softmax_cross_entropy(x @ w, labels)``: the whole ``(..., V)`` logits (``chunk_size``
    is accepted, for the rule's signature, and ignored)."""
    x, w, labels = _checks.check_linear_labels("linear_softmax_cross_entropy", x, w, labels)
    x_, w_ = _wide(x, w)
    return softmax_cross_entropy(x_ @ w_, labels).astype(x.dtype)


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Elementwise ``-z log sigmoid(x) - (1 - z) log(1 - sigmoid(x))``, each term taken only
    where its weight is not zero (so a correct infinite logit costs nothing but NaN weights,
    as optax: ``x = +inf, z = 1`` and ``x = -inf, z = 0`` give NaN)."""
    x, z = _checks.check_pair("sigmoid_binary_cross_entropy", ("logits", "labels"), logits, labels)
    x_, z_ = _wide(x, z)
    loss = jnp.where(x_ > 0, (1 - z_) * x_, -z_ * x_) - jax.nn.log_sigmoid(jnp.abs(x_))
    return loss.astype(x.dtype)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """``mean((pred - target) ** 2)`` over every element: a scalar; ``pred`` and ``target`` of
    one shape, not empty."""
    pred, target = _checks.check_pair("mse", ("pred", "target"), pred, target, nonempty=True)
    p, t = _wide(pred, target)
    return jnp.mean((p - t) ** 2).astype(pred.dtype)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias``, the mean and the (biased) variance
    taken over the last axis; x ``(..., D)``, scale and bias ``(D,)``."""
    x, scale, bias = _checks.check_layer_norm("layer_norm", x, scale, bias)
    z, scale_, bias_ = _wide(x, scale, bias)
    d = max(x.shape[-1], 1)  # an empty row has nothing to normalise
    mu = jnp.sum(z, axis=-1, keepdims=True) / d
    var = jnp.sum((z - mu) ** 2, axis=-1, keepdims=True) / d
    lead = (1,) * (x.ndim - 1)
    y = (z - mu) / jnp.sqrt(var + eps) * scale_.reshape(lead + scale.shape)
    return (y + bias_.reshape(lead + bias.shape)).astype(x.dtype)


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    block_size: int | tuple[int, int] | None = None,
) -> jax.Array:
    """``softmax(scale q k^T + bias) v`` per head, key and value heads repeated for grouped
    queries; what a query may not see is ``-inf``, and a row that sees nothing is zeros.
    Always the whole ``(T, S)`` computation: ``block_size`` is accepted (the signature is the
    rule's) and ignored."""
    a = _checks.check_attention(
        query,
        key,
        value,
        bias,
        mask,
        scale,
        query_seq_lengths,
        key_value_seq_lengths,
        local_window_size,
    )
    t, n, s_ = a.query.shape[1], a.query.shape[2], a.key.shape[1]
    i, j = jnp.arange(t)[:, None], jnp.arange(s_)[None, :]
    allowed = jnp.ones((1, 1, t, s_), bool)
    if a.mask is not None:
        allowed = allowed & a.mask
    if is_causal:
        allowed = allowed & (j <= i)[None, None]
    if a.window is not None:
        left, right = a.window
        allowed = allowed & ((j >= i - left) & (j <= i + right))[None, None]
    if a.query_seq_lengths is not None:
        allowed = allowed & (i[None, None] < a.query_seq_lengths[:, None, None, None])
    if a.key_value_seq_lengths is not None:
        allowed = allowed & (j[None, None] < a.key_value_seq_lengths[:, None, None, None])
    groups = n // a.key.shape[2]
    q_, k_, v_ = _wide(a.query, jnp.repeat(a.key, groups, 2), jnp.repeat(a.value, groups, 2))
    s = jnp.einsum("btnh,bsnh->bnts", q_, k_) * a.scale  # (B, N, T, S)
    if a.bias is not None:
        s = s + _wide(a.bias).astype(s.dtype)
    s = jnp.where(allowed, s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True, initial=-jnp.inf)
    e = jnp.exp(s - jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0)))
    total = jnp.sum(e, axis=-1, keepdims=True)
    p = e / jnp.where(total > 0, total, 1)  # a row that sees nothing attends to nothing
    o = jnp.einsum("bnts,bsnh->btnh", p, v_).astype(a.query.dtype)
    return o if a.batched else o[0]


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
    """``x / sqrt(mean(x ** 2) + eps) * scale``, the mean over the last axis; x ``(..., D)``,
    scale ``(D,)``."""
    x, scale = _checks.check_rms_norm("rms_norm", x, scale)
    z, scale_ = _wide(x, scale)
    mean_square = jnp.sum(z * z, axis=-1, keepdims=True) / max(x.shape[-1], 1)
    return (
        z / jnp.sqrt(mean_square + eps) * scale_.reshape((1,) * (x.ndim - 1) + scale.shape)
    ).astype(x.dtype)


def silu(x: jax.Array) -> jax.Array:
    """``x sigmoid(x)``, elementwise."""
    x = _checks.check_unary("silu", x)
    z = _wide(x)
    return (z / (1 + jnp.exp(-z))).astype(x.dtype)


def swiglu(x: jax.Array, w_gate: jax.Array, w_up: jax.Array) -> jax.Array:
    """``silu(x @ w_gate) * (x @ w_up)``."""
    x, w_gate, w_up = _checks.check_swiglu("swiglu", x, w_gate, w_up)
    x_, wg, wu = _wide(x, w_gate, w_up)
    a = x_ @ wg
    return (a * jax.nn.sigmoid(a) * (x_ @ wu)).astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
    """Hugging Face's ``x cos + rotate_half(x) sin``, the frequencies repeated over both
    halves."""
    x, positions = _checks.check_rope("rope", x, positions, base)
    z = _wide(x)
    h = x.shape[-1]
    frequencies = 1.0 / (base ** (jnp.arange(0, h, 2, dtype=z.dtype) / h))
    angles = positions[..., None].astype(z.dtype) * frequencies[None, None]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # (B|1, T, 1, H)
    half = h // 2
    rotated = jnp.concatenate([-z[..., half:], z[..., :half]], axis=-1)  # rotate_half
    return (z * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


def dropout(x: jax.Array, key: jax.Array, rate: float) -> jax.Array:
    """``x * mask / (1 - rate)``, the mask ``bernoulli(key, 1 - rate, x.shape)``."""
    x, key, rate = _checks.check_dropout("dropout", x, key, rate)
    if rate == 0:
        return x
    if rate == 1:
        return x * 0
    mask = jax.random.bernoulli(key, 1 - rate, x.shape)
    return (_wide(x) * mask.astype(_wide(x).dtype) * (1 / (1 - rate))).astype(x.dtype)


def lora_dense(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array,
    lora_a: jax.Array,
    lora_b: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    """``x @ w + b + scale * (x @ lora_a) @ lora_b``, ``w`` and ``b`` frozen (no gradient)."""
    x, w, b, lora_a, lora_b, scale = _checks.check_lora(
        "lora_dense", x, w, b, lora_a, lora_b, scale
    )
    x_, w_, b_, a_, bb = _wide(x, w, b, lora_a, lora_b)
    w_, b_ = jax.lax.stop_gradient(w_), jax.lax.stop_gradient(b_)
    y = x_ @ w_ + b_.reshape((1,) * (x.ndim - 1) + b.shape) + scale * ((x_ @ a_) @ bb)
    return y.astype(x.dtype)


def lora_swiglu(
    x: jax.Array,
    w_gate: jax.Array,
    w_up: jax.Array,
    gate_a: jax.Array,
    gate_b: jax.Array,
    up_a: jax.Array,
    up_b: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    """``silu(a) * u``, ``a = x @ w_gate + scale * (x @ gate_a) @ gate_b`` and ``u`` likewise
    with ``w_up``, ``up_a``, ``up_b``; ``w_gate`` and ``w_up`` frozen (no gradient)."""
    checked = _checks.check_lora_swiglu(
        "lora_swiglu", x, w_gate, w_up, gate_a, gate_b, up_a, up_b, scale
    )
    x, scale = checked[0], checked[-1]
    x_, wg, wu, ga, gb, ua, ub = _wide(*checked[:-1])
    wg, wu = jax.lax.stop_gradient(wg), jax.lax.stop_gradient(wu)
    a = x_ @ wg + scale * ((x_ @ ga) @ gb)
    u = x_ @ wu + scale * ((x_ @ ua) @ ub)
    return (a * jax.nn.sigmoid(a) * u).astype(x.dtype)


# --- recurrent: a plain lax.scan over the cell -------------------------------------------------


def _keep(m, new, old):
    return new if m is None else jnp.where(m[:, None], new, old)


def _inputs(xs, carry, w_h, lengths):
    """Zero states where None; the mask ``(T, B)`` of real steps; NaN inputs for a sequence
    whose (traced) length lies outside ``[0, T]``."""
    b, t, _ = xs.shape
    xs = _wide(xs)
    carry = tuple(jnp.zeros((b, w_h.shape[0]), xs.dtype) if c is None else _wide(c) for c in carry)
    if lengths is None:
        return xs, carry, None
    lengths = jnp.asarray(lengths)
    bad = (lengths < 0) | (lengths > t)
    xs = jnp.where(bad[:, None, None], jnp.nan, xs)
    real = jnp.arange(t, dtype=lengths.dtype)[:, None] < lengths[None, :]
    return xs, carry, real | bad[None, :]  # a bad sequence runs every step, on NaN


def _scan_cell(cell, carry, xs, mask):
    """Run ``cell(carry, x_t) -> carry`` over ``xs (B, T, I)``; on padding (``mask`` False)
    the carry is kept and the output is zero. The output of a step is the carry's first
    element (``h``)."""

    def step(carry, inputs):
        x, m = inputs
        new = jax.tree.map(lambda n, o: _keep(m, n, o), cell(carry, x), carry)
        h = jax.tree.leaves(new)[0]
        return new, h if m is None else jnp.where(m[:, None], h, 0)

    last, ys = jax.lax.scan(step, carry, (jnp.swapaxes(xs, 0, 1), mask))
    return jnp.swapaxes(ys, 0, 1), last


def rnn(xs, h0, w_x, w_h, b, lengths=None):
    """Elman RNN ``h_t = tanh(x_t W_x + h_{t-1} W_h + b)``; returns ``(hs, h_last)``."""
    xs = _checks.check_recurrent("rnn", xs, {"h0": h0}, w_x, w_h, {"b": b}, lengths, 1)
    dtype = xs.dtype
    xs, (h0,), mask = _inputs(xs, (h0,), w_h, lengths)
    w_x, w_h, b = _wide(w_x, w_h, b)
    hs, (h,) = _scan_cell(lambda c, x: (jnp.tanh(x @ w_x + c[0] @ w_h + b[None]),), (h0,), xs, mask)
    return hs.astype(dtype), h.astype(dtype)


def lstm(xs, h0, c0, w_x, w_h, b, lengths=None):
    """LSTM, gates i, f, g, o; returns ``(hs, (h_last, c_last))``."""
    carry = {"h0": h0, "c0": c0}
    xs = _checks.check_recurrent("lstm", xs, carry, w_x, w_h, {"b": b}, lengths, 4)
    dtype = xs.dtype
    xs, carry, mask = _inputs(xs, (h0, c0), w_h, lengths)
    w_x, w_h, b = _wide(w_x, w_h, b)

    def cell(carry, x):
        h, c = carry
        a_i, a_f, a_g, a_o = jnp.split(x @ w_x + h @ w_h + b[None], 4, axis=-1)
        c = sigmoid(a_f) * c + sigmoid(a_i) * jnp.tanh(a_g)
        return sigmoid(a_o) * jnp.tanh(c), c

    return jax.tree.map(lambda a: a.astype(dtype), _scan_cell(cell, carry, xs, mask))


def gru(xs, h0, w_x, w_h, b_x, b_h, lengths=None):
    """GRU, gates r, z, n; returns ``(hs, h_last)``."""
    biases = {"b_x": b_x, "b_h": b_h}
    xs = _checks.check_recurrent("gru", xs, {"h0": h0}, w_x, w_h, biases, lengths, 3)
    dtype = xs.dtype
    xs, (h0,), mask = _inputs(xs, (h0,), w_h, lengths)
    w_x, w_h, b_x, b_h = _wide(w_x, w_h, b_x, b_h)

    def cell(carry, x):
        (h,) = carry
        a_r, a_z, a_n = jnp.split(x @ w_x + b_x[None], 3, axis=-1)
        u_r, u_z, u_n = jnp.split(h @ w_h + b_h[None], 3, axis=-1)
        r, z = sigmoid(a_r + u_r), sigmoid(a_z + u_z)
        n = jnp.tanh(a_n + r * u_n)
        return ((1 - z) * n + z * h,)

    hs, (h,) = _scan_cell(cell, (h0,), xs, mask)
    return hs.astype(dtype), h.astype(dtype)
