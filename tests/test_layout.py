"""The package's layout: no import loop, and no library module that imports the command line.

The graph is read from the source (``ast``), not from ``sys.modules``, so an import inside a
function counts as much as one at the top of a file — a loop hidden in a function is still a loop.
One node per module of ``samkit`` (a package is its ``__init__``). An import statement gives an
edge to the module that *defines* what it names:

* ``import samkit.a.b`` and ``from samkit.a import b`` (``b`` a submodule) -> ``samkit.a.b``;
* ``from samkit.a import name`` (``name`` not a submodule): if ``samkit/a/__init__.py`` binds
  ``name`` by an import (a re-export), the edge follows that import to the module it comes from
  (recursively); otherwise -> ``samkit.a`` (the name is defined in the ``__init__`` itself);
* relative imports are resolved first; imports of other packages are ignored.

Python also runs ``samkit/__init__`` and ``samkit/a/__init__`` when it imports ``samkit.a.b``;
those are *not* edges: a package's ``__init__`` re-exports its submodules' names, and an edge to
it would tie every user of one submodule to all the others (false loops). An ``__init__``'s own
imports are edges like any module's, so code that names a package's facade depends on all it
re-exports. ``importlib.import_module(f"{__name__}....")`` in an ``__init__`` (the rules package
imports each rule file by name) is an edge to every submodule of that package; other dynamic
imports are not seen.

A loop is a strongly connected component of two or more modules (a module importing itself is
harmless and ignored). The command line is ``samkit.cli`` and everything under it, plus
``samkit.__main__``; every other module is library and must not import it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "samkit"


# ---- the graph ---------------------------------------------------------------------------------
def modules_of(package_dir: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module under ``package_dir`` (itself a package)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _absolute(module: str | None, level: int, here: str, files: dict[str, Path]) -> str:
    """The absolute name of an ``ImportFrom``'s module (``level`` dots, relative to ``here``)."""
    if level == 0:
        return module or ""
    package = here if _is_package(here, files) else here.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{module}" if module else package


def _reexports(files: dict[str, Path]) -> dict[str, dict[str, tuple[str, str]]]:
    """Per package: ``{bound name: (module, original name)}`` of its ``__init__``'s top-level
    ``from X import name [as bound]``."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for name, path in files.items():
        if not _is_package(name, files):
            continue
        table = out.setdefault(name, {})
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node.module, node.level, name, files)
                for alias in node.names:
                    table[alias.asname or alias.name] = (source, alias.name)
    return out


def _resolve(module: str, name: str, files, reexports, seen=()) -> str | None:
    """The module that defines ``name`` as imported ``from module``; None outside the package."""
    if f"{module}.{name}" in files:
        return f"{module}.{name}"
    if module not in files:
        return None
    source = reexports.get(module, {}).get(name)
    if source is None or (module, name) in seen or source[0] not in files:
        return module
    return _resolve(*source, files, reexports, (*seen, (module, name)))


def _dynamic_submodules(tree: ast.AST, package: str, files: dict[str, Path]) -> list[str]:
    """``importlib.import_module(f"{__name__}.…")`` in a package: all its direct submodules."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.JoinedStr)
            and node.args[0].values
            and isinstance(node.args[0].values[0], ast.FormattedValue)
            and getattr(node.args[0].values[0].value, "id", None) == "__name__"
        ):
            return [m for m in files if m.rpartition(".")[0] == package]
    return []


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{module: modules it imports}`` (rules in the module docstring)."""
    files = modules_of(package_dir)
    top = package_dir.name
    reexports = _reexports(files)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for here, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = graph[here]
        for node in ast.walk(tree):  # every statement, those inside functions included
            if isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.name
                    while name and name not in files:  # `import a.b.attr` is not a thing, but
                        name = name.rpartition(".")[0]  # `import a.b` of a package is
                    if name and name.split(".")[0] == top:
                        edges.add(name)
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(node.module, node.level, here, files)
                if source.split(".")[0] != top:
                    continue
                for alias in node.names:
                    target = _resolve(source, alias.name, files, reexports)
                    if target is not None:
                        edges.add(target)
        if _is_package(here, files):
            edges.update(_dynamic_submodules(tree, here, files))
        edges.discard(here)
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # samkit's graph is a few hundred nodes deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def a_path(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """One shortest import path from ``start`` to ``goal`` (for the failure message)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in previous and w != start:
                    previous[w] = v
                    nxt.append(w)
        if goal in previous:
            path = [goal]
            while path[-1] != start:
                path.append(previous[path[-1]])
            return path[::-1]
        frontier = nxt
    return []


