"""docs/reliability.md names the test that pins each promise: every one it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_reliability_doc_names_exists():
    text = (ROOT / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(tests/[\w/.]+\.py)(?:::(\w+))?`", text)
    assert len(named) >= 15
    for path, name in named:
        file = ROOT / path
        assert file.is_file(), path
        if name:
            tree = ast.parse(file.read_text())
            functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in functions, f"{path}::{name}"
