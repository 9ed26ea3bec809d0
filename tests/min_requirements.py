"""Print the lowest versions ``pyproject.toml`` allows, pinned (``name==x.y``), for ``make test-min``.

Pinned: the runtime dependencies, the optional extras (``lightning``, ``transformers``) and the
libraries samkit uses when they are installed (``tensorboard``). Not pinned: torch (``make`` installs
``TORCH_SPEC``) and the development tools (pytest, hypothesis, ruff, mypy, MkDocs, pytorch-optimizer),
which are not what a user's environment brings.

    python tests/min_requirements.py > constraints.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the TOML reader pip itself carries
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NOT_PINNED = {"torch"}
TOOLS = {"pytest", "pytest-xdist", "hypothesis", "ruff", "pytorch-optimizer", "mypy", "mkdocs",
         "mkdocstrings", "setuptools", "latex2mathml"}


def lowest(requirement: str) -> tuple[str, str] | None:
    """``("numpy", "1.24")`` for ``"numpy>=1.24"``; None for a requirement without a lower bound."""
    pattern = r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(,.*)?"
    match = re.fullmatch(pattern, requirement)
    return (match.group(1).lower(), match.group(3)) if match else None


def pins(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for reqs in project["optional-dependencies"].values():
        requirements += reqs
    out: dict[str, str] = {}
    for req in requirements:
        found = lowest(req)
        if found is None:
            raise SystemExit(f"{req!r} in pyproject.toml has no '>=' lower bound for make test-min to test")
        name, version = found
        if name not in NOT_PINNED and name not in TOOLS:
            if out.get(name, version) != version:
                raise SystemExit(f"{name} has two lower bounds in pyproject.toml: {out[name]} and {version}")
            out[name] = version
    return out


if __name__ == "__main__":
    sys.stdout.write("".join(f"{name}=={version}\n" for name, version in sorted(pins().items())))
