"""What ``samkit train`` adds to each step beyond the optimizer's ``train_step``, measured inside one run.

``train_cost.py`` compares whole runs, whose totals move by 10-20% between rounds on a shared
2-core machine (one-time costs, the other core's load); that is too coarse to see a harness cost of
a few percent. This instruments one ``samkit train`` run per optimizer: each step's time in the
training loop (``_Run._step``: the batch, the step, the bookkeeping, the logging) and, inside it,
the time of ``train_step`` itself. Their difference is what the harness pays per step; the sum of
the loop's steps is checked against the run's own ``train_time``.

    python benchmarks/harness_overhead.py                      # SGD, SAM, LookSAM-10, mSAM-8 on cnn1d
    python benchmarks/harness_overhead.py --workload cnn2d --optimizers sgd sam
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_cost import METHODS, WORKLOADS  # noqa: E402


def _child(workload: str, method: str, epochs: int, out: Path) -> None:
    """Inside the child: one instrumented run; prints its numbers as JSON."""
    import samkit.train.loop as loop
    from samkit.cli.app import main

    inner: list[float] = []
    outer: list[float] = []
    step_fn, loop_step = loop.train_step, loop._Run._step

    def timed_step(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return step_fn(*args, **kwargs)
        finally:
            inner.append(time.perf_counter() - t0)

    def timed_loop_step(self):
        t0 = time.perf_counter()
        try:
            return loop_step(self)
        finally:
            outer.append(time.perf_counter() - t0)

    loop.train_step, loop._Run._step = timed_step, timed_loop_step
    main(["train", *WORKLOADS[workload], *METHODS[method][0], "--epochs", str(epochs), "--threads", "1",
          "--quiet", "--overwrite", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    extra = [o - i for o, i in zip(outer, inner, strict=True)]
    print(json.dumps({
        "train_time": summary["train_time"], "loop_steps": sum(outer), "train_steps": sum(inner),
        "median_step_ms": 1e3 * statistics.median(inner),
        "median_overhead_ms": 1e3 * statistics.median(extra),
        "overhead_share": sum(extra) / sum(outer),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="cnn1d", choices=list(WORKLOADS))
    parser.add_argument("--optimizers", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.epochs, args.out)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    print(f"{args.workload}, {args.epochs} epochs, one thread; per step: train_step's median, the "
          "harness's median on top, the harness's share of the loop's time")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.optimizers:
            cmd = [sys.executable, __file__, "--child", args.workload, method, "--epochs", str(args.epochs),
                   "--out", str(Path(tmp) / method)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode != 0:
                raise SystemExit(f"{method} failed:\n{done.stderr[-2000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            agree = abs(r["loop_steps"] / r["train_time"] - 1)
            print(f"  {method:<12} step {r['median_step_ms']:6.2f} ms  "
                  f"harness +{r['median_overhead_ms']:5.3f} ms  share {100 * r['overhead_share']:4.1f}%  "
                  f"(loop steps = train_time to {100 * agree:.1f}%)")


if __name__ == "__main__":
    main()
