"""The wheel, as a user gets it: built from this checkout, installed (not editable) in a fresh virtual
environment, ``samkit --help`` runs, every public module imports from the installed copy, and the
package data (``py.typed``) is inside. The dependencies come from this test's own environment (the
fresh environment sees its site-packages through a ``.pth`` file, so nothing is downloaded)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib
from _helpers import missing_extras

import samkit

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the sources: a build in the checkout would leave build/ there, and a stale
    # build/lib would put modules deleted since into the next wheel.
    src = out / "src"
    shutil.copytree(ROOT / "samkit", src / "samkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    # No build isolation: this environment's setuptools builds it, offline.
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, src,
         cwd=out)
    (built,) = out.glob("samkit-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its python."""
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_run(python, "-c", where, cwd=env).stdout.strip())
    # This environment's packages (torch, ...) for the imports; not a site dir, so its .pth files
    # (among them this checkout's editable install) are not run.
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
         cwd=env)
    return python


def _source_modules() -> set[str]:
    return {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "samkit").rglob("*.py")
        if "__pycache__" not in p.parts
    }


def test_the_wheel_holds_every_module_and_py_typed_and_its_version(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {n[: -len(".py")].replace("/", ".") for n in names if n.endswith(".py")}
    assert in_wheel == _source_modules()  # no module or subpackage left out, nothing else added
    assert "samkit/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]
    assert wheel.name.startswith(f"samkit-{samkit.__version__}-")
    metadata = zipfile.ZipFile(wheel).read(f"samkit-{samkit.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {samkit.__version__}\n" in metadata
    requires = re.findall(r"^Requires-Dist: (.*)$", metadata, flags=re.M)
    assert any(r.startswith("torch") for r in requires)


def test_the_installed_wheel_runs_and_imports_every_public_module(installed, tmp_path):
    public = sorted(
        m for m in _source_modules()
        if not any(part.startswith("_") for part in m.split(".")) or m.endswith("__init__")
    )
    public = sorted({m.removesuffix(".__init__") for m in public})
    # an adapter whose extra is not installed here cannot import (the matrix's torch 2.5 row)
    absent = {f"samkit.integrations.{n}" for n in missing_extras("lightning", "transformers")}
    public = [m for m in public if m not in absent]
    code = (
        "import importlib, json, sys, samkit\n"
        f"mods = {public!r}\n"
        "files = {m: importlib.import_module(m).__file__ for m in mods}\n"
        "import importlib.resources as r\n"
        "print(json.dumps({'files': files, 'typed': r.files('samkit').joinpath('py.typed').is_file(),"
        " 'version': samkit.__version__}))\n"
    )
    out = json.loads(_run(installed, "-c", code, cwd=tmp_path).stdout)
    env_root = installed.parents[1]
    assert out["version"] == samkit.__version__ and out["typed"]
    for module, file in out["files"].items():  # the installed copy, not this checkout
        assert Path(file).resolve().is_relative_to(env_root.resolve()), (module, file)
    expected = {"samkit.integrations.lightning", "samkit.integrations.transformers", "samkit.measure"}
    assert expected - absent <= set(out["files"])
    helped = _run(installed.parent / "samkit", "--help", cwd=tmp_path).stdout
    assert helped.startswith("usage: samkit") and "reproduce" in helped


def test_make_test_min_pins_every_runtime_and_extra_dependency_at_its_lower_bound():
    from min_requirements import lowest, pins

    pinned = pins()
    assert set(pinned) == {"numpy", "scipy", "matplotlib", "pyyaml", "tqdm", "scikit-learn", "lightning",
                           "transformers", "accelerate", "tensorboard", "submitit"}
    assert pinned["transformers"] == "4.57.1" and "torch" not in pinned  # torch: the matrix row's
    assert lowest("mkdocstrings[python]>=1.0.8") == ("mkdocstrings", "1.0.8")
    assert lowest("numpy") is None  # no lower bound: min_requirements refuses it
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_SPEC ?= torch==2.13.0" in makefile


def test_the_torch_and_python_bounds_are_the_matrix_lowest_rows():
    """pyproject.toml admits exactly the torch and Python releases the matrix's lowest rows test."""
    from compat_matrix import ROWS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lowest_torch = min((row["torch"] for row in ROWS.values()), key=lambda v: tuple(map(int, v.split("."))))
    torch_bound = next(r for r in project["dependencies"] if r.startswith("torch"))
    assert torch_bound == "torch>=" + ".".join(lowest_torch.split(".")[:2])
    lowest_python = min((row["python"] for row in ROWS.values()), key=lambda v: tuple(map(int, v.split("."))))
    assert project["requires-python"] == f">={lowest_python}"
    for name, row in ROWS.items():  # every lowest-pins row installs torch and the bounds' versions
        assert row.get("lowest", False) == name.endswith("lowest"), name


def test_the_changelog_has_a_section_for_this_version_in_keep_a_changelog_form():
    text = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, flags=re.M)
    assert versions[0] == ("Unreleased", "") and (samkit.__version__, versions[1][1]) == versions[1]
    kinds = set(re.findall(r"^### (.*)$", text, flags=re.M))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, kinds
