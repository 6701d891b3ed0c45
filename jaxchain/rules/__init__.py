"""Hand-written backward passes: every op is a ``jax.custom_vjp`` whose backward is the
derivation, written out. :mod:`jaxchain.reference` has the same names, differentiated by
``jax.grad``."""

from jaxchain.ops import NAMES
from jaxchain.rules.attention import dot_product_attention
from jaxchain.rules.elementwise import gelu, relu, sigmoid, tanh
from jaxchain.rules.linear import dense, embedding
from jaxchain.rules.losses import (
    linear_softmax_cross_entropy,
    log_softmax,
    mse,
    sigmoid_binary_cross_entropy,
    softmax,
    softmax_cross_entropy,
)
from jaxchain.rules.norm import layer_norm
from jaxchain.rules.recurrent import gru, lstm, rnn

__all__ = list(NAMES)  # the names of the interface, jaxchain.ops.Ops
