"""SAM, ASAM and Friendly-SAM compute bit for bit what they computed before the rule refactor.

``golden/trajectories.pt`` holds the trajectories of the pre-refactor code (its commit is stored in
the file; ``golden/make_golden.py`` made it). Every scenario is rerun here with the current code:
weights, BatchNorm buffers, losses, the F-SAM EMA and the base optimizer's state must be equal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))

from make_golden import SCENARIOS, run  # noqa: E402

REFERENCE = torch.load(GOLDEN / "trajectories.pt", weights_only=True)


def _assert_equal(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_trajectory_is_bit_identical_to_the_pre_refactor_code(name):
    assert REFERENCE["steps"] > 1
    _assert_equal(run(name), REFERENCE["runs"][name], name)
