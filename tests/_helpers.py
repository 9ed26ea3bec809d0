"""Helpers shared by tests in several folders (tests/ is on sys.path through the root conftest)."""

from __future__ import annotations

import importlib.util

# The samkit extras and the libraries each brings. A test marked ``@pytest.mark.extras("transformers")``
# needs them; where they are not installed (the compatibility matrix's torch 2.5 row: transformers 5
# needs torch 2.6) the root conftest skips it with the reason, never silently, and
# docs/compatibility.md lists every skip.
EXTRAS = {"transformers": ("transformers", "accelerate"), "lightning": ("lightning",)}


def missing_extras(*names: str) -> list[str]:
    """The extras among ``names`` whose libraries are not all importable here."""
    return [n for n in names if any(importlib.util.find_spec(m) is None for m in EXTRAS[n])]


def extras_reason(missing: list[str]) -> str:
    need = ", ".join(f"samkit[{n}] ({' + '.join(EXTRAS[n])})" for n in missing)
    return f"needs {need}, not installed in this environment"
