"""Time samkit.measure against a plain PyHessian-style baseline on a CIFAR ResNet-18.

Both compute the top Hessian eigenvalue and the trace of the cross-entropy loss of the same model
on the same random batch, in the same process:

* baseline (written here, as PyHessian does it in its data-loader mode): power iteration stopped
  when the eigenvalue changes by < 1e-3 relative, and Hutchinson with Rademacher vectors; every
  Hessian-vector product recomputes forward + first-order graph + double backward
  (``autograd.grad`` only). PyHessian's single-batch mode keeps the first-order graph instead, as
  samkit does, so against it only the eigensolver's gain (fewer products) remains.
* samkit: ``hessian_eigenvalues`` (Lanczos, full reorthogonalization, residual criterion
  ``||Hv - lambda v|| <= 1e-3 |lambda|``, largest magnitude like power iteration) and
  ``hessian_trace`` (Hutchinson and Hutch++ with the same number of matvecs) on a
  ``HessianOperator`` that builds the first-order graph once.

Agreement is reported as relative differences plus the true residual ||Hv - lambda v|| of each
eigenvector, and each trace estimate with its standard error. Usage::

    python benchmarks/hessian_time.py --quick            # 2-core CPU, a couple of minutes
    python benchmarks/hessian_time.py --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samkit._atomic import write_json
from samkit.measure import HessianOperator, hessian_eigenvalues, hessian_trace


# ----------------------------------------------------------------------------------- the model
class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18 (3x3 stem, no max-pool); ``width`` 64 is the standard model."""

    def __init__(self, num_classes: int = 10, width: int = 64):
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()
        )
        chans, layers, cin = [w, 2 * w, 4 * w, 8 * w], [], w
        for i, c in enumerate(chans):
            layers += [_Block(cin, c, 1 if i == 0 else 2), _Block(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build(width: int) -> tuple[nn.Module, str]:
    if width == 64:
        try:
            from samkit.models import build_model

            return build_model(
                "resnet18", num_classes=10, input_shape=(3, 32, 32)
            ), "samkit.models resnet18"
        except (ImportError, AttributeError, KeyError, ValueError):
            pass
    return ResNet18(width=width), f"local CIFAR ResNet-18 (width {width})"


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


# ------------------------------------------------------------------------------- the baseline
def _baseline_hvp(model, params, batch, v, loss=None):
    # PyHessian-style, without .backward: the whole graph is rebuilt for every product.
    grads = torch.autograd.grad((loss or ce)(model, batch), params, create_graph=True)
    return torch.autograd.grad(grads, params, grad_outputs=v)


def _dot(a, b):
    return sum(float((x * y).sum()) for x, y in zip(a, b))


def baseline_top_eigenvalue(model, params, batch, gen, tol=1e-3, max_iter=100, loss=None):
    v = [torch.randn(p.shape, generator=gen).to(p.device) for p in params]
    norm = math.sqrt(_dot(v, v))
    v = [t / norm for t in v]
    lam, iters = None, 0
    for _ in range(max_iter):
        hv = _baseline_hvp(model, params, batch, v, loss)
        iters += 1
        new = _dot(hv, v)
        norm = math.sqrt(_dot(hv, hv))
        v = [t / norm for t in hv]
        if lam is not None and abs(new - lam) / (abs(lam) + 1e-6) < tol:
            lam = new
            break
        lam = new
    return lam, v, iters


def baseline_trace(model, params, batch, gen, num_samples, loss=None):
    samples = []
    for _ in range(num_samples):
        z = [
            (torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.device, p.dtype)
            for p in params
        ]
        samples.append(_dot(_baseline_hvp(model, params, batch, z, loss), z))
    return float(np.mean(samples)), float(np.std(samples, ddof=1) / math.sqrt(len(samples)))


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


# ------------------------------------------------------------- equal accuracy on a trained model
def trained_scenario(args) -> dict:
    """Trace at *equal accuracy* on a trained network (MNIST-1D CNN, SGD, 20 epochs).

    A trained network's Hessian has a few outlier eigenvalues, where Hutch++ (which takes the top
    of the spectrum exactly from a sketch) needs far fewer products than Hutchinson for the same
    standard error. The baseline runs Hutchinson with ``--trained-samples`` products; samkit runs
    Hutch++ with the smallest budget (from 30, in steps of 15) whose standard error is at most the
    baseline's, and the times are compared. The top eigenvalue is compared too.
    """
    import tempfile

    from samkit.train import TrainConfig, load_run, train

    with tempfile.TemporaryDirectory() as tmp:
        train(TrainConfig(optimizer="sgd", epochs=20, seed=0), Path(tmp) / "run", quiet=True)
        run = load_run(Path(tmp) / "run")
    model = run.model.eval()
    batch = run.batches("train", batch_size=1000, max_examples=1000)[0]
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(0)

    loss = run.loss_fn
    (b_lam, _, b_iters), t_b_eig = timed(
        lambda: baseline_top_eigenvalue(model, params, batch, gen, loss=loss)
    )
    (b_tr, b_se), t_b_tr = timed(
        lambda: baseline_trace(model, params, batch, gen, args.trained_samples, loss=loss)
    )
    ours, t_o_eig = timed(lambda: hessian_eigenvalues(model, loss, batch, k=1, tol=1e-3, which="LM"))
    budget, tried = 30, []
    while True:
        res, t = timed(lambda budget=budget: hessian_trace(
            model, loss, batch, "hutch++", num_samples=budget, seed=3, progress=False))
        tried.append({"samples": budget, "time_s": t, "estimate": res.estimate, "stderr": res.stderr})
        if res.stderr <= b_se or budget >= args.trained_samples:
            break
        budget += 15
    rows = [
        ("top eigenvalue", "baseline power", t_b_eig, b_lam, f"{b_iters} matvecs"),
        ("top eigenvalue", "samkit lanczos", t_o_eig, ours.eigenvalues[0],
         f"{ours.matvecs} matvecs, residual {ours.residuals[0]:.3g}"),
        ("trace", "baseline hutchinson", t_b_tr, b_tr,
         f"{args.trained_samples} matvecs, stderr {b_se:.4g}"),
        ("trace", "samkit hutch++", tried[-1]["time_s"], tried[-1]["estimate"],
         f"{budget} matvecs, stderr {tried[-1]['stderr']:.4g}"),
    ]
    print("\ntrained MNIST-1D CNN (SGD, 20 epochs), 1000 train examples: equal accuracy")
    for q, m, t, v, note in rows:
        print(f"{q:15} {m:20} {t:8.2f} {v:12.5g}  {note}")
    sp_eig, sp_tr = t_b_eig / t_o_eig, t_b_tr / tried[-1]["time_s"]
    print(f"speed-up: eigenvalue {sp_eig:.2f}x, trace at equal or smaller stderr {sp_tr:.2f}x")
    return {
        "model": "cnn1d (MNIST-1D, SGD 20 epochs, seed 0)",
        "examples": 1000,
        "rows": [dict(zip(("quantity", "method", "time_s", "value", "notes"), r)) for r in rows],
        "hutchpp_budgets_tried": tried,
        "speedup_eigenvalue": sp_eig,
        "speedup_trace_equal_accuracy": sp_tr,
    }


# ------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256, help="random CIFAR-shaped examples")
    ap.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 = standard)")
    ap.add_argument("--trace-samples", type=int, default=30, help="matvecs per trace estimate")
    ap.add_argument("--quick", action="store_true", help="width 16, batch 64: for a 2-core CPU")
    ap.add_argument("--tiny", action="store_true",
                    help="width 4, batch 8, 6 trace samples, at most 10 power iterations: seconds "
                         "(the CPU check of benchmarks/gpu_suite.py; not a measurement)")
    ap.add_argument("--power-max-iter", type=int, default=100, help="the baseline's power iterations")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--trained", action="store_true",
                    help="also: trace at equal accuracy on a trained MNIST-1D CNN")
    ap.add_argument("--trained-samples", type=int, default=100,
                    help="Hutchinson products of the baseline in the trained scenario")
    ap.add_argument(
        "--out", default=None, help="JSON path (default results/hessian_time_<device>.json)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.batch = 16, 64
    if args.tiny:
        args.width, args.batch, args.trace_samples, args.power_max_iter = 4, 8, 6, 10
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, model_name = build(args.width)
    model = model.to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    batch = (x, y)
    params = [p for p in model.parameters() if p.requires_grad]
    dim = sum(p.numel() for p in params)
    print(f"{model_name}: {dim:,} parameters, batch {args.batch}, device {device}")

    (b_lam, b_vec, b_iters), t_b_eig = timed(
        lambda: baseline_top_eigenvalue(model, params, batch, gen, max_iter=args.power_max_iter)
    )
    (b_tr, b_se), t_b_tr = timed(
        lambda: baseline_trace(model, params, batch, gen, args.trace_samples)
    )
    # Power iteration converges to the largest-magnitude eigenvalue: ask Lanczos for the same one.
    ours, t_o_eig = timed(
        lambda: hessian_eigenvalues(model, ce, batch, k=1, tol=1e-3, seed=0, which="LM")
    )
    o_tr, t_o_tr = timed(
        lambda: hessian_trace(
            model, ce, batch, num_samples=args.trace_samples, seed=1, progress=False
        )
    )
    o_trpp, t_o_trpp = timed(
        lambda: hessian_trace(
            model, ce, batch, "hutch++", num_samples=args.trace_samples, seed=2, progress=False
        )
    )
    with HessianOperator(model, ce, batch) as op:  # untimed: the baseline's true residual
        hv = op.matvec(b_vec)
        b_res = math.sqrt(sum(float(((h - b_lam * v) ** 2).sum()) for h, v in zip(hv, b_vec)))

    rows = [
        (
            "top eigenvalue",
            "baseline power",
            t_b_eig,
            b_lam,
            f"{b_iters} matvecs, residual {b_res:.3g}",
        ),
        (
            "top eigenvalue",
            "samkit lanczos",
            t_o_eig,
            ours.eigenvalues[0],
            f"{ours.matvecs} matvecs, residual {ours.residuals[0]:.3g}",
        ),
        ("trace", "baseline hutchinson", t_b_tr, b_tr, f"stderr {b_se:.4g}"),
        ("trace", "samkit hutchinson", t_o_tr, o_tr.estimate, f"stderr {o_tr.stderr:.4g}"),
        ("trace", "samkit hutch++", t_o_trpp, o_trpp.estimate, f"stderr {o_trpp.stderr:.4g}"),
    ]
    print(f"\n{'quantity':15} {'method':20} {'time s':>8} {'value':>12}  notes")
    for q, m, t, v, note in rows:
        print(f"{q:15} {m:20} {t:8.2f} {v:12.5g}  {note}")
    eig_speedup, tr_speedup = t_b_eig / t_o_eig, t_b_tr / t_o_tr
    total_speedup = (t_b_eig + t_b_tr) / (t_o_eig + t_o_tr)
    eig_rel = abs(ours.eigenvalues[0] - b_lam) / abs(b_lam)
    print(
        f"\nspeed-up: eigenvalue {eig_speedup:.2f}x, trace (same estimator, same #matvecs) "
        f"{tr_speedup:.2f}x, both {total_speedup:.2f}x"
    )
    print(
        f"eigenvalue relative difference {eig_rel:.2e}; trace difference "
        f"{abs(o_tr.estimate - b_tr):.4g} (combined stderr {math.hypot(o_tr.stderr, b_se):.4g})"
    )

    result = {
        "benchmark": "hessian_time",
        "model": model_name,
        "num_params": dim,
        "batch": args.batch,
        "width": args.width,
        "trace_samples": args.trace_samples,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "rows": [dict(zip(("quantity", "method", "time_s", "value", "notes"), r)) for r in rows],
        "speedup_eigenvalue": eig_speedup,
        "speedup_trace": tr_speedup,
        "speedup_total": total_speedup,
        "eigenvalue_relative_difference": eig_rel,
        "baseline_residual": b_res,  # true ||Hv - lambda v|| of each method's eigenvector
        "samkit_residual": float(ours.residuals[0]),
        "baseline_trace_stderr": b_se,
        "samkit_trace_stderr": o_tr.stderr,
        "baseline_power_iterations": b_iters,
        "samkit_lanczos_matvecs": ours.matvecs,
        "samkit_lanczos_converged": ours.converged[0],
    }
    if args.trained:
        result["trained_equal_accuracy"] = trained_scenario(args)
    out = (
        Path(args.out)
        if args.out
        else Path(__file__).parent / "results" / f"hessian_time_{device.type}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
