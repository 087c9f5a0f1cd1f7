#!/usr/bin/env bash
# Create .venv in the repository root and install gem_sam with its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# A torch / torchvision pair that is known to load together.
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
# sam2 builds from source; its optional CUDA extension is not needed (SAM2_BUILD_CUDA=0 skips it).
SAM2_BUILD_CUDA=0 .venv/bin/python -m pip install --quiet -e ".[dev,ray]"
# Label Studio, for the tests of the review round trip against a real server: its own environment,
# since it pins many packages.
python3 -m venv .venv-label-studio
.venv-label-studio/bin/python -m pip install --quiet --upgrade pip
.venv-label-studio/bin/python -m pip install --quiet "label-studio>=1.20,<2"
