"""The API reference: every public name has a docstring, `make docs` builds with no warning (MkDocs
strict: a broken link, anchor or cross-reference, a docstring griffe cannot parse, or a formula that
does not convert, fails), every public name is on a page of the reference, the index lists every
registered name, the guides name only samkit objects that exist, and every page reads right in a
browser (tools/docs/check.py: the checks of `make docs-check`)."""

from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import logging
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _helpers import missing_extras

import samkit

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools" / "docs"

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


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.extras(n.rpartition(".")[2])) if n.count(".") == 2 else n for n in PAGES
])  # an adapter's page needs its extra installed
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
    # an adapter whose extra is not installed cannot be imported to list its names (the matrix's
    # torch 2.5 row); its page is checked wherever the extra is (the docstring test says which)
    absent = {f"samkit.integrations.{n}" for n in missing_extras("lightning", "transformers")}
    for name, page in PAGES.items():
        if name in absent:
            continue
        ids = set(re.findall(r'id="([^"]+)"', (site / "api" / page).read_text()))
        for attr, obj in public(name):
            if inspect.ismodule(obj):
                continue  # a namespace of its own, with its own page
            where = {f"{name}.{attr}", f"{getattr(obj, '__module__', name)}.{attr}"}
            if not where & ids:
                missing.append(f"{name}.{attr}")
    assert not missing, f"not in the API reference: {missing}"
    # The docstrings' math reaches the page as MathML (GSAM's descent: h - alpha * g_perp).
    rules = html.unescape((site / "api" / "rules.html").read_text())
    assert re.search(r'<math [^>]*data-tex="[^"]*g_\\perp', rules)
    assert ":math:" not in rules and ".. math::" not in rules


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


@pytest.mark.extras("lightning", "transformers")  # the guides name the adapters' classes
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


def _tool(name: str) -> Any:
    """A module of tools/docs (the docs build's hooks and checks), imported by its path."""
    spec = importlib.util.spec_from_file_location(f"samkit_docs_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up there)
    sys.path.insert(0, str(TOOLS))  # hooks.py imports mathml.py beside it, as MkDocs loads it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(TOOLS))
    return module


def _markdown(text: str) -> str:
    import markdown

    return markdown.Markdown(extensions=["tables", _tool("mathml").MathExtension()]).convert(text)


def test_math_is_written_as_mathml_and_only_math_is():
    inline = _markdown(r"the norm $\lVert g \rVert$ costs $5 and $10 from $HOME; `$x$` is code")
    assert inline.count("<math ") == 1 and 'data-tex="\\lVert g \\rVert"' in inline
    assert "$5 and $10 from $HOME" in inline and "<code>$x$</code>" in inline
    rst = _markdown(":math:`\\alpha` for :class:`Always` and :meth:`~samkit.SAM.train_step`")
    assert rst.count("<math ") == 1 and "<code>Always</code>" in rst and "<code>train_step</code>" in rst
    for block in (".. math:: e = \\rho", ".. math::\n    e = \\rho\n    + 1", "$$e = \\rho$$"):
        shown = _markdown(block)
        assert shown.startswith('<div class="math-display"><math ') and 'display="block"' in shown, shown
    # In a table, |w| is written \lvert w\rvert (a bare | would end the cell); \| is LaTeX's norm.
    table = _markdown("| a | b |\n|---|---|\n| $\\lvert w\\rvert + \\eta$ | $\\|x\\|$ |")
    assert table.count("<math ") == 2 and "&#x02016;" in table
    # Upright words are one <mi> (not one italic letter each); \mathbb is a Unicode letter.
    word = html.unescape(_markdown(r"$\operatorname{base\_step}(w) + \mathbb E[z] + \text{step\_size}$"))
    assert "<mi>base_step</mi>" in word and "<mi>\U0001d53c</mi>" in word
    assert "<mtext>step_size</mtext>" in word


def test_a_formula_that_does_not_convert_fails_the_build(caplog):
    with caplog.at_level(logging.WARNING, logger="mkdocs.plugins.samkit.math"):
        _markdown(r"broken: $\frac{a$")
    assert any("unbalanced" in r.getMessage() for r in caplog.records)  # a warning fails `--strict`


def test_the_api_index_lists_every_registered_name(site):
    """The index's lists are written from the registries (tools/docs/hooks.py): nothing to add by
    hand when a rule, cadence or optimizer name is registered."""
    from samkit.optim import registry
    from samkit.optim.cadence import CADENCES

    index = html.unescape((site / "api" / "index.html").read_text())
    text = re.sub(r"<[^>]+>", "", index)
    assert "<!-- registry" not in index
    missing = [n for n in registry.names() if f"{n}\n" not in text]
    missing += [n for n in CADENCES if f"{n}\n" not in text]
    hooks = _tool("hooks")
    classes = [*CADENCES.values(), *hooks._rule_classes()]
    linked = set(re.findall(r'href="(?:cadence|rules)\.html#samkit\.[\w.]*?\.(\w+)"', index))
    missing += [c.__name__ for c in classes if c.__name__ not in linked]
    assert not missing, f"registered but not in the API index: {missing}"
    assert "Drift" in text and {"SAM", "GSAM", "MultiStepSAM"} <= {c.__name__ for c in hooks._rule_classes()}
    # The rules page documents every module of samkit/optim/rules/ (also written at build time).
    rules = (site / "api" / "rules.html").read_text()
    for cls in hooks._rule_classes():
        assert f'id="{cls.__module__}.{cls.__qualname__}"' in rules, cls


def test_every_page_reads_right_in_a_browser(site):
    """Headless Chromium opens every page from disk (no network) at 1280 and 390 px: no console
    error, no sideways scroll, formulas drawn as MathML with no LaTeX left as text, search works."""
    check = _tool("check")
    browser = check.find_browser()
    if browser is None:
        pytest.skip("no Chromium installed: `make docs-check` installs it (apt-get install chromium)")
    result = check.check(site, browser)
    assert not result.problems, "\n".join(result.problems)
    pages = [p.relative_to(site).as_posix() for p in check.pages_of(site)]
    assert {"index.html", "optimizers.html", "api/index.html", "api/rules.html"} <= set(pages)
    assert result.pages == len(pages) and result.formulas >= 100
