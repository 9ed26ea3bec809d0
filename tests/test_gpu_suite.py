"""benchmarks/gpu_suite.py: its CPU mode runs every part for real at tiny sizes, and what it writes
(JSON, markdown, summary) says what was measured, row for row."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import signal
import subprocess
import sys
import time
import zipfile
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_report  # noqa: E402
import gpu_suite  # noqa: E402

PROBE = "samkit-probe-pkg"
# pytorch-optimizer is a development tool: the compatibility matrix's lowest rows lack it (its
# tested release needs numpy > 1.24.4), and there the suite reports its rows as not timed
HAS_PO = importlib.util.find_spec("pytorch_optimizer") is not None


def make_wheel(folder: Path, name: str, version: str, needs=()) -> Path:
    """A minimal pure-Python wheel (one module named after the distribution)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {n}\n" for n in needs),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: samkit-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One whole CPU-mode run (every part, tiny sizes), with a wheels folder holding a missing package
    (and its missing need), and wheels of packages that are present and must not be installed."""
    tmp = tmp_path_factory.mktemp("gpu_suite")
    wheels = tmp / "wheels"
    wheels.mkdir()
    make_wheel(wheels, PROBE, "1.0", needs=["numpy>=1", "samkit-probe-dep>=2", 'never-this; extra == "x"'])
    make_wheel(wheels, "samkit-probe-dep", "2.0")
    make_wheel(wheels, "numpy", "0.1")  # present in a fitting version: never installed
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = gpu_suite.main(["--cpu-tiny", "--out", str(tmp / "out"), "--work", str(tmp / "work"),
                             "--wheels", str(wheels), "--require", f"{PROBE}==1.0"])
    suite = json.loads((tmp / "out" / "gpu_suite.json").read_text())
    return Namespace(rc=rc, tmp=tmp, suite=suite, stdout=stdout.getvalue(),
                     md=(tmp / "out" / "gpu_suite.md").read_text(),
                     parts={p["name"]: p for p in suite["parts"]})


def test_every_part_ran_and_the_outputs_are_written(run):
    # setup is "ok" where every need is met; a dev package this machine lacks (no wheel) makes it partial
    setup = run.parts["setup"]
    missing = [e["name"] for e in setup["result"]["packages"] if e["action"] == "missing"]
    assert {e["action"] for e in setup["result"]["packages"]} <= {"present", "installed", "missing"}
    assert setup["status"] == ("partial" if missing else "ok")
    assert setup["reason"] == (f"not satisfied: {', '.join(missing)}" if missing else "")
    assert run.rc == (1 if missing else 0)
    written = sorted(p.name for p in (run.tmp / "out").iterdir())
    assert written == ["gpu_suite.json", "gpu_suite.log", "gpu_suite.md"]  # the device returns <= 8 files
    planned = [p.name for p in gpu_suite.plan(Namespace(cpu_tiny=True))]
    assert [p["name"] for p in run.suite["parts"]] == planned
    # without pytorch-optimizer the compiled part's external row is not timed: "partial", said so
    status = {p: "ok" if HAS_PO or "compiled" not in p else "partial" for p in planned}
    for part in run.suite["parts"][1:]:
        assert part["status"] == status[part["name"]], part
        assert part["status"] == "ok" or part["reason"] == "1 rows not timed"
        assert 0 < part["wall_s"] <= part["granted_s"] <= part["cap_s"]
    assert run.suite["wall_s"] <= run.suite["budget_s"]
    log = (run.tmp / "out" / "gpu_suite.log").read_text()
    assert all(f"===== {name} ({status[name]}) =====" in log for name in planned[1:])


def test_setup_resolves_samkit_with_its_dependencies_and_keeps_torch(run):
    """samkit is installed with pip resolving its needs, no index: here (a dry run) pip would
    install samkit alone — torch and the rest are already there and admitted by the bounds."""
    result = run.parts["setup"]["result"]
    assert result["samkit_install_rc"] == 0
    assert result["samkit_install_would_install"] == ["samkit"]


def test_step_time_parts_time_every_requested_row(run):
    import step_time

    known = list(step_time.methods(Namespace(shards=[2, 4, 8])))  # every row step_time.py has today
    eager = run.parts["step-cnn-tiny-fp32-eager"]["result"]
    assert [r["method"] for r in eager["results"]] == known == eager["rows_requested"]
    assert eager["skipped"] == []
    compiled = run.parts["step-cnn-tiny-fp32-compiled"]["result"]
    external = [] if HAS_PO else [r for r in compiled["rows_requested"] if "pytorch-optimizer" in r]
    timed = [r for r in compiled["rows_requested"] if r not in external]
    assert [r["method"] for r in compiled["results"]] == timed
    assert [s["method"] for s in compiled["skipped"]] == external
    assert "sam [compiled]" in compiled["rows_requested"]
    for result in (eager, compiled):
        assert result["failed"] == [] and result["cut_short"] is None
        for r in result["results"]:
            assert len(r["times_ms"]) == 2 and r["median_ms"] > 0
    cadence = {r["method"]: r for r in eager["results"] if "x_sgd_non_ascent" in r}
    assert set(cadence) == {"every-2", "every-4", "every-4 looksam"}  # the rows with ascent-free steps


def test_markdown_step_tables_are_the_json_rows(run):
    for name in ("step-cnn-tiny-fp32-eager", "step-cnn-tiny-fp32-compiled"):
        section = run.md.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        table = [ln for ln in section.splitlines() if ln.startswith("| ")][1:]  # without the header
        cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in table]
        rows = run.parts[name]["result"]["results"]
        assert [c[0] for c in cells] == [r["method"] for r in rows]
        for c, r in zip(cells, rows):
            assert float(c[1]) == pytest.approx(r["median_ms"], abs=5e-4)
            assert c[2] == format(r["x_sgd"], ".3f") and c[7] == "2"


def test_summary_states_every_target_from_the_rows(run):
    targets = {(t["id"], t["config"]): t for t in run.suite["targets"]}
    ids = [t[0] for t in gpu_report.TARGETS] + ["hessian-eigenvalue", "hessian-trace"]
    assert sorted({t[0] for t in targets}) == sorted(ids)
    rows = {r["method"]: r for r in run.parts["step-cnn-tiny-fp32-eager"]["result"]["results"]}
    sam_sgd = targets["sam-vs-sgd", "cnn-tiny fp32"]
    assert sam_sgd["value"] == pytest.approx(rows["sam"]["median_ms"] / rows["sgd"]["median_ms"])
    memory = targets["msam8-memory", "cnn-tiny fp32"]
    assert memory["value"] == pytest.approx(rows["msam-8-vectorized"]["peak_mib"] / rows["sam"]["peak_mib"])
    cadence = targets["cadence", "cnn-tiny fp32"]
    assert cadence["value"] == max(rows[n]["x_sgd_non_ascent"] for n in ("every-2", "every-4"))
    hessian = run.parts["hessian"]["result"]
    assert targets["hessian-trace", "resnet18 width 4"]["value"] == hessian["speedup_trace"]
    # the tiny compiled part times no compiled mSAM: said so, not guessed
    assert targets["msam8-time-compiled", "cnn-tiny fp32"]["verdict"] == "not measured"
    assert "not requested" in targets["msam8-time-compiled", "cnn-tiny fp32"]["detail"]
    for t in run.suite["targets"]:
        if t["value"] is not None:
            ok = t["value"] <= t["threshold"] if t["sense"] == "le" else t["value"] >= t["threshold"]
            assert t["verdict"] == ("met" if ok else "missed"), t
        line = f"{t['verdict']:12s} {gpu_report._fmt(t['value'], '7.3f')}  {t['target']} [{t['config']}]"
        assert line in run.stdout and f"| {t['target']} | {t['config']} |" in run.md
    v = [t["verdict"] for t in run.suite["targets"]]
    counts = f"{v.count('met')} met, {v.count('missed')} missed, {v.count('not measured')} not measured"
    assert f"targets: {counts}" in run.stdout


def test_setup_installs_only_what_is_missing(run):
    packages = {e["name"]: e for e in run.parts["setup"]["result"]["packages"]}
    assert packages[PROBE]["action"] == packages["samkit-probe-dep"]["action"] == "installed"
    assert packages["numpy"]["action"] == packages["torch"]["action"] == "present"
    assert "never-this" not in packages  # an extra's need
    site = run.tmp / "work" / "site"
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == [
        "samkit_probe_dep", "samkit_probe_pkg"]
    probe = subprocess.run([sys.executable, "-c", "import samkit_probe_pkg as m; print(m.VERSION)"],
                           env=gpu_suite.child_env(site), capture_output=True, text=True, cwd=run.tmp)
    assert probe.stdout.strip() == "1.0"
    assert run.suite["machine"]["samkit_file"] == str(ROOT / "samkit" / "__init__.py")


def test_pytest_part_reports_the_cuda_tests(run):
    result = run.parts["cuda-tests"]["result"]
    assert result["tests"] == 2 and result["failures"] == result["errors"] == 0  # skipped without CUDA
    assert result["passed"] + result["skipped"] == 2
    assert "CUDA tests: " in run.stdout


def test_plan_installs_refuses_torch_and_picks_a_fitting_wheel(tmp_path):
    for version in ("1.0", "2.0", "3.0"):
        make_wheel(tmp_path, "widget", version)
    make_wheel(tmp_path, "torch", "99.0")
    found = {"widget": "0.5", "torch": "2.0", "numpy": "2.0"}
    plan = {e["name"]: e for e in gpu_suite.plan_installs(
        ["widget>=1,<3", "torch>=2.4", "numpy>=1", "gadget", 'old; python_version < "3"'],
        found.get, gpu_suite.wheel_index(tmp_path))}
    assert plan["widget"]["action"] == "install"
    assert plan["widget"]["wheel"].endswith("widget-2.0-py3-none-any.whl")  # the newest that fits
    assert plan["widget"]["why"] == "0.5 does not satisfy <3,>=1"
    assert plan["torch"]["action"] == "refused"  # the machine's own build, whatever the wheels folder holds
    assert plan["numpy"]["action"] == "present"
    assert plan["gadget"]["action"] == "missing" and "no fitting wheel" in plan["gadget"]["why"]
    assert "old" not in plan


def test_no_budget_left_skips_every_part_and_says_why(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        rc = gpu_suite.main(["--cpu-tiny", "--budget", "1", "--out", str(tmp_path),
                             "--work", str(tmp_path / "w")])
    suite = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert rc == 1
    assert {p["status"] for p in suite["parts"]} == {"skipped"}
    assert all(p["reason"].startswith("budget: 0 s left") for p in suite["parts"])
    assert {t["verdict"] for t in suite["targets"]} == {"not measured"}
    assert all("part skipped: budget" in t["detail"] for t in suite["targets"])
    assert f"targets: 0 met, 0 missed, {len(suite['targets'])} not measured" in out.getvalue()


def test_a_missing_wheels_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        gpu_suite.main(["--cpu-tiny", "--out", str(tmp_path), "--wheels", str(tmp_path / "nope")])
    assert err.value.code == 2 and "benchmarks/gpu_wheels.sh" in capsys.readouterr().err


def test_failed_rows_and_failed_parts_are_not_measured_with_the_reason():
    def step(mode, status="ok", results=(), failed=(), requested=None):
        names = [r["method"] for r in results] + [f["method"] for f in failed]
        return {"name": f"step-m-fp32-{mode}", "kind": "step_time", "status": status, "reason": "exit 1",
                "info": {"model": "m", "precision": "fp32", "mode": mode},
                "result": None if status == "failed" else {
                    "results": list(results), "failed": list(failed), "skipped": [],
                    "rows_requested": requested or names}}

    row = lambda name, ms, **kw: {"method": name, "median_ms": ms, "peak_mib": 10.0, **kw}  # noqa: E731
    eager = step("eager", results=[row("sgd", 10.0), row("sam", 20.5),
                                   row("every-4", 12, x_sgd_non_ascent=1.02),
                                   row("every-2", 14, x_sgd_non_ascent=1.01),
                                   row("every-4 looksam", 13, x_sgd_non_ascent=1.3)],
                  failed=[{"method": "fsam", "stage": "build", "error": "RuntimeError: x"}])
    out = {t["id"]: t for t in gpu_report.targets([eager, step("compiled", status="failed")])}
    assert out["sam-vs-sgd"]["verdict"] == "met" and out["sam-vs-sgd"]["value"] == pytest.approx(2.05)
    assert out["fsam"]["verdict"] == "not measured" and "fsam: failed (build)" in out["fsam"]["detail"]
    assert out["asam"]["detail"] == "asam: not requested"
    assert out["compiled-vs-ext"]["detail"] == "part failed: exit 1"
    assert out["cadence"]["value"] == 1.02 and out["cadence"]["verdict"] == "met"  # LookSAM not counted
    assert "every-4 looksam 1.300x" in out["cadence"]["detail"]
    assert out["hessian-trace"]["detail"] == "part not in this run"
    graphed = step("compiled", results=[row("sam [compiled]", 9.0), row("sam [graphed]", 6.0),
                                        row("ext-sam (pytorch-optimizer)", 12.0)])
    best = next(t for t in gpu_report.targets([graphed]) if t["id"] == "compiled-vs-ext")
    assert best["value"] == 0.5 and best["verdict"] == "met" and best["detail"].startswith("sam [graphed]")


def test_step_time_writes_what_it_measured_when_terminated(tmp_path):
    out = tmp_path / "st.json"
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--model", "cnn-tiny",
                             "--batch", "16", "--device", "cpu", "--warmup", "1", "--steps", "100000",
                             "--rows", "sgd", "momentum_sam", "--time-limit", "1000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # terminate once both rows are built and the rounds are under way
        lines.append(line)
        if "built momentum_sam" in line:
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest
    result = json.loads(out.read_text())
    assert result["cut_short"].startswith("terminated") and "cut short: terminated" in rest
    # every row is accounted for: timed (a round or more), or named as not timed; far from 100000 rounds
    timed = [r["method"] for r in result["results"]]
    untimed = [s["method"] for s in result["skipped"] if s["reason"] == "no timed round"]
    assert sorted(timed + untimed) == sorted(result["rows_requested"]) == ["momentum_sam", "sgd"]
    assert all(1 <= len(r["times_ms"]) < 100000 for r in result["results"])
