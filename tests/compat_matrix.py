"""The compatibility matrix: the default test suite in one cached environment per row (``make test-compat``).

Each row is a Python, a torch and the versions of the rest. ``run`` builds the row's environment
once in ``.venv-compat/<row>/`` (rebuilt when the row, ``pyproject.toml`` or the lowest pins change),
checks that installing samkit left the row's torch in place, runs the default suite there with
JUnit output, and keeps the JUnit file and a JSON record (versions, seconds, date, machine) in
``docs/compatibility/``. ``report`` writes ``docs/compatibility.md`` from those files alone.

    python tests/compat_matrix.py run [ROW ...]   # every row when none is named
    python tests/compat_matrix.py build [ROW ...] # the environments only
    python tests/compat_matrix.py report
    python tests/compat_matrix.py rows            # the rows, one a line

torch releases other than the reference machine's come from the package index as CUDA builds that
run on the CPU (about 3 GB downloaded and 5 GB installed a row): ``run`` refuses to start a build
with less than ``MIN_FREE_GB`` free on the disk.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the environments may live outside the checkout (SAMKIT_COMPAT_ENVS), so that one set serves any
# clone: each run first points the environment's editable samkit at the checkout it tests
ENVS = Path(os.environ.get("SAMKIT_COMPAT_ENVS", ROOT / ".venv-compat"))
OUT = ROOT / "docs" / "compatibility"
REPORT = ROOT / "docs" / "compatibility.md"
MIN_FREE_GB = 12
sys.path.insert(0, str(Path(__file__).parent))
from min_requirements import pins  # noqa: E402

# The rows. "lowest": the rest of the dependencies at pyproject.toml's lower bounds (a constraint
# file from min_requirements.py); otherwise pip picks the newest that the row's torch allows.
# "extras": which optional extras the row installs; "no_tools": development tools left out (the
# tested pytorch-optimizer needs numpy > 1.24.4, so the lowest rows skip the comparisons with it).
# "why": what a reader of the table needs to know about the row.
ROWS: dict[str, dict] = {
    "torch2.5-lowest": dict(
        python="3.11", torch="2.5.1", lowest=True, extras=["lightning"], no_tools=["pytorch-optimizer"],
        why="the oldest torch; every other dependency at its lower bound. transformers 5 and "
            "accelerate 1.16 need torch 2.6, so the transformers extra is not installed here",
    ),
    "torch2.6-extras-lowest": dict(
        python="3.11", torch="2.6.0", lowest=True, extras=["lightning", "transformers"],
        no_tools=["pytorch-optimizer"],
        why="the lowest torch the transformers extra accepts, with every extra at its lower bound",
    ),
    "torch2.8": dict(python="3.11", torch="2.8.0", extras=["lightning", "transformers"]),
    "torch2.11": dict(python="3.11", torch="2.11.0", extras=["lightning", "transformers"],
                      why="the GPU machine's torch"),
    "torch2.13": dict(python="3.11", torch="2.13.0", extras=["lightning", "transformers"],
                      why="the default: `make test` (CPU build)"),
    "torch2.14": dict(python="3.11", torch="2.14.1", extras=["lightning", "transformers"],
                      why="the newest torch this machine's package index offers"),
    "py3.12": dict(python="3.12", torch="2.13.0", extras=["lightning", "transformers"]),
    "py3.13": dict(python="3.13", torch="2.13.0", extras=["lightning", "transformers"]),
}
# Deselected on the rows with the lowest pins, each with its reason (shown in the report).
LOWEST_DESELECT = {
    "tests/study/test_study_claims.py::test_committed_verdict_tables_regenerate_from_their_run_files":
        "compares report text to the digit; scipy's t quantile moves in the 11th digit between releases",
}


def python_for(version: str) -> str:
    """The interpreter of a row: pyenv's newest 3.X, else a ``python3.X`` on PATH that runs."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = sorted(pyenv.glob(f"{version}.*/bin/python{version}")) if pyenv.is_dir() else []
    found = str(candidates[-1]) if candidates else shutil.which(f"python{version}")
    # a pyenv shim is on PATH for every version but runs only those pyenv has activated
    if found and subprocess.run([found, "-c", ""], capture_output=True).returncode == 0:
        return found
    raise SystemExit(f"error: no python{version} found (pyenv or PATH); install it or drop the row")


