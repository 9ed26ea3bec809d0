"""`make lint`, run by the suite so that CI checks it: ruff, then mypy at the level set in
pyproject.toml ([tool.mypy]) on the packages listed there, and the listed packages are the ones the
docs say."""

from __future__ import annotations

import shutil
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
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make to run `make lint`")
def test_make_lint_passes_with_ruff_and_mypy():
    """`make lint` itself, with this environment's tools: ruff on the code, tests and benchmarks,
    then mypy at the level set in pyproject.toml. Run through make, so a recipe that stops calling
    one of them (or calls it on less) fails here, not only a change of its text."""
    # A cold cache reads torch's, transformers' and lightning's annotations: ~40 s on 2 cores.
    bin_dir = Path(sys.executable).parent  # the tools of the environment running the suite
    run = subprocess.run(["make", "--no-print-directory", "-o", "install", "lint", f"BIN={bin_dir}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    commands = [line for line in run.stdout.splitlines() if line.startswith(str(bin_dir))]
    ruff = next(c.split()[2:] for c in commands if c.split()[0].endswith("ruff"))
    assert {"samkit", "tests", "benchmarks"} <= set(ruff), commands
    assert "All checks passed!" in run.stdout  # ruff's
    assert "Success: no issues found" in run.stdout  # mypy's, on the files pyproject.toml lists


def test_mypy_checks_the_packages_the_docs_say_at_the_strict_level():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert {"samkit/data", "samkit/models", "samkit/integrations"} <= set(config["files"])
    assert config["disallow_untyped_defs"] and config["check_untyped_defs"]
