"""MkDocs hooks (``hooks:`` in mkdocs.yml) for ``make docs``.

* Math: the Markdown extension of ``mathml.py`` (LaTeX to MathML at build time), added to the
  guides and to the docstrings mkdocstrings renders.
* The API reference's lists are written from the registries when the site is built, so a new rule,
  cadence, optimizer name, base, scope or execution is listed by itself: a page marks where with
  ``<!-- registry: NAME -->`` (NAME one of :data:`SECTIONS`); an unknown NAME fails the build.
* Wide tables are wrapped in a box that scrolls sideways on its own, so the page never does.
* The search index is also written as a script (search/search_index.js) for the theme's search
  (theme/search/main.js), which a browser runs from disk too.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mathml import MathExtension  # beside this file (MkDocs puts its folder on sys.path to load it)
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page


@event_priority(50)  # before mkdocstrings (0), which renders docstrings with this same list
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    config.markdown_extensions.append(MathExtension())  # type: ignore[arg-type]
    return config


def _summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, on one line (table cells are one line)."""
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n", 1)[0].split()).replace("|", "\\|")


def _options(fn: Callable[..., Any]) -> str:
    shown = []
    for p in inspect.signature(fn).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        shown.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return ", ".join(f"`{s}`" for s in shown) or "—"


def _ref(obj: Any, shown: str | None = None) -> str:
    """An autorefs link to ``obj``'s entry in the reference (a missing one fails the strict build)."""
    return f"[`{shown or obj.__name__}`][{obj.__module__}.{obj.__qualname__}]"


def _rule_classes() -> list[type]:
    """Every rule class of ``samkit.rules``, in the optimizer registry's order, then the rest."""
    import samkit
    from samkit.optim import registry
    from samkit.optim.rules.base import Rule

    found = [registry.entry(n).rule for n in registry.names()]
    found += [getattr(samkit.rules, n) for n in samkit.rules.__all__]
    return [c for c in dict.fromkeys(found) if inspect.isclass(c) and issubclass(c, Rule) and c is not Rule]


def _rule_modules() -> list[str]:
    """The modules of ``samkit/optim/rules/`` in the optimizer registry's order, then the rest."""
    import samkit
    from samkit.optim import registry

    order = [registry.entry(n).rule for n in registry.names()]
    modules = [getattr(r, "__module__", "") for r in order if r is not None]
    for name in samkit.rules.__all__:
        modules.append(getattr(getattr(samkit.rules, name), "__module__", ""))
    rules = [m for m in dict.fromkeys(modules) if m.startswith("samkit.optim.rules.")]
    return [m for m in rules if m != "samkit.optim.rules.base"]


def rules_list() -> str:
    return ", ".join(_ref(c) for c in _rule_classes())


def rules_pages() -> str:
    """The ``:::`` block of every public name of every rule module (mkdocstrings renders them)."""
    import importlib

    blocks = []
    for module in _rule_modules():
        for name in importlib.import_module(module).__all__:
            blocks.append(f"::: {module}.{name}\n    options:\n      show_root_full_path: false\n")
    return "\n".join(blocks)


def _kind(name: str) -> Any:
    from samkit.optim import registry

    return registry.kind(name)


def cadences_list() -> str:
    names = _kind("cadence")
    return ", ".join(_ref(names.target(n)) for n in names.names() if n not in names.presets())


def cadences_table() -> str:
    names = _kind("cadence")
    rows = [
        "| name (`cadence=`) | class | options | what it does |",
        "|---|---|---|---|",
    ]
    guide = "[what it keeps](../optimizers.md#which-cheap-sam-to-use-the-protocol)"
    for name in names.names():
        if name in names.presets():
            summary = names.summary(name).replace("|", "\\|")
            rows.append(f"| `{name}` | `{names.presets()[name]}` | — | the preset: {summary} ({guide}) |")
        else:
            cls = names.target(name)
            rows.append(f"| `{name}` | {_ref(cls)} | {_options(cls)} | {_summary(cls)} |")
    return "\n".join(rows)


def optimizers_table() -> str:
    from samkit.optim import registry

    rows = [
        "| name | rule | options (defaults) | passes per step | what it is |",
        "|---|---|---|---|---|",
    ]
    for name in registry.names():
        e = registry.entry(name)
        rule = _ref(e.rule) if inspect.isclass(e.rule) else "—"
        options = ", ".join(f"`{k}={v!r}`" for k, v in {**e.options, **e.defaults}.items()) or "—"
        summary = e.summary.replace("|", "\\|")
        rows.append(f"| `{name}` | {rule} | {options} | {e.passes_per_step()} | {summary} |")
    return "\n".join(rows)


def bases_list() -> str:
    names = _kind("base")
    return ", ".join(f"`{n}` (`{_public_path(names.get(n))}`)" for n in names.names())


def _public_path(obj: Any) -> str:
    """``torch.optim.SGD`` rather than ``torch.optim.sgd.SGD``: the shortest module exporting it."""
    import importlib

    parts = obj.__module__.split(".")
    for i in range(1, len(parts) + 1):
        module = ".".join(parts[:i])
        if getattr(importlib.import_module(module), obj.__qualname__, None) is obj:
            return f"{module}.{obj.__qualname__}"
    return f"{obj.__module__}.{obj.__qualname__}"


def scopes_list() -> str:
    """The scope helpers: those with a name (``scope: norm`` in a run config) first, each after its
    name, then the rest."""
    import samkit

    names = _kind("scope")
    named = {names.get(n).__name__: n for n in names.names()}
    helpers = [n for n in samkit.scope.__all__ if callable(getattr(samkit.scope, n))]
    shown = [f"`{named[h]}` ([`{h}`][samkit.optim.scope.{h}])" for h in named]
    return ", ".join(shown + [f"[`{h}`][samkit.optim.scope.{h}]" for h in helpers if h not in named])


def executions_list() -> str:
    names = _kind("execution")
    return "; ".join(f"`{n}` ({names.summary(n)})" for n in names.names())


SECTIONS: dict[str, Callable[[], str]] = {
    "rules": rules_list,
    "rules-pages": rules_pages,
    "cadences": cadences_list,
    "cadences-table": cadences_table,
    "optimizers-table": optimizers_table,
    "bases": bases_list,
    "scopes": scopes_list,
    "executions": executions_list,
}
_MARK = re.compile(r"<!--\s*registry:\s*([\w-]+)\s*-->")


def fill(markdown: str, where: str = "") -> str:
    """``markdown`` with each ``<!-- registry: NAME -->`` replaced by its generated text."""

    def generate(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in SECTIONS:
            raise PluginError(f"{where}: unknown registry section {name!r}; known: {', '.join(SECTIONS)}")
        return SECTIONS[name]()

    return _MARK.sub(generate, markdown)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return fill(markdown, page.file.src_uri)


_TABLE = re.compile(r"<table>.*?</table>", re.DOTALL)


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return _TABLE.sub(lambda m: f'<div class="table-scroll">{m.group(0)}</div>', html)


@event_priority(-50)  # after the search plugin has written search_index.json
def on_post_build(config: MkDocsConfig) -> None:
    folder = Path(config.site_dir) / "search"
    data = json.loads((folder / "search_index.json").read_text())
    (folder / "search_index.js").write_text(f"window.samkit_search_index = {json.dumps(data)};\n")