def fingerprint(name: str) -> str:
    """What a row's environment was built from: the row, pyproject.toml and the lowest pins."""
    data = json.dumps(ROWS[name], sort_keys=True) + (ROOT / "pyproject.toml").read_text()
    data += (ROOT / "tests" / "min_requirements.py").read_text()
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def base_fingerprint(name: str) -> str:
    """What a row's fresh environment depends on: its Python and torch."""
    return f"python {ROWS[name]['python']} torch {ROWS[name]['torch']}"


def dev_tools() -> list[str]:
    """The development tools of pyproject.toml's ``dev`` extra (the suite's docs, type and API tests)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["dev"])


def sh(*cmd: str, **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def build(name: str) -> Path:
    row, env = ROWS[name], ENVS / name
    stamp, base = env / ".samkit-row", env / ".samkit-base"
    if stamp.is_file() and stamp.read_text() == fingerprint(name):
        return env
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir"]
    if not (base.is_file() and base.read_text() == base_fingerprint(name)):
        # a fresh environment with the row's Python and torch; a change of pyproject.toml alone
        # installs into the existing one (pip adds what is new, the torch stays)
        free = shutil.disk_usage(ROOT).free / 2**30
        if free < MIN_FREE_GB:
            raise SystemExit(f"error: {free:.0f} GB free; a row needs about {MIN_FREE_GB}. "
                             f"Remove rows you do not need from {ENVS}")
        made = env / ".samkit-matrix"
        if env.exists() and not made.is_file():  # never remove a folder this script did not make
            raise SystemExit(f"error: {env} exists and is not a matrix environment; move it away "
                             f"or set SAMKIT_COMPAT_ENVS to another folder")
        shutil.rmtree(env, ignore_errors=True)
        sh(python_for(row["python"]), "-m", "venv", str(env))
        made.write_text("made by tests/compat_matrix.py; removed and rebuilt when its row changes\n")
        sh(*pip, "--upgrade", "pip")
        sh(*pip, f"torch=={row['torch']}")
        base.write_text(base_fingerprint(name))
    constraints = env / "constraints.txt"
    lines = [f"torch=={row['torch']}\n"]
    if row.get("lowest"):
        lines += [f"{k}=={v}\n" for k, v in sorted(pins().items())]
    constraints.write_text("".join(lines))
    extras = ",".join(row["extras"])
    target = f".[{extras}]" if extras else "."
    tools = [t for t in dev_tools() if not any(t.startswith(x) for x in row.get("no_tools", []))]
    # samkit with its dependencies resolved by pip, as a user installs it; the constraint file
    # holds torch to the row's release, and the check below shows pip never tried to move it
    sh(*pip, "-c", str(constraints), "-e", target, *tools, cwd=ROOT)
    got = versions(env).get("torch", "")
    if got.split("+")[0] != row["torch"]:
        raise SystemExit(f"error: row {name}: installing samkit left torch {got}, not {row['torch']}")
    stamp.write_text(fingerprint(name))
    return env


def versions(env: Path) -> dict[str, str]:
    out = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}


KEY_PACKAGES = ["torch", "numpy", "scipy", "matplotlib", "scikit-learn", "lightning", "transformers",
                "accelerate", "pytorch-optimizer"]


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return f"{os.cpu_count()}-core {model or platform.machine()}"


def run(name: str, workers: str) -> bool:
    env = build(name)
    sh(str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
       "-e", str(ROOT))  # this checkout, wherever the environment was built
    OUT.mkdir(parents=True, exist_ok=True)
    xml = OUT / f"{name}.xml"
    deselect = [a for t in LOWEST_DESELECT for a in ("--deselect", t)] if ROWS[name].get("lowest") else []
    cmd = [str(env / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", workers,
           f"--junitxml={xml}", "-o", "junit_family=xunit2", "-o", "junit_logging=no", *deselect]
    print("+", " ".join(cmd), flush=True)
    start = time.monotonic()
    code = subprocess.run(cmd, cwd=ROOT).returncode
    seconds = time.monotonic() - start
    have = versions(env)
    record = {
        "commit": commit(),
        "row": name, "python": platform_python(env), "exit": code, "seconds": round(seconds, 1),
        "date": dt.date.today().isoformat(), "machine": machine(), "workers": workers,
        "packages": {k: have[k] for k in KEY_PACKAGES if k in have},
        "deselected": LOWEST_DESELECT if deselect else {}, "why": ROWS[name].get("why", ""),
    }
    (OUT / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    record_install(name)
    return code == 0


def would_install(name: str) -> list[str]:
    """What ``pip install .[extras]`` would install into the row's environment, unconstrained:
    samkit alone where the bounds admit everything the row has (its torch above all)."""
    env, row = ENVS / name, ROWS[name]
    extras = ",".join(row["extras"])
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--dry-run",
                        "--report", str(report), f".[{extras}]" if extras else "."],
                       cwd=ROOT, check=True, capture_output=True)
        planned = json.loads(report.read_text()).get("install", [])
    return sorted(i["metadata"]["name"] for i in planned)


def record_install(name: str) -> None:
    """Add ``would_install`` to a row's committed record (the run keeps everything else)."""
    path = OUT / f"{name}.json"
    record = json.loads(path.read_text())
    record["pip_would_install"] = would_install(name)
    path.write_text(json.dumps(record, indent=1) + "\n")


