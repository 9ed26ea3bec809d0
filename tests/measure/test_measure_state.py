"""Every measure leaves the model bit-identical: mode, buffers, requires_grad, grads, parameters."""

from __future__ import annotations

import pytest
import torch
from measure_helpers import assert_same_state, bn_mlp, ce, class_data, error_rate, snapshot

from samkit.measure import (
    HessianOperator,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
    hessian_vector_product,
    landscape_1d,
    landscape_2d,
    sharpness,
)


def prepared_model(training: bool):
    """BatchNorm MLP with a frozen layer, some grads set (one left None), mixed submodule modes."""
    model = bn_mlp()
    x, y = class_data()
    ce(model, (x, y)).backward()  # populate grads and move BN stats away from their init
    model[0].bias.grad = None  # None must stay None
    model[4].weight.requires_grad_(False)  # frozen, with a stale grad that must survive
    model.train(training)
    model[3].train(not training)  # a submodule in the other mode
    return model, (x, y)


MEASURES = {
    "hvp-autograd": lambda m, d, mode: hessian_vector_product(
        m, ce, d, [torch.ones_like(p) for p in m.parameters() if p.requires_grad], mode=mode
    ),
    "hvp-func-eval": lambda m, d, mode: hessian_vector_product(
        m, ce, d, [torch.ones_like(p) for p in m.parameters() if p.requires_grad], method="func"
    ),
    "hvp-frozen-selected": lambda m, d, mode: hessian_vector_product(
        m, ce, d, [torch.ones(3, 8, dtype=torch.float64)], params=["4.weight"], mode=mode
    ),
    "lanczos": lambda m, d, mode: hessian_eigenvalues(m, ce, d, k=2, max_iter=5, mode=mode),
    "power": lambda m, d, mode: hessian_eigenvalues(
        m, ce, d, method="power", max_iter=3, mode=mode
    ),
    "hutchinson": lambda m, d, mode: hessian_trace(m, ce, d, num_samples=2, mode=mode),
    "hutch++": lambda m, d, mode: hessian_trace(m, ce, d, "hutch++", num_samples=6, mode=mode),
    "density": lambda m, d, mode: hessian_density(m, ce, d, lanczos_steps=4, mode=mode),
    "worst": lambda m, d, mode: sharpness(
        m, ce, d, 0.1, steps=2, shard_size=4, mode=mode, error_fn=error_rate
    ),
    "average-adaptive": lambda m, d, mode: sharpness(
        m, ce, d, 0.1, kind="average", adaptive=True, num_samples=2, mode=mode
    ),
    "landscape_1d": lambda m, d, mode: landscape_1d(
        m, ce, d, steps=3, mode=mode, error_fn=error_rate
    ),
    "landscape_2d": lambda m, d, mode: landscape_2d(m, ce, d, steps=2, mode=mode),
}


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", sorted(MEASURES))
def test_model_untouched(name, mode):
    model, data = prepared_model(training=True)
    before = snapshot(model)
    MEASURES[name](model, [data, (data[0][:5], data[1][:5])] if "hvp" in name else data, mode)
    assert_same_state(before, snapshot(model))


def test_train_mode_forwards_do_update_bn_inside_and_are_undone():
    # The measurement really runs in train mode (BN uses batch statistics and updates its
    # running stats while measuring), and the update is rolled back.
    model, data = prepared_model(training=False)
    before = snapshot(model)
    seen = []

    def spy(m, batch):
        seen.append((m.training, m[1].num_batches_tracked.item()))
        return ce(m, batch)

    # two batches: no cached graph, so every matvec runs fresh train-mode forwards
    hessian_trace(model, spy, [data, data], num_samples=2, mode="train", progress=False)
    assert all(training for training, _ in seen)
    counts = [c for _, c in seen]
    assert counts == list(range(counts[0], counts[0] + len(seen))) and len(seen) == 4
    assert_same_state(before, snapshot(model))


def test_state_restored_when_loss_fn_raises():
    model, data = prepared_model(training=False)
    before = snapshot(model)
    calls = []

    def flaky(m, batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return ce(m, batch)

    for run in (
        lambda: sharpness(model, flaky, data, 0.1, steps=5, mode="train", progress=False),
        lambda: hessian_eigenvalues(model, flaky, [data, data], mode="train"),
    ):
        calls.clear()
        with pytest.raises(RuntimeError, match="boom"):
            run()
        assert_same_state(before, snapshot(model))


def test_operator_context_restores_once_and_caller_graph_survives():
    model, (x, y) = prepared_model(training=False)
    loss = ce(model, (x, y))  # a graph the caller still holds
    before = snapshot(model)
    with HessianOperator(model, ce, (x, y), mode="train") as op:
        assert model.training and all(p.requires_grad for p in op.params)
        op.matvec([torch.ones_like(p) for p in op.params])
    assert_same_state(before, snapshot(model))
    loss.backward()  # no "modified by an inplace operation": nothing was written back needlessly
