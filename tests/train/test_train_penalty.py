"""The run config's cheap controls: Baek et al.'s L2 penalties in the training loss, and the SAM
perturbation scope chosen by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samkit.errors import SamkitError
from samkit.models import build_model
from samkit.train import TrainConfig, config_hash
from samkit.train.setup import build_optimizer, training_loss


def cnn1d():
    torch.manual_seed(0)
    return build_model("cnn1d", num_classes=10, input_shape=(1, 40), width=8).double()


def batch(n=16):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 40, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def test_the_penalised_loss_is_cross_entropy_plus_the_two_l2_terms():
    model, (x, y) = cnn1d(), batch()
    loss = training_loss(TrainConfig(head_penalty=0.3, feature_penalty=0.2))(model, (x, y))
    head = model.head if hasattr(model, "head") else [m for m in model.modules()
                                                        if isinstance(m, torch.nn.Linear)][-1]
    features = []
    handle = head.register_forward_pre_hook(lambda m, a: features.append(a[0]))
    logits = model(x)
    handle.remove()
    phi = features[0].flatten(1)
    expected = (F.cross_entropy(logits, y) + 0.15 * head.weight.square().sum()
                + 0.1 * phi.square().sum(1).mean())
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_the_head_penalty_adds_lambda_w_to_the_head_gradient_and_nothing_else():
    """d/dW (lambda/2)||W||^2 = lambda W: the closed form, on the head; other gradients unchanged."""
    model, b = cnn1d(), batch()
    plain = torch.autograd.grad(training_loss(TrainConfig())(model, b), list(model.parameters()))
    pen = torch.autograd.grad(training_loss(TrainConfig(head_penalty=0.5))(model, b),
                              list(model.parameters()))
    head_w = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].weight
    for p, a, c in zip(model.parameters(), plain, pen):
        expected = a + 0.5 * p.detach() if p is head_w else a
        torch.testing.assert_close(c, expected, rtol=1e-12, atol=1e-15)
    # no penalty: the objective is plain cross-entropy, to the bit
    x, y = b[0], b[1]
    assert torch.equal(training_loss(TrainConfig())(model, b), torch.nn.functional.cross_entropy(model(x), y))
    with pytest.raises(SamkitError, match="need a model with an nn.Linear head"):
        training_loss(TrainConfig(head_penalty=0.1))(torch.nn.Conv1d(1, 1, 3).double(), (b[0], b[1]))


def test_zero_penalties_and_no_scope_keep_the_hash_of_runs_saved_before_they_existed():
    cfg = TrainConfig(optimizer="sam")
    keys = cfg.to_dict()
    assert {"head_penalty", "feature_penalty", "scope"} <= set(keys)
    assert config_hash(cfg) != config_hash(TrainConfig(optimizer="sam", head_penalty=1e-3))
    assert config_hash(cfg) != config_hash(TrainConfig(optimizer="sam", scope="norm"))
    # the hash payload without the new fields is the payload of a config from before them
    from samkit.train import config as config_module

    payload = {k: v for k, v in keys.items() if k not in config_module._NOT_HASHED
               and not (k in config_module._HASHED_WHEN_SET and v == config_module._HASHED_WHEN_SET[k])}
    assert not {"head_penalty", "feature_penalty", "scope"} & set(payload)


def test_the_scope_by_name_builds_the_scoped_groups():
    model = cnn1d()
    opt = build_optimizer(TrainConfig(optimizer="sam", scope="last").validated(), model)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in head.parameters()]
    assert opt.param_groups[1]["perturb"] is False
    with pytest.raises(SamkitError, match="scope only applies to the SAM family"):
        TrainConfig(optimizer="sgd", scope="norm").validated()
    with pytest.raises(SamkitError, match="scope must be one of norm, last, weights"):
        TrainConfig(optimizer="sam", scope="biases").validated()
