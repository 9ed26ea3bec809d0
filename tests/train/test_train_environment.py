"""env.json names what makes two CPUs compute differently (issue 33: "same machine" checkable)."""

from __future__ import annotations

import torch

from samkit.train.environment import environment, math_libraries

# The lines of torch.__config__.show() that name the math libraries, as torch 2.13's CPU build prints
# them (a CUDA build adds lines that must not confuse the reader).
CONFIG = """PyTorch built with:
  - GCC 13.3
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605
  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
  - OpenMP 201511 (a.k.a. OpenMP 4.5)
  - CUDA Runtime 13.0
  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, LAPACK_INFO=mkl, TORCH_VERSION=2.13.0,
"""


def test_math_libraries_are_read_from_torchs_build_config():
    assert math_libraries(CONFIG) == {"blas": "mkl", "mkl": "2024.2", "onednn": "3.12.0", "openmp": "201511"}
    assert math_libraries("PyTorch built with:\n  - Build settings: BLAS_INFO=open,\n") == {"blas": "open"}


def test_env_json_records_the_cpu_capability_torch_uses():
    env = environment(torch.device("cpu"), ["samkit", "train"])
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["math_libraries"] == math_libraries()
    if env["cpu_id"] is not None:  # Linux: the first processor's identity
        assert set(env["cpu_id"]) <= {"vendor", "family", "model", "stepping"} and env["cpu_id"]
