"""Step time of SGD vs the SAM family (samkit and, when installed, pytorch-optimizer), one run.

Rows: SGD; SAM, ASAM, F-SAM; mSAM with 2/4/8 shards (loop and vectorized); every other rule of the
registry (GSAM, WSAM, GCSAM, USAM, multi-step SAM, Momentum-SAM); SAM with micro-batches and with
gradient clipping; pytorch-optimizer's SAM and FriendlySAM.

Every number that matters is a ratio between rows of the same run on the same machine: time per
step relative to plain SGD, and relative to the fastest external SAM. Also reports peak memory
(CUDA: ``max_memory_allocated`` over the row's own baseline; CPU: growth of the peak resident set size,
only indicative because the CPU allocator caches and reuses memory across rows).

    python benchmarks/step_time.py --model cnn-small --batch 128 --device cpu
    python benchmarks/step_time.py --model resnet18 --batch 128 --device cuda --compile \
        --precision bf16 --out benchmarks/results/step_time_h100.json
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import samkit  # noqa: E402
from samkit._atomic import write_json  # noqa: E402


class SmallCNN(nn.Module):
    """A CIFAR-shaped CNN small enough for a 2-core CPU (conv-BN-ReLU x3, pooling, linear)."""

    def __init__(self, classes: int = 10, width: int = 32) -> None:
        super().__init__()
        layers, c = [], 3
        for w in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


# The models samkit's own studies train (samkit/study/compare.py, suite.py), at their input shapes,
# beside the CIFAR-shaped ones: name -> (registry model, its options, input shape per example).
WORKLOADS: dict[str, tuple[str, dict, tuple[int, ...]]] = {
    "cnn1d-w32": ("cnn1d", {"width": 32}, (1, 40)),  # MNIST-1D, the main and noisy jobs
    "cnn1d-w32-group": ("cnn1d", {"width": 32, "norm": "group"}, (1, 40)),  # the m-sharpness job
    "cnn1d-w64": ("cnn1d", {"width": 64}, (1, 40)),
    "cnn2d-digits": ("cnn2d", {"width": 32}, (1, 8, 8)),  # scikit-learn's digits
    "mlp-mnist1d": ("mlp", {}, (40,)),
}


def input_shape(name: str) -> tuple[int, ...]:
    """One example's shape for a model name (CIFAR's 3x32x32 unless it is a study workload)."""
    return WORKLOADS[name][2] if name in WORKLOADS else (3, 32, 32)


def build_model(name: str) -> nn.Module:
    if name == "cnn-small":
        return SmallCNN()
    if name == "cnn-tiny":  # the CPU check of benchmarks/gpu_suite.py: seconds for every row
        return SmallCNN(width=4)
    from samkit.models import build_model as registry

    if name in WORKLOADS:
        model, options, shape = WORKLOADS[name]
        return registry(model, num_classes=10, input_shape=shape, **options)
    return registry({"resnet18-cifar": "resnet18", "wrn-16-8": "wrn16_8"}.get(name, name),
                    num_classes=10, input_shape=(3, 32, 32))


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def samkit_step(opt, model, loss_fn, compile_kwargs):
    """The row's step: ``opt.train_step``, or ``samkit.compile_step`` when ``compile_kwargs`` is given."""
    if compile_kwargs is not None:
        return samkit.compile_step(opt, model, loss_fn, **compile_kwargs)
    return lambda batch: opt.train_step(model, loss_fn, batch)


