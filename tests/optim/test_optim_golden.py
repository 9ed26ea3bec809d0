"""SAM, ASAM and Friendly-SAM compute what they computed before the rule refactor.

``golden/trajectories.pt`` holds the trajectories of the pre-refactor code (its commit is stored in
the file; ``golden/make_golden.py`` made it, on a 2-core AMD EPYC). Every scenario is rerun here with
the current code: weights, BatchNorm buffers, losses, the F-SAM EMA and the base optimizer's state
must agree.

Agree, not be equal bit for bit: PyTorch does not promise the same bits on another CPU (other SIMD
widths sum in another order), and on an Intel Xeon these trajectories differ from the EPYC ones by
one ulp (2.2e-16 in float64, 1.2e-7 in float32). The tolerances are sized to the dtype and the four
steps: float64 1e-12, float32 1e-5, relative to the tensor's own scale, so a change of the math (a
missing factor, a wrong order of the EMA update, a skipped step) still fails by many orders. One
exception, with its cause: AdamW divides by ``sqrt(v) + eps``; the convolution biases that feed a
BatchNorm have a gradient that is zero in exact arithmetic, so theirs is rounding noise of ~1e-17
that AdamW turns into steps of ``lr * g / eps``; those weights are rounding noise times 1e6 (6.6e-11
measured across the two CPUs), and get a float64 tolerance of 1e-9.
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


TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
ADAM_NOISE_TOLERANCE = 1e-9  # float64 weights driven by AdamW from pure rounding noise (docstring)


def _assert_close(a, b, where: str, tol: float) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_close(a[k], b[k], f"{where}.{k}", tol)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if not a.is_floating_point():
            assert torch.equal(a, b), where
            return
        scale = max(b.abs().max().item(), 1.0) if b.numel() else 1.0
        err = (a - b).abs().max().item() if b.numel() else 0.0
        assert err <= tol * scale, f"{where}: max |diff| {err:.3e} > {tol:.0e} x scale {scale:.3g}"
    else:
        assert a == b, where


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_trajectory_agrees_with_the_pre_refactor_code(name):
    assert REFERENCE["steps"] > 1
    tol = TOLERANCE[SCENARIOS[name][1]]
    if SCENARIOS[name][2] == "AdamW":
        tol = ADAM_NOISE_TOLERANCE
    _assert_close(run(name), REFERENCE["runs"][name], name, tol)


def test_the_tolerance_still_sees_a_change_of_the_math():
    """A trajectory with one SAM knob changed by 1% is far outside the tolerance."""
    front, dtype, base, base_kw, kw = SCENARIOS["sam"]
    SCENARIOS["sam_rho_changed"] = (front, dtype, base, base_kw, {**kw, "rho": 0.0505})
    try:
        changed = run("sam_rho_changed")
    finally:
        del SCENARIOS["sam_rho_changed"]
    with pytest.raises(AssertionError):
        _assert_close(changed, REFERENCE["runs"]["sam"], "sam", TOLERANCE[torch.float64])
