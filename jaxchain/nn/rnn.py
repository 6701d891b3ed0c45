"""Elman RNN, ``h_t = tanh(x_t W_x + h_{t-1} W_h + b)``, batch-first, on the whole-sequence
rule :func:`jaxchain.rules.rnn`."""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import rules
from jaxchain.nn import _dropout, _init
from jaxchain.nn._torch import recurrent_from_torch
from jaxchain.ops import Ops

#: ``{"w_x": (I, H), "w_h": (H, H), "b": (H,)}``.
Params = dict[str, jax.Array]
#: Gate blocks stacked in ``w_x``, ``w_h`` and the biases.
GATES = 1


def init(key: jax.Array, input_size: int, hidden_size: int, *, dtype=jnp.float32) -> Params:
    """``{"w_x": (I, H), "w_h": (H, H), "b": (H,)}``: Glorot input weights, orthogonal
    recurrent weights, zero bias."""
    kx, kh = jax.random.split(key)
    return {
        "w_x": _init.glorot(kx, (input_size, hidden_size), dtype),
        "w_h": _init.orthogonal_gates(kh, hidden_size, GATES, dtype),
        "b": jnp.zeros((hidden_size,), dtype),
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

    With ``lengths (B,)``, steps past each sequence's length keep the state and output zeros.

    ``dropout`` (with a ``key``): on the non-recurrent connections, the inputs and the
    outputs ``hs`` (Zaremba et al., 2014), never on the state carried between steps.

    Returns:
      ``(hs, h_last)``: ``(B, T, H)`` and ``(B, H)``, the state at each sequence's length.
    """
    xs = _dropout.maybe(ops, xs, dropout, key, 0)
    hs, last = ops.rnn(xs, h0, params["w_x"], params["w_h"], params["b"], lengths)
    return _dropout.maybe(ops, hs, dropout, key, 1), last


def from_torch(state_dict: Mapping[str, np.ndarray]) -> Params:
    """Params from a ``torch.nn.RNN(nonlinearity="tanh", batch_first=True)`` state dict of
    NumPy arrays: ``w_x = weight_ih_l0^T``, ``w_h = weight_hh_l0^T``, and
    ``b = bias_ih_l0 + bias_hh_l0`` (PyTorch's two biases are always summed)."""
    return recurrent_from_torch(state_dict, separate_biases=False)