def commit() -> str:
    """The commit the row ran, with ``+changes`` when files other than the matrix's own differed."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                             ":!docs/compatibility", ":!docs/compatibility.md"],
                            cwd=ROOT, capture_output=True, text=True).stdout
    return (head or "unknown") + ("+changes" if status.strip() else "")


def platform_python(env: Path) -> str:
    code = "import platform; print(platform.python_version())"
    return subprocess.run([str(env / "bin" / "python"), "-c", code],
                          capture_output=True, text=True, check=True).stdout.strip()


def counts(xml: Path) -> tuple[Counter, Counter]:
    """(outcome -> number, skip reason -> number) of one JUnit file."""
    outcomes, reasons = Counter(), Counter()
    for case in ET.parse(xml).getroot().iter("testcase"):
        child = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        if child is None:
            outcomes["passed"] += 1
        elif child.tag == "skipped":
            outcomes["skipped"] += 1
            reason = (child.get("message") or "").strip()
            if reason == "collection skipped" and child.text:  # a whole module: (path, line, reason)
                path, _, why = ast.literal_eval(child.text)
                reason = f"{Path(path).name}, the whole module: {why.removeprefix('Skipped: ')}"
            reasons[reason] += 1
        else:
            outcomes["failed" if child.tag == "failure" else "errors"] += 1
    return outcomes, reasons


def report() -> str:
    """docs/compatibility.md from the committed JUnit and JSON files, row order as in ROWS."""
    rows, notes = [], []
    for name in ROWS:
        if not (OUT / f"{name}.json").is_file():
            rows.append(f"| {name} | not run | | | | | | | | | |")
            continue
        rec = json.loads((OUT / f"{name}.json").read_text())
        outcomes, reasons = counts(OUT / f"{name}.xml")
        pk = rec["packages"]
        bad = outcomes["failed"] + outcomes["errors"]
        verdict = "**pass**" if rec["exit"] == 0 and not bad else "**FAIL**"
        rows.append(
            f"| {name} | {rec['python']} | {pk.get('torch', '')} | {pk.get('numpy', '')} | "
            f"{pk.get('lightning', '–')} | {pk.get('transformers', '–')} | {verdict} | "
            f"{outcomes['passed']} / {bad} / {outcomes['skipped']} | "
            f"{rec['seconds']:.0f} | {rec['date']} | {rec.get('commit', '')} |")
        lines = [f"- **{name}**" + (f": {rec['why']}." if rec["why"] else ".")]
        lines.append(f"  Versions: {', '.join(f'{k} {v}' for k, v in pk.items())}.")
        if "pip_would_install" in rec:
            adds = ", ".join(rec["pip_would_install"]) or "nothing"
            lines.append(f"  `pip install .` (its extras, unconstrained) into this environment would "
                         f"install: {adds}.")
        for reason, n in sorted(reasons.items()):
            lines.append(f"  Skipped ({n}): {reason}")
        for test, why in rec["deselected"].items():
            lines.append(f"  Deselected: `{test}` — {why}")
        notes.append("\n".join(lines))
    machines = sorted({json.loads(p.read_text())["machine"] for p in OUT.glob("*.json")})
    return "\n".join([
        "# Compatibility",
        "",
        "Which releases samkit is tested with: the default test suite (`pytest -m 'not slow'`), run",
        "in one environment per row by `make test-compat` (`tests/compat_matrix.py`). This page is",
        "written by `python tests/compat_matrix.py report` from the runs' own JUnit and JSON files in",
        "`docs/compatibility/`; nothing in it is typed by hand. The lower bounds in",
        "`pyproject.toml` are the lowest passing rows.",
        "",
        f"Machine: {', '.join(machines) or '–'}; torch builds other than 2.13.0 are the package",
        "index's CUDA builds, run on the CPU. Seconds are the suite's wall time with 2 workers;",
        "each row names the commit it ran (`git log` shows what changed between two rows' commits).",
        "",
        "| row | Python | torch | numpy | lightning | transformers | result "
        "| passed / failed / skipped | seconds | date | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## The rows, and every skipped test with its reason",
        "",
        *notes,
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="build (cached) and test rows, then write the report")
    run_p.add_argument("rows", nargs="*", help=f"rows to run (default: all): {', '.join(ROWS)}")
    run_p.add_argument("-n", "--workers", default="2", help="pytest-xdist workers per row")
    build_p = sub.add_parser("build", help="build (or update) rows' environments without testing")
    build_p.add_argument("rows", nargs="*", help="rows to build (default: all)")
    pip_p = sub.add_parser("pipcheck", help="record what pip install . would add to rows already run")
    pip_p.add_argument("rows", nargs="*", help="rows (default: all that have a record)")
    sub.add_parser("report", help="write docs/compatibility.md from docs/compatibility/")
    sub.add_parser("rows", help="list the rows")
    args = parser.parse_args(argv)
    if args.command == "rows":
        print("\n".join(ROWS))
        return 0
    if args.command == "pipcheck":
        for name in args.rows or [n for n in ROWS if (OUT / f"{n}.json").is_file()]:
            record_install(name)
        REPORT.write_text(report())
        return 0
    if args.command in ("run", "build"):
        unknown = [r for r in args.rows if r not in ROWS]
        if unknown:
            parser.error(f"unknown row(s) {', '.join(unknown)}; the rows are {', '.join(ROWS)}")
        if args.command == "build":
            for name in args.rows or list(ROWS):
                build(name)
            return 0
        failed = []
        for name in args.rows or list(ROWS):
            if not run(name, args.workers):
                failed.append(name)
            REPORT.write_text(report())  # after every row: the page is there while the rest run
        if failed:
            print(f"failed rows: {', '.join(failed)}", file=sys.stderr)
            return 1
        return 0
    REPORT.write_text(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
