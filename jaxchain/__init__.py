"""jaxchain: the chain rule written by hand, in JAX."""

from jaxchain import check, reference, rules

__all__ = ["check", "reference", "rules"]
__version__ = "0.1.0"
