#!/usr/bin/env bash
# The GPU path in one table (parity on the device, images per second at fp32 / bf16 / bf16 + compile
# against the reference generators, peak memory); see scripts/gpu_check.py. On a GPU the rows without
# --compile take about 6 minutes; `--device cpu` is the small fallback that CI runs so that it cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" scripts/gpu_check.py "$@"
