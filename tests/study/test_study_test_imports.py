"""The study tests share helpers through helper modules, never through another test module.

A test module that imports from another (``from test_study_claims import _fake_compare``) ties
the two: collecting one runs the other's module code, and a helper changed for one file breaks
the other. Shared helpers live in ``conftest.py`` or a helper module (``study_helpers.py``,
``committed.py``, ``tests/train/harness_fixtures.py``), whose names do not start with ``test_``.
"""

from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).resolve().parent


def imports_of_tests(folder: Path) -> dict[str, list[str]]:
    """``{file: [test modules it imports]}`` for the Python files of ``folder``."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0].startswith("test_")]
            if bad:
                found.setdefault(path.name, []).extend(bad)
    return found


def test_no_study_test_imports_another_test_module():
    assert imports_of_tests(HERE) == {}


def test_the_check_finds_an_import_from_a_test_module(tmp_path):
    (tmp_path / "test_a.py").write_text("def _helper():\n    return 1\n")
    (tmp_path / "test_b.py").write_text("from test_a import _helper\n\ndef test_b():\n    pass\n")
    (tmp_path / "helpers.py").write_text("import test_a\n")  # a helper importing a test: also bad
    (tmp_path / "test_c.py").write_text("from study_helpers import accs\n")  # a helper module: fine
    assert imports_of_tests(tmp_path) == {"test_b.py": ["test_a"], "helpers.py": ["test_a"]}
