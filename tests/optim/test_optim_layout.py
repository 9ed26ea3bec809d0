"""The optimizer package's dependency rules (DESIGN.md): engines and rules never see the front end."""

from __future__ import annotations

import re
from pathlib import Path

import samkit.optim

ROOT = Path(samkit.optim.__file__).parent


def imports(path: Path) -> set[str]:
    return set(re.findall(r"^\s*(?:from|import) (samkit[\w.]*)", path.read_text(), re.M))


def test_optim_imports_nothing_else_from_samkit():
    """Only errors, the shared checks, the batch helpers, the registry and the torch-version bridge
    (DESIGN.md: small helpers live once, every layer may use them; a version gap is bridged in one
    compat module)."""
    for path in ROOT.rglob("*.py"):
        for mod in imports(path):
            shared = mod in ("samkit.errors", "samkit._checks", "samkit._batch", "samkit.registry",
                              "samkit._compat")
            allowed = shared or mod.startswith("samkit.optim")
            assert allowed, (path.name, mod)


def test_engines_and_rules_do_not_import_the_optimizer_front_end():
    front = {"samkit.optim.sam", "samkit.optim.registry", "samkit.optim.compile", "samkit.optim"}
    layers = ["plan.py", "engine.py", "executions.py", "vectorized.py", "update.py"]
    for path in [*(ROOT / name for name in layers), *(ROOT / "rules").glob("*.py")]:
        bad = {m for m in imports(path) if m in front}
        assert not bad, (path.name, bad)