def methods(args) -> dict[str, Callable[[nn.Module], Callable]]:
    """name -> factory(model, loss_fn) -> step(batch)."""
    kw = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
    sgd = torch.optim.SGD

    def plain(model, loss_fn):
        opt = sgd(model.parameters(), **kw)

        def step(batch):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            loss.backward()
            opt.step()
            return loss

        return step

    def ours(cls=samkit.SAM, groups=None, **extra):
        def make(model, loss_fn, compile_kwargs=None):
            # a fresh copy of the settings: a cadence drives one optimizer
            params = model.parameters() if groups is None else groups(model)
            opt = cls(params, sgd, rho=0.05, nonfinite="unchecked", **kw, **copy.deepcopy(extra))
            return samkit_step(opt, model, loss_fn, compile_kwargs)

        make.compiles_step = True
        return make

    table: dict[str, Callable] = {
        "sgd": plain,
        "sam": ours(),
        "asam": ours(adaptive=True),
        "fsam": ours(samkit.FriendlySAM, sigma=1.0, lmbda=0.9),
    }
    for k in args.shards:
        for ex in ("loop", "vectorized"):
            table[f"msam-{k}-{ex}"] = ours(shards=k, execution=ex)

    def named(name, **extra):
        def make(model, loss_fn, compile_kwargs=None):
            opt = samkit.create_optimizer(name, model.parameters(), base="sgd", rho=0.05,
                                          nonfinite="unchecked", **kw, **extra)
            return samkit_step(opt, model, loss_fn, compile_kwargs)

        make.compiles_step = True
        return make

    # every other rule of the registry (multistep_sam: 2 ascent steps, 3 passes)
    for name in ("gsam", "wsam", "gcsam", "usam", "multistep_sam", "momentum_sam"):
        table[name] = named(name)
    table["sam micro-batch 32"] = ours(micro_batch_size=32)
    table["sam max_grad_norm"] = ours(max_grad_norm=1.0)
    # cadences: timed over whole cycles (CYCLES), so a row is the amortised time per step
    from samkit import cadence

    for k in (2, 4):
        table[f"every-{k}"] = ours(cadence=cadence.Every(k))
    table["every-4 looksam"] = ours(cadence=cadence.Every(4, reuse="looksam"))
    table["random p=0.25"] = ours(cadence=cadence.RandomSwitch(0.25))
    table["sam ascent_fraction 0.5"] = ours(cadence=cadence.Always(ascent_fraction=0.5))
    table["drift k=4"] = ours(cadence=cadence.Drift(4))
    # perturbation scopes: the ascent asks autograd only for the perturbed parameters
    table["sam-on (norm layers)"] = ours(groups=samkit.scope.norm_layers)
    table["sam last layer"] = ours(groups=samkit.scope.last_layer)
    # rules with two independent descent points: one after another, or one batched pass
    table["sampa loop"] = ours(rule=samkit.rules.SAMPa(), execution="loop")
    table["sampa batched"] = ours(rule=samkit.rules.SAMPa(), execution="vectorized")
    table["rwp"] = ours(rule=samkit.rules.RWP(noise=0.01))
    table["m-rwp loop"] = ours(rule=samkit.rules.RWP(noise=0.01, mix=0.5), execution="loop")
    table["m-rwp batched"] = ours(rule=samkit.rules.RWP(noise=0.01, mix=0.5), execution="vectorized")

    def penalised(model, loss_fn):  # SGD with Baek et al.'s L2 penalties: the 1x control
        from samkit.train import TrainConfig
        from samkit.train.setup import training_loss

        penalty = training_loss(TrainConfig(head_penalty=1e-3, feature_penalty=1e-3))
        return plain(model, penalty)

    table["sgd + head/feature penalty"] = penalised
    try:
        import pytorch_optimizer as po
    except ImportError:
        po = None
    if po is not None:
        def external(cls, **extra):
            def make(model, loss_fn):
                opt = cls(model.parameters(), sgd, rho=0.05, **kw, **extra)

                def step(batch):
                    loss = loss_fn(model, batch)
                    loss.backward()
                    opt.first_step(zero_grad=True)
                    loss_fn(model, batch).backward()
                    opt.second_step(zero_grad=True)
                    return loss

                return step

            return make

        table["ext-sam (pytorch-optimizer)"] = external(po.SAM)
        table["ext-fsam (pytorch-optimizer)"] = external(po.FriendlySAM, sigma=1.0, lmbda=0.9)
    return table


