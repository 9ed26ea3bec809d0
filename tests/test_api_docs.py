"""The API reference: every public name has a docstring, `make docs` builds with no warning (MkDocs
strict: a broken link, anchor or cross-reference, or a docstring griffe cannot parse, fails), every
public name is on a page of the reference, and the guides name only samkit objects that exist."""

from __future__ import annotations

import html
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import samkit

ROOT = Path(__file__).resolve().parents[1]

# The public namespaces the reference documents, and the page each is on.
PAGES = {
    "samkit": "samkit.html",
    "samkit.rules": "rules.html",
    "samkit.cadence": "cadence.html",
    "samkit.scope": "scope.html",
    "samkit.measure": "measure.html",
    "samkit.integrations": "integrations.html",
    "samkit.integrations.lightning": "integrations.html",
    "samkit.integrations.transformers": "integrations.html",
}
# Public values that are data, not code (a docstring cannot be attached to them).
DATA = {"samkit.__version__", "samkit.rules.EPS", "samkit.cadence.CADENCES", "samkit.scope.NORM_LAYERS"}


def namespace(name: str) -> ModuleType:
    """``samkit.rules``, ``samkit.cadence`` and ``samkit.scope`` are attributes of ``samkit``, not
    import paths."""
    head, _, attr = name.rpartition(".")
    if head == "samkit" and attr in ("rules", "cadence", "scope"):
        return getattr(samkit, attr)
    return importlib.import_module(name)


def public(name: str) -> list[tuple[str, Any]]:
    module = namespace(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__: its public names are not declared"
    return [(n, getattr(module, n)) for n in module.__all__]


def _own_doc(obj: Any) -> str | None:
    return obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__


@pytest.mark.parametrize("name", PAGES)
def test_every_public_name_and_method_has_a_docstring(name):
    missing = []
    for attr, obj in public(name):
        if f"{name}.{attr}" in DATA or inspect.ismodule(obj):
            continue
        assert inspect.isclass(obj) or callable(obj), f"{name}.{attr} is data: add it to DATA or document it"
        if not (_own_doc(obj) or "").strip():
            missing.append(attr)
        if not inspect.isclass(obj):
            continue
        for key, member in vars(obj).items():  # methods and properties this class defines
            if key.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            # An override may keep the documented contract of the method it overrides (getdoc).
            if callable(target) and not (inspect.getdoc(getattr(obj, key)) or "").strip():
                missing.append(f"{attr}.{key}")
    assert not missing, f"public names of {name} without a docstring: {missing}"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "WARNING" not in run.stderr, run.stderr[-3000:]
    return out


def test_make_docs_is_the_strict_build_the_suite_runs():
    makefile = (ROOT / "Makefile").read_text().splitlines()
    recipe = makefile[makefile.index("docs: install") + 1].strip()
    assert recipe == "$(BIN)/mkdocs build --strict"


def test_the_reference_lists_every_public_name(site):
    missing = []
    for name, page in PAGES.items():
        ids = set(re.findall(r'id="([^"]+)"', (site / "api" / page).read_text()))
        for attr, obj in public(name):
            if inspect.ismodule(obj):
                continue  # a namespace of its own, with its own page
            where = {f"{name}.{attr}", f"{getattr(obj, '__module__', name)}.{attr}"}
            if not where & ids:
                missing.append(f"{name}.{attr}")
    assert not missing, f"not in the API reference: {missing}"
    # The docstrings' math reaches the page (GSAM's descent: h - alpha * g_perp).
    assert "g_\\perp" in html.unescape((site / "api" / "rules.html").read_text())


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = namespace(".".join(parts[:i]))
        except (ImportError, AttributeError):
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


def test_the_guides_name_only_samkit_objects_that_exist():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "docs" / "api").glob("*.md"))]
    dotted = re.compile(r"(?<![\w./-])samkit(?:\.[A-Za-z_]\w*)+")
    broken, seen = [], set()
    for page in pages:
        for match in dotted.finditer(page.read_text()):
            ref = match.group(0)
            if ref.rsplit(".", 1)[1] in ("md", "py", "yaml", "html", "json", "png"):
                continue  # a file name
            seen.add(ref)
            try:
                _resolve(ref)
            except (ImportError, AttributeError):
                broken.append(f"{page.relative_to(ROOT)}: {ref}")
    assert not broken, broken
    assert {"samkit.SAM", "samkit.rules.GSAM", "samkit.integrations.transformers.SAMTrainer"} <= seen
