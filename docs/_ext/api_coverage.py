"""Every public name has a docstring and a place in the API reference, or the build fails.

chex's idea, as a Sphinx extension: for each module in ``api_coverage_modules``, its public
names are its ``__all__`` or, without one, the functions, classes and assignments its own source
defines at the top level with no leading underscore. Each must have a docstring (a ``#:``
comment or a string after the assignment, for data) and be a Python object of the built
reference (``module.name``, or where it is defined, for a name a package re-exports). Each
miss is a warning of type ``api_coverage``, and ``-W`` makes it an error.
``api_coverage_allow`` holds ``module.name`` entries that are let through, each a warning too
once it is documented (or gone), so that the list only shrinks.
"""

import ast
import importlib
import inspect
from pathlib import Path

from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _tree(module) -> ast.Module:
    return ast.parse(Path(inspect.getfile(module)).read_text())


def public_names(module) -> list[str]:
    """``module.__all__``, or the public names its own source defines at the top level."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    names = []
    for node in _tree(module).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


def _origins(module) -> dict[str, str]:
    """name -> the module it is imported from, for the ``from M import name`` of ``module``."""
    origins = {}
    for node in _tree(module).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                origins[alias.asname or alias.name] = node.module
    return origins


def _own_doc(obj) -> str | None:
    """The docstring ``obj`` was written with: not one a class inherits, nor the signature
    that ``dataclass`` and ``namedtuple`` write in place of a missing one."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        if doc and doc.startswith(obj.__name__ + "(") and "\n" not in doc.strip():
            return None
        return doc
    return getattr(obj, "__doc__", None)


def _is_data(obj, name: str) -> bool:
    """Whether ``name`` holds a value, not a function, class or module of that name: an alias
    (``Params = dict[str, jax.Array]``) is documented where it is assigned, as data is."""
    defined = inspect.isroutine(obj) or inspect.isclass(obj) or inspect.ismodule(obj)
    own_name = getattr(obj, "__name__", name).rpartition(".")[2]
    return not (defined or callable(obj)) or own_name != name


def _data_doc(modname: str, name: str) -> bool:
    """Whether ``modname``'s source documents its top-level ``name`` (``#:`` or a string)."""
    try:
        return ("", name) in ModuleAnalyzer.for_module(modname).find_attr_docs()
    except PycodeError:  # not a module with a source
        return False


def _resolve(fullname: str):
    """The object ``fullname`` names as a module's attribute (or module), if it does."""
    modname, _, name = fullname.rpartition(".")
    try:
        return getattr(importlib.import_module(modname), name)
    except (ImportError, AttributeError, ValueError):
        return None


def referenced(objects) -> set[tuple[str, int]]:
    """``(name, id(object))`` of the Python objects the reference documents: a name a package
    re-exports counts as in the reference where it is documented once, under either module."""
    return {
        (fullname.rpartition(".")[2], id(_resolve(fullname)))
        for fullname, entry in objects.items()
        if entry.objtype in {"module", "function", "class", "data", "exception"}
    }


def misses(modname: str, objects, documented: set[tuple[str, int]]) -> list[str]:
    """What is wrong with ``modname``'s public names, given the reference's ``objects``."""
    if modname not in objects:
        return [f"{modname}: the module is not in the API reference"]
    module = importlib.import_module(modname)
    origins = _origins(module)
    found = []
    for name in public_names(module):
        obj = getattr(module, name)
        if _is_data(obj, name):
            has_doc = any(_data_doc(m, name) for m in (modname, origins.get(name)) if m)
        else:
            has_doc = bool((_own_doc(obj) or "").strip())
        if not has_doc:
            found.append(f"{modname}.{name}: a public name without a docstring")
        elif (name, id(obj)) not in documented:
            found.append(f"{modname}.{name}: a public name missing from the API reference")
    return found


def check(app, env) -> None:
    objects = env.get_domain("py").objects
    documented = referenced(objects)
    allow = set(app.config.api_coverage_allow)
    for modname in app.config.api_coverage_modules:
        for miss in misses(modname, objects, documented):
            name = miss.split(":")[0]
            if name in allow:
                allow.discard(name)
            else:
                logger.warning(miss, type="api_coverage")
    for name in sorted(allow):  # let through, but nothing is missing there any more
        logger.warning(f"{name}: allowed undocumented, but documented or gone", type="api_coverage")


def setup(app):
    app.add_config_value("api_coverage_modules", [], "env")
    app.add_config_value("api_coverage_allow", [], "env")
    app.connect("env-check-consistency", check)
    return {"version": "1", "parallel_read_safe": True}
