"""LSTM, batch-first, on the whole-sequence rule :func:`jaxchain.rules.lstm`.

Params ``{"w_x": (I, 4H), "w_h": (H, 4H), "b": (4H,)}``, gate blocks in the order i, f, g, o
(PyTorch's, transposed).
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import rules
from jaxchain.nn import _dropout, _init
from jaxchain.nn._torch import recurrent_from_torch
from jaxchain.ops import Ops

#: ``{"w_x": (I, 4H), "w_h": (H, 4H), "b": (4H,)}``, gates in the order i, f, g, o.
Params = dict[str, jax.Array]
#: Gate blocks stacked in ``w_x``, ``w_h`` and the biases.
GATES = 4
#: ``(h, c)``, each ``(B, H)``.
Carry = tuple[jax.Array, jax.Array]


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    dtype=jnp.float32,
) -> Params:
    """Glorot input weights, orthogonal recurrent weights (one block per gate), zero biases
    except the forget gate's, ``forget_bias`` (1 by default, so that the cell starts out
    remembering)."""
    kx, kh = jax.random.split(key)
    h = hidden_size
    b = jnp.zeros((GATES * h,), dtype).at[h : 2 * h].set(forget_bias)
    return {
        "w_x": _init.glorot(kx, (input_size, GATES * h), dtype),
        "w_h": _init.orthogonal_gates(kh, h, GATES, dtype),
        "b": b,
    }


def apply(
    params: Params,
    xs: jax.Array,
    carry: Carry | None = None,
    *,
    lengths: jax.Array | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    ops: Ops = rules,
) -> tuple[jax.Array, Carry]:
    """Run over ``xs (B, T, I)`` from ``carry = (h0, c0)``, each ``(B, H)`` (zeros if None).

    With ``lengths (B,)``, steps past each sequence's length keep the carry and output zeros.

    ``dropout`` (with a ``key``): on the non-recurrent connections, the inputs and the
    outputs ``hs`` (Zaremba et al., 2014), never on the state carried between steps.

    Returns:
      ``(hs, (h_last, c_last))``: ``(B, T, H)`` and the carry at each sequence's length.
    """
    h0, c0 = (None, None) if carry is None else carry
    xs = _dropout.maybe(ops, xs, dropout, key, 0)
    hs, last = ops.lstm(xs, h0, c0, params["w_x"], params["w_h"], params["b"], lengths)
    return _dropout.maybe(ops, hs, dropout, key, 1), last


def from_torch(state_dict: Mapping[str, np.ndarray]) -> Params:
    """Params from a one-layer ``torch.nn.LSTM(batch_first=True)`` state dict of NumPy arrays:
    ``w_x = weight_ih_l0^T``, ``w_h = weight_hh_l0^T``, ``b = bias_ih_l0 + bias_hh_l0``; the gate
    order i, f, g, o is PyTorch's."""
    return recurrent_from_torch(state_dict, separate_biases=False)
