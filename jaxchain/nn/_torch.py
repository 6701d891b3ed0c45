"""Reading PyTorch state dicts (NumPy arrays keyed by PyTorch's names; torch not needed)."""

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

RECURRENT_KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def require(state_dict: Mapping[str, np.ndarray], keys, what: str) -> None:
    missing = [k for k in keys if k not in state_dict]
    if missing:
        raise ValueError(f"{what}.from_torch: state_dict lacks {missing}; has {list(state_dict)}")


def recurrent_from_torch(state_dict: Mapping[str, np.ndarray], *, separate_biases: bool) -> dict:
    """``torch.nn.RNN/LSTM/GRU`` (one layer) to ``w_x (I, G)``, ``w_h (H, G)`` and the biases.

    PyTorch stores ``weight_ih_l0 (G, I)`` and ``weight_hh_l0 (G, H)`` for ``x W^T``; jaxchain
    multiplies ``x W`` and so takes their transposes. The gate blocks keep PyTorch's order
    (LSTM i, f, g, o; GRU r, z, n), which is jaxchain's. The two biases are summed into ``b``
    unless ``separate_biases`` (the GRU, whose ``b_hn`` sits inside ``r * (W_hn h + b_hn)``).
    """
    require(state_dict, RECURRENT_KEYS, "recurrent")
    w_ih, w_hh, b_ih, b_hh = (np.asarray(state_dict[k]) for k in RECURRENT_KEYS)
    params = {"w_x": jnp.asarray(w_ih.T), "w_h": jnp.asarray(w_hh.T)}
    if separate_biases:
        return {**params, "b_x": jnp.asarray(b_ih), "b_h": jnp.asarray(b_hh)}
    return {**params, "b": jnp.asarray(b_ih + b_hh)}
