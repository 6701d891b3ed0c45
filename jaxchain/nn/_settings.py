"""A model's settings, carried by its params.

A model whose computation depends on numbers that are not shapes (RoPE's base, a norm's
epsilon, pre-norm or post-norm) keeps them, with its sizes, in a frozen dataclass stored under
``params["settings"]``: a static pytree node, as equinox keeps a module's static fields. It has
no leaves, so ``jax.grad``, optax, ``jax.tree.map`` and orbax pass it through unchanged, and
``jit`` treats it as part of the program (hashable, compared by value). ``init`` and
``from_torch`` put it there; ``apply``, ``loss`` and ``generate`` read it, so that params are
never run with settings other than their own.
"""

import dataclasses
from collections.abc import Mapping

import jax


def static(cls: type) -> type:
    """``cls`` as a frozen, keyword-only dataclass registered as a static pytree node."""
    return jax.tree_util.register_static(dataclasses.dataclass(frozen=True, kw_only=True)(cls))


def of(params: Mapping, cls: type, model: str):
    """``params["settings"]``, which must be a ``cls``; a ``ValueError`` naming ``params``
    otherwise (a dict made by hand, or by an older jaxchain)."""
    found = params.get("settings") if isinstance(params, Mapping) else None
    if not isinstance(found, cls):
        raise ValueError(
            f"{model}: params must carry their settings, params['settings'] a "
            f"{model}.{cls.__name__} (made by {model}.init or {model}.from_torch), got "
            f"{type(found).__name__}"
        )
    return found


def agree(model: str, **pairs: tuple) -> None:
    """Each of ``pairs``, ``name=(found in the params, what the settings give)``, equal; a
    ``ValueError`` naming ``params`` and the first that is not."""
    for name, (found, want) in pairs.items():
        if found != want:
            raise ValueError(
                f"{model}: params' shapes disagree with params['settings']: {name} is {found}, "
                f"the settings give {want}"
            )


def positive(model: str, **sizes: int) -> None:
    """Each of ``sizes`` an int of at least 1, or a ``ValueError`` naming it."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{model}: {name} must be a positive int, got {value!r}")
