"""The torch-release bridges of samkit._compat: each still finds what it bridges on this torch."""

from __future__ import annotations

import torch
from torch import nn

from samkit._compat import fsdp2
from samkit.optim.distributed import is_fsdp


def test_fsdp2_is_found_on_every_supported_torch():
    """torch 2.5 keeps FSDP2 under torch.distributed._composable.fsdp; 2.6+ exports it publicly."""
    fsdp = fsdp2()
    assert fsdp is not None and callable(fsdp.fully_shard) and isinstance(fsdp.FSDPModule, type)
    public = torch.distributed.fsdp
    if hasattr(public, "fully_shard"):
        assert fsdp is public
    else:
        assert fsdp.__name__ == "torch.distributed._composable.fsdp"


def test_a_plain_module_is_not_taken_for_an_fsdp_one():
    assert not is_fsdp(nn.Linear(2, 2))
