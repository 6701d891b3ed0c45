"""The layers of the package and the one direction of their imports, read from the source.

Each module of ``jaxchain`` belongs to one layer; a module may import its own layer and the
layers below it, never one above. Within the derivatives, the rules and their forward-mode
twins share only the private primal modules, and the oracle shares nothing with either.
"""

import ast
import inspect
import pathlib

import pytest

import jaxchain
from jaxchain import ops

ROOT = pathlib.Path(jaxchain.__file__).parent

# layer: (its units, the layers it may import besides its own); a unit is a module or package
# of jaxchain ("rules") or a module inside one ("check.registry"), the longest that matches
LAYERS = {
    "support": ({"_files", "ops", "_validate", "_checks"}, set()),
    "derivatives": ({"_primal", "rules", "tangents", "reference"}, {"support"}),
    "checker": ({"check"}, set()),
    "models": ({"nn", "nnx", "pretrained"}, {"support", "derivatives"}),
    "cases": (
        {"check.registry", "check.peers", "check.testing", "check.audit", "check.audit_libraries"},
        {"support", "derivatives", "checker", "models"},
    ),
    "training": ({"train"}, {"support", "derivatives", "models"}),
    "commands": (
        {"cli", "benchmarks"},
        {"support", "derivatives", "checker", "models", "cases", "training"},
    ),
}
LAYER = {unit: layer for layer, (units, _) in LAYERS.items() for unit in units}


def _unit(module: str) -> str:
    """``jaxchain.rules.norm`` -> ``rules``; ``jaxchain.check.registry`` -> ``check.registry``."""
    parts = module.split(".")[1:]
    prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return next((p for p in prefixes if p in LAYER), parts[0])


def _sources():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        yield path, ".".join(parts[:-1] if path.name == "__init__.py" else parts)


def _imports(path: pathlib.Path, module: str):
    """``(imported module, names)`` of every jaxchain import in ``path``, relative ones
    resolved, ``from jaxchain import x`` read as importing ``jaxchain.x``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jaxchain."):
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, *([name] if name else [])])
            if name == "jaxchain":
                for alias in node.names:
                    yield f"jaxchain.{alias.name}", []
            elif name.startswith("jaxchain."):
                yield name, [alias.name for alias in node.names]


def _arrows():
    return {
        (module, imported, tuple(names))
        for path, module in _sources()
        if module != "jaxchain"
        for imported, names in _imports(path, module)
    }


def test_every_module_has_a_layer():
    units = {_unit(module) for _, module in _sources() if module != "jaxchain"}
    assert units == set(LAYER), ("place these in LAYERS", sorted(units ^ set(LAYER)))
    assert all(name.split(".")[0] in units for name in jaxchain.__all__)


def test_no_import_climbs_a_layer():
    climbing = sorted(
        f"{module} ({LAYER[_unit(module)]}) imports {imported} ({LAYER[_unit(imported)]})"
        for module, imported, _ in _arrows()
        if LAYER[_unit(imported)] != LAYER[_unit(module)]
        and LAYER[_unit(imported)] not in LAYERS[LAYER[_unit(module)]][1]
    )
    assert not climbing, climbing


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("rules", {"tangents", "reference"}),
        ("tangents", {"rules", "reference"}),
        ("reference", {"rules", "tangents", "_primal"}),
        ("_primal", {"rules", "tangents", "reference"}),
        ("check", set(LAYER) - {"check"}),  # the checker a custom rule's author adopts alone
        ("train", {"check", "check.registry", "check.peers", "check.testing", "check.audit"}),
    ],
)
def test_the_families_are_independent(importer, forbidden):
    found = sorted(
        f"{module} imports {imported}"
        for module, imported, _ in _arrows()
        if _unit(module) == importer and _unit(imported) in forbidden
    )
    assert not found, found


def _is_module(package: str, name: str) -> bool:
    import importlib.util

    return (
        importlib.util.find_spec(package) is not None
        and bool(getattr(importlib.util.find_spec(package), "submodule_search_locations", None))
        and importlib.util.find_spec(f"{package}.{name}") is not None
    )


def test_no_private_name_is_imported_from_another_package():
    """A private module (``jaxchain._primal.norm``) may be shared by name; a private name
    inside a module (``_logits``) belongs to its package."""
    found = []
    for path, module in _sources():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for imported, names in _imports(path, module):
            private = [n for n in names if n.startswith("_") and not _is_module(imported, n)]
            if private and package not in (imported, imported.rpartition(".")[0]):
                found.append(f"{module} imports {private} from {imported}")
    assert not found, found


@pytest.mark.parametrize("family", ["rules", "tangents"])
def test_a_family_defines_no_public_name_but_its_ops(family):
    """What the rules and their twins share lives in ``jaxchain._primal``; each of their
    modules defines, publicly, only ops of :class:`jaxchain.ops.Ops`."""
    import importlib
    import pkgutil

    package = importlib.import_module(f"jaxchain.{family}")
    extra = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        defined = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ == module.__name__
        }
        if defined - set(ops.NAMES):
            extra[module.__name__] = sorted(defined - set(ops.NAMES))
    assert not extra, extra
