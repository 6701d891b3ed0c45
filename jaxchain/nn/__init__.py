"""Models as pure functions: ``init(key, ...)`` and ``apply(params, ..., ops=jaxchain.rules)``.

Every ``apply`` gives the same results with ``ops=jaxchain.reference`` (autodiff) and with
``ops=jaxchain.tangents`` (hand-written forward mode: ``jax.jvp``, ``jacfwd``, ``linearize``),
within float tolerance.
"""

from jaxchain.nn import attention, bert, decoder, gru, lora, lstm, mlp, rnn, transformer

#: The recurrent models, by the name of their op.
RECURRENT = {"rnn": rnn, "lstm": lstm, "gru": gru}

__all__ = [
    "RECURRENT",
    "attention",
    "bert",
    "decoder",
    "gru",
    "lora",
    "lstm",
    "mlp",
    "rnn",
    "transformer",
]
