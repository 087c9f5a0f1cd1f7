#!/usr/bin/env bash
# Create .venv in the repository root and install gem_sam with its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
# ffmpeg and ffprobe (Debian's package): FiftyOne's video datasets, and the video exports that encode frame
# folders as MP4 for FiftyOne and Label Studio.
if ! command -v ffprobe >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt_get="apt-get"; elif command -v sudo >/dev/null 2>&1; then apt_get="sudo apt-get"; fi
    if [ -n "${apt_get:-}" ] && $apt_get update -qq && $apt_get install -y -qq --no-install-recommends ffmpeg; then
        :
    else
        echo "note: ffmpeg is not installed (apt install ffmpeg); the video exports to FiftyOne and Label Studio need it"
    fi
fi
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
