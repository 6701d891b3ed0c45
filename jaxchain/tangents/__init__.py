"""Hand-written forward-mode rules: every op of :mod:`jaxchain.rules`, with the same name and
signature, as a ``jax.custom_jvp`` whose JVP is the tangent derivation, written out.

JAX cannot apply forward mode to a ``custom_vjp``, so ``jax.jvp``, ``jax.jacfwd``,
``jax.linearize`` and ``jax.hessian`` fail through the reverse-mode rules. Through these they
work: each JVP is linear in the tangents, so JAX also derives the VJP by transposing it, and
differentiates the JVP again for second order. Use them for JVPs, Jacobians and Hessians
(``ops=jaxchain.tangents``); train with :mod:`jaxchain.rules`, whose backward passes choose
what to save.

>>> import jax, jax.numpy as jnp
>>> y, dy = jax.jvp(tanh, (jnp.zeros(2),), (jnp.ones(2),))
>>> dy.tolist()
[1.0, 1.0]
"""

from jaxchain.ops import NAMES
from jaxchain.tangents.attention import dot_product_attention
from jaxchain.tangents.elementwise import dropout, gelu, relu, sigmoid, silu, tanh
from jaxchain.tangents.linear import dense, embedding, lora_dense, lora_swiglu, swiglu
from jaxchain.tangents.losses import (
    linear_softmax_cross_entropy,
    log_softmax,
    mse,
    sigmoid_binary_cross_entropy,
    softmax,
    softmax_cross_entropy,
)
from jaxchain.tangents.norm import layer_norm, rms_norm
from jaxchain.tangents.recurrent import gru, lstm, rnn
from jaxchain.tangents.rope import rope

__all__ = list(NAMES)  # the names of the interface, jaxchain.ops.Ops
