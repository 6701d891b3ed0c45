"""Multi-layer perceptron: dense layers with an activation between them (none after the last)."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxchain import rules
from jaxchain.nn import _dropout, _init
from jaxchain.ops import Ops

#: The ``activation`` names :func:`init` and :func:`apply` accept.
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
#: ``{"layers": [{"w": (I, O), "b": (O,)}, ...]}``, one entry per layer.
Params = dict[str, list[dict[str, jax.Array]]]


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp: activation must be one of {ACTIVATIONS}, got {activation!r}")


def init(
    key: jax.Array, sizes: Sequence[int], *, activation: str = "relu", dtype=jnp.float32
) -> Params:
    """Parameters for layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Hidden layers use He normal weights for ``relu``/``gelu`` and Glorot uniform for
    ``tanh``/``sigmoid``; the output layer uses Glorot uniform; biases are zero.

    Returns:
      ``{"layers": [{"w": (I, O), "b": (O,)}, ...]}``.
    """
    _check_activation(activation)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"mlp: sizes must list at least two positive sizes, got {list(sizes)}")
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for n, (k, i, o) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        last = n == len(sizes) - 2
        w_init = _init.glorot if last else _init.by_activation(activation)
        layers.append({"w": w_init(k, (i, o), dtype), "b": jnp.zeros((o,), dtype)})
    return {"layers": layers}


def apply(
    params: Params,
    x: jax.Array,
    *,
    activation: str = "relu",
    dropout: float = 0.0,
    key: jax.Array | None = None,
    ops: Ops = rules,
) -> jax.Array:
    """The network on ``x (..., sizes[0])``; no activation after the last layer.

    Args:
      params: from :func:`init`.
      x: ``(..., I)``.
      activation: the name given to :func:`init`.
      dropout: with a ``key``, dropout at this rate after each hidden activation.
      ops: :mod:`jaxchain.rules` (hand-written backward), :mod:`jaxchain.tangents` (forward
        mode) or :mod:`jaxchain.reference`.

    Returns:
      ``(..., O)`` (logits, for a classifier).
    """
    _check_activation(activation)
    act = getattr(ops, activation)
    *hidden, last = params["layers"]
    for i, layer in enumerate(hidden):
        x = _dropout.maybe(ops, act(ops.dense(x, layer["w"], layer["b"])), dropout, key, i)
    return ops.dense(x, last["w"], last["b"])
