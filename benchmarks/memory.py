"""Peak memory of a training step: SGD against the SAM family, in units of the model's size.

For people who fine-tune large models, memory decides whether SAM is usable. This measures, for
each row, how much memory the first steps need beyond the model and the batch (gradients, the
base optimizer's state, SAM's saved weights and perturbation, activations, the stacked copies of
vectorized shards), in units of ``P`` (the bytes of the model's parameters) and of plain SGD's
growth on the same model.

**How.** Every row runs in its own process (so one row's cached blocks never hide another's): the
model and a batch are built, then ``--steps`` training steps run under ``torch.profiler`` with
``profile_memory=True``. The profiler hooks the allocator itself: every allocation and free
inside the span is an event carrying the running total of bytes allocated since the span began,
so **the peak of that total is the step's allocation high-water mark** over the model and data,
exact to the byte and independent of the allocator's caching (on CUDA the same number comes from
``torch.cuda.max_memory_allocated``, which is reported beside it). The growth of the process's peak
resident set (``ru_maxrss``) is printed as well, as a second, coarser view: it includes the
allocator's cache and the profiler's own buffers.

Rows: SGD (momentum) and AdamW; SAM, ASAM, Friendly-SAM, GSAM, WSAM, GCSAM, unnormalised SAM,
multi-step SAM, Momentum-SAM, RWP, SAMPa (each on SGD with momentum); mSAM with 2/4/8 shards,
looped and vectorized; SAM every 2 steps and LookSAM; SAM with micro-batches.

    python benchmarks/memory.py                               # the CPU table, 3 MLP sizes
    python benchmarks/memory.py --sizes 25m --rows sgd sam msam-8-vectorized
    python benchmarks/memory.py --device cuda --out benchmarks/results/memory_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# size -> (input features, hidden width, hidden layers): MLPs whose weights dominate their memory
# (the regime where SAM's copies matter), and one convolution network where activations dominate.
SIZES: dict[str, tuple[int, int, int]] = {
    "1m": (784, 1024, 1),  # 0.8 M parameters
    "6m": (1024, 2048, 2),  # 6.3 M
    "25m": (1024, 4608, 2),  # 26 M (P = 100 MiB), the size of the measurement
}

# row -> (optimizer name, keywords): every SAM-family row on SGD with momentum
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("sgd", {}),
    "adamw": ("adamw", {}),
    "sam": ("sam", {}),
    "asam": ("asam", {}),
    "fsam": ("fsam", {}),
    "gsam": ("gsam", {}),
    "wsam": ("wsam", {}),
    "gcsam": ("gcsam", {}),
    "usam": ("usam", {}),
    "multistep_sam": ("multistep_sam", {}),
    "momentum_sam": ("momentum_sam", {}),
    "rwp": ("rwp", {}),
    "sampa": ("sampa", {}),
    "msam-2-loop": ("sam", {"shards": 2, "execution": "loop"}),
    "msam-4-loop": ("sam", {"shards": 4, "execution": "loop"}),
    "msam-8-loop": ("sam", {"shards": 8, "execution": "loop"}),
    "msam-2-vectorized": ("sam", {"shards": 2, "execution": "vectorized"}),
    "msam-4-vectorized": ("sam", {"shards": 4, "execution": "vectorized"}),
    "msam-8-vectorized": ("sam", {"shards": 8, "execution": "vectorized"}),
    "msam-8-vectorized unbounded": ("sam", {"shards": 8, "execution": "vectorized",
                                            "memory_budget": 2**40}),
    "msam-8-auto": ("sam", {"shards": 8}),
    "sam every 2": ("sam", {"cadence": "every:k=2"}),
    "looksam every 5": ("sam", {"cadence": "every:k=5,reuse=looksam"}),
    "sam micro-batch 8": ("sam", {"micro_batch_size": 8}),
}


def build(size: str, device: str, batch: int) -> tuple[Any, Any]:
    """The MLP of ``size`` and one batch of random inputs with labels of 10 classes."""
    import torch
    from torch import nn

    features, width, hidden = SIZES[size]
    layers: list[nn.Module] = [nn.Linear(features, width), nn.ReLU()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    torch.manual_seed(0)
    model = nn.Sequential(*layers).to(device)
    data = (torch.randn(batch, features, device=device), torch.randint(0, 10, (batch,), device=device))
    return model, data


def peak_of_events(events: list[dict[str, Any]]) -> int:
    """The high-water mark of bytes allocated over a profiled span, above what was allocated when it
    began, from its ``[memory]`` events. Each carries ``Total Allocated``, the profiler's running
    count after that allocation or free; the count does not restart with a second profiling span in
    the same process (it keeps what the last one allocated and freed only after it ended), so the
    span's own start is read from its first event: its total less its own bytes."""
    mem = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    if not mem:
        return 0
    start = int(mem[0]["args"]["Total Allocated"]) - int(mem[0]["args"]["Bytes"])
    return max(0, *(int(e["args"]["Total Allocated"]) - start for e in mem))


