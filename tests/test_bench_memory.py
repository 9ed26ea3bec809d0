"""benchmarks/memory.py: its allocation count is exact, and its accounting of a known step is right."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import memory  # noqa: E402


def _events(prof, tmp_path: Path) -> list[dict]:
    trace = tmp_path / "trace.json"
    prof.export_chrome_trace(str(trace))
    return json.loads(trace.read_text())["traceEvents"]


def test_peak_is_the_high_water_mark_of_live_bytes(tmp_path):
    """1 MiB alive, freed, then 256 KiB twice at once: the peak is the larger of the two moments."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        a = torch.empty(1 << 20, dtype=torch.uint8)
        del a
        b, c = torch.empty(1 << 18, dtype=torch.uint8), torch.empty(1 << 18, dtype=torch.uint8)
        d = torch.empty(3 << 18, dtype=torch.uint8)  # with b and c alive: 1.25 MiB
        del b, c, d
    assert memory.peak_of_events(_events(prof, tmp_path)) == (1 << 20) + (1 << 18)


def test_sgd_with_momentum_grows_by_its_gradient_and_buffer():
    """SGD with momentum keeps a gradient and a momentum buffer per weight (2 P) plus activations
    of a batch of 32 (a few hundred KiB here): the benchmark's unit must come out at 2 P."""
    result = memory.measure("1m", "sgd", "cpu", batch=32, steps=2)
    assert result["params"] == 4 * sum(
        p.numel() for p in memory.build("1m", "cpu", 32)[0].parameters()
    )
    assert 2.0 <= result["growth_P"] <= 2.1, result


def test_sam_holds_one_copy_over_sgd():
    """SAM's math needs one full-size buffer over its base optimizer (the saved w, or e): the
    perturbation is made in the ascent gradient's storage and dropped once it is in the weights.
    Counted allocations, not time: the same on every machine."""
    sgd = memory.measure("1m", "sgd", "cpu", batch=32, steps=2)
    for row in ("sam", "usam", "sam every 2"):
        got = memory.measure("1m", row, "cpu", batch=32, steps=2)
        assert got["growth_P"] - sgd["growth_P"] <= 1.05, (row, got["growth_P"], sgd["growth_P"])
