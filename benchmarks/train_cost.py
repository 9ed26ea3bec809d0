"""What ``samkit train`` itself pays per step, against what the math asks: ratios from the harness.

``step_time.py`` times the optimizer's step alone; a user's run pays that plus the harness (data
batches, the loss, logging, the progress bar) inside the timed span. This runs ``samkit train``
itself, one process per run, with ``--threads 1``, in interleaved rounds (every method once per
round, so background load hits them alike), and reads each run's ``train_time`` (the summed time of
its steps, evaluation excluded) from its summary. It prints, per workload, the medians and:

* SAM / SGD (target: at most 2.10);
* a cadence's run / its pass count relative to SGD (LookSAM every 10: 1.1x SGD's passes; target: at
  most 1.03);
* mSAM-8 with ``execution="auto"`` / SAM (target: at most 1.25).

With ``--callgrind`` it also counts each method's instructions per step (``step_instructions.py``,
load-independent) for the first workload.

    python benchmarks/train_cost.py                        # MNIST-1D cnn1d, 3 rounds
    python benchmarks/train_cost.py --workloads cnn1d cnn2d mlp --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# workload -> the samkit train flags of its data and model
WORKLOADS = {
    "cnn1d": ["--dataset", "mnist1d", "--model", "cnn1d", "--train-subset", "2000"],
    "cnn2d": ["--dataset", "digits", "--model", "cnn2d"],
    "mlp": ["--dataset", "mnist1d", "--model", "mlp", "--train-subset", "2000"],
}
# method -> its optimizer flags, and its forward-backward passes per step relative to SGD
METHODS = {
    "sgd": (["--optimizer", "sgd"], 1.0),
    "sam": (["--optimizer", "sam"], 2.0),
    "looksam-10": (["--optimizer", "sam", "--cadence", "every:k=10,reuse=looksam"], 1.1),
    "msam-8": (["--optimizer", "sam", "--shards", "8", "--execution", "auto"], 2.0),
}


def run(workload: str, method: str, epochs: int, folder: Path) -> float:
    """One ``samkit train`` run; its summed step time (seconds)."""
    out = folder / f"{workload}-{method}"
    cmd = [sys.executable, "-m", "samkit", "train", *WORKLOADS[workload], *METHODS[method][0],
           "--epochs", str(epochs), "--threads", "1", "--quiet", "--overwrite", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return float(summary["train_time"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["cnn1d"], choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the medians and ratios here")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            times: dict[str, list[float]] = {m: [] for m in METHODS}
            for _ in range(args.rounds):
                for method in METHODS:  # interleaved: every method once per round
                    times[method].append(run(workload, method, args.epochs, Path(tmp)))
            med = {m: statistics.median(t) for m, t in times.items()}
            ratios = {
                "sam/sgd": med["sam"] / med["sgd"],
                "looksam-10/(1.1 sgd)": med["looksam-10"] / (METHODS["looksam-10"][1] * med["sgd"]),
                "msam-8/sam": med["msam-8"] / med["sam"],
            }
            report[workload] = {"median_train_time": med, "ratios": ratios}
            print(f"\n{workload}: median train_time over {args.rounds} rounds, {args.epochs} epochs")
            for m, t in med.items():
                print(f"  {m:<12} {t:8.3f} s")
            targets = {"sam/sgd": 2.10, "looksam-10/(1.1 sgd)": 1.03, "msam-8/sam": 1.25}
            for name, r in ratios.items():
                verdict = "ok" if r <= targets[name] else "over"
                print(f"  {name:<22} {r:6.3f}   (target <= {targets[name]:.2f}: {verdict})")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f} (1 min)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
