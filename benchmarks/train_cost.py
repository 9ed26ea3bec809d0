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

Beside the harness it times **the same steps alone** (``--steps-alone``, on by default): one child
process builds every method exactly as ``samkit train`` does (its flags -> the run config -> the
data, the model and the optimizer of ``samkit.train.setup``) and times ``train_step`` on the run's
own batches in interleaved rounds of 10 steps (one cycle of the cadence), median per method, as
``step_time.py`` does. The two views' ratios should agree (within 5%); where they do not, the
harness pays for something the step does not. With ``--callgrind`` it also counts each method's
instructions per step (``step_instructions.py``, load-independent) on the first workload.

    python benchmarks/train_cost.py                        # cnn1d, cnn2d and the MLP, 3 rounds
    python benchmarks/train_cost.py --workloads cnn1d --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
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


BLOCK = 10  # steps timed together in the steps-alone view: one cycle of every-10
TARGETS = {"sam/sgd": 2.10, "looksam-10/(1.1 sgd)": 1.03, "msam-8/sam": 1.25}
# step_instructions.py's rows for the same methods (its cadence row is every 4: the count per step
# of a cycle, not a harness number)
CALLGRIND_ROWS = ["sgd", "sam", "msam-8-loop", "msam-8-vectorized", "every-4 looksam"]


def ratios(med: dict[str, float]) -> dict[str, float]:
    return {
        "sam/sgd": med["sam"] / med["sgd"],
        "looksam-10/(1.1 sgd)": med["looksam-10"] / (METHODS["looksam-10"][1] * med["sgd"]),
        "msam-8/sam": med["msam-8"] / med["sam"],
    }