def is_cli(module: str, top: str = "samkit") -> bool:
    return module in (f"{top}.cli", f"{top}.__main__") or module.startswith(f"{top}.cli.")


def cli_imports(graph: dict[str, set[str]], top: str = "samkit") -> list[tuple[str, str]]:
    """``(library module, CLI module it imports)`` pairs."""
    return sorted(
        (m, t) for m, targets in graph.items() if not is_cli(m, top) for t in targets if is_cli(t, top)
    )


def _describe(graph: dict[str, set[str]], component: Iterable[str]) -> str:
    first = min(component)
    back = next(w for w in sorted(graph[first]) if w in component)
    cycle = [first, *a_path(graph, back, first)] if back != first else [first]
    return " -> ".join(cycle)


# ---- the package -------------------------------------------------------------------------------
GRAPH = import_graph(PACKAGE)


def test_no_import_loop_in_samkit():
    found = loops(GRAPH)
    assert not found, "import loops:\n  " + "\n  ".join(_describe(GRAPH, c) for c in found)


def test_no_library_module_imports_the_command_line():
    assert not cli_imports(GRAPH), cli_imports(GRAPH)


def test_the_graph_sees_known_edges_of_samkit():
    # an import at the top, one inside a function, a re-export followed to its source module
    assert "samkit.study.stats" in GRAPH["samkit.study.study_report"]
    assert "samkit.measure.hessian" in GRAPH["samkit.study.flatness"]  # imported in a function only
    assert "samkit.train.config" in GRAPH["samkit.study.records"]  # `from samkit.train import TrainConfig`
    assert "samkit.train" not in GRAPH["samkit.study.records"]
    assert GRAPH["samkit.__main__"] == {"samkit.cli.app"} and is_cli("samkit.__main__")  # via re-export
    assert {"samkit.optim.rules.gsam", "samkit.optim.rules.base"} <= GRAPH["samkit.optim.rules"]


# ---- the test can fail --------------------------------------------------------------------------
def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_loop_inside_a_function_and_a_library_import_of_the_cli_are_found(tmp_path):
    pkg = _package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import run\n",
        "pkg/a.py": "from pkg import b\n\ndef run():\n    return b.go()\n",
        "pkg/b.py": "def go():\n    from pkg.a import run  # hidden in a function\n    return run\n",
        "pkg/c.py": "from . import a\nfrom .cli import main\n",
        "pkg/cli/__init__.py": "from pkg.cli.app import main\n",
        "pkg/cli/app.py": "import pkg.c\n\ndef main():\n    return 0\n",
    })  # fmt: skip
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.a", "pkg.cli.app"}  # relative, through the re-export
    assert loops(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.cli.app"]]
    assert _describe(graph, ["pkg.a", "pkg.b"]) == "pkg.a -> pkg.b -> pkg.a"
    assert cli_imports(graph, "pkg") == [("pkg.c", "pkg.cli.app")]


def test_package_reexports_do_not_make_false_loops(tmp_path):
    # `pkg/__init__` re-exports `low.f` and `high.g`; `high` uses `f` through the package: the
    # edge goes to `low`, which defines it, not to the `__init__` (which would loop back to high)
    pkg = _package(tmp_path, {
        "pkg/__init__.py": "from pkg.high import g\nfrom pkg.low import f\n",
        "pkg/low.py": "def f():\n    return 1\n",
        "pkg/high.py": "from pkg import f\nimport pkg.low as low\n\ndef g():\n    return f()\n",
        "pkg/sub/__init__.py": "from .inner import h as public_h\nVALUE = 3\n",
        "pkg/sub/inner.py": "def h():\n    from pkg.sub import VALUE\n    return VALUE\n",
    })  # fmt: skip
    graph = import_graph(pkg)
    assert graph["pkg.high"] == {"pkg.low"}
    assert graph["pkg"] == {"pkg.high", "pkg.low"}
    assert graph["pkg.sub"] == {"pkg.sub.inner"}
    # a name defined in an __init__ itself is an edge to it: here a real loop
    assert graph["pkg.sub.inner"] == {"pkg.sub"}
    assert loops(graph) == [["pkg.sub", "pkg.sub.inner"]]