# Steps per timed unit: a cadence row is timed over whole cycles (the expected passes per unit are
# the same every round), and reported per step.
CYCLES = {"every-2": 2, "every-4": 4, "every-4 looksam": 4, "random p=0.25": 8}


def base_name(name: str) -> str:
    """The method a row times: its name without a " [compiled]" / " [graphed]" suffix."""
    return re.sub(r" \[[a-z]+\]$", "", name)


def ascent_free_positions(name: str, cycle: int) -> list[int]:
    """Steps of a cycle that make no ascent: an ``every-k`` row ascends on steps ``0 mod k`` only
    (``cadence.Every.ascends``), and its cycles start at multiples of ``k`` (warm-up runs whole cycles)."""
    m = re.match(r"every-(\d+)\b", base_name(name))
    return [j for j in range(cycle) if j % int(m.group(1))] if m and cycle > 1 else []


class TimeUp(BaseException):
    """SIGTERM under ``--time-limit``: stop, and write what was measured (not an Exception, so that
    ``--keep-going`` does not take it for a failing row)."""


def allocated_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return rss_mib("VmRSS")


def rss_mib(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: writing 5 resets the peak resident set size (VmHWM) of this process
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return rss_mib("VmHWM")


class Row:
    """One method: its own model, optimizer and batch; timed one step at a time."""

    def __init__(self, name, factory, args, device, compiled: bool, compile_kwargs=None) -> None:
        self.name, self.device, self.times = name, device, []
        self.cycle = CYCLES.get(base_name(name), 1)
        self.positions = [] if getattr(args, "step_positions", False) else None  # per-step times
        # CUDA graphs (mode="reduce-overhead"): each training step is a new graph-tree generation
        self.graphed = (compile_kwargs or {}).get("mode") == "reduce-overhead"
        torch.manual_seed(0)
        base = allocated_mib(device)
        peak_reset(device)
        model = build_model(args.model).to(device)
        if args.channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        x = torch.randn(args.batch, *input_shape(args.model), device=device)
        y = torch.randint(0, 10, (args.batch,), device=device)
        self.batch = (x, y)
        compile_kwargs = compile_kwargs or {}
        if compiled and getattr(args, "compile_step", False) and getattr(factory, "compiles_step", False):
            self.loss = loss_fn  # samkit.compile_step compiles the passes and the perturbation math
            self.step_fn = factory(model, loss_fn, compile_kwargs=compile_kwargs)
        else:
            self.loss = torch.compile(loss_fn, **compile_kwargs) if compiled else loss_fn
            self.step_fn = factory(model, self.loss)
        self.dtype = torch.bfloat16 if args.precision == "bf16" else None
        for _ in range(args.warmup):
            self.step(record=False)
        self.peak_mib = peak_mib(device) - base  # model, optimizer state, activations of this row

    def step(self, record: bool = True) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ticks = [t0]
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            for _ in range(self.cycle):
                if self.graphed:
                    torch.compiler.cudagraph_mark_step_begin()
                self.step_fn(self.batch)
                if self.positions is not None:
                    if cuda:
                        torch.cuda.synchronize()
                    ticks.append(time.perf_counter())
        if cuda:
            torch.cuda.synchronize()
        if record:
            self.times.append((time.perf_counter() - t0) / self.cycle)
            if self.positions is not None:
                self.positions.append([b - a for a, b in zip(ticks, ticks[1:])])


def time_rows(rows, args, device, t_start):
    """Build and time ``rows`` in interleaved rounds -> (built rows, skipped, failed, cut_short).

    Under ``--keep-going`` a row that raises is reported and left out; under ``--time-limit`` no row
    is built after 60% of the limit, the rounds stop before it, and SIGTERM ends both (``TimeUp``).
    """
    built, skipped, failed, cut_short = [], [], [], None

    def fail(name, stage, err):
        if not args.keep_going:
            raise err
        failed.append({"method": name, "stage": stage, "error": f"{type(err).__name__}: {err}"[:800]})
        print(f"  FAILED {name} ({stage}): {failed[-1]['error']}", file=sys.stderr, flush=True)

    try:
        for i, (name, factory, compiled, compile_kwargs) in enumerate(rows):
            if args.time_limit is not None and time.perf_counter() - t_start > 0.6 * args.time_limit:
                cut_short = f"time limit: {len(rows) - i} rows not built"
                skipped += [{"method": r[0], "reason": "time limit: not built"} for r in rows[i:]]
                break
            try:
                built.append(Row(name, factory, args, device, compiled, compile_kwargs))
            except Exception as err:
                fail(name, "build", err)
                continue
            print(f"  built {name} (peak {built[-1].peak_mib:.0f} MiB)", file=sys.stderr, flush=True)
        # Rounds over all rows, so that background load and clock changes hit every row alike.
        for done in range(args.steps):
            t_round = time.perf_counter()
            for row in list(built):
                try:
                    row.step()
                except Exception as err:
                    built.remove(row)
                    fail(row.name, "step", err)
            now = time.perf_counter()
            if args.time_limit is not None and done + 1 < args.steps and \
                    now + (now - t_round) - t_start > args.time_limit:
                cut_short = f"time limit: {done + 1} of {args.steps} rounds"
                break
    except TimeUp:
        cut_short = "terminated (SIGTERM): wrote what was measured"
        seen = {b.name for b in built} | {f["method"] for f in failed} | {s["method"] for s in skipped}
        skipped += [{"method": r[0], "reason": "terminated before it was built"}
                    for r in rows if r[0] not in seen]
    return built, skipped, failed, cut_short


def machine(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "samkit": samkit.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import pytorch_optimizer

        info["pytorch_optimizer"] = getattr(pytorch_optimizer, "__version__", "installed")
    except ImportError:
        info["pytorch_optimizer"] = None
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn-small",
                   help="cnn-small | cnn-tiny | resnet18-cifar | wrn-16-8 | a study workload ("
                        + " | ".join(WORKLOADS) + ") | any samkit model")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--shards", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--steps", type=int, default=20,
                   help="rounds; each round times one step of every row (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time compiled SGD / SAM / mSAM rows")
    p.add_argument("--only", nargs="*", help="only rows whose name starts with one of these")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--out", type=Path, help="write JSON results here")
    # for benchmarks/gpu_suite.py (one unattended run that must come back whatever fails):
    p.add_argument("--rows", nargs="+", metavar="NAME",
                   help="only these rows, by exact name (a name that is no row is reported as skipped)")
    p.add_argument("--compile-rows", nargs="+", metavar="NAME",
                   help="rows that get [compiled] / [graphed] copies (default: sgd, sam, the largest "
                        "vectorized mSAM)")
    p.add_argument("--graphed", action="store_true",
                   help='also time those rows compiled with mode="reduce-overhead" (CUDA graphs; CUDA only)')
    p.add_argument("--compile-step", action="store_true",
                   help="compiled samkit rows use samkit.compile_step (passes and perturbation compiled), "
                        "not only a compiled loss_fn")
    p.add_argument("--compile-backend", help='torch.compile backend of [compiled] rows ("eager": a quick '
                                             "check of the plumbing)")
    p.add_argument("--step-positions", action="store_true",
                   help="time each step of a cycle (synchronised): every-k rows report their steps "
                        "without an ascent")
    p.add_argument("--keep-going", action="store_true",
                   help="a row that fails is reported with its error; the other rows go on")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="build no more rows after 60%% of it, stop the rounds before it is over; on "
                        "SIGTERM write what was measured")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    t_start = time.perf_counter()
    previous_handler = None
    if args.time_limit is not None:
        def time_up(signum, frame):
            raise TimeUp

        previous_handler = signal.signal(signal.SIGTERM, time_up)

    table = methods(args)
    rows = [(name, f, False, None) for name, f in table.items()]
    compile_rows = args.compile_rows or ("sgd", "sam", f"msam-{max(args.shards)}-vectorized")
    if args.compile:
        kw = {"backend": args.compile_backend} if args.compile_backend else {}
        rows += [(f"{name} [compiled]", table[name], True, kw) for name in compile_rows if name in table]
    if args.graphed:
        rows += [(f"{name} [graphed]", table[name], True, {"mode": "reduce-overhead"})
                 for name in compile_rows if name in table]
    if args.only:
        rows = [r for r in rows if any(r[0].startswith(o) for o in args.only)]
    skipped = []
    if args.rows:
        known = {r[0] for r in rows}
        skipped += [{"method": n, "reason": "no such row here"} for n in args.rows if n not in known]
        rows = [r for r in rows if r[0] in args.rows]
    requested = [r[0] for r in rows] + [s["method"] for s in skipped]
    built, more_skipped, failed, cut_short = time_rows(rows, args, device, t_start)
    skipped += more_skipped
    if args.time_limit is not None:  # measured: from here on a SIGTERM must not cost the results
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    untimed = [r for r in built if not r.times]
    skipped += [{"method": r.name, "reason": "no timed round"} for r in untimed]
    built = [r for r in built if r.times]
    results = [{"method": r.name, "median_ms": statistics.median(r.times) * 1e3,
                "peak_mib": r.peak_mib, "times_ms": [t * 1e3 for t in r.times]} for r in built]
    for r, row in zip(results, built):
        free = ascent_free_positions(row.name, row.cycle)
        if row.positions and free:  # the steps of each cycle without an ascent, all rounds pooled
            r["non_ascent_ms"] = statistics.median(t[j] for t in row.positions for j in free) * 1e3

    by = {r["method"]: r for r in results}
    sgd = by.get("sgd", {}).get("median_ms")
    ext = [r["median_ms"] for r in results if r["method"].startswith("ext-sam")]
    ext_best = min(ext) if ext else None
    sam = by.get("sam", {}).get("median_ms")
    for r in results:
        r["x_sgd"] = r["median_ms"] / sgd if sgd else None
        k = {"every-2": 2, "every-4": 4}.get(r["method"])
        # target: an interval cadence costs (k + 1) / k SGD steps (1 ascent per k steps)
        r["x_expected"] = r["x_sgd"] / ((k + 1) / k) if k and sgd else None
        r["x_ext_sam"] = r["median_ms"] / ext_best if ext_best else None
        r["x_sam"] = r["median_ms"] / sam if sam else None
        if "non_ascent_ms" in r:
            r["x_sgd_non_ascent"] = r["non_ascent_ms"] / sgd if sgd else None

    title = (f"step time: {args.model}, batch {args.batch}, {args.precision}, {device} "
             f"({machine(device).get('gpu', machine(device)['cpu'])}, {torch.get_num_threads()} threads)")
    print(title)
    print(f"| {'method':34s} | median ms | x SGD | x SAM | x ext SAM | x (k+1)/k SGD | peak MiB |")
    print(f"|{'-' * 36}|-----------|-------|-------|-----------|---------------|----------|")

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    for r in results:
        print(f"| {r['method']:34s} | {r['median_ms']:9.2f} | {f(r['x_sgd'], '5.2f')} | "
              f"{f(r['x_sam'], '5.2f')} | {f(r['x_ext_sam'], '9.2f')} | {f(r['x_expected'], '13.2f')} | "
              f"{f(r['peak_mib'], '8.0f')} |")
    for r in skipped:
        print(f"skipped {r['method']}: {r['reason']}")
    for r in failed:
        print(f"FAILED {r['method']} ({r['stage']}): {r['error']}")
    if cut_short:
        print(f"cut short: {cut_short}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "machine": machine(device), "results": results, "rows_requested": requested,
                   "skipped": skipped, "failed": failed, "cut_short": cut_short,
                   "rounds": min((len(r.times) for r in built), default=0)}
        write_json(args.out, payload, indent=1)
    if previous_handler is not None:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
