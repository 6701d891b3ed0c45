"""The primal computations of the ops: each family's forward values (and what a backward pass
saves), which the reverse-mode rules (:mod:`jaxchain.rules`) and the forward-mode rules
(:mod:`jaxchain.tangents`) both import by name, so that neither reaches into the other.

Private: no name here is API. It imports only JAX, NumPy and :mod:`jaxchain._checks`.
"""
