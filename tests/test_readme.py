"""The README runs as written: each of its Python blocks on its own in a fresh interpreter,
its first rule is the library's code, and every `jaxchain` command it shows is one the command
line accepts. (The site's pages are checked the same way by ``docs/tests/test_examples.py``.)"""

import pathlib
import re
import shlex
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.S | re.M)


def test_the_readme_has_its_examples():
    assert len(_blocks("python")) >= 2 and len(_commands()) >= 2
    assert len(README.read_text().splitlines()) <= 220  # the first screen, not the manual


@pytest.mark.parametrize("code", _blocks("python"), ids=lambda code: code.split("\n")[-2][:40])
def test_python_block_runs_on_its_own(code, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]


def test_the_rule_shown_first_is_the_librarys_code():
    """ "A rule reads like the math": each function of the README's first block, as written,
    is in ``jaxchain/rules/losses.py``."""
    source = (README.parent / "jaxchain" / "rules" / "losses.py").read_text()
    first = _blocks("python")[0]
    functions = [c for c in re.split(r"\n\n\n", first) if c.lstrip().startswith(("@", "def "))]
    assert len(functions) == 2
    for function in functions:
        assert function.strip() in source, function


def _commands() -> list[str]:
    lines = [line.split("  #")[0].strip() for b in _blocks("sh") for line in b.splitlines()]
    return [line for line in lines if line.startswith("jaxchain ")]


@pytest.mark.parametrize("line", _commands())
def test_shown_commands_parse(line):
    from jaxchain import cli

    assert "..." not in line
    cli.parser().parse_args(shlex.split(line)[1:])  # exits with status 2 if not accepted
