"""jaxchain: the chain rule written by hand, in JAX.

The submodules load on first use (``jaxchain.rules``, ``jaxchain.tangents``,
``jaxchain.reference``, ...), so that importing the autodiff oracle never imports the rules it
checks.
"""

import importlib

__all__ = ["check", "nn", "reference", "rules", "tangents", "train"]
__version__ = "0.2.0"


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"jaxchain.{name}")
    raise AttributeError(f"module 'jaxchain' has no attribute {name!r}")
