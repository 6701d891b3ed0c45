"""GRU, batch-first, on the whole-sequence rule :func:`jaxchain.rules.gru`.

Params ``{"w_x": (I, 3H), "w_h": (H, 3H), "b_x": (3H,), "b_h": (3H,)}``, gate blocks in the
order r, z, n. The recurrent bias ``b_h`` is kept apart from ``b_x`` because its n block sits
inside the reset gate: ``n = tanh(x W_xn + b_xn + r * (h W_hn + b_hn))``.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import rules
from jaxchain.nn import _dropout, _init
from jaxchain.nn._torch import recurrent_from_torch
from jaxchain.ops import Ops

#: ``{"w_x": (I, 3H), "w_h": (H, 3H), "b_x": (3H,), "b_h": (3H,)}``, gates r, z, n.
Params = dict[str, jax.Array]
#: Gate blocks stacked in ``w_x``, ``w_h`` and the biases.
GATES = 3


def init(key: jax.Array, input_size: int, hidden_size: int, *, dtype=jnp.float32) -> Params:
    """Glorot input weights, orthogonal recurrent weights (one block per gate), zero biases."""
    kx, kh = jax.random.split(key)
    h = hidden_size
    return {
        "w_x": _init.glorot(kx, (input_size, GATES * h), dtype),
        "w_h": _init.orthogonal_gates(kh, h, GATES, dtype),
        "b_x": jnp.zeros((GATES * h,), dtype),
        "b_h": jnp.zeros((GATES * h,), dtype),
    }


def apply(
    params: Params,
    xs: jax.Array,
    h0: jax.Array | None = None,
    *,
    lengths: jax.Array | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    ops: Ops = rules,
) -> tuple[jax.Array, jax.Array]:
    """Run over ``xs (B, T, I)`` from ``h0 (B, H)`` (zeros if None).

    ``dropout`` (with a ``key``): on the non-recurrent connections, the inputs and the
    outputs ``hs`` (Zaremba et al., 2014), never on the state carried between steps.

    Returns:
      ``(hs, h_last)``: ``(B, T, H)`` and the state at each sequence's length.
    """
    p = params
    xs = _dropout.maybe(ops, xs, dropout, key, 0)
    hs, last = ops.gru(xs, h0, p["w_x"], p["w_h"], p["b_x"], p["b_h"], lengths)
    return _dropout.maybe(ops, hs, dropout, key, 1), last


def from_torch(state_dict: Mapping[str, np.ndarray]) -> Params:
    """Params from a one-layer ``torch.nn.GRU(batch_first=True)`` state dict of NumPy arrays:
    ``w_x = weight_ih_l0^T``, ``w_h = weight_hh_l0^T``, ``b_x = bias_ih_l0``,
    ``b_h = bias_hh_l0``; the gate order r, z, n is PyTorch's."""
    return recurrent_from_torch(state_dict, separate_biases=True)
