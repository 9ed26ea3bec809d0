"""Shared test setup: deterministic, single-threaded torch so equivalence tests are exact.

Helpers that tests of several folders use live here, in tests/ (on sys.path through this conftest),
not in one folder that the others reach into: ``_helpers`` (extras), ``harness_fixtures`` (tiny
runs, the ``harness`` fixture, a training child process) and ``measure_helpers`` (models with known
Hessians).
"""

import os

import torch
from harness_fixtures import harness  # noqa: F401  (the fixture, for every folder's tests)
from hypothesis import settings

torch.set_num_threads(1)

# No per-example deadline: a loaded 2-core CI machine must not turn a slow example into a failure.
# Under CI the examples are derandomized, so a CI run is reproducible; locally they keep exploring.
settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.extras(...)``: skipped, with the reason, where an extra is not installed."""
    import pytest
    from _helpers import extras_reason, missing_extras

    for item in items:
        for mark in item.iter_markers("extras"):
            missing = missing_extras(*mark.args)
            if missing:
                item.add_marker(pytest.mark.skip(reason=extras_reason(missing)))
