"""Sphinx configuration of jaxchain's site: ``make docs`` builds it into ``docs/_build/html``,
warnings as errors and every cross-reference checked (``-W --keep-going -n``). Nothing is
fetched at build time or when a page is read: no intersphinx, no CDN; MathJax is served from
the site itself."""

import shutil
import sys
from pathlib import Path

import mathjax  # the django-static-mathjax distribution: MathJax 3's files, no dependencies

import jaxchain

DOCS = Path(__file__).parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "jaxchain"
author = "The jaxchain maintainers"
copyright = "the jaxchain maintainers"
release = version = jaxchain.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the "Args:" sections of some docstrings
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",  # the command line, from jaxchain.cli.parser()
    "myst_nb",  # MyST markdown pages and the notebooks
    "api_coverage",  # docs/_ext: every public name documented and in the reference
    "bench_tables",  # docs/_ext: the benchmark and audit tables, from bench/, at build time
]
exclude_patterns = ["_build", "README.md"]
nitpicky = True
html_theme = "furo"
html_title = f"jaxchain {version}"

# -- the API reference ----------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True  # ops=rules, as written, not <module 'jaxchain.rules' ...>
autodoc_typehints = "signature"
napoleon_numpy_docstring = False
# Without intersphinx (no network), other libraries' names in signatures cannot resolve.
_OTHER_LIBRARIES = (
    "jax jaxlib np numpy optax flax nnx orbax hypothesis tokenizers safetensors torch matplotlib"
    " rich collections typing argparse pathlib enum types dataclasses"
).split()
nitpick_ignore_regex = [
    (r"py:(class|obj|data|func|mod|exc|meth|attr)", rf"{lib}(\..*)?") for lib in _OTHER_LIBRARIES
]
# The modules whose every public name must be documented in the reference (docs/_ext).
api_coverage_modules = [
    "jaxchain",
    "jaxchain.ops",
    "jaxchain.rules",
    "jaxchain.tangents",
    "jaxchain.reference",
    "jaxchain.check",
    "jaxchain.nn",
    *(f"jaxchain.nn.{m}" for m in "mlp rnn lstm gru attention transformer bert decoder".split()),
    "jaxchain.nn.lora",
    "jaxchain.pretrained",
    "jaxchain.nnx",
    "jaxchain.train",
    *(
        f"jaxchain.train.{m}"
        for m in "data tasks options optim runs loop distributed backends".split()
    ),
    "jaxchain.cases.testing",
]
api_coverage_allow: list[str] = []  # names allowed without a docstring: none
nitpick_ignore = [
    # the project's own cases (jaxchain.cases.registry) are not in the reference
    ("py:class", "jaxchain.cases.registry.Case"),
]

# -- the notebooks: rendered with the outputs they were saved with, never executed here -------
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3


def _copy_notebooks() -> None:
    """notebooks/*.ipynb into docs/notebooks/ (ignored by git), where Sphinx reads sources;
    a copy is rewritten only when its notebook changed, so that rebuilds stay incremental."""
    out = DOCS / "notebooks"
    out.mkdir(exist_ok=True)
    for notebook in sorted((DOCS.parent / "notebooks").glob("*.ipynb")):
        copy = out / notebook.name
        if not copy.exists() or copy.read_bytes() != notebook.read_bytes():
            shutil.copyfile(notebook, copy)


_copy_notebooks()

# -- MathJax, from the site's own _static/mathjax -------------------------------------------
mathjax_path = "mathjax/tex-chtml.js"
MATHJAX = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def _copy_mathjax(app, error) -> None:
    """MathJax's TeX-to-HTML component, the components it loads and its fonts; not the other
    combined builds (SVG, MathML input), which the site does not load."""
    if error is None and app.builder.format == "html":
        unused = shutil.ignore_patterns("*svg*", "*-full*", "mml-chtml.js", "tex-mml-*", "node-*")
        target = Path(app.outdir) / "_static" / "mathjax"
        shutil.copytree(MATHJAX, target, ignore=unused, dirs_exist_ok=True)


def setup(app):
    app.connect("build-finished", _copy_mathjax)
