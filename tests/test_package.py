"""``pip install jaxchain`` is lean: the wheel built from this checkout, installed with no
extras into a fresh virtual environment, gives the core (the derivatives, the checker, the
models, ``jaxchain check``) with JAX, jaxlib and NumPy and what they need, nothing more; a part
that needs an extra says which in one line.

The core's wheels (JAX's and NumPy's) are kept in ``wheelhouse/`` of the environment running
the tests, fetched once (``pip download``) and installed from there with ``--no-index`` on
every later run.
"""

import importlib.metadata
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement

REPO = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ("jaxchain", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in")
MAX_DISTRIBUTIONS = 15  # besides pip and setuptools (the bound; equinox needs 4)
EXTRA_MODULES = {  # a module of each extra: importing it without the extra names the extra
    "train": "jaxchain.train",
    "hf": "jaxchain.pretrained",
    "flax": "jaxchain.nnx",
    "testing": "jaxchain.cases.testing",
}

PROBE = """
import importlib, json, sys
import jax, jax.numpy as jnp
import jaxchain
from jaxchain import check, nn, reference, rules, tangents
for name in ("rules", "tangents", "reference", "check", "nn", "cases.registry", "ops"):
    importlib.import_module("jaxchain." + name)

key = jax.random.key(0)
params = nn.mlp.init(key, [3, 8, 2])
batch = jnp.ones((4, 3))
loss = lambda p: jnp.sum(nn.mlp.apply(p, batch) ** 2)
grads = jax.grad(loss)(params)
assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
lstm = nn.lstm.init(key, 3, 5)
xs = jnp.ones((2, 4, 3))
out = nn.lstm.apply(lstm, xs)
g = jax.grad(lambda p: jnp.sum(nn.lstm.apply(p, xs)[0]))(lstm)
assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))
jax.config.update("jax_enable_x64", True)  # the checker in float64

@jax.custom_vjp
def cube(x):
    return x**3

cube.defvjp(lambda x: (x**3, x), lambda x, g: (3 * x**2 * g,))

@jax.custom_vjp
def wrong_cube(x):
    return x**3

wrong_cube.defvjp(lambda x: (x**3, x), lambda x, g: (2 * x**2 * g,))
x = jnp.linspace(-1.0, 1.0, 7)
assert check.check_vjp(cube, None, x).ok
assert not check.check_vjp(wrong_cube, None, x).ok
errors = {}
for extra, module in json.loads(sys.argv[1]).items():
    try:
        importlib.import_module(module)
    except ImportError as e:
        errors[extra] = str(e)
print(json.dumps({"version": jaxchain.__version__, "errors": errors}))
"""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _core_closure() -> dict[str, str]:
    """The core's dependencies (``pyproject.toml``) and theirs, with the versions installed
    here: what the lean install must resolve to."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r).name for r in project["dependencies"]]
    found: dict[str, str] = {}
    while todo:
        name = _normal(todo.pop())
        if name in found:
            continue
        found[name] = importlib.metadata.version(name)
        for text in importlib.metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _wheelhouse(closure: dict[str, str]) -> pathlib.Path:
    """``wheelhouse/`` of the running environment, holding a wheel of each of ``closure``."""
    house = pathlib.Path(sys.prefix) / "wheelhouse"
    house.mkdir(exist_ok=True)
    have = {_normal("-".join(w.name.split("-")[:2])) for w in house.glob("*.whl")}
    wanted = [f"{n}=={v}" for n, v in closure.items() if _normal(f"{n}-{v}") not in have]
    if wanted:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
        subprocess.run([*pip, "-d", str(house), *wanted], check=True, capture_output=True)
    return house


def _wheel(tmp: pathlib.Path) -> pathlib.Path:
    """jaxchain's wheel, built from a copy of the checkout's sources."""
    source = tmp / "source"
    for name in SOURCES:
        path = REPO / name
        copy = shutil.copytree if path.is_dir() else shutil.copy2
        copy(path, source / name, **({"ignore": _ignored} if path.is_dir() else {}))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(tmp / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("jaxchain-*.whl")
    return wheel


def _ignored(directory, names):
    return [n for n in names if n == "__pycache__"]


def _lean(tmp: pathlib.Path) -> tuple[pathlib.Path, dict[str, str]]:
    """A fresh virtual environment with jaxchain's wheel installed, no extras."""
    (tmp / "source").mkdir()
    closure = _core_closure()
    house, wheel = _wheelhouse(closure), _wheel(tmp)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index"]
    subprocess.run([*pip, "--find-links", str(house), str(wheel)], check=True, capture_output=True)
    return venv, closure


def _run(venv: pathlib.Path, *argv: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(venv), "JAX_PLATFORMS": "cpu"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=venv)


def test_pip_install_jaxchain_is_the_core_alone(tmp_path):
    """One test, one environment, built once (with pytest 9.2 and pytest-xdist 3.8, an
    ``xdist_group`` does not keep tests on one worker): what it holds, what the core does
    there, what the command does there."""
    venv, closure = _lean(tmp_path)
    _holds_the_core_and_nothing_more(venv, closure)
    _the_core_works_and_each_extra_is_named_when_missing(venv)
    _the_command_checks_and_names_the_extra_a_command_needs(venv)


def _holds_the_core_and_nothing_more(venv, closure):
    listed = _run(venv, str(venv / "bin" / "python"), "-m", "pip", "--version")
    assert listed.returncode != 0  # no pip: the environment holds what jaxchain brought
    names = _run(
        venv,
        str(venv / "bin" / "python"),
        "-c",
        "import importlib.metadata as m, json;"
        "print(json.dumps(sorted(d.metadata['Name'] for d in m.distributions())))",
    )
    installed = {_normal(n) for n in json.loads(names.stdout)} - {"pip", "setuptools"}
    assert installed == {"jaxchain", *closure}, installed
    assert len(installed) <= MAX_DISTRIBUTIONS


def _the_core_works_and_each_extra_is_named_when_missing(venv):
    probe = _run(venv, str(venv / "bin" / "python"), "-c", PROBE, json.dumps(EXTRA_MODULES))
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.splitlines()[-1])
    assert result["version"] == importlib.metadata.version("jaxchain")
    for extra in EXTRA_MODULES:
        message = result["errors"][extra]
        assert f"pip install 'jaxchain[{extra}]'" in message and "\n" not in message, message


def _the_command_checks_and_names_the_extra_a_command_needs(venv):
    jaxchain = str(venv / "bin" / "jaxchain")
    checked = _run(venv, jaxchain, "check", "--only", "dense")
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "1 passed, 0 failed" in checked.stdout
    version = _run(venv, jaxchain, "--version")
    assert version.stdout.strip() == f"jaxchain {importlib.metadata.version('jaxchain')}"
    for argv, extra in [
        (["train", "--out", "run"], "train"),
        (["audit", "--only", "tanh'"], "flax"),
        (["check", "--dtype", "bfloat16", "--only", "dense"], "flax"),
    ]:
        refused = _run(venv, jaxchain, *argv)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert f"pip install 'jaxchain[{extra}]'" in lines[0], lines
