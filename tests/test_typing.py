"""The type check of `make lint`, run by the suite so that CI checks it: mypy at the level set in
pyproject.toml ([tool.mypy]) passes on the packages listed there, and the listed packages are the
ones the docs say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.extras("lightning", "transformers")  # mypy checks the adapters against their libraries
def test_mypy_passes_on_the_checked_packages():
    # A cold cache reads torch's, transformers' and lightning's annotations: ~40 s on 2 cores.
    run = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.startswith("Success: no issues found")


def test_make_lint_runs_the_same_check():
    makefile = (ROOT / "Makefile").read_text().splitlines()
    start = makefile.index("lint: install")
    recipe = [line.strip() for line in makefile[start + 1 : start + 3]]
    assert recipe == ["$(BIN)/ruff check samkit tests benchmarks", "$(BIN)/mypy"]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert {"samkit/data", "samkit/models", "samkit/integrations"} <= set(config["files"])
    assert config["disallow_untyped_defs"] and config["check_untyped_defs"]
