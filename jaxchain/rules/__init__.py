"""Hand-written backward passes: every op is a ``jax.custom_vjp`` whose backward is the
derivation, written out. :mod:`jaxchain.reference` has the same names, differentiated by
``jax.grad``."""

from jaxchain.ops import NAMES
from jaxchain.rules.attention import dot_product_attention
from jaxchain.rules.elementwise import dropout, gelu, relu, sigmoid, silu, tanh
from jaxchain.rules.linear import dense, embedding, lora_dense, lora_swiglu, swiglu
from jaxchain.rules.losses import (
    linear_softmax_cross_entropy,
    log_softmax,
    mse,
    sigmoid_binary_cross_entropy,
    softmax,
    softmax_cross_entropy,
)
from jaxchain.rules.norm import layer_norm, rms_norm
from jaxchain.rules.recurrent import gru, lstm, rnn
from jaxchain.rules.rope import rope

__all__ = list(NAMES)  # the names of the interface, jaxchain.ops.Ops
