"""Instructions per step of each row of ``step_time.py``, counted by valgrind's callgrind.

A step's wall time on a shared 2-core machine moves by more than the few percent of Python work a
change of the optimizer's bookkeeping adds or removes. The instructions a step executes do not
depend on the load: this counts them (user space, the whole process: Python, torch's C++ and its
kernels) for the rows of ``benchmarks/step_time.py``, on its models and study workloads. The counts
are ratios' raw material, not times: a row's instructions relative to SGD's are the cost a CPU pays
with no waiting, and ``--compare`` prints the per-row ratio between two runs (e.g. the code before
and after a change, on the same machine and torch).

    python benchmarks/step_instructions.py --model cnn1d-w32 --batch 128 --out after.json
    python benchmarks/step_instructions.py --compare before.json after.json

Each row runs in one valgrind process (torch imported once): warm-up steps uninstrumented, then
``--steps`` steps between callgrind's start/stop client requests (a small C shim built with the
machine's ``gcc`` and ``valgrind/callgrind.h``). Needs valgrind and gcc; about 1-3 minutes per row.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM = r"""
#include <valgrind/callgrind.h>
void samkit_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void samkit_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("steps"); }
"""
DEFAULT_ROWS = ("sgd", "sam", "msam-4-loop", "msam-4-vectorized", "every-4", "every-4 looksam",
                "sam micro-batch 32")


def build_shim(folder: Path) -> Path:
    src, lib = folder / "shim.c", folder / "libshim.so"
    src.write_text(SHIM)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def child(args: argparse.Namespace) -> None:
    """Inside valgrind: build one row, warm it up, count ``--steps`` steps."""
    sys.path.insert(0, str(HERE))
    import step_time
    import torch

    torch.set_num_threads(1)
    shim = ctypes.CDLL(args.shim)
    ns = argparse.Namespace(model=args.model, batch=args.batch, shards=[2, 4, 8], warmup=args.warmup,
                            channels_last=False, precision="fp32", step_positions=False,
                            compile_step=False)
    table = step_time.methods(ns)
    row = step_time.Row(args.row, table[args.row], ns, torch.device("cpu"), False)
    steps = args.steps * row.cycle  # a cadence row: whole cycles (Row.step runs one cycle)
    shim.samkit_start()
    for _ in range(args.steps):
        row.step(record=False)
    shim.samkit_stop()
    print(json.dumps({"steps": steps}))


def count(row: str, args: argparse.Namespace, shim: Path, folder: Path) -> dict:
    out = folder / f"callgrind.{re.sub(r'[^A-Za-z0-9]+', '_', row)}"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p",
           sys.executable, str(Path(__file__).resolve()), "--child", "--row", row, "--model", args.model,
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--shim", str(shim)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{row}: valgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
    steps = json.loads(done.stdout.strip().splitlines()[-1])["steps"]
    dumps = sorted(folder.glob(out.name + ".*"))
    total = 0
    for dump in dumps:  # the "steps" dump holds the counted steps (the final dump: nothing after stop)
        text = dump.read_text(errors="replace")
        if "steps" in (re.search(r"^desc: Trigger: (.*)$", text, re.M) or [None, ""])[1]:
            total += int(re.search(r"^totals: (\d+)", text, re.M).group(1))
    return {"method": row, "instructions_per_step": total / steps, "steps": steps}


def compare(before: Path, after: Path) -> None:
    a = {r["method"]: r for r in json.loads(before.read_text())["results"]}
    b = {r["method"]: r for r in json.loads(after.read_text())["results"]}
    print(f"| method | {before.name} Ir/step | {after.name} Ir/step | after / before |")
    print("|---|---|---|---|")
    for name in a:
        if name in b:
            x, y = a[name]["instructions_per_step"], b[name]["instructions_per_step"]
            print(f"| {name} | {x / 1e6:.1f} M | {y / 1e6:.1f} M | {y / x:.3f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn1d-w32")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    p.add_argument("--steps", type=int, default=5, help="counted steps (cycles for a cadence row)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", type=Path)
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--shim", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compare:
        compare(*args.compare)
        return 0
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shim = build_shim(folder)
        results = []
        for row in args.rows:
            results.append(count(row, args, shim, folder))
            print(f"  {row}: {results[-1]['instructions_per_step'] / 1e6:.1f} M instructions/step",
                  file=sys.stderr, flush=True)
    sgd = next((r["instructions_per_step"] for r in results if r["method"] == "sgd"), None)
    print(f"instructions per step: {args.model}, batch {args.batch}, 1 thread")
    print("| method | M instructions / step | x SGD |")
    print("|---|---|---|")
    for r in results:
        r["x_sgd"] = r["instructions_per_step"] / sgd if sgd else None
        x = f"{r['x_sgd']:.3f}" if r["x_sgd"] else "-"
        print(f"| {r['method']} | {r['instructions_per_step'] / 1e6:.1f} | {x} |")
    if args.out:
        import platform

        payload = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                              if k not in ("child", "row", "shim", "compare")},
                   "machine": {"platform": platform.platform(), "python": platform.python_version()},
                   "results": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
