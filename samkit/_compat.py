"""Bridges between the torch releases samkit supports (2.5 to the newest), each gap in one place.

Every bridge names the release that closed the gap; ``tests/test_compat.py`` pins each one, so a
torch upgrade that moves an API again fails there, loudly, not somewhere deep in a step.
"""

from __future__ import annotations

from typing import Any


def fsdp2() -> Any:
    """The module that holds FSDP2's ``fully_shard`` and ``FSDPModule``, or None without FSDP2.

    ``torch.distributed.fsdp`` exports them from torch 2.6; torch 2.4-2.5 had them only in
    ``torch.distributed._composable.fsdp`` (the same classes, so a model sharded by either passes
    the other's ``isinstance``).
    """
    try:
        from torch.distributed import fsdp

        if hasattr(fsdp, "fully_shard"):
            return fsdp
        from torch.distributed._composable import fsdp as composable  # torch < 2.6

        return composable
    except ImportError:  # a torch built without distributed support
        return None