def steps_alone(workload: str, rounds: int, warmup: int, profile: Path | None) -> dict[str, float]:
    """Median seconds of one ``train_step`` per method, built as ``samkit train`` builds it (in a
    child process with one thread)."""
    cmd = [sys.executable, __file__, "--child", workload, "--step-rounds", str(rounds),
           "--warmup", str(warmup)]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        cmd += ["--profile", str(profile / f"profile_{workload}.md")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"timing the steps alone failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(workload: str, rounds: int, warmup: int, profile: Path | None = None) -> None:
    """Inside the child: every method's data, model and optimizer from its ``samkit train`` flags,
    then interleaved rounds of one step each, on the run's batch order (seed 0). With ``profile``:
    after the rounds, torch's profiler over one block of each method, the operators that cost the
    most, written there (where a ratio misses its target, this says which kernels pay)."""
    import torch

    from samkit.cli.app import build_parser
    from samkit.cli.flags import config_from_args
    from samkit.train.setup import build_model, build_optimizer, load_data, train_step, training_loss

    torch.set_num_threads(1)
    parser = build_parser()
    built = {}
    for method, (flags, _) in METHODS.items():
        args = parser.parse_args(["train", *WORKLOADS[workload], *flags, "--threads", "1"])
        cfg = config_from_args(args)
        torch.manual_seed(cfg.seed)
        device = torch.device("cpu")
        ds = load_data(cfg, device)
        model = build_model(cfg, ds, device)
        opt = build_optimizer(cfg, model, cfg.epochs * (len(ds.train) // cfg.batch_size))
        order = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(cfg.seed))
        steps = len(ds.train) // cfg.batch_size
        batches = [ds.train.batch(order[i * cfg.batch_size:(i + 1) * cfg.batch_size])
                   for i in range(steps)]
        built[method] = (model, opt, training_loss(cfg), batches)
    times: dict[str, list[float]] = {m: [] for m in built}
    for r in range(warmup + rounds):
        for method, (model, opt, loss_fn, batches) in built.items():
            model.train()
            t0 = time.perf_counter()
            for i in range(BLOCK):  # a whole cadence cycle per round (LookSAM ascends 1 step in 10)
                train_step(opt, model, loss_fn, batches[(r * BLOCK + i) % len(batches)])
            if r >= warmup:
                times[method].append((time.perf_counter() - t0) / BLOCK)
    if profile is not None:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        parts = [f"# Operators per step, {workload} (torch.profiler, one thread, {BLOCK} steps each)\n"]
        for method, (model, opt, loss_fn, batches) in built.items():
            with profiler(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                for i in range(BLOCK):
                    train_step(opt, model, loss_fn, batches[i % len(batches)])
                wall = (time.perf_counter() - t0) / BLOCK
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            self_ms = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3 / BLOCK
            parts.append(f"\n## {method}: {wall * 1e3:.2f} ms per step under the profiler, "
                         f"{self_ms:.2f} ms of it inside operators (the rest: Python)\n\n```\n{table}```\n")
        profile.write_text("".join(parts))
    print(json.dumps({m: statistics.median(t) for m, t in times.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3, help="harness rounds (every method once each)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--no-steps-alone", dest="steps_alone", action="store_false",
                        help="skip timing the same steps alone")
    parser.add_argument("--step-rounds", type=int, default=15, help="rounds of the steps alone")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds (of 10 steps) of the steps alone")
    parser.add_argument("--callgrind", action="store_true",
                        help="also count instructions per step (valgrind) on the first workload")
    parser.add_argument("--json", type=Path, help="write the medians, ratios and machine here")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="also write each workload's operator profile (markdown) into DIR")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.step_rounds, args.warmup, args.profile)
        return
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    report: dict = {"machine": {"platform": platform.platform(), "cpu": platform.processor() or
                                platform.machine(), "cpu_count": os.cpu_count(), "threads": 1,
                                "python": platform.python_version(),
                                "date": time.strftime("%Y-%m-%d"),
                                "load_at_start": os.getloadavg()[0]},
                    "rounds": args.rounds, "epochs": args.epochs, "workloads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            times: dict[str, list[float]] = {m: [] for m in METHODS}
            for _ in range(args.rounds):
                for method in METHODS:  # interleaved: every method once per round
                    times[method].append(run(workload, method, args.epochs, Path(tmp)))
            med = {m: statistics.median(t) for m, t in times.items()}
            entry = {"median_train_time": med, "ratios": ratios(med), "runs": times}
            print(f"\n{workload}: median train_time over {args.rounds} rounds, {args.epochs} epochs")
            for m, t in med.items():
                print(f"  {m:<12} {t:8.3f} s")
            alone = None
            if args.steps_alone:
                alone = steps_alone(workload, args.step_rounds, args.warmup, args.profile)
                entry["median_step_alone"] = alone
                entry["ratios_steps_alone"] = ratios(alone)
            print(f"  {'ratio':<22} {'harness':>8} {'alone':>8} {'differ':>7}   target")
            for name, r in entry["ratios"].items():
                verdict = "ok" if r <= TARGETS[name] else "over"
                if alone is not None:
                    a = entry["ratios_steps_alone"][name]
                    extra = f"{a:8.3f} {100 * (r / a - 1):+6.1f}%"
                else:
                    extra = f"{'-':>8} {'-':>7}"
                print(f"  {name:<22} {r:8.3f} {extra}   <= {TARGETS[name]:.2f}: {verdict}")
            report["workloads"][workload] = entry
    if args.callgrind:
        from shutil import which

        if which("valgrind") is None:
            print("\n--callgrind: valgrind is not installed; no instruction counts")
        else:
            model = {"cnn1d": "cnn1d-w32", "cnn2d": "cnn2d-digits", "mlp": "mlp-mnist1d"}[args.workloads[0]]
            out = Path(tempfile.mkdtemp()) / "instructions.json"
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_instructions.py"),
                            "--model", model, "--batch", "128", "--rows", *CALLGRIND_ROWS,
                            "--out", str(out)], check=True, cwd=ROOT)
            report["instructions"] = json.loads(out.read_text())
    report["machine"]["load_at_end"] = os.getloadavg()[0]
    print(f"\nload average at end: {os.getloadavg()[0]:.2f} (1 min)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
