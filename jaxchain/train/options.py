"""Options as groups: frozen dataclasses nested by what uses them, read and written by the
flat names of the command line's flags.

Each group lives beside its user (:class:`jaxchain.train.tasks.Architecture`, the optimizer's
:class:`jaxchain.train.optim.Options`, ...) and checks its own values; a configuration nests
the groups. A leaf name is unique across the whole tree, so a leaf is found by its name alone:
``--top-k`` is ``top_k`` wherever its group sits.

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Inner:
...     rate: float = 0.1
>>> @dataclasses.dataclass(frozen=True)
... class Outer:
...     steps: int = 10
...     inner: Inner = dataclasses.field(default_factory=Inner)
>>> build(Outer, {"rate": 0.5})
Outer(steps=10, inner=Inner(rate=0.5))
>>> flat(Outer())
{'steps': 10, 'rate': 0.1}
"""

import dataclasses
import functools
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from jaxchain._arguments import ArgumentError, literal


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_group(kind) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def leaf_types(cls) -> dict[str, Any]:
    """``{leaf name: annotated type}`` of a group class, its nested groups' leaves included."""
    types = {}
    for f in dataclasses.fields(cls):
        kind = _hints(cls)[f.name]
        types |= leaf_types(kind) if _is_group(kind) else {f.name: kind}
    return types


def flat(group) -> dict[str, Any]:
    """``{leaf name: value}`` of a group instance, its nested groups' leaves included."""
    values = {}
    for f in dataclasses.fields(group):
        value = getattr(group, f.name)
        values |= flat(value) if dataclasses.is_dataclass(value) else {f.name: value}
    return values


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """A nested record (as :func:`dataclasses.asdict` writes it) by its leaf names."""
    values = {}
    for name, value in record.items():
        values |= flatten(value) if isinstance(value, Mapping) else {name: value}
    return values


def build(cls, values: Mapping[str, Any]):
    """An instance of the group class ``cls`` from leaf values by name, the defaults for the
    rest; a name that is no leaf is a ``ValueError`` naming it."""
    unknown = sorted(set(values) - set(leaf_types(cls)))
    if unknown:
        raise ValueError(f"unknown options {', '.join(unknown)}")
    return _build(cls, values)


def _build(cls, values: Mapping[str, Any]):
    given = {}
    for f in dataclasses.fields(cls):
        kind = _hints(cls)[f.name]
        if _is_group(kind):
            given[f.name] = _build(kind, values)
        elif f.name in values:
            given[f.name] = values[f.name]
    return cls(**given)


def replace(group, **values):
    """``group`` with the leaves named in ``values`` changed, wherever they nest."""
    return build(type(group), {**flat(group), **values})


def at_least(group, low: int, names: Iterable[str]) -> None:
    """An ``ArgumentError`` (a :class:`ValueError`) naming the first of ``names`` whose
    value is below ``low`` (None passes: an option not set)."""
    for name in names:
        value = getattr(group, name)
        if value is not None and value < low:
            bound = ">= 0" if low == 0 else f"at least {low}"
            raise ArgumentError(f"{{{name}}} must be {bound}, got {value}")


def one_of(group, name: str, choices: Iterable[str]) -> None:
    """An ``ArgumentError`` (a :class:`ValueError`) naming ``name`` unless its value is one
    of ``choices``."""
    choices = list(choices)
    if getattr(group, name) not in choices:
        raise ArgumentError(
            f"{{{name}}} must be one of {literal(', '.join(choices))}, "
            f"got {literal(repr(getattr(group, name)))}"
        )
