#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_suite.py installs on the GPU machine, which can download nothing.
#
# That machine (see /work/.library/device/README.md) has Python 3.12 and torch 2.11 + CUDA 13 with
# numpy, scipy, matplotlib, pyyaml, tqdm, scikit-learn, pytest, pytest-xdist, hypothesis, lightning,
# transformers, accelerate and tensorboard; it lacks pytorch-optimizer (the external SAM rows and
# tests/optim/test_optim_external.py). setuptools>=77 (samkit's build backend, for `pip install -e`)
# is there in some version: the wheel is a fallback the suite installs only if that one is older.
# Both are pure Python (py3-none-any, about 1.6 MB together); their own needs (numpy, torch) are there.
#
# The wheels are not committed (other projects' code stays out of this repository): run this in the
# checkout the device tool sends, before a GPU session, then name the folder in the tool's `carry`.
#
#   benchmarks/gpu_wheels.sh            # -> .whl/ (in .gitignore, so it travels only when carried)
#   run(command="python3 benchmarks/gpu_suite.py --wheels .whl --out $OUT", carry=[".whl"], timeout_s=600)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
dest=${1:-.whl}
python=${PYTHON:-python3}
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" pytorch-optimizer==4.1.0 setuptools==80.9.0
ls -l "$dest"
