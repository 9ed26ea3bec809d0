"""samkit's GPU proof as one unattended run (issue 25): speed, memory and the CUDA tests.

On the GPU machine (Python 3.12, torch preinstalled, nothing downloadable) one command does it all::

    python3 benchmarks/gpu_suite.py --wheels .whl --out "$OUT"

1. **setup** — checks samkit's needs (``pyproject.toml``: dependencies, the ``dev`` extra, the build
   backend) against what is installed and installs only what is missing or too old, from the wheels
   folder (``pip install --no-index --no-deps --target``; ``benchmarks/gpu_wheels.sh`` downloads it
   beforehand); never torch. Then samkit itself, editable, its dependencies resolved by pip against
   what is installed (``torch>=2.5`` admits the machine's torch, so pip keeps it; no index; the CPU
   mode resolves it with ``--dry-run``). The repository root stays on ``PYTHONPATH`` of every part,
   so samkit imports from this tree even where that install fails (recorded).
2. **parts**, each a child process with a time cap, in order of importance: the CUDA tests;
   ``step_time.py`` (ResNet-18 CIFAR and WRN-16-8, batch 128, fp32 and bf16, every row it knows,
   eager; then SGD / SAM / mSAM-8 vectorized compiled with ``samkit.compile_step`` and CUDA-graphed,
   next to pytorch-optimizer's SAM eager); ``hessian_time.py`` at full size; the rest of
   ``pytest -m "cuda or not slow"``. A part that fails, or is cut at its cap, is recorded and the
   run goes on; a part is not started when the budget has too little left for it.
3. **outputs**, rewritten after every part (so whatever stops the run, what was measured is there):
   ``gpu_suite.json`` (everything), ``gpu_suite.md`` (the tables), ``gpu_suite.log`` (each part's
   output), and a summary on stdout that states every target of the issue as met / missed / not
   measured.

``--cpu-tiny`` runs the same parts on the CPU at tiny sizes in seconds (the default test suite runs
it: ``tests/test_gpu_suite.py``); its numbers are no measurement.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_report  # noqa: E402


def _load_atomic():
    # samkit/_atomic.py by its path, not `import samkit`: the suite must write its results even when
    # samkit (or torch) fails to import on the machine; that module uses the standard library only.
    spec = importlib.util.spec_from_file_location("_samkit_atomic", ROOT / "samkit" / "_atomic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_atomic = _load_atomic()

GRACE_S = 15  # after SIGTERM at a part's cap: time to write what it measured, then SIGKILL
NEVER_INSTALL = {"torch"}  # the machine's own build (CUDA); a wheel of it must never replace it
NOT_NEEDED = {"ruff"}  # in the dev extra, but the suite runs no linter


@dataclass
class Part:
    name: str
    kind: str  # setup | step_time | hessian | pytest
    cap_s: float
    min_s: float  # not started with less time than this left
    argv: list[str] = field(default_factory=list)  # the child's arguments after the interpreter
    info: dict = field(default_factory=dict)  # model / precision / mode, for the report


# ----------------------------------------------------------------------------------- the plan
def step_part(model, precision, mode, cap, min_s, common, device, tiny=False) -> Part:
    name = f"step-{model}-{precision}-{mode}"
    argv = ["benchmarks/step_time.py", "--model", model, "--precision", precision, "--device", device,
            "--keep-going", "--step-positions", *common]
    if mode == "compiled":
        if tiny:  # the compile_step plumbing on the CPU, traced but not code-generated (seconds)
            rows = ["sgd", "sam", "ext-sam (pytorch-optimizer)", "sam [compiled]"]
            argv += ["--compile", "--compile-step", "--compile-backend", "eager", "--compile-rows", "sam"]
        else:
            rows = ["sgd", "sam", "msam-8-vectorized", "ext-sam (pytorch-optimizer)",
                    "sgd [compiled]", "sam [compiled]", "msam-8-vectorized [compiled]",
                    "sgd [graphed]", "sam [graphed]"]
            argv += ["--compile", "--compile-step", "--graphed",
                     "--compile-rows", "sgd", "sam", "msam-8-vectorized"]
        argv += ["--rows", *rows]
    return Part(name, "step_time", cap, min_s, argv, {"model": model, "precision": precision, "mode": mode})


def plan(args) -> list[Part]:
    """The parts, most important first (a tight budget cuts the last ones)."""
    if args.cpu_tiny:
        common = ["--batch", "16", "--steps", "2", "--warmup", "1"]
        return [
            Part("setup", "setup", 60, 5),
            Part("cuda-tests", "pytest", 60, 10,
                 ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                  "tests/optim/test_optim_compile.py"], {"selection": "cuda"}),
            step_part("cnn-tiny", "fp32", "eager", 60, 10, common, "cpu"),
            Part("hessian", "hessian", 60, 10,
                 ["benchmarks/hessian_time.py", "--tiny", "--device", "cpu"], {"model": "resnet18 width 4"}),
            step_part("cnn-tiny", "fp32", "compiled", 60, 10, common, "cpu", tiny=True),
        ]
    common = ["--batch", "128", "--steps", "20", "--warmup", "3", "--channels-last"]
    workers = str(min(12, max(1, (os.cpu_count() or 2) - 2)))
    xdist = ["-n", workers] if importlib.util.find_spec("xdist") else []
    # Caps and expected times (H200, 16 cores) are estimates, not measurements: see benchmarks/README.md.
    parts = [
        Part("setup", "setup", 60, 5),
        Part("cuda-tests", "pytest", 90, 30,
             ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests"], {"selection": "cuda"}),
        step_part("resnet18-cifar", "fp32", "eager", 60, 25, common, "cuda"),
        Part("hessian", "hessian", 60, 25, ["benchmarks/hessian_time.py", "--device", "cuda"],
             {"model": "resnet18-cifar, batch 256"}),
        step_part("resnet18-cifar", "fp32", "compiled", 150, 60, common, "cuda"),
        # peak allocated memory (torch.cuda.max_memory_allocated) of SGD, SAM and mSAM-8 (issue 37)
        Part("memory", "memory", 45, 20,
             ["benchmarks/memory.py", "--device", "cuda", "--sizes", "25m", "--rows", "sgd", "sam",
              "msam-4-loop", "msam-8-loop", "msam-8-vectorized", "sam micro-batch 8"],
             {"model": "MLP 25m, batch 32"}),
        step_part("resnet18-cifar", "bf16", "eager", 45, 25, common, "cuda"),
        step_part("wrn-16-8", "fp32", "eager", 50, 25, common, "cuda"),
        step_part("wrn-16-8", "bf16", "eager", 45, 25, common, "cuda"),
        # "cuda or not slow" = the cuda part above + this one
        Part("tests", "pytest", 120, 45,
             ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not cuda", *xdist, "tests"],
             {"selection": "not slow and not cuda"}),
        step_part("resnet18-cifar", "bf16", "compiled", 90, 60, common, "cuda"),
        step_part("wrn-16-8", "fp32", "compiled", 90, 60, common, "cuda"),
        step_part("wrn-16-8", "bf16", "compiled", 90, 60, common, "cuda"),
    ]
    return parts


# ---------------------------------------------------------------------------------- the setup
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path) -> list[str]:
    """samkit's run-time needs, its ``dev`` extra (the tests' optional imports) and its build backend."""
    import tomllib  # Python >= 3.11 (the GPU machine has 3.12)

    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    reqs = [*project["dependencies"], *project.get("optional-dependencies", {}).get("dev", []),
            *data.get("build-system", {}).get("requires", [])]
    from packaging.requirements import Requirement

    return [r for r in reqs if _norm(Requirement(r).name) not in NOT_NEEDED]


def wheel_index(folder: Path | None) -> dict[str, list[dict]]:
    """normalised name -> wheels in ``folder``: version, path, needs (Requires-Dist without extras)."""
    index: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.whl")) if folder else []:
        dist, version = path.name.split("-")[:2]
        with zipfile.ZipFile(path) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            lines = zf.read(meta).decode("utf-8", "replace").splitlines()
        needs = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]
        index.setdefault(_norm(dist), []).append({"version": version, "path": str(path), "needs": needs})
    return index


def plan_installs(reqs: list[str], installed, wheels: dict[str, list[dict]]) -> list[dict]:
    """What to do for each requirement (and, transitively, each wheel's own needs).

    ``installed(name) -> version or None``. Each entry: name, spec, found, action (present | install |
    missing | refused), wheel, why. Only what is missing or too old is installed; torch never.
    """
    from packaging.requirements import Requirement
    from packaging.version import Version

    entries: dict[str, dict] = {}
    queue = [(r, "pyproject.toml") for r in reqs]
    while queue:
        text, origin = queue.pop(0)
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra of a wheel, or another platform's need
        key = _norm(req.name)
        found = installed(req.name)
        entry = entries.get(key)
        if entry is not None:  # already decided; a second spec only needs checking
            if str(req.specifier) and str(req.specifier) not in entry["spec"]:
                entry["spec"] = ",".join(filter(None, [entry["spec"], str(req.specifier)]))
                if entry["action"] == "present" and Version(found) not in req.specifier:
                    entry["action"] = "missing"
                    entry["why"] = f"{found} does not satisfy {req.specifier} (needed by {origin})"
            continue
        ok = found is not None and Version(found) in req.specifier
        entry = {"name": req.name, "spec": str(req.specifier), "found": found, "wheel": None,
                 "needed_by": origin}
        entries[key] = entry
        if ok:
            entry["action"], entry["why"] = "present", ""
            continue
        why = "not installed" if found is None else f"{found} does not satisfy {req.specifier}"
        fitting = [w for w in wheels.get(key, []) if Version(w["version"]) in req.specifier]
        if key in NEVER_INSTALL:
            entry["action"], entry["why"] = "refused", f"{why}; torch is the machine's own, never installed"
        elif not fitting:
            entry["action"], entry["why"] = "missing", f"{why}; no fitting wheel in the wheels folder"
        else:
            wheel = max(fitting, key=lambda w: Version(w["version"]))
            entry["action"], entry["why"], entry["wheel"] = "install", why, wheel["path"]
            queue += [(need, req.name) for need in wheel["needs"]]
    return list(entries.values())


def _installed(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


VERIFY = r"""
import json, sys
out = {"python": sys.version.split()[0], "executable": sys.executable}
try:
    import torch
    out.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
except Exception as err:
    out["torch_error"] = repr(err)
from importlib import metadata
for name in ("samkit", "pytorch_optimizer"):
    try:
        module = __import__(name)
        out[name + "_file"] = module.__file__
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # samkit from the tree (PYTHONPATH), not installed
            out[name] = getattr(module, "__version__", "?") + " (not installed)"
    except Exception as err:
        out[name + "_error"] = repr(err)
print(json.dumps(out))
"""


def setup(args, env: dict, target: Path, log) -> dict:
    """Install what is missing; returns the record's result (raises nothing it can record)."""
    result: dict = {"target": str(target), "wheels": str(args.wheels) if args.wheels else None}
    try:
        reqs = [*requirements(ROOT / "pyproject.toml"), *args.require]
        entries = plan_installs(reqs, _installed, wheel_index(args.wheels))
    except Exception as err:
        entries, result["plan_error"] = [], f"{type(err).__name__}: {err}"
    result["packages"] = entries
    to_install = [e["wheel"] for e in entries if e["action"] == "install"]
    pip = [sys.executable, "-m", "pip"]
    if to_install:
        done = _run_logged([*pip, "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--no-cache-dir", "--upgrade", "--target", str(target), *to_install],
                           env, log, timeout=120)
        result["pip_rc"] = done
        for e in entries:
            if e["action"] == "install":
                e["action"] = "installed" if done == 0 else "install failed"
    if args.install_samkit:
        # editable, with its dependencies resolved against what is installed (torch >= 2.5 admits the
        # machine's torch, so pip keeps it) and the wheels folder; no index: nothing can be downloaded
        # there. The CPU mode resolves the same way with --dry-run and records what pip would install.
        report = target.parent / "samkit-install.json"  # beside the wheels' folder, not in it
        cmd = [*pip, "install", "-q", "--no-index", "--no-build-isolation", "-e", str(ROOT)]
        cmd += ["--find-links", str(args.wheels)] if args.wheels else []
        cmd += ["--dry-run", "--report", str(report)] if args.cpu_tiny else []
        done = _run_logged(cmd, env, log, timeout=120)
        result["samkit_install_rc"] = done
        if done == 0 and report.is_file():
            planned = json.loads(report.read_text()).get("install", [])
            result["samkit_install_would_install"] = sorted(i["metadata"]["name"] for i in planned)
    raw = subprocess.run([sys.executable, "-c", VERIFY], env=env, cwd=tempfile.gettempdir(),
                         capture_output=True, text=True, timeout=120)
    log.write(raw.stdout + raw.stderr)
    try:
        result["verify"] = json.loads(raw.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result["verify"] = {"error": raw.stderr[-2000:]}
    return result


def setup_record(result: dict) -> dict:
    verify = result.get("verify", {})
    bad = [e["name"] for e in result["packages"] if e["action"] not in ("present", "installed")]
    notes = [f"not satisfied: {', '.join(bad)}" if bad else "",
             "samkit did not import" if "samkit_error" in verify else "",
             "pip install -e failed (samkit imports from the tree via PYTHONPATH)"
             if result.get("samkit_install_rc", 0) else "",
             f"wheels not installed (pip exit {result['pip_rc']})" if result.get("pip_rc", 0) else "",
             result.get("plan_error", "")]
    notes = [n for n in notes if n]
    return {"result": result, "rc": 0, "timed_out": False, "status": "partial" if notes else "ok",
            "reason": "; ".join(notes)}


def _run_logged(argv, env, log, timeout) -> int:
    log.write("$ " + " ".join(argv) + "\n")
    log.flush()
    try:
        return subprocess.run(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return 124


# ------------------------------------------------------------------------------------ the parts
def run_child(argv, env, log_path: Path, cap: float) -> tuple[int, bool]:
    """Run ``argv`` in its own process group; SIGTERM at ``cap``, SIGKILL ``GRACE_S`` later."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)  # step_time.py writes what it measured
            try:
                rc = proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                rc = None
        try:  # whatever it left running (compile workers, xdist workers)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if rc is None:
            rc = proc.wait()
    return rc, timed_out


def parse_junit(path: Path) -> dict | None:
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    problems, passed = [], []
    for case in root.iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            problems.append({"test": test, "message": (bad.get("message") or "")[:500]})
        elif case.find("skipped") is None:
            passed.append(test)
    return {**counts, "problems": problems, "passed_tests": passed if len(passed) <= 50 else passed[:50]}


def run_part(part: Part, args, env, work: Path, granted: float) -> dict:
    log_path = work / f"{part.name}.log"
    out_path = work / f"{part.name}.json"
    argv = [sys.executable, *part.argv]
    if part.kind in ("step_time", "hessian", "memory"):
        argv += ["--out", str(out_path)]
    if part.kind == "step_time":
        argv += ["--time-limit", str(max(5.0, granted - 10))]
    if part.kind == "pytest":
        argv += ["--junitxml", str(out_path.with_suffix(".xml"))]
    record: dict = {"command": [Path(a).name if a == sys.executable else a for a in argv]}
    rc, timed_out = run_child(argv, env, log_path, granted)
    record.update(rc=rc, timed_out=timed_out)
    if part.kind == "pytest":
        result = parse_junit(out_path.with_suffix(".xml"))
    else:
        result = json.loads(out_path.read_text()) if out_path.exists() else None
    record["result"] = result
    record["status"], record["reason"] = _status(part, rc, timed_out, result)
    return record


def _status(part: Part, rc: int, timed_out: bool, result) -> tuple[str, str]:
    if timed_out:
        return "timed_out", "stopped at its cap" + ("" if result else "; nothing written")
    if part.kind == "pytest":
        if result is None:
            return "failed", f"exit {rc}, no report"
        if rc == 5 or result["tests"] == 0:
            return "failed", "no tests collected"
        if rc != 0 or result["failures"] or result["errors"]:
            return "failed", f"{result['failures']} failed, {result['errors']} errors"
        return "ok", f"{result['passed']} passed, {result['skipped']} skipped"
    if rc != 0 or result is None:
        return "failed", f"exit {rc}" + ("" if result else ", no results")
    if part.kind == "step_time":
        notes = []
        if result.get("failed"):
            notes.append(f"{len(result['failed'])} rows failed")
        if result.get("cut_short"):
            notes.append(result["cut_short"])
        missing = [s["method"] for s in result.get("skipped", [])]
        if missing:
            notes.append(f"{len(missing)} rows not timed")
        return ("partial" if notes else "ok"), "; ".join(notes)
    return "ok", ""


# ----------------------------------------------------------------------------------- the run
def child_env(target: Path) -> dict:
    env = dict(os.environ)
    paths = [str(target), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", PATH=f"{target / 'bin'}{os.pathsep}"
               f"{env.get('PATH', '')}")
    return env


def write_outputs(out: Path, suite: dict, work: Path) -> None:
    suite["targets"] = gpu_report.targets(suite["parts"])
    _atomic.write_json(out / "gpu_suite.json", suite, indent=1)
    _atomic.write_text(out / "gpu_suite.md", gpu_report.markdown(suite))
    chunks = []
    for record in suite["parts"]:
        log = work / f"{record['name']}.log"
        if log.exists():
            text = log.read_bytes()[-1_000_000:].decode("utf-8", "replace")  # each part's last MB
            chunks.append(f"===== {record['name']} ({record['status']}) =====\n{text}\n")
    _atomic.write_text(out / "gpu_suite.log", "".join(chunks))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json / .md / .log")
    p.add_argument("--wheels", type=Path, help="folder of wheels to install what is missing from")
    p.add_argument("--require", nargs="+", default=[], metavar="SPEC",
                   help="needs beyond pyproject.toml's, checked and installed alike (e.g. einops>=0.8)")
    p.add_argument("--budget", type=float, help="seconds for everything (default: 480 on the GPU, 300 tiny)")
    p.add_argument("--cpu-tiny", action="store_true", help="the same parts on the CPU at tiny sizes")
    p.add_argument("--parts", nargs="+", metavar="PATTERN",
                   help="only the parts whose names match (glob; setup always runs)")
    p.add_argument("--install-samkit", action=argparse.BooleanOptionalAction, default=None,
                   help="pip install -e this tree with its dependencies, no index (default: yes; "
                        "--cpu-tiny resolves it with --dry-run and installs nothing)")
    p.add_argument("--work", type=Path, help="folder for the parts' own files (default: a temporary one)")
    p.add_argument("--list", action="store_true", help="print the parts and their caps, run nothing")
    args = p.parse_args(argv)
    if args.wheels is not None and not args.wheels.is_dir():
        p.error(f"--wheels {args.wheels}: no such folder (benchmarks/gpu_wheels.sh makes it)")
    budget = args.budget or (300.0 if args.cpu_tiny else 480.0)
    args.install_samkit = True if args.install_samkit is None else args.install_samkit
    parts = plan(args)
    if args.parts:
        parts = [q for q in parts
                 if q.kind == "setup" or any(fnmatch.fnmatch(q.name, pat) for pat in args.parts)]
    if args.list:
        for q in parts:
            print(f"{q.name:34s} cap {q.cap_s:4.0f} s  (starts with >= {q.min_s:.0f} s left)")
        print(f"budget {budget:.0f} s, caps add up to {sum(q.cap_s for q in parts):.0f} s")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_suite_"))
    work.mkdir(parents=True, exist_ok=True)
    target = work / "site"  # the wheels go here, first on every part's PYTHONPATH
    env = child_env(target)
    if args.cpu_tiny:  # a check, not a measurement: one thread each, so a loaded CPU is not oversubscribed
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.monotonic()
    deadline = t0 + budget
    suite = {"suite": "gpu_suite", "schema": 1, "mode": "cpu-tiny" if args.cpu_tiny else "gpu",
             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": budget,
             "argv": sys.argv[1:] if argv is None else list(argv),
             "host": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
             "machine": {}, "parts": []}
    cuda = None
    for part in parts:
        left = deadline - time.monotonic() - GRACE_S
        record = {"name": part.name, "kind": part.kind, "info": part.info, "cap_s": part.cap_s}
        needs_cuda = "--device" in part.argv and part.argv[part.argv.index("--device") + 1] == "cuda"
        if left < part.min_s:
            record.update(status="skipped",
                          reason=f"budget: {max(left, 0):.0f} s left, needs >= {part.min_s:.0f}")
        elif needs_cuda and cuda is False:
            record.update(status="skipped", reason="no CUDA device (see setup)")
        else:
            granted = min(part.cap_s, left)
            print(f"[{time.monotonic() - t0:5.0f} s] {part.name} (up to {granted:.0f} s)", flush=True)
            start = time.monotonic()
            if part.kind == "setup":
                with open(work / "setup.log", "w") as log:
                    record.update(setup_record(setup(args, env, target, log)))
                suite["machine"] = record["result"].get("verify", {})
                cuda = suite["machine"].get("cuda_available")
            else:
                try:
                    record.update(run_part(part, args, env, work, granted))
                except Exception as err:  # the suite's own failure on one part is that part's record
                    record.update(status="failed", reason=f"suite error: {type(err).__name__}: {err}")
            record["wall_s"] = round(time.monotonic() - start, 1)
            record["granted_s"] = round(granted, 1)
        suite["parts"].append(record)
        suite["wall_s"] = round(time.monotonic() - t0, 1)
        write_outputs(args.out, suite, work)
    print(gpu_report.summary(suite), flush=True)
    return 0 if all(r["status"] == "ok" for r in suite["parts"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
