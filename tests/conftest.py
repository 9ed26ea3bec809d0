"""Shared test setup: deterministic, single-threaded torch so equivalence tests are exact."""

import torch

torch.set_num_threads(1)
