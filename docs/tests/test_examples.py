"""Every example of the site's pages runs as written, on its own.

Each ```python block of ``docs/**/*.md`` (not the built site, not the notebooks, which the test
suite executes from their sources) runs in a fresh interpreter, in an empty directory, and
must exit with status 0; each ``jaxchain ...`` line of a ```sh block must be a command the
parser accepts. Output samples are fenced ```text or ```console and are not run.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1]
SKIP = ("_build", "notebooks")  # the built site; the notebooks' copies


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if not set(p.relative_to(DOCS).parts) & set(SKIP))


def _blocks(page: Path, language: str) -> list[tuple[int, str]]:
    """The ```language blocks of ``page``, each with the line its fence opens on."""
    text = page.read_text()
    pattern = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in pattern.finditer(text)]


def _examples() -> list:
    return [
        pytest.param(code, id=f"{page.relative_to(DOCS)}:{line}")
        for page in _pages()
        for line, code in _blocks(page, "python")
    ]


def _commands() -> list:
    found = []
    for page in _pages():
        for line, block in _blocks(page, "sh"):
            for command in block.splitlines():
                command = command.split("  #")[0].strip()
                if command.startswith("jaxchain "):
                    found.append(pytest.param(command, id=f"{page.relative_to(DOCS)}:{line}"))
    return found


def test_the_pages_have_examples():
    assert len(_examples()) >= 15 and len(_commands()) >= 20


@pytest.mark.parametrize("code", _examples())
def test_python_example_runs_on_its_own(code, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.parametrize("line", _commands())
def test_shown_command_parses(line):
    from jaxchain import cli

    assert "..." not in line
    cli.parser().parse_args(shlex.split(line)[1:])  # exits with status 2 if not accepted
