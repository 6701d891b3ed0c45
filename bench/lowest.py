"""The core's dependencies at their lowest allowed versions, for `make lowest`: each ">="
bound of pyproject.toml's [project] dependencies as "==". Run: python3 bench/lowest.py"""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def lowest() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [r.replace(">=", "==") for r in project["dependencies"]]


if __name__ == "__main__":
    print(" ".join(lowest()))