def measure(size: str, row: str, device: str, batch: int, steps: int) -> dict[str, Any]:
    """One row, in this process: growth over the model and the batch, in bytes and in units of P."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    import samkit
    from samkit.optim.registry import create_optimizer

    torch.set_num_threads(1)
    model, data = build(size, device, batch)
    name, options = ROWS[row]
    settings = {"lr": 0.01} if name == "adamw" else {"lr": 0.01, "momentum": 0.9}
    opt = create_optimizer(name, model.parameters(), base="sgd", **options, **settings)

    def loss_fn(m: Any, b: Any) -> Any:
        return F.cross_entropy(m(b[0]), b[1])

    def step() -> None:
        if isinstance(opt, samkit.SAM):
            opt.train_step(model, loss_fn, data)
        else:
            opt.zero_grad(set_to_none=True)
            loss_fn(model, data).backward()
            opt.step()

    params = sum(p.numel() * p.element_size() for p in model.parameters())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, profile_memory=True) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    kind = 1 if cuda else 0  # the profiler's device types: 0 the CPU, 1 CUDA
    growth = peak_of_events([e for e in events if e.get("args", {}).get("Device Type") == kind])
    result = {
        "size": size, "row": row, "params": params, "growth_bytes": growth,
        "growth_P": growth / params,
        "rss_growth_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before,
        "seconds_per_step_profiled": seconds,
    }
    if cuda:
        result["cuda_growth_bytes"] = torch.cuda.max_memory_allocated() - base
        result["growth_bytes"] = result["cuda_growth_bytes"]
        result["growth_P"] = result["cuda_growth_bytes"] / params
    if hasattr(opt, "execution_used"):
        chunk = opt.execution_chunk
        result["execution"] = opt.execution_used + (f" (chunks of {chunk})" if chunk else "")
    return result


def _child(args: argparse.Namespace) -> None:
    print(json.dumps(measure(args.child_size, args.child_row, args.device, args.batch, args.steps)))


def run_row(size: str, row: str, args: argparse.Namespace) -> dict[str, Any]:
    """One row in a fresh process (its error, if any, becomes the row's result)."""
    cmd = [sys.executable, __file__, "--child-size", size, "--child-row", row, "--device",
           args.device, "--batch", str(args.batch), "--steps", str(args.steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        return {"size": size, "row": row, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: per size, each row's growth in MiB, in units of P, and relative to SGD's growth."""
    out = []
    for size in dict.fromkeys(r["size"] for r in results):
        rows = [r for r in results if r["size"] == size]
        ok = [r for r in rows if "error" not in r]
        if not ok:
            continue
        params = ok[0]["params"]
        sgd = next((r["growth_bytes"] for r in ok if r["row"] == "sgd"), None)
        sam = next((r["growth_bytes"] for r in ok if r["row"] == "sam"), None)
        out += [f"\n### MLP {size}: P = {params / 2**20:.1f} MiB of float32 weights\n",
                "| row | growth MiB | in P | over SGD, in P | x SGD's growth | peak x SAM's peak "
                "| RSS growth MiB | execution |",
                "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                out.append(f"| {r['row']} | error: {' '.join(r['error'])} | | | | | | |")
                continue
            g = r["growth_bytes"]
            over = f"{(g - sgd) / params:+.2f}" if sgd is not None else "-"
            xs = f"{g / sgd:.2f}" if sgd else "-"
            xsam = f"{(params + g) / (params + sam):.2f}" if sam else "-"  # weights included
            out.append(f"| {r['row']} | {g / 2**20:.0f} | {g / params:.2f} | {over} | {xs} | {xsam} "
                       f"| {r['rss_growth_bytes'] / 2**20:.0f} | {r.get('execution') or '-'} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results and the machine here (JSON)")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--child-size", help=argparse.SUPPRESS)
    parser.add_argument("--child-row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_row:
        _child(args)
        return
    results = []
    for size in args.sizes:
        for row in args.rows:
            r = run_row(size, row, args)
            results.append(r)
            shown = r.get("error") or f"{r['growth_P']:.2f} P ({r['growth_bytes'] / 2**20:.0f} MiB)"
            print(f"{size:>4} {row:<20} {shown}", flush=True)
    import torch

    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
               "device": args.device, "batch": args.batch, "steps": args.steps, "threads": 1,
               "date": time.strftime("%Y-%m-%d")}
    text = table(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
