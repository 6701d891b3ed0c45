"""jaxchain: the chain rule written by hand, in JAX."""

from jaxchain import check, nn, reference, rules

__all__ = ["check", "nn", "reference", "rules"]
__version__ = "0.1.0"
