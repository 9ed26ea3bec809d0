"""norm=batch|group|layer|none: what each normalises over, and why small SAM shards need a
per-example one."""

import pytest
import torch
from torch import nn

from samkit.errors import SamkitError
from samkit.models import build_model

MODELS = [("cnn1d", (40,), {}), ("cnn2d", (3, 16, 16), {"width": 8}),
          ("resnet18", (3, 16, 16), {"width": 8}), ("wrn", (3, 16, 16), {"depth": 10, "width": 1})]


@pytest.mark.parametrize(("name", "shape", "kw"), MODELS)
@pytest.mark.parametrize("norm", ["group", "layer", "none"])
def test_per_example_norms_make_an_example_independent_of_its_batch(name, shape, kw, norm):
    # In train mode an example's logits must not depend on the other examples of its shard:
    # that is what lets 1-SAM (shards of one example) compute the same thing as any shard size.
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, input_shape=shape, norm=norm, **kw).train()
    x = torch.randn(6, *shape)
    together = model(x)
    alone = torch.cat([model(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize(("name", "shape", "kw"), MODELS)
def test_batchnorm_is_the_default_and_couples_the_examples_of_a_batch(name, shape, kw):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, input_shape=shape, **kw).train()
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x = torch.randn(6, *shape)
    assert not torch.allclose(model(x)[:1], model(x[:2])[:1], atol=1e-4)


def test_group_and_layer_norm_group_counts():
    torch.manual_seed(0)
    model = build_model("cnn1d", num_classes=10, input_shape=(40,), width=12, norm="group")
    groups = [m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert groups == [4, 4, 4]  # gcd(12, 8): groups must divide the channels
    layer = build_model("cnn1d", num_classes=10, input_shape=(40,), norm="layer")
    assert {m.num_groups for m in layer.modules() if isinstance(m, nn.GroupNorm)} == {1}


def test_default_norm_is_the_architecture_the_committed_runs_were_trained_with():
    # The main job's cnn1d as it was before the norm option, written out by hand: same modules,
    # same parameter names and, from the same seed, the same initial weights.
    torch.manual_seed(0)
    layers = []
    for i, c_in in enumerate((1, 32, 32)):
        layers += [nn.Conv1d(c_in, 32, 5, 1 if i == 0 else 2, 2, bias=False),
                   nn.BatchNorm1d(32), nn.ReLU(inplace=True)]
    reference = {"features": nn.Sequential(*layers), "head": nn.Linear(32, 10)}
    expected = {f"{k}.{n}": t for k, m in reference.items() for n, t in m.state_dict().items()}
    torch.manual_seed(0)
    model = build_model("cnn1d", num_classes=10, input_shape=(40,))
    got = model.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_unknown_norm_is_a_clear_error():
    with pytest.raises(SamkitError, match="norm must be one of batch, group, layer, none"):
        build_model("cnn1d", num_classes=10, input_shape=(40,), norm="instance")
