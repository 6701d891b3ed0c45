"""The notebooks: each runs from its jupytext ``.py`` source without error (every check in it
is an assertion), and its ``.ipynb`` twin holds the same cells, executed."""

import os
import pathlib
import subprocess
import sys

import jupytext
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("[0-9]*.py"))
IDS = [p.stem for p in NOTEBOOKS]


def test_there_are_eight():
    assert len(NOTEBOOKS) == 8


# The longest executions run in `make thorough`; `make test` runs the others
# and checks every .ipynb against its source below.
THOROUGH = {
    "01_chain_rule_mlp",
    "02_backprop_through_time",
    "03_attention",
    "06_training_and_finetuning",
    "07_modern_decoder",
    "08_autodiff_from_scratch",
}


@pytest.mark.parametrize(
    "source",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in THOROUGH else p for p in NOTEBOOKS],
    ids=IDS,
)
def test_notebook_runs(source):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, source.name],
        cwd=source.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def _cells(notebook):
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


@pytest.mark.parametrize("source", NOTEBOOKS, ids=IDS)
def test_ipynb_matches_its_source_and_was_executed(source):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run `make notebooks`"
    py, ipynb = jupytext.read(source), jupytext.read(paired)
    assert _cells(ipynb) == _cells(py), (
        f"{paired.name} has drifted from {source.name}: run `make notebooks`"
    )
    code = [c for c in ipynb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{paired.name} was not executed"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
