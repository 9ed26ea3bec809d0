"""Property tests over shapes, parameter groups and shardings (hypothesis)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samkit import SAM
from samkit.optim.rules import global_norm, perturbation
from samkit.optim.sharding import Sharding, shard_batch


@given(n=st.integers(1, 64), k=st.integers(1, 16))
def test_shards_partition_the_batch(n, k):
    x = torch.arange(n)
    if n < k:
        return
    shards, weights = shard_batch({"x": x, "y": (x * 2,)}, Sharding.from_args(k, None))
    assert len(shards) == k
    assert torch.equal(torch.cat([s["x"] for s in shards]), x)  # disjoint, ordered, complete
    assert torch.equal(torch.cat([s["y"][0] for s in shards]), 2 * x)
    sizes = [len(s["x"]) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert abs(sum(weights) - 1) < 1e-12 and all(w == s / n for w, s in zip(weights, sizes))


@given(n=st.integers(1, 64), m=st.integers(1, 16))
def test_shard_size_gives_full_shards_and_a_smaller_last(n, m):
    shards, _ = shard_batch(torch.arange(n), Sharding.from_args(1, m))
    sizes = [len(s) for s in shards]
    assert sum(sizes) == n and all(s == m for s in sizes[:-1]) and 1 <= sizes[-1] <= m


shapes = st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None)
# no subnormal rho: a torch 2.5 build flushes them (hypothesis refuses to draw them there), and a
# radius of 1e-310 says nothing the radius 0 does not
@given(shapes=shapes, rho=st.floats(0.0, 2.0, allow_subnormal=False), adaptive=st.booleans(),
       split=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_perturbation_norm_is_rho_in_the_metric(shapes, rho, adaptive, split, seed):
    """||T^{-1} e|| = rho for every grouping of the parameters (one global norm)."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    grads = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    split = min(split, len(params))
    groups = [x for x in (params[:split], params[split:]) if x]
    ggroups = [x for x in (grads[:split], grads[split:]) if x]
    e, norm = perturbation(ggroups, groups, [rho] * len(groups), [adaptive] * len(groups),
                           [0.0] * len(groups))
    flat_e = [t for grp in e for t in grp]
    t = [p.abs() if adaptive else torch.ones_like(p) for p in params]
    scaled = [ei / ti for ei, ti in zip(flat_e, t)]
    torch.testing.assert_close(global_norm(scaled), torch.tensor(rho, dtype=torch.float64),
                               atol=1e-9, rtol=1e-9)


@settings(max_examples=15, deadline=None)
@given(d_in=st.integers(1, 5), d_out=st.integers(1, 3), n=st.integers(2, 12),
       k=st.integers(1, 4), two_groups=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_regression_update_matches_closed_form(d_in, d_out, n, k, two_groups, seed):
    """For least squares the per-shard SAM gradient has a closed form; check the whole update."""
    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    Y = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(d_in, d_out).double()
    W0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    groups = ([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.05}] if two_groups
              else [{"params": model.parameters()}])
    rho, lr = 0.1, 0.1
    opt = SAM(groups, torch.optim.SGD, lr=lr, rho=rho, shards=k)
    opt.train_step(model, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), (X, Y))

    def grads(W, b, Xs, Ys):  # d/dW, d/db of mean((XW^T + b - Y)^2)
        r = Xs @ W.T + b - Ys
        c = 2.0 / r.numel()
        return c * r.T @ Xs, c * r.sum(0)

    gW, gb = torch.zeros_like(W0), torch.zeros_like(b0)
    for Xs, Ys in zip(torch.tensor_split(X, k), torch.tensor_split(Y, k)):
        aW, ab = grads(W0, b0, Xs, Ys)
        norm = torch.sqrt((aW**2).sum() + (ab**2).sum())
        hW, hb = grads(W0 + rho * aW / (norm + 1e-12), b0 + rho * ab / (norm + 1e-12), Xs, Ys)
        gW += len(Xs) / n * hW
        gb += len(Xs) / n * hb
    lr_b = 0.05 if two_groups else lr
    torch.testing.assert_close(model.weight.detach(), W0 - lr * gW, atol=1e-12, rtol=0)
    torch.testing.assert_close(model.bias.detach(), b0 - lr_b * gb, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_the_two_ways_of_per_shard_norms_agree(dtype):
    """The CUDA form (fused norms of the per-shard slices) and the CPU form (a reduction per tensor
    over its [k, -1] view) are the same norms; both checked here on the CPU."""
    from samkit.optim.rules.base import _fused_shard_norms, _reshaped_shard_norms

    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(5, *shape, generator=g, dtype=torch.float64).to(dtype)
          for shape in [(3, 4), (7,), (2, 3, 3), ()]]
    a, b = _fused_shard_norms(ts), _reshaped_shard_norms(ts)
    exact = torch.sqrt(sum(t.double().reshape(5, -1).square().sum(1) for t in ts))
    tol = {torch.float64: 1e-13, torch.float32: 1e-6, torch.bfloat16: 1e-6}[dtype]  # float32 sums
    torch.testing.assert_close(a.double(), exact, rtol=tol, atol=0)
    torch.testing.assert_close(b.double(), exact, rtol=tol, atol=0)
    assert a.dtype == b.dtype == torch.promote_types(dtype, torch.float32)
    # global_norm keeps each tensor's norm in float32 too (bf16 would round it by 2^-8)
    from samkit.optim.rules import global_norm

    flat = torch.sqrt(sum(t.double().square().sum() for t in ts))
    torch.testing.assert_close(global_norm(ts).double(), flat, rtol=tol, atol=0)
